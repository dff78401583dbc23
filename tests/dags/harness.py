"""Airflow for the DAG tests: one temporary AIRFLOW_HOME per session, DAG runs with dag.test(), answering approvals.

Airflow reads its settings when first imported, so the environment is set when this
module is imported (by tests/dags/conftest.py), before any test imports Airflow.
"""

from __future__ import annotations

import atexit
import os
import secrets
import shutil
import sys
import tempfile
import threading
import time
from datetime import date
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
DAGS = ROOT / "dags"
DEMO_CONFIG = ROOT / "pipeline" / "configs" / "demo.yaml"

AIRFLOW_HOME = Path(tempfile.mkdtemp(prefix="airflow-home-"))
atexit.register(shutil.rmtree, AIRFLOW_HOME, ignore_errors=True)
AIRFLOW_ENV = {
    "AIRFLOW_HOME": str(AIRFLOW_HOME),
    "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS),
    "AIRFLOW__CORE__PLUGINS_FOLDER": str(ROOT / "plugins"),
    "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
    "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
    "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(64),
    "AIRFLOW__LOGGING__LOGGING_LEVEL": "WARNING",
}
os.environ.update(AIRFLOW_ENV)
# The dag processor and workers put the DAG bundle's folder on sys.path; DagBag in a test does not.
sys.path.insert(0, str(DAGS))


def dag_config(directory: Path, warehouse_url: str, name: str = "config.yaml", **sections) -> Path:
    """The demo config made small and fast (14-day windows, 3 folds, 60 trees), every store inside ``directory``."""
    from tests.conftest import migrated_mlflow_store

    raw = yaml.safe_load(DEMO_CONFIG.read_text())
    raw["source"]["url"] = warehouse_url
    raw["validation"]["suite"] = str(DEMO_CONFIG.parent / raw["validation"]["suite"])
    raw["windows"] = {"current_days": 14, "initial_reference_days": 14, "min_rows": 5000}
    raw["drift"]["sample_rows"] = 10_000
    raw["training"]["params"] = {"n_estimators": 60, "max_depth": 4, "learning_rate": 0.2}
    raw["evaluation"]["k"] = 3
    raw["registry"] = {**raw["registry"], "tracking_uri": f"sqlite:///{directory / 'mlflow.db'}",
                       "artifact_root": str(directory / "artifacts")}
    raw["promotion"] = {"approval": "manual", "database_url": f"sqlite:///{directory / 'pipeline.db'}"}
    raw["storage"] = {"root": str(directory / "runs")}
    raw["orchestration"]["retry_delay_s"] = 1
    for section, value in sections.items():
        raw[section] = {**raw.get(section, {}), **value} if isinstance(value, dict) else value
    directory.mkdir(parents=True, exist_ok=True)
    if not (directory / "mlflow.db").exists():
        migrated_mlflow_store(directory / "mlflow.db")
    path = directory / name
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def run_dag(dag_id: str, conf: dict | None = None):
    """``dag.test()`` on the DAG as parsed from the dags folder; returns the finished DagRun."""
    from airflow.dag_processing.dagbag import DagBag

    dag = DagBag(dag_folder=DAGS / f"{dag_id}.py").get_dag(dag_id)
    return dag.test(run_conf=conf or {})


def task_states(dag_run) -> dict[str, str]:
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        tis = session.scalars(
            select(TaskInstance).where(TaskInstance.dag_id == dag_run.dag_id, TaskInstance.run_id == dag_run.run_id)
        ).all()
        return {ti.task_id: str(getattr(ti.state, "value", ti.state)) for ti in tis}


class Reviewer:
    """Answers the review task the way the REST API does, from a thread, while ``dag.test()`` blocks on it.

    ``action`` is ``Approve``, ``Reject`` or ``timeout`` (the scheduler's timeout sweep, run as the scheduler runs it).
    """

    def __init__(self, action: str, user: str = "alice", comment: str = ""):
        # Models and mappers are set up here, in the main thread: importing them first from a thread deadlocks.
        import airflow.models  # noqa: F401
        from sqlalchemy.orm import configure_mappers

        configure_mappers()
        self.action, self.user, self.comment = action, user, comment
        self.body: str | None = None
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._answer, daemon=True)

    def __enter__(self) -> Reviewer:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._thread.join(timeout=5)
        if self.error:
            raise self.error

    def _answer(self) -> None:
        try:
            self._answer_when_waiting()
        except BaseException as exc:  # surfaced in __exit__
            self.error = exc

    def _answer_when_waiting(self, timeout_s: float = 300) -> None:
        from airflow.models.hitl import HITLDetail
        from airflow.models.taskinstance import TaskInstance
        from airflow.models.trigger import handle_event_submit
        from airflow.triggers.base import TriggerEvent
        from airflow.utils import timezone
        from airflow.utils.session import create_session
        from airflow.utils.state import TaskInstanceState
        from sqlalchemy import select, update

        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with create_session() as session:
                ti = session.scalars(
                    select(TaskInstance).where(TaskInstance.task_id == "review",
                                               TaskInstance.state == TaskInstanceState.AWAITING_INPUT)
                ).first()
                if ti is None:
                    time.sleep(0.5)
                    continue
                detail = session.get(HITLDetail, ti.id)
                self.body = detail.body
                if self.action == "timeout":
                    session.execute(update(TaskInstance).where(TaskInstance.id == ti.id)
                                    .values(trigger_timeout=timezone.utcnow().replace(year=2000)))
                    session.commit()
                    _run_scheduler_timeout_sweep()
                    return
                detail.responded_by = {"id": self.user, "name": self.user}
                detail.responded_at = timezone.utcnow()
                detail.chosen_options = [self.action]
                detail.params_input = {"comment": self.comment}
                session.add(detail)
                handle_event_submit(TriggerEvent(detail.as_resume_event_payload()), task_instance=ti, session=session)
                return
        raise TimeoutError("the review task never reached awaiting_input")


def _run_scheduler_timeout_sweep() -> None:
    from airflow.jobs.job import Job
    from airflow.jobs.scheduler_job_runner import SchedulerJobRunner

    SchedulerJobRunner(job=Job()).check_awaiting_input_timeouts()


def as_of(day: str) -> dict:
    return {"as_of": date.fromisoformat(day).isoformat()}
