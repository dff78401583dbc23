"""The cycle lock on SQLite (flock) and PostgreSQL (advisory lock): held by a real process, freed when it is killed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from pipeline import locks
from pipeline.config import load_config
from pipeline.errors import ConfigError, CycleBusy
from tests.conftest import write_config
from tests.integration.services import postgres_database

HOLD = """
import sys, time
from pipeline import locks
from pipeline.config import load_config
with locks.cycle_lock(load_config(sys.argv[1], environ={}), "cycle-1"):
    print("held", flush=True)
    time.sleep(600)
"""


@pytest.fixture(params=[pytest.param("sqlite", id="sqlite-flock"), pytest.param("postgresql", id="postgresql-advisory")])
def config_path(request, tmp_path):
    if request.param == "sqlite":
        yield write_config(tmp_path)
        return
    with postgres_database("locks") as url:
        yield write_config(tmp_path, promotion={"approval": "manual", "database_url": url})


def hold_in_another_process(config_path) -> subprocess.Popen:
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(config_path)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    return holder


def test_a_second_process_is_turned_away_until_the_holder_is_killed(config_path):
    config = load_config(config_path, environ={})
    holder = hold_in_another_process(config_path)
    try:
        assert locks.is_running(config, "cycle-1") and not locks.is_running(config, "cycle-2")
        with pytest.raises(CycleBusy, match="cycle cycle-1 of 'test_model' is already running"):
            with locks.cycle_lock(config, "cycle-1"):
                pytest.fail("entered a cycle another process holds")
        with locks.cycle_lock(config, "cycle-2"):
            pass  # other cycles are not blocked
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    with locks.cycle_lock(config, "cycle-1", wait_s=10):  # the kernel or the server freed it with the process
        assert locks.is_running(config, "cycle-1")
    assert not locks.is_running(config, "cycle-1")


def test_waiting_takes_the_lock_once_the_holder_ends(config_path):
    config = load_config(config_path, environ={})
    holder = hold_in_another_process(config_path)
    started = time.monotonic()
    subprocess.Popen(["sh", "-c", f"sleep 1; kill -9 {holder.pid}"])
    with locks.cycle_lock(config, "cycle-1", wait_s=30):
        waited = time.monotonic() - started
    holder.wait()
    assert 0.8 < waited < 30


def test_the_lock_is_reentrant_within_a_process(config_path):
    config = load_config(config_path, environ={})
    with locks.cycle_lock(config, "cycle-1"), locks.cycle_lock(config, "cycle-1"):
        assert locks.is_running(config, "cycle-1")
    assert not locks.is_running(config, "cycle-1")


def test_the_holder_is_named_on_sqlite(tmp_path):
    path = write_config(tmp_path)
    holder = hold_in_another_process(path)
    try:
        with pytest.raises(CycleBusy, match=rf"already running \(pid {holder.pid} on "):
            with locks.cycle_lock(load_config(path, environ={}), "cycle-1"):
                pass
    finally:
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait()


def test_a_database_without_locks_is_a_config_error(tmp_path):
    config = load_config(write_config(tmp_path, promotion={"approval": "manual",
                                                           "database_url": "mysql+pymysql://u:secret@db/log"}), environ={})
    with pytest.raises(ConfigError, match=r"PostgreSQL or SQLite, got mysql\+pymysql://u:\*\*\*@db/log"):
        with locks.cycle_lock(config, "cycle-1"):
            pass
