"""Partial-observation protocols and JMVAE-kl against independent computations: row
counts and schemes, per-class restriction before pairing, Gaussian KL terms, the product
of unimodal experts, masks and gradients, and training runs through `mmdgm.run`."""

from __future__ import annotations

import json

import pytest
import torch
from torch.distributions import Laplace as TLaplace
from torch.distributions import Normal as TNormal
from torch.distributions import kl_divergence

from mmdgm import Batch, Modality, run
from mmdgm.config import load_config
from mmdgm.data import DATASETS, MultimodalDataset
from mmdgm.data.partial import observe_fraction, restrict_sources
from mmdgm.data.paths import data_root
from mmdgm.distributions import Normal
from mmdgm.models import MODELS
from mmdgm.models.jmvae import subset_product
from tests.conftest import TINY_CONFIG
from tests.linear_gaussian import ExactUnimodalPosterior, LinearDecoder
from tests.zero_gradient import check_missing_modality_is_never_read

# ---------------------------------------------------------------- partial observation


def toy_dataset(n=101, names=("a", "b")):
    g = torch.Generator().manual_seed(0)
    sources = {k: torch.randint(0, 255, (n, 1, 2, 2), generator=g, dtype=torch.uint8) for k in names}
    return MultimodalDataset(sources, torch.randint(10, (n,), generator=g), name="toy")


def presence(ds):
    return torch.stack([ds.mask[k] for k in ds.sources])  # (M, N)


@pytest.mark.parametrize("f", [0.0, 0.3, 0.5, 1.0])
@pytest.mark.parametrize("scheme", ["alternate", "missing:b", "only:a"])
def test_observe_fraction_counts_and_one_modality_per_unpaired_row(f, scheme):
    ds = toy_dataset()
    out = observe_fraction(ds, f, scheme, seed=3)
    p = presence(out)
    complete = p.all(0)
    assert int(complete.sum()) == round(f * len(ds))
    assert torch.equal(p[:, ~complete].sum(0), torch.ones(int((~complete).sum()), dtype=torch.long))
    assert out.sources["a"] is ds.sources["a"] and torch.equal(out.labels, ds.labels)
    assert torch.equal(out.index["b"], ds.index["b"])


def test_schemes_behave_as_specified():
    ds = toy_dataset()
    missing_b = presence(observe_fraction(ds, 0.25, "missing:b", seed=1))
    unpaired = ~missing_b.all(0)
    assert missing_b[0, unpaired].all() and not missing_b[1, unpaired].any()
    assert torch.equal(presence(observe_fraction(ds, 0.25, "only:a", seed=1)), missing_b)
    alt = presence(observe_fraction(ds, 0.25, "alternate", seed=1))
    unpaired = ~alt.all(0)
    n_a, n_b = int(alt[0, unpaired].sum()), int(alt[1, unpaired].sum())
    assert n_a + n_b == int(unpaired.sum()) and abs(n_a - n_b) <= 1
    three = presence(observe_fraction(toy_dataset(names=("a", "b", "c")), 0.1, "alternate", seed=1))
    counts = three[:, ~three.all(0)].sum(1)
    assert counts.max() - counts.min() <= 1
    assert torch.equal(three[:, ~three.all(0)].sum(0), torch.ones(int((~three.all(0)).sum()), dtype=torch.long))


def test_observe_fraction_is_seeded():
    ds = toy_dataset()
    first = presence(observe_fraction(ds, 0.4, "alternate", seed=7))
    assert torch.equal(first, presence(observe_fraction(ds, 0.4, "alternate", seed=7)))
    assert not torch.equal(first, presence(observe_fraction(ds, 0.4, "alternate", seed=8)))


def test_bad_protocol_options_are_clear_errors():
    ds = toy_dataset()
    with pytest.raises(ValueError, match="did you mean 'alternate'"):
        observe_fraction(ds, 0.5, "alternat")
    with pytest.raises(ValueError, match="names modality 'c'"):
        observe_fraction(ds, 0.5, "missing:c")
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        observe_fraction(ds, 1.5)
    with pytest.raises(ValueError, match="already partially observed"):
        observe_fraction(observe_fraction(ds, 0.5), 0.5)
    with pytest.raises(ValueError, match="unimodal_fraction"):
        restrict_sources(ds.labels, ds.labels, 0.0)


