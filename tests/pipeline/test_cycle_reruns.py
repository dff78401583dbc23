"""Crash-safe, idempotent re-runs: real `pipeline` processes killed with SIGKILL, raced, starved of disk, given bad ids.

After any of these the cycle, run again, completes with exactly one MLflow run whose status says
what the cycle's does, at most one model version, one promotion-log row, and complete records.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa

from pipeline import promote, registry
from pipeline.config import load_config
from pipeline.validate import propose_suite, write_suite
from tests.conftest import small_frame, write_config

AS_OF = "2026-01-10"
CYCLE_ID = f"test_model-{AS_OF}"


def make_store(root: Path, **sections) -> Path:
    """A warehouse of ten days, an auto-approving config with small models, and its suite."""
    frame = small_frame(4000, days=10)
    engine = sa.create_engine(f"sqlite:///{root / 'warehouse.db'}")
    frame.to_sql("events", engine, index=False)
    engine.dispose()
    sections = {"training": {"params": {"n_estimators": 150, "max_depth": 4}},
                "promotion": {"approval": "auto", "database_url": f"sqlite:///{root / 'pipeline.db'}"}, **sections}
    path = write_config(root, windows={"current_days": 5, "initial_reference_days": 5, "min_rows": 100}, **sections)
    config = load_config(path, environ={})
    write_suite(propose_suite(config, frame), config.validation.suite)
    return path


def pipeline_command(config_path: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "pipeline", *args, "--config", str(config_path)]


def run(config_path: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(pipeline_command(config_path, *args), capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONUNBUFFERED": "1"})


def run_and_kill(config_path: Path, marker: str) -> str:
    """Run a cycle and SIGKILL the process as soon as its progress prints ``marker``; returns what it printed."""
    process = subprocess.Popen(pipeline_command(config_path, "run", "--as-of", AS_OF), stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    seen = []
    for line in process.stderr:
        seen.append(line)
        if marker in line:
            process.send_signal(signal.SIGKILL)
            break
    process.wait(timeout=60)
    assert process.returncode == -signal.SIGKILL, f"the cycle ended before {marker!r}:\n{''.join(seen)}"
    return "".join(seen)


def assert_one_complete_cycle(config_path: Path) -> None:
    config = load_config(config_path, environ={})
    runs = registry.find_runs(config, "retrain", max_results=10)
    assert [r.data.tags["cycle_id"] for r in runs] == [CYCLE_ID]
    assert (runs[0].info.status, runs[0].data.tags["cycle.status"]) == ("FINISHED", "promoted")
    assert [v.version for v in registry.list_versions(config)] == ["1"]
    assert registry.aliases(config) == {"champion": "1"}
    assert [(e.action, e.to_version) for e in promote.history(config)] == [("promote", "1")]
    logged = registry.client(config).search_logged_models([runs[0].info.experiment_id])
    assert [str(m.status) for m in logged] == ["READY"]
    run_dir = Path(config.storage.root) / config.model_name / CYCLE_ID
    for record in run_dir.glob("*.json"):
        json.loads(record.read_text())  # every record complete
    assert not list(run_dir.glob(".*.tmp"))
    assert json.loads((run_dir / "status.json").read_text())["status"] == "promoted"


def test_train_then_run_completes_the_same_cycle(tmp_path):
    """The documented workflow: `pipeline train` first, then `pipeline run` for the same day."""
    config_path = make_store(tmp_path)
    trained = run(config_path, "train", "--as-of", AS_OF)
    assert trained.returncode == 0, trained.stderr
    assert "PAUSED (stopped after gate)" in trained.stdout
    config = load_config(config_path, environ={})
    [paused] = registry.find_runs(config, "retrain")
    assert paused.info.status == "SCHEDULED"  # not FINISHED: stages are due

    again = run(config_path, "run", "--as-of", AS_OF)
    assert again.returncode == 0, again.stderr
    assert_one_complete_cycle(config_path)


# Each attempt is killed one step further on, so every attempt after the first also starts from what
# a killed one left: inside a stage, at a stage boundary, while the model is being logged, while promoting.
KILL_POINTS = ("[train] fold 2/3", "[train] done", "[register] logging the model", "[promote] started")


def test_a_cycle_killed_again_and_again_completes_when_run_once_more(tmp_path):
    config_path = make_store(tmp_path)
    config = load_config(config_path, environ={})
    for marker in KILL_POINTS:
        printed = run_and_kill(config_path, marker)
        [killed] = registry.find_runs(config, "retrain")
        assert killed.info.status == "RUNNING", printed  # the store never says a killed cycle finished
    shown = run(config_path, "show")
    assert shown.returncode == 0 and "INTERRUPTED" in shown.stdout, shown.stdout + shown.stderr

    again = run(config_path, "run", "--as-of", AS_OF)
    assert again.returncode == 0, again.stderr
    assert_one_complete_cycle(config_path)


def test_two_processes_on_one_cycle_one_runs_the_other_stops(tmp_path):
    config_path = make_store(tmp_path)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    processes = [subprocess.Popen(pipeline_command(config_path, "run", "--as-of", AS_OF), stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True, env=env) for _ in range(2)]
    results = [(p.wait(timeout=300), p.stdout.read() + p.stderr.read()) for p in processes]
    assert sorted(code for code, _ in results) == [0, 6], results
    [(_, loser)] = [r for r in results if r[0] == 6]
    # The holder writes its pid just after taking the lock: a loser that looks in between names no pid.
    running = f"cycle {CYCLE_ID} of 'test_model' is already running ("
    assert re.search(re.escape(running) + r"(pid \d+ on |held by another process\))", loser), loser
    assert "nothing was changed" in loser
    assert_one_complete_cycle(config_path)


@pytest.fixture
def tiny_disk(tmp_path):
    """A real 2 MiB tmpfs: writes on it fail with ENOSPC once it is full (the drift report alone is larger)."""
    mount = tmp_path / "tiny-disk"
    mount.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)], capture_output=True, text=True)
    if mounted.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=True)


def test_a_full_disk_stops_the_cycle_with_a_clear_error_and_intact_records(tmp_path, tiny_disk):
    config_path = make_store(tmp_path, storage={"root": str(tiny_disk / "runs")})
    result = run(config_path, "run", "--as-of", AS_OF)
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"cannot write drift.html of cycle {CYCLE_ID}" in result.stderr and "the storage is full" in result.stderr
    assert "Traceback" not in result.stderr
    run_dir = tiny_disk / "runs" / "test_model" / CYCLE_ID
    for record in run_dir.glob("*.json"):
        json.loads(record.read_text())  # never truncated, never empty
    assert not list(run_dir.glob(".*.tmp")) and not (run_dir / "drift.html").exists()
    shown = run(config_path, "show")
    assert shown.returncode == 0, shown.stderr
    assert "FAILED (StorageError: cannot write drift.html" in shown.stdout
    config = load_config(config_path, environ={})
    assert registry.list_versions(config) == [] and registry.aliases(config) == {}


@pytest.mark.parametrize("cycle_id", [pytest.param("../../../escaped", id="traversal"),
                                      pytest.param("it's", id="quote"), pytest.param("a/b", id="separator")])
def test_a_bad_cycle_id_is_refused_before_anything_is_written(tmp_path, cycle_id):
    config_path = make_store(tmp_path)
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    result = run(config_path, "run", "--as-of", AS_OF, "--cycle-id", cycle_id)
    assert result.returncode == 2 and f"cycle id {cycle_id!r} is not allowed" in result.stderr, result.stderr
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before
    assert not (tmp_path.parent / "escaped").exists()
    assert registry.find_runs(load_config(config_path, environ={}), "retrain") == []
