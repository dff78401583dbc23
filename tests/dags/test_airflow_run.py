"""``make run``'s script (scripts/airflow-run): a verdict is the job done, any other failure is not."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.dags.harness import AIRFLOW_ENV, ROOT, dag_config


def airflow_run(config: Path, conf: dict | str) -> subprocess.CompletedProcess:
    env = {**os.environ, **AIRFLOW_ENV, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    return subprocess.run([str(ROOT / "scripts" / "airflow-run"), str(config), conf if isinstance(conf, str) else
                           json.dumps(conf)], env=env, capture_output=True, text=True, timeout=600, cwd=ROOT)


@pytest.mark.parametrize("conf, exit_code, printed", [
    # Two months after the data ends: an empty window, which validation stops (the DagRun fails).
    pytest.param({"as_of": "2026-08-31"}, 0, "VALIDATION_STOPPED", id="validation-stopped-is-a-verdict"),
    pytest.param({"as_of": "2026-02-30"}, 1, "retrain_model failed before it started a cycle", id="no-cycle"),
])
def test_make_run_exits_zero_on_a_verdict_and_one_on_a_failure(tmp_path, airflow_db, warehouse, conf, exit_code,
                                                                printed):
    result = airflow_run(dag_config(tmp_path, warehouse), conf)

    assert result.returncode == exit_code, result.stdout + result.stderr
    assert printed in result.stdout, result.stdout
