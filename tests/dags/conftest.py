"""Fixtures of the DAG tests; importing the harness first sets up Airflow's environment."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.dags.harness import AIRFLOW_ENV, AIRFLOW_HOME


@pytest.fixture(scope="session")
def airflow_db() -> Path:
    """The session's metadata DB, migrated once (dag.test() needs the tables)."""
    subprocess.run(
        [str(Path(sys.executable).parent / "airflow"), "db", "migrate"], check=True, capture_output=True,
        env={**os.environ, **AIRFLOW_ENV},
    )
    return AIRFLOW_HOME / "airflow.db"

