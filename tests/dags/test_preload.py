"""The libraries a LocalExecutor's forkserver imports for every task: each one exists, and the project's Airflow asks
for them."""

from __future__ import annotations

import os
import subprocess
import sys

from orchestration import preload
from orchestration.servers import ROOT


def test_every_preloaded_module_imports():
    # multiprocessing's forkserver skips a module that fails to import without a word: a typo would cost every task.
    imported = subprocess.run([sys.executable, "-c", "; ".join(f"import {module}" for module in preload.MODULES)],
                              capture_output=True, text=True)
    assert imported.returncode == 0, imported.stderr


def test_the_projects_airflow_starts_tasks_from_the_preloading_forkserver(tmp_path):
    keys = sorted(preload.forkserver_settings())
    shown = subprocess.run(["bash", "-c", "source scripts/airflow-env.sh && " + " && ".join(f'echo "${key}"' for key in keys)],
                           cwd=ROOT, env={**os.environ, "AIRFLOW_HOME": str(tmp_path)},
                           capture_output=True, text=True, check=True)
    assert shown.stdout.splitlines() == [preload.forkserver_settings()[key] for key in keys]