def test_restrict_sources_keeps_the_right_per_class_counts_seeded():
    la = torch.repeat_interleave(torch.arange(4), torch.tensor([10, 21, 7, 40]))[torch.randperm(78)]
    lb = torch.repeat_interleave(torch.arange(4), torch.tensor([33, 5, 12, 9]))
    rows_a, rows_b = restrict_sources(la, lb, 0.3, seed=2)
    for labels, rows, counts in ((la, rows_a, [10, 21, 7, 40]), (lb, rows_b, [33, 5, 12, 9])):
        assert torch.equal(rows, rows.unique())
        kept = torch.bincount(labels[rows], minlength=4).tolist()
        assert kept == [round(0.3 * c) for c in counts]
    again = restrict_sources(la, lb, 0.3, seed=2)
    assert torch.equal(again[0], rows_a) and torch.equal(again[1], rows_b)
    assert not torch.equal(restrict_sources(la, lb, 0.3, seed=3)[0], rows_a)


def synthetic(split, **options):
    return DATASETS.get("synthetic-pairs")(split, data_root(), n_train=200, n_test=100, dm=1, **options)


def test_paired_builder_options_restrict_before_pairing_and_mask_train_only():
    hand = DATASETS.get("synthetic-handwritten-digits")("train", data_root(), n_train=200)
    street = DATASETS.get("synthetic-street-digits")("train", data_root(), n_train=200)
    full = synthetic("train")
    assert full.protocol == {"observed_fraction": 1.0, "unpaired_scheme": "alternate", "unimodal_fraction": 1.0}
    small = synthetic("train", unimodal_fraction=0.5)
    for c in range(10):
        n_hand, n_street = int((hand.labels == c).sum()), int((street.labels == c).sum())
        assert int((small.labels == c).sum()) == min(round(0.5 * n_hand), round(0.5 * n_street))
    assert torch.equal(hand.labels[small.index["synth_hand"]], small.labels)
    assert torch.equal(street.labels[small.index["synth_street"]], small.labels)
    assert small.index["synth_hand"].unique().numel() == len(small)  # dm=1: each image once
    part = synthetic("train", observed_fraction=0.5, unpaired_scheme="missing:synth_street")
    p = presence(part)
    assert int(p.all(0).sum()) == round(0.5 * len(part)) and p[0].all()
    assert part.protocol["unpaired_scheme"] == "missing:synth_street"
    test = synthetic("test", observed_fraction=0.5, unimodal_fraction=0.5)
    assert presence(test).all() and len(test) == len(synthetic("test"))
    assert test.protocol["observed_fraction"] == 1.0
    with pytest.raises(ValueError, match="names modality 'svhn'"):
        synthetic("train", observed_fraction=0.5, unpaired_scheme="missing:svhn")


# ---------------------------------------------------------------- JMVAE


def image_model(alpha=1.0, D=4):
    mods = [
        Modality("a", (1, 28, 28), encoder="mnist-mlp", decoder="mnist-mlp", llik_scale=2.0,
                 net_options={"hidden": 16}),
        Modality("b", (3, 32, 32), encoder="svhn-conv", decoder="svhn-conv", net_options={"width": 4}),
    ]
    return MODELS.get("jmvae")(
        mods, D, prior="normal", posterior="normal", posterior_scale="exp", prior_scale="free",
        learn_prior=True, alpha=alpha, joint_hidden=32,
    )


