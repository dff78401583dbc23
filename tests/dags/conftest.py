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


@pytest.fixture(scope="session")
def warehouse(tmp_path_factory) -> str:
    """The demo warehouse (dated covariate shift, new category and concept drift), seeded once per session."""
    from pipeline import demo

    url = f"sqlite:///{tmp_path_factory.mktemp('warehouse') / 'warehouse.db'}"
    demo.seed_demo(url)
    return url
