"""Devices, mixed precision and data-parallel training over torchrun-style processes.

The 2-process runs use gloo on 127.0.0.1 (a free port), spawned with torch.multiprocessing.
What is compared with one process: a model whose training step is a deterministic function
of the batch (`MeanAutoencoder`: z is the mean of the unimodal posterior means, the loss the
mean over rows of -sum_m log p(x_m | z)), so that one process on the global batch and two
processes on its halves must take the same Adam steps; a model that samples z draws from
per-rank streams and cannot match one process draw for draw, so for MMVAE, contrastive
MMVAE and MMALI the test checks that the two ranks hold identical parameters after training.
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from mmdgm import cli, run
from mmdgm.batch import Batch
from mmdgm.config import ConfigError, load_config
from mmdgm.data import DATASETS, MultimodalDataset
from mmdgm.models.base import MODELS, ModelOutput, MultimodalVAE
from mmdgm.runtime import resolve_device
from mmdgm.train.checkpoint import load_checkpoint
from mmdgm.train.distributed import World, check_batches, share
from mmdgm.train.precision import autocast_networks, networks
from mmdgm.train.runlock import RunLocked, acquire, release
from mmdgm.train.trainer import RunDirError, TrainingDiverged

GPU = torch.cuda.is_available()
NO_GPU = "needs a CUDA GPU; none on this machine (not yet measured on GPU)"


def ddp_vectors(split: str, root, n: int = 40) -> MultimodalDataset:
    """Two vector modalities sharing a 2-d factor (complete rows)."""
    g = torch.Generator().manual_seed(3 if split == "train" else 4)
    u = torch.randn(n, 2, generator=g)
    a = u @ torch.randn(2, 6, generator=g) + 0.1 * torch.randn(n, 6, generator=g)
    b = u @ torch.randn(2, 4, generator=g) + 0.1 * torch.randn(n, 4, generator=g)
    return MultimodalDataset({"a": a, "b": b}, torch.zeros(n, dtype=torch.long), name="ddp-vectors")


class MeanAutoencoder(MultimodalVAE):
    """A deterministic step: z = mean over modalities of E q(z | x_m); loss = mean over rows
    of -sum_m log p(x_m | z). In float64: Adam's first steps are nearly sign(gradient), so
    float32 rounding in the order of summation flips the step of near-zero gradient entries
    by up to 2 lr; float64 makes such entries vanishingly rare."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.double()

    def forward(self, batch) -> ModelOutput:
        batch = Batch({k: v.double() for k, v in batch.data.items()}, batch.mask, batch.labels)
        z = torch.stack([self.posterior(m, batch.data[m]).mean for m in self.names]).mean(0)
        per_point = self.log_likelihood_terms(batch, z)
        return ModelOutput(-per_point.mean(), {"recon": float(-per_point.detach().mean())}, per_point)


if "ddp-vectors" not in DATASETS:
    DATASETS.register("ddp-vectors")(ddp_vectors)
if "ddp-autoencoder" not in MODELS:
    MODELS.register("ddp-autoencoder")(MeanAutoencoder)