def image_batch(n=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    return Batch({"a": torch.rand(n, 1, 28, 28, generator=g), "b": torch.rand(n, 3, 32, 32, generator=g)})


def tnormal(q):
    return TNormal(q.loc, q.scale)


def test_kl_terms_and_elbo_match_closed_forms():
    """sum_m KL(q(z|X) || q(z|x_m)) and KL(q(z|X) || p(z)) against torch's Gaussian KL; the
    reconstruction term recomputed from the drawn z; loss = -(elbo - alpha * kl)."""
    torch.manual_seed(0)
    model, batch = image_model(alpha=0.5), image_batch()
    with torch.no_grad():
        model.prior_theta.fill_(0.3)
    torch.manual_seed(1)
    t = model.terms(batch)
    joint = tnormal(model.joint_posterior(batch))
    uni = [tnormal(model.posterior(n, batch.data[n])) for n in ("a", "b")]
    kl = sum(kl_divergence(joint, u).sum(-1) for u in uni)
    torch.testing.assert_close(t.kl_unimodal, kl, rtol=1e-5, atol=1e-5)
    prior = TNormal(torch.zeros(4), torch.full((4,), 0.3).exp())
    rec = 2.0 * TLaplace(model.decoders["a"](t.z), 0.75).log_prob(batch.data["a"]).sum((-3, -2, -1))
    rec = rec + TLaplace(model.decoders["b"](t.z), 0.75).log_prob(batch.data["b"]).sum((-3, -2, -1))
    torch.testing.assert_close(t.elbo, rec - kl_divergence(joint, prior).sum(-1), rtol=1e-5, atol=1e-2)
    torch.manual_seed(1)
    loss = model(batch).loss
    torch.testing.assert_close(loss, -(t.elbo - 0.5 * t.kl_unimodal).mean())


def test_a_few_optimiser_steps_decrease_the_loss():
    torch.manual_seed(0)
    model, batch = image_model(), image_batch(n=8)

    def loss_at_fixed_noise():
        torch.manual_seed(123)
        with torch.no_grad():
            return float(model(batch).loss)

    before = loss_at_fixed_noise()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(15):
        opt.zero_grad()
        model(batch).loss.backward()
        opt.step()
    assert loss_at_fixed_noise() < before - 30


def test_missing_modality_gets_zero_gradient_and_is_never_read():
    """Rows where b is missing train the unimodal ELBO of a: b's networks and the joint
    encoder get exactly zero gradient from them, and placeholders (zeros or NaN) change
    nothing at all."""
    partial = check_missing_modality_is_never_read(image_model(), image_batch(), silent=("joint.",))
    assert any(torch.count_nonzero(v) for k, v in partial.items() if k.startswith("joint."))


def vector_model(names=("u", "v", "w"), D=3, P=5, sigma=0.75):
    mods = [
        Modality(n, (P,), kind="vector", likelihood="normal", likelihood_scale=sigma, net_options={"hidden": [8]})
        for n in names
    ]
    return MODELS.get("jmvae")(
        mods, D, prior="normal", posterior="normal", posterior_scale="exp", prior_scale="free", joint_hidden=16
    )


def test_subset_encode_is_the_prior_corrected_product_of_unimodal_experts():
    """q_S: precision sum_S T_m - (|S|-1) T_0, mean (sum_S T_m mu_m - (|S|-1) T_0 mu_0) / T;
    one modality gives its own encoder; complete rows of the full set use the joint encoder."""
    torch.manual_seed(0)
    model = vector_model()
    with torch.no_grad():
        model.prior_theta.fill_(0.7)  # T_0 = exp(-1.4) < every expert's precision here
        model.prior_loc.copy_(torch.tensor([0.5, -1.0, 2.0]))
    x = {n: torch.randn(4, 5) for n in ("u", "v", "w")}
    batch = Batch(x, {"w": torch.tensor([True, False, True, False])})
    e = {n: model.posterior(n, x[n]) for n in x}
    T = {n: e[n].scale**-2 for n in x}
    T0, mu0 = torch.full((3,), -1.4).exp(), model.prior_loc
    assert all((T[n] > T0).all() for n in x)
    prec = T["u"] + T["v"] - T0
    mean = (T["u"] * e["u"].loc + T["v"] * e["v"].loc - T0 * mu0) / prec
    q = model.encode(batch, ["u", "v"])
    torch.testing.assert_close(q.loc, mean, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(q.scale, prec.rsqrt(), rtol=1e-5, atol=1e-6)
    single = model.encode(batch, ["v"])
    torch.testing.assert_close(single.loc, e["v"].loc)
    torch.testing.assert_close(single.scale, e["v"].scale)
    full = model.encode(batch)
    joint = model.joint_posterior(batch)
    rows = torch.tensor([0, 2])
    torch.testing.assert_close(full.loc[rows], joint.loc[rows])
    torch.testing.assert_close(full.loc[[1, 3]], mean[[1, 3]], rtol=1e-5, atol=1e-5)


def test_product_precision_is_floored_at_the_most_precise_expert():
    prior = Normal(torch.zeros(1), torch.ones(1))
    experts = [Normal(torch.ones(1, 1), torch.full((1, 1), 2.0)), Normal(torch.ones(1, 1), torch.full((1, 1), 1.5))]
    q = subset_product(experts, torch.ones(2, 1, dtype=torch.bool), prior)  # 1/4 + 1/2.25 - 1 < 0
    torch.testing.assert_close(q.scale, torch.full((1, 1), 1.5))
    assert torch.isfinite(q.loc).all()


class JointOf(torch.nn.Module):
    """A joint encoder applying one network to the concatenated modalities."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, data):
        return self.net(torch.cat([data["u"], data["v"]], -1))


def test_log_likelihood_is_exact_with_exact_posteriors():
    """Linear-Gaussian model with orthogonal columns: the unimodal and joint posteriors are
    exactly diagonal Gaussians, so with them as encoders the IWAE estimate equals the
    closed-form log p(x_u) on rows with only u observed and log p(x_u, x_v) on complete rows."""
    torch.manual_seed(0)
    D, P, sigma = 2, 3, 0.8
    model = vector_model(("u", "v"), D, P, sigma)
    params = {n: (torch.linalg.qr(torch.randn(P, D))[0] * torch.rand(D) * 3, torch.randn(P)) for n in ("u", "v")}
    for n, (A, b) in params.items():
        model.decoders[n] = LinearDecoder(A, b)
        model.encoders[n] = ExactUnimodalPosterior(A, b, sigma)
    x = {n: torch.randn(4, P) for n in ("u", "v")}
    only_u = Batch(x, {"v": torch.zeros(4, dtype=torch.bool)})
    A_u, b_u = params["u"]
    exact = torch.distributions.MultivariateNormal(b_u, A_u @ A_u.T + sigma**2 * torch.eye(P)).log_prob(x["u"])
    torch.testing.assert_close(model.log_likelihood(only_u, K=200, chunk=64), exact, rtol=0, atol=1e-4)
    A = torch.cat([params[n][0] for n in ("u", "v")])
    b = torch.cat([params[n][1] for n in ("u", "v")])
    model.joint = JointOf(ExactUnimodalPosterior(A, b, sigma))  # A has orthogonal columns too
    exact = torch.distributions.MultivariateNormal(b, A @ A.T + sigma**2 * torch.eye(2 * P))
    want = exact.log_prob(torch.cat([x["u"], x["v"]], -1))
    torch.testing.assert_close(model.log_likelihood(Batch(x), K=200, chunk=64), want, rtol=0, atol=1e-4)


def test_non_gaussian_distributions_are_rejected():
    mods = [Modality("a", (3,), kind="vector"), Modality("b", (3,), kind="vector")]
    with pytest.raises(ValueError, match="posterior: normal"):
        MODELS.get("jmvae")(mods, 2, prior="normal", posterior="laplace")
    with pytest.raises(ValueError, match="at least two"):
        MODELS.get("jmvae")(mods[:1], 2, prior="normal", posterior="normal")


JMVAE_OVERRIDES = [
    "model.name=jmvae",
    "model.posterior=normal",
    "model.posterior_scale=exp",
    "model.prior=normal",
    "model.prior_scale=free",
    "model.options={alpha: 1.0}",
]


def records(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_jmvae_trains_through_run_on_tiny_pairs(tmp_path):
    config = load_config("default", TINY_CONFIG + JMVAE_OVERRIDES + ["train.epochs=1"])
    run_dir = run.train(config, tmp_path / "r")
    assert (run_dir / "model.pt").is_file() and len(list((run_dir / "grids").glob("*.png"))) == 3
    recs = records(run_dir)
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in recs)
    _, model, test_set = run.load_run(run_dir)
    assert torch.isfinite(model.log_likelihood(test_set.batch(torch.arange(4)), K=8)).all()


def test_jmvae_trains_on_partially_observed_synthetic_pairs(tmp_path):
    config = load_config("mmvae-synthetic-pairs", [
        "data.options={n_train: 200, n_test: 100, dm: 1, observed_fraction: 0.5}",
        "model.modalities={synth_hand: {encoder: mnist-mlp, decoder: mnist-mlp, net_options: {hidden: 32}}, "
        "synth_street: {encoder: svhn-conv, decoder: svhn-conv, net_options: {width: 4}}}",
        "model.latent_dim=4",
        "train.epochs=1",
        "train.batch_size=50",
        "train.log_every=1",
        "train.eval_batches=1",
        "train.grid_size=4",
        *JMVAE_OVERRIDES,
        "model.options={alpha: 1.0, joint_hidden: 32}",
    ])
    run_dir = run.train(config, tmp_path / "r")
    train = [r for r in records(run_dir) if r["split"] == "train"]
    assert train and all(0 < r["complete_fraction"] < 1 for r in train)
    test = [r for r in records(run_dir) if r["split"] == "test"]
    assert test[-1]["complete_fraction"] == 1.0


@pytest.mark.parametrize("name", ["jmvae-default", "jmvae-mnist-synthstreet"])
def test_builtin_jmvae_configs_build(name):
    from mmdgm.models.factory import build_model

    config = load_config(name)
    shapes = {n: ((1, 28, 28) if m.encoder == "mnist-mlp" else (3, 32, 32)) for n, m in config.model.modalities.items()}
    model = build_model(config.model, shapes)
    assert type(model).__name__ == "JMVAE" and model.alpha == 1.0
