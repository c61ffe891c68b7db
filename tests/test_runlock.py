"""One training process per run: RUN/train.lock refuses a second trainer and is released."""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys

import pytest

from mmdgm import run
from mmdgm.config import load_config
from mmdgm.reproduce import EXPERIMENTS, reproduce
from mmdgm.reproduce.runner import run_dir_of
from mmdgm.train.distributed import World
from mmdgm.train.runlock import LOCK, RunLocked, acquire, holding, release
from mmdgm.train.trainer import RunDirError
from tests.conftest import TINY_CONFIG
from tests.test_reproduce import table_cells


def write_lock(run_dir, pid, host=None):
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / LOCK).write_text(json.dumps({"pid": pid, "host": host or socket.gethostname()}))


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def holder(run_dir):
    return json.loads((run_dir / LOCK).read_text())


def test_the_lock_names_this_process_and_is_released_only_by_it(tmp_path):
    acquire(tmp_path / "run")
    assert holder(tmp_path / "run") == {"pid": os.getpid(), "host": socket.gethostname()}
    with pytest.raises(RunLocked, match=rf"being trained by process {os.getpid()}"):
        acquire(tmp_path / "run")
    release(tmp_path / "run")
    assert not (tmp_path / "run" / LOCK).exists()
    write_lock(tmp_path / "other", os.getppid())
    release(tmp_path / "other")
    assert holder(tmp_path / "other")["pid"] == os.getppid()
    assert [p.name for p in (tmp_path / "run").iterdir()] == []


@pytest.mark.parametrize("host", [None, "another-machine"])
def test_a_live_or_unverifiable_holder_is_honoured(tmp_path, host):
    pid = os.getppid() if host is None else dead_pid()
    write_lock(tmp_path, pid, host)
    before = (tmp_path / LOCK).read_text()
    with pytest.raises(RunLocked, match=rf"process {pid} on .*delete the lock file"):
        acquire(tmp_path)
    assert (tmp_path / LOCK).read_text() == before


@pytest.mark.parametrize("content", ["dead", "{not json", "", '{"pid": "x"}'])
def test_a_stale_or_unreadable_lock_is_replaced_with_a_warning(tmp_path, caplog, content):
    if content == "dead":
        write_lock(tmp_path, dead_pid())
    else:
        (tmp_path / LOCK).write_text(content)
    with caplog.at_level(logging.WARNING, logger="mmdgm"):
        acquire(tmp_path)
    assert holder(tmp_path)["pid"] == os.getpid()
    assert "replacing the stale lock" in caplog.text


def test_holding_releases_on_error(tmp_path):
    with pytest.raises(KeyError):
        with holding(tmp_path, World()):
            assert holder(tmp_path)["pid"] == os.getpid()
            raise KeyError("boom")
    assert not (tmp_path / LOCK).exists()


def test_training_a_locked_run_writes_nothing_and_a_finished_one_leaves_no_lock(tmp_path):
    config = load_config("default", [*TINY_CONFIG, "train.epochs=1"])
    write_lock(tmp_path / "run", os.getppid())
    with pytest.raises(RunLocked):
        run.train(config, tmp_path / "run")
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == [LOCK]
    (tmp_path / "run" / LOCK).unlink()
    run.train(config, tmp_path / "run")
    assert not (tmp_path / "run" / LOCK).exists() and (tmp_path / "run" / "model.pt").exists()
    with pytest.raises(RunDirError):
        run.train(config, tmp_path / "run")
    assert not (tmp_path / "run" / LOCK).exists()
    write_lock(tmp_path / "run", os.getppid())
    with pytest.raises(RunLocked):
        run.resume(tmp_path / "run")


def test_reproduce_skips_a_run_another_process_trains_and_lists_it(tmp_path):
    experiment = EXPERIMENTS.get("tiny-table")
    busy = run_dir_of(tmp_path, experiment, "smoke", experiment.rows[0], 1)
    write_lock(busy, os.getppid())
    md, _ = reproduce("tiny-table", "smoke", [1], tmp_path)
    text = md.read_text()
    assert "**not run**: MMVAE seed 1 (being trained by another process)" in text
    assert table_cells(text)["MMVAE"][0] == "–" and table_cells(text)["MVAE"][0] != "–"
    assert sorted(p.name for p in busy.iterdir()) == [LOCK]


def test_a_label_propagation_pipeline_another_process_runs_is_refused_untouched(tmp_path):
    from mmdgm.labelprop import Plan, label_propagation

    write_lock(tmp_path / "lp", os.getppid())
    with pytest.raises(RunLocked, match="being trained by process"):
        label_propagation(Plan(config="default", related_fraction=0.5, overrides=list(TINY_CONFIG)), tmp_path / "lp")
    assert sorted(p.name for p in (tmp_path / "lp").iterdir()) == [LOCK]
