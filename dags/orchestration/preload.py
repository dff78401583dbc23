"""What a LocalExecutor's task processes start with: the libraries the stages use, imported once.

Each task runs in a process of its own. Forked from a worker that has imported nothing of the
pipeline, it paid 1-4.5 s to import pandas, scikit-learn, XGBoost, MLflow (its SQL store, loaded
on first use, another 0.9 s), Great Expectations or Evidently before its stage began (``make bench``
measures it). Airflow 3.3 can start its LocalExecutor workers from a forkserver that imports
modules first (``[scheduler] mp_start_method = forkserver``, ``[core] mp_forkserver_preload``):
every task is then forked with them in memory, shared copy-on-write. Only libraries: the
pipeline's own code is imported by each task, so an edit reaches the next task without
restarting the scheduler.

``python -m orchestration.preload`` prints the modules as ``[core] mp_forkserver_preload`` takes them
(scripts/airflow-env.sh exports it).
"""

from __future__ import annotations

MODULES = (
    "pandas",
    "pyarrow.parquet",
    "sklearn",
    "xgboost",
    "mlflow",
    "mlflow.store.tracking.sqlalchemy_store",
    "mlflow.store.model_registry.sqlalchemy_store",
    "great_expectations",
    "evidently",
)


def forkserver_settings() -> dict[str, str]:
    """The two Airflow settings, as environment variables."""
    return {"AIRFLOW__SCHEDULER__MP_START_METHOD": "forkserver", "AIRFLOW__CORE__MP_FORKSERVER_PRELOAD": ",".join(MODULES)}


if __name__ == "__main__":
    print(forkserver_settings()["AIRFLOW__CORE__MP_FORKSERVER_PRELOAD"])