NETS = "{hidden: [8]}"
BASE = [
    "data.name=ddp-vectors",
    f"model.modalities={{a: {{encoder: mlp, decoder: mlp, net_options: {NETS}}}, b: {{encoder: mlp, decoder: mlp, net_options: {NETS}}}}}",
    "model.latent_dim=3",
    "train.epochs=2",
    "train.batch_size=7",  # 40 rows: batches of 7 (shares 4 + 3) and a last one of 5 (3 + 2)
    "train.log_every=1",
    "train.checkpoint_every=2",
    "train.eval_batches=1",
    "train.grid_size=2",
    "train.device=cpu",
    "train.lr=0.01",
    "train.final_metrics=[]",
]
DETERMINISTIC = [*BASE, "model.name=ddp-autoencoder", "model.options={}"]
SAMPLING = {
    "mmvae": [*BASE, "model.name=mmvae", "model.options={K: 2}"],
    "contrastive": [*BASE, "model.name=mmvae", "model.options={K: 2}", "model.contrastive={n_negatives: 2}"],
    "mmali": [*BASE, "model.name=mmali", "model.learn_prior=false", "model.prior=normal", "model.posterior=normal",
              "model.options={style_dim: 1, disc_features: 4, disc_hidden: 8, disc_x_hidden: 8}"],
}
STOP, NAN_STEP = 3, 5


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def worker(rank: int, world: int, port: int, root: str) -> None:
    """Every scenario over one gloo process group; each rank records what the test checks."""
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    root, config = Path(root), load_config("default", DETERMINISTIC)
    t = run.make_trainer(config, root / "full")
    t.start()
    t.fit()
    stopped = run.make_trainer(config, root / "stopped")
    stopped.start()
    stopped.fit(stop_at_step=STOP)
    resumed = run.make_trainer(config, root / "stopped")
    resumed.resume()
    resumed.fit()
    torch.save(resumed.model.state_dict(), root / f"resumed-rank{rank}.pt")

    nan = run.make_trainer(config, root / "nan")
    step = nan.model.training_step

    def poisoned(batch, group):
        out = step(batch, group)
        if rank == 1 and nan.position.global_step == NAN_STEP:
            out.loss = out.loss * float("nan")
        return out

    nan.model.training_step = poisoned
    nan.start()
    try:
        nan.fit()
        message = "no error"
    except TrainingDiverged as e:
        message = str(e)
    (root / f"nan-rank{rank}.txt").write_text(message)

    try:
        run.make_trainer(config, root / "full").start()
        message = "no error"
    except RunDirError as e:
        message = str(e)
    (root / f"occupied-rank{rank}.txt").write_text(message)

    try:
        run.train(config, root / "held")  # its lock is held by the test process
        message = "no error"
    except RunLocked as e:
        message = str(e)
    (root / f"held-rank{rank}.txt").write_text(message)

    for name, overrides in SAMPLING.items():
        t = run.make_trainer(load_config("default", overrides), root / name)
        t.start()
        t.fit(stop_at_step=4)
        torch.save(t.model.state_dict(), root / f"{name}-rank{rank}.pt")
    torch.distributed.destroy_process_group()


