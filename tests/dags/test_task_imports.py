"""Each task's process imports only what its stage uses: the heavy libraries its code loads in a fresh interpreter.

What a task's code imports is found from its callable (orchestration/startup.py); each task is
then imported in a fresh interpreter, the DAG file first, as Airflow's task runner has it. MLflow
is in nearly every task: each one records its stage in the cycle's MLflow run (and the approval
tasks move aliases). The checks' heavy libraries stay in their own tasks.
"""

from __future__ import annotations

import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.dags.harness import DAGS

GX, EVIDENTLY, MLFLOW, XGBOOST, SKLEARN = "great_expectations", "evidently", "mlflow", "xgboost", "sklearn"
EXPECTED = {
    ("retrain_model", "load"): {MLFLOW},
    ("retrain_model", "validate"): {GX, MLFLOW},
    ("retrain_model", "drift"): {EVIDENTLY, MLFLOW, SKLEARN},  # Evidently imports scikit-learn itself
    ("retrain_model", "monitor_model"): {MLFLOW, SKLEARN},  # scores the champion (its XGBoost comes with the pickle)
    ("retrain_model", "train"): {MLFLOW, XGBOOST, SKLEARN},
    ("retrain_model", "no_training"): {MLFLOW},
    ("retrain_model", "gate"): {MLFLOW, SKLEARN},  # scikit-learn's metrics, when a champion is compared
    ("retrain_model", "register"): {MLFLOW, SKLEARN},  # the model's signature and its skops copy
    ("retrain_model", "route_approval"): {MLFLOW},
    ("retrain_model", "review"): {MLFLOW},
    ("retrain_model", "promote"): {MLFLOW},
    ("retrain_model", "record_rejection"): {MLFLOW},
    ("monitor_drift", "load"): {MLFLOW},
    ("monitor_drift", "validate"): {GX, MLFLOW},
    ("monitor_drift", "drift"): {EVIDENTLY, MLFLOW, SKLEARN},
    ("monitor_drift", "monitor_model"): {MLFLOW, SKLEARN},
    ("monitor_drift", "signal_drift"): {MLFLOW},  # only its notifier, when it names the registered version
}

_FIND = """
import json, sys
sys.path.insert(0, sys.argv[1])
from orchestration import startup
print(json.dumps({f"{dag_file}.{task_id}": startup.task_modules(task)
                  for dag_file in startup.DAG_FILES for task_id, task in startup.dag_tasks(dag_file).items()}))
"""


@pytest.fixture(scope="module")
def loaded() -> dict[tuple[str, str], list[str]]:
    """Per task, the heavy libraries in sys.modules after importing its modules in a fresh interpreter."""
    from orchestration import startup

    # Found in a child too: resolving the tasks' code imports it all, which this process need not pay.
    found = subprocess.run([sys.executable, "-c", _FIND, str(DAGS)], capture_output=True, text=True, check=True)
    modules = json.loads(found.stdout.strip().splitlines()[-1])

    def heavy(key: str) -> tuple[tuple[str, str], list[str]]:
        dag_file, task_id = key.split(".")
        return (dag_file, task_id), startup.heavy_in(startup.fresh_imports(dag_file, modules[key])["modules"])

    with ThreadPoolExecutor(max_workers=2) as pool:
        return dict(pool.map(heavy, modules))


def test_every_task_has_an_expectation(loaded):
    assert set(loaded) == set(EXPECTED)


@pytest.mark.parametrize(("dag_file", "task_id"), [pytest.param(*key, id=".".join(key)) for key in EXPECTED])
def test_a_task_imports_only_what_its_stage_uses(loaded, dag_file, task_id):
    assert set(loaded[dag_file, task_id]) == EXPECTED[dag_file, task_id]


def test_the_dag_file_alone_imports_none_of_them():
    """What every task pays before its own code: the DAG file's parse."""
    from orchestration import startup

    for dag_file in startup.DAG_FILES:
        assert startup.heavy_in(startup.fresh_imports(dag_file, [])["modules"]) == [], dag_file
