"""One process per run: RUN/train.lock (flock) refuses a second process, is re-entrant
within one, and is taken again once its holder has gone, however it ended."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys

import pytest

from mmdgm import run
from mmdgm.config import load_config
from mmdgm.evaluate.runner import EVAL_FILE, read_eval, store_result
from mmdgm.reproduce import EXPERIMENTS, reproduce
from mmdgm.reproduce.runner import run_dir_of
from mmdgm.train.distributed import World
from mmdgm.train.runlock import HELD, LOCK, RunLocked, acquire, holding, release
from mmdgm.train.trainer import RunDirError
from tests.conftest import TINY_CONFIG
from tests.test_reproduce import table_cells

HOLD = ("import sys; from pathlib import Path; from mmdgm.train.runlock import acquire; "
        "acquire(Path(sys.argv[1])); print('held', flush=True); sys.stdin.read()")


@contextlib.contextmanager
def held_by_child(run_dir):
    """Another process holding `run_dir`'s lock until the block ends; yields its pid."""
    child = subprocess.Popen([sys.executable, "-c", HOLD, str(run_dir)], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "held"
        yield child.pid
    finally:
        child.stdin.close()
        child.wait()


def test_a_second_process_is_refused_and_named_and_the_lock_outlives_no_holder(tmp_path):
    with held_by_child(tmp_path / "run") as pid:
        with pytest.raises(RunLocked, match=rf"held by process {pid} on '{socket.gethostname()}'"):
            acquire(tmp_path / "run")
    assert (tmp_path / "run" / LOCK).exists()  # the child died holding it: a file, no lock
    acquire(tmp_path / "run")
    assert json.loads((tmp_path / "run" / LOCK).read_text()) == {"pid": os.getpid(), "host": socket.gethostname()}
    release(tmp_path / "run")
    assert list((tmp_path / "run").iterdir()) == [] and not HELD


def refused_to_another_process(run_dir) -> bool:
    """Whether a child process trying `run_dir`'s lock is refused, naming this process."""
    out = subprocess.run([sys.executable, "-c", HOLD, str(run_dir)], input="", capture_output=True, text=True)
    return out.returncode != 0 and f"held by process {os.getpid()}" in out.stderr


def test_the_lock_is_reentrant_and_released_by_the_last_release(tmp_path):
    acquire(tmp_path)
    acquire(tmp_path)
    release(tmp_path)
    assert (tmp_path / LOCK).exists() and refused_to_another_process(tmp_path)
    release(tmp_path)
    assert not (tmp_path / LOCK).exists() and not HELD
    assert not refused_to_another_process(tmp_path)
    release(tmp_path)  # not held: nothing to do


def test_an_unreadable_lock_file_without_a_holder_is_taken(tmp_path):
    (tmp_path / LOCK).write_text("{not json")
    with holding(tmp_path, World()):
        assert json.loads((tmp_path / LOCK).read_text())["pid"] == os.getpid()
    assert not (tmp_path / LOCK).exists()


def test_holding_releases_on_error(tmp_path):
    with pytest.raises(KeyError):
        with holding(tmp_path, World()):
            raise KeyError("boom")
    assert not (tmp_path / LOCK).exists() and not HELD


def test_training_a_held_run_writes_nothing_and_a_finished_one_leaves_no_lock(tmp_path):
    config = load_config("default", [*TINY_CONFIG, "train.epochs=1"])
    with held_by_child(tmp_path / "run"):
        with pytest.raises(RunLocked):
            run.train(config, tmp_path / "run")
        assert sorted(p.name for p in (tmp_path / "run").iterdir()) == [LOCK]
    run.train(config, tmp_path / "run")
    assert not (tmp_path / "run" / LOCK).exists() and (tmp_path / "run" / "model.pt").exists()
    with pytest.raises(RunDirError):
        run.train(config, tmp_path / "run")
    assert not (tmp_path / "run" / LOCK).exists() and not HELD
    with held_by_child(tmp_path / "run"):
        with pytest.raises(RunLocked):
            run.resume(tmp_path / "run")


def test_reproduce_skips_a_run_another_process_holds_even_a_finished_one(tmp_path):
    """A run being trained, or finished and being evaluated by another process, is left
    alone and listed; the other rows go on."""
    experiment = EXPERIMENTS.get("tiny-table")
    busy = run_dir_of(tmp_path, experiment, "smoke", experiment.rows[0], 1)
    with held_by_child(busy):
        md, _ = reproduce("tiny-table", "smoke", [1], tmp_path)
        assert sorted(p.name for p in busy.iterdir()) == [LOCK]
    text = md.read_text()
    assert "**not run**: MMVAE seed 1 (held by another process)" in text
    assert table_cells(text)["MMVAE"][0] == "–" and table_cells(text)["MVAE"][0] != "–"
    reproduce("tiny-table", "smoke", [1], tmp_path)
    (busy / EVAL_FILE).unlink()
    with held_by_child(busy):
        md, _ = reproduce("tiny-table", "smoke", [1], tmp_path)
    assert not (busy / EVAL_FILE).exists() and "MMVAE seed 1 (held by another process)" in md.read_text()


def test_a_label_propagation_pipeline_another_process_runs_is_refused_untouched(tmp_path):
    from mmdgm.labelprop import Plan, label_propagation

    with held_by_child(tmp_path / "lp"):
        with pytest.raises(RunLocked, match="held by process"):
            label_propagation(Plan(config="default", related_fraction=0.5, overrides=list(TINY_CONFIG)),
                              tmp_path / "lp")
        assert sorted(p.name for p in (tmp_path / "lp").iterdir()) == [LOCK]


def test_a_result_is_written_over_what_eval_json_holds_now(tmp_path):
    """Two evaluations of one run with other metrics keep each other's results: each
    writes over the file as it is when the metric ends, not as it was at the start."""
    store_result(tmp_path, "a", {"x": 1}, {"K": 1})
    (tmp_path / EVAL_FILE).write_text(json.dumps({"a": {"x": 1}, "b": {"y": 2}, "_options": {"a": {"K": 1}, "b": {}}}))
    assert store_result(tmp_path, "c", {"z": 3}, {"n": 5}) == {"a": {"x": 1}, "b": {"y": 2}, "c": {"z": 3}}
    assert read_eval(tmp_path) == {"a": {"x": 1}, "b": {"y": 2}, "c": {"z": 3}}
    assert json.loads((tmp_path / EVAL_FILE).read_text())["_options"] == {"a": {"K": 1}, "b": {}, "c": {"n": 5}}