@pytest.fixture(scope="module")
def two_process_runs(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("ddp")
    acquire(root / "held")
    try:
        mp.spawn(worker, args=(2, free_port(), str(root)), nprocs=2, join=True)
    finally:
        release(root / "held")
    return root


@pytest.fixture(scope="module")
def one_process_run(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("single") / "run"
    t = run.make_trainer(load_config("default", DETERMINISTIC), run_dir)
    t.start()
    t.fit()
    return run_dir


def metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_two_processes_take_the_steps_of_one_process_over_the_global_batch(two_process_runs, one_process_run):
    two, one = load_checkpoint(two_process_runs / "full" / "model.pt"), load_checkpoint(one_process_run / "model.pt")
    assert two.keys() == one.keys()
    for k in one:
        torch.testing.assert_close(two[k], one[k], rtol=1e-10, atol=1e-12, msg=k)
    assert not all(torch.equal(two[k], one[k]) for k in one)  # different arithmetic, same steps
    initial = run.make_trainer(load_config("default", DETERMINISTIC), one_process_run.parent / "unused").model
    assert any(not torch.allclose(one[k], v, atol=1e-3) for k, v in initial.state_dict().items())  # it trained
    m2, m1 = metrics(two_process_runs / "full"), metrics(one_process_run)
    assert [(r["step"], r["split"]) for r in m2] == [(r["step"], r["split"]) for r in m1]
    assert len([r for r in m1 if r["split"] == "train"]) == 12  # 6 steps per epoch, every step logged
    for r2, r1 in zip(m2, m1):  # train metrics averaged over ranks weighted by rows = the global batch's
        for k in ("recon", "grad_norm")[: 2 if r1["split"] == "train" else 1]:
            assert r2[k] == pytest.approx(r1[k], rel=1e-10), (r1["step"], k)


def test_only_rank_0_writes_and_the_run_has_every_artefact(two_process_runs):
    run_dir = two_process_runs / "full"
    assert {p.name for p in run_dir.iterdir()} >= {"config.yaml", "data.json", "metrics.jsonl", "timing.jsonl",
                                                   "checkpoint.pt", "model.pt"}
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == len(set(lines)) == 14  # one writer: 12 train + 2 test lines, none twice
    state = load_checkpoint(run_dir / "checkpoint.pt")
    assert len(state["rank_rng"]) == 2 and not torch.equal(state["rank_rng"][0]["cpu"], state["rank_rng"][1]["cpu"])


def test_interrupted_two_process_run_resumes_to_the_same_parameters(two_process_runs):
    full = load_checkpoint(two_process_runs / "full" / "model.pt")
    resumed = load_checkpoint(two_process_runs / "stopped" / "model.pt")
    assert all(torch.equal(full[k], resumed[k]) for k in full)
    assert (two_process_runs / "stopped" / "metrics.jsonl").read_text() == (two_process_runs / "full" / "metrics.jsonl").read_text()
    r0, r1 = (torch.load(two_process_runs / f"resumed-rank{r}.pt") for r in (0, 1))
    assert all(torch.equal(r0[k], r1[k]) for k in r0)


def test_nan_on_rank_1_stops_both_ranks_keeping_the_last_good_checkpoint(two_process_runs):
    for rank in (0, 1):
        message = (two_process_runs / f"nan-rank{rank}.txt").read_text()
        assert f"loss is not finite on rank(s) [1] at step {NAN_STEP}" in message, message
        assert "last good checkpoint" in message
    state = load_checkpoint(two_process_runs / "nan" / "checkpoint.pt")
    assert state["global_step"] == 4  # checkpoint_every=2; the NaN came in the update of step 6
    assert not (two_process_runs / "nan" / "model.pt").exists()


def test_an_occupied_run_directory_is_refused_on_every_rank(two_process_runs):
    for rank in (0, 1):
        assert "already holds a run" in (two_process_runs / f"occupied-rank{rank}.txt").read_text()


def test_a_run_another_process_holds_is_refused_on_every_rank(two_process_runs):
    """Rank 0 takes the run's lock for every rank; its refusal reaches rank 1 too (no hang)."""
    for rank in (0, 1):
        assert f"held by process {os.getpid()}" in (two_process_runs / f"held-rank{rank}.txt").read_text()
    assert sorted(p.name for p in (two_process_runs / "held").iterdir()) == []


@pytest.mark.parametrize("name", list(SAMPLING))
def test_sampling_models_stay_identical_across_ranks(two_process_runs, name):
    """MMVAE, contrastive MMVAE (negatives drawn within each rank's share) and MMALI
    (several parameter groups; negatives shuffled within each rank's share) train under
    two processes with both ranks holding the same weights."""
    r0, r1 = (torch.load(two_process_runs / f"{name}-rank{r}.pt") for r in (0, 1))
    assert all(torch.equal(r0[k], r1[k]) for k in r0)
    assert (two_process_runs / name / "checkpoint.pt").exists()


def test_shares_partition_each_global_batch():
    rows = torch.randperm(23)
    parts = [share(rows, r, 3) for r in range(3)]
    assert sorted(torch.cat(parts).tolist()) == sorted(rows.tolist())
    assert [len(p) for p in parts] == [8, 8, 7]
    with pytest.raises(ValueError, match="cannot share a batch of 1 rows"):
        check_batches(41, 8, 2)  # the last batch holds one row
    check_batches(40, 8, 2)


def test_world_of_one_process_is_the_identity():
    w = World()
    p = torch.nn.Parameter(torch.ones(3))
    p.grad = torch.full((3,), 2.0)
    w.average_gradients([p], 5)
    assert torch.equal(p.grad, torch.full((3,), 2.0))
    assert w.mean_metrics({"loss": 1.5}, 5, torch.device("cpu")) == {"loss": 1.5}
    assert w.flags(True, torch.device("cpu")) == [0] and w.gather(7) == [7] and w.on_main(lambda: 3) == 3


def test_devices_and_precisions_are_validated():
    with pytest.raises(ConfigError, match="device must be auto, cpu, cuda or cuda:N"):
        load_config("default", ["train.device=gpu"])
    with pytest.raises(ConfigError, match="precision must be one of"):
        load_config("default", ["train.precision=fp8"])
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto") == torch.device("cuda" if GPU else "cpu")
    if not GPU:
        with pytest.raises(ConfigError, match="no CUDA GPU"):
            resolve_device("cuda:0")


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_half_precision_on_cpu_is_refused_naming_the_slowdown(tmp_path, precision):
    config = load_config("default", [*DETERMINISTIC, f"train.precision={precision}"])
    with pytest.raises(ConfigError, match=r"needs a CUDA GPU.*0\.2 GFLOP/s against 60-180 GFLOP/s"):
        run.make_trainer(config, tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_autocast_reaches_exactly_the_networks():
    mmvae = run.make_trainer(load_config("default", SAMPLING["mmvae"]), Path("unused")).model
    assert sorted(n for n, _ in networks(mmvae)) == ["decoders.a", "decoders.b", "encoders.a", "encoders.b"]
    mmali = run.make_trainer(load_config("default", SAMPLING["mmali"]), Path("unused")).model
    names = [n for n, _ in networks(mmali)]
    assert {"encoders.a", "decoders.b"} <= set(names) and any(n.startswith("discriminators.") for n in names)
    assert autocast_networks(mmvae, "fp32", torch.device("cpu")) == []
    assert all("forward" not in vars(m) for _, m in networks(mmvae))  # fp32: nothing wrapped


def test_a_run_evaluates_and_resumes_on_another_device_spec(one_process_run, tmp_path):
    """Checkpoints hold CPU tensors and load with map_location; train.device is where a run
    computes, not part of its identity, so a resume may change it."""
    state = load_checkpoint(one_process_run / "checkpoint.pt")
    assert all(t.device.type == "cpu" for t in state["model"].values())
    _, model, _ = run.load_run(one_process_run, device="cpu")
    assert next(model.parameters()).device.type == "cpu"
    t = run.make_trainer(load_config("default", DETERMINISTIC), tmp_path / "run")
    t.start()
    t.fit(stop_at_step=2)
    assert run.resume(tmp_path / "run", device="auto" if not GPU else "cpu") == tmp_path / "run"


@pytest.mark.skipif(not GPU, reason=NO_GPU)
def test_gpu_run_evaluates_on_cpu_and_cpu_run_on_gpu(one_process_run, tmp_path):
    config = load_config("default", [*DETERMINISTIC, "train.device=cuda"])
    run_dir = run.train(config, tmp_path / "gpu")
    _, model, test_set = run.load_run(run_dir, device="cpu")
    assert next(model.parameters()).device.type == "cpu"
    assert torch.isfinite(model(test_set.batch(torch.arange(8))).loss)
    _, model, test_set = run.load_run(one_process_run, device="cuda")
    assert torch.isfinite(model(test_set.batch(torch.arange(8)).to("cuda")).loss)


@pytest.mark.skipif(not GPU, reason=NO_GPU)
def test_fp32_and_bf16_steps_give_the_same_loss_on_gpu(tmp_path):
    """One MMVAE training step's loss in fp32 and with bf16 networks: within 2% (bf16 keeps
    8 bits of mantissa; log-weights and estimators stay float32)."""
    losses = {}
    for precision in ("fp32", "bf16"):
        t = run.make_trainer(load_config("default", [*SAMPLING["mmvae"], "train.device=cuda",
                                                     f"train.precision={precision}"]), tmp_path / precision)
        t.start()
        batch = t.to_device(t.train_set.batch(torch.arange(7)))
        torch.manual_seed(0)
        out = t.model(batch)
        assert out.loss.dtype == torch.float32 and out.per_point.dtype == torch.float32
        losses[precision] = float(out.loss)
    assert losses["bf16"] == pytest.approx(losses["fp32"], rel=0.02)


def test_train_nproc_launches_torchrun(tmp_path, monkeypatch, capfd):
    """`mmdgm train --nproc 2` (torchrun --standalone) trains one run: rank 0 writes it."""
    g = torch.Generator().manual_seed(0)
    arrays = {"a": torch.randn(40, 6, generator=g).numpy(), "b": torch.randn(40, 4, generator=g).numpy()}
    np.savez(tmp_path / "pairs.npz", **arrays)
    run_dir = tmp_path / "cli"
    overrides = ["data.name=arrays", f"data.options.path={tmp_path / 'pairs.npz'}", "model.options={K: 2}",
                 *BASE[1:], "data.options.test_fraction=0.2", "train.batch_size=16", "train.epochs=1"]
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("PYTHONPATH", str(Path(run.__file__).parents[1]))
    code = cli.main(["train", "--nproc", "2", "--run-dir", str(run_dir), *overrides])
    out, err = capfd.readouterr()
    assert code == 0, err[-3000:]
    assert (run_dir / "model.pt").exists() and "rank 1 done" in out and f"finished {run_dir}" in out
    assert len(load_checkpoint(run_dir / "checkpoint.pt")["rank_rng"]) == 2
    assert len((run_dir / "metrics.jsonl").read_text().splitlines()) == 3  # 32 rows / 16: 2 train lines + 1 test
