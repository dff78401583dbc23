"""Airflow glue shared by the DAGs: the config, a DAG run's cycle, the source connection, and verdicts vs faults.

Only cheap imports at module level (the config model: pydantic and yaml, which Airflow
loads anyway); the pipeline's stages are imported inside the functions that run them.
"""

from __future__ import annotations

import logging
import re
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date, timedelta
from functools import lru_cache
from typing import Any

from pipeline import config as pipeline_config
from pipeline.config import Config
from pipeline.families import names_for

TRIGGERS = {"scheduled": "nightly", "asset_triggered": "drift", "manual": "manual"}
log = logging.getLogger("pipeline.dags")


@lru_cache(maxsize=4)
def _file_config(path: str, modified_ns: int) -> Config:
    """The config file, parsed once per process (and again only when the file changes)."""
    return pipeline_config.load_config(path)


def _config_file_key() -> tuple[str, int]:
    path = pipeline_config.default_config_path()
    return str(path), path.stat().st_mtime_ns if path.exists() else 0


def parse_time_config() -> Config:
    """The config as the DAG files see it when parsed: schedules, names and the trigger form's defaults."""
    return _file_config(*_config_file_key()).model_copy(deep=True)


def families_for(task: str) -> list[str]:
    """The trigger form's choices of model family: the families table's for the config's task."""
    return names_for(task)


def drift_asset_name(config: Config) -> str:
    return f"{config.model_name}.drift_detected"


def default_args(config: Config) -> dict[str, Any]:
    from orchestration.notify import PipelineNotifier

    orchestration = config.orchestration
    return {
        "owner": orchestration.owner,
        "retries": orchestration.retries,
        "retry_delay": timedelta(seconds=orchestration.retry_delay_s),
        "retry_exponential_backoff": 2.0,
        "max_retry_delay": timedelta(seconds=orchestration.max_retry_delay_s),
        "on_failure_callback": PipelineNotifier("task_failed"),
    }


def task_config(params: dict[str, Any]) -> Config:
    """The config a task runs with: the file, the trigger form's overrides, and the source Connection."""
    trials = params.get("tune_trials")
    return _task_config(*_config_file_key(), params.get("family") or None, int(params["k"]) if params.get("k") else None,
                        None if trials is None else int(trials))


@lru_cache(maxsize=4)
def _task_config(path: str, modified_ns: int, family: str | None, k: int | None, trials: int | None) -> Config:
    config = _file_config(path, modified_ns)
    source = config.source
    url = connection_url(source.connection_id) if source.connection_id else None
    training = config.training.model_copy(update={"family": family} if family else {})
    if trials is not None:
        training.search = training.search.model_copy(update={"trials": trials})
    return config.model_copy(update={
        "training": training,
        "evaluation": config.evaluation.model_copy(update={"k": k} if k else {}),
        "source": source.model_copy(update={"url": url} if url else {}),
    })


SQLALCHEMY_DRIVERS = {"postgres": "postgresql+psycopg", "postgresql": "postgresql+psycopg", "mysql": "mysql+pymysql"}


def connection_url(conn_id: str) -> str | None:
    """A SQLAlchemy URL from an Airflow Connection, or None when no such Connection exists (use the config's URL)."""
    from airflow.sdk import BaseHook
    from airflow.sdk.exceptions import AirflowNotFoundException
    from sqlalchemy.engine import URL

    try:
        conn = BaseHook.get_connection(conn_id)
    except AirflowNotFoundException:
        log.info("no Airflow Connection %r: reading the source from the config's url", conn_id)
        return None
    if conn.conn_type == "sqlite":
        return f"sqlite:///{conn.host}"
    url = URL.create(
        SQLALCHEMY_DRIVERS.get(conn.conn_type, conn.conn_type), username=conn.login, password=conn.password,
        host=conn.host, port=conn.port, database=conn.schema,
    )
    return url.render_as_string(hide_password=False)


def cycle_id_for(config: Config, kind: str, run_id: str) -> str:
    """One cycle per DAG run: clearing and re-running its tasks finds the same run directory and MLflow run."""
    return f"{config.model_name}-{kind}-{re.sub(r'[^A-Za-z0-9_.-]+', '-', run_id)}".rstrip("-")[:200]


def resolve_as_of(config: Config, context: dict) -> date:
    """The form's date; else a drift event's date; else the last full day before a scheduled run; else the newest data."""
    from pipeline.data import latest_present_day

    dag_run, params = context["dag_run"], context["params"]
    if params.get("as_of"):
        return date.fromisoformat(params["as_of"])
    event_days = [e.extra["as_of"] for e in dag_run.consumed_asset_events if e.extra.get("as_of")]
    if event_days:
        return date.fromisoformat(max(event_days))
    scheduled_run = getattr(dag_run.run_type, "value", dag_run.run_type) == "scheduled"
    if scheduled_run and config.orchestration.scheduled_as_of == "previous_day":
        import pendulum

        scheduled = pendulum.instance(dag_run.logical_date or dag_run.run_after).in_timezone(config.orchestration.timezone)
        return scheduled.date() - timedelta(days=1)
    day, note = latest_present_day(config, date.today())
    if note:
        logging.getLogger(__name__).warning("as of latest %s", note)
    return day


def trigger_of(context: dict):
    """What started this run, as the cycle records it."""
    from pipeline.record import Trigger, TriggerEvent

    dag_run, params = context["dag_run"], context["params"]
    run_type = getattr(dag_run.run_type, "value", dag_run.run_type)
    kind = _events_kind(dag_run.consumed_asset_events) if run_type == "asset_triggered" else TRIGGERS.get(run_type, run_type)
    return Trigger(
        kind=kind, user=dag_run.triggering_user_name, dag_id=dag_run.dag_id,
        run_id=dag_run.run_id, note=params.get("note") or None,
        events=[TriggerEvent(e.asset.name, f"{e.source_dag_id}/{e.source_run_id}", dict(e.extra))
                for e in dag_run.consumed_asset_events],
    )


def _events_kind(events) -> str:
    """What the monitoring events reported: drift, degradation or drift+degradation (an event without reasons: drift)."""
    reasons = {reason for event in events for reason in event.extra.get("reasons", ["drift"])}
    return "+".join(reason for reason in ("drift", "degradation") if reason in reasons) or TRIGGERS["asset_triggered"]


@contextmanager
def verdicts_not_retried() -> Iterator[None]:
    """A bad config or a refused promotion fails now: retrying cannot change it."""
    from airflow.sdk.exceptions import AirflowFailException

    from pipeline.errors import ConfigError, PromotionRefused

    try:
        yield
    except (ConfigError, PromotionRefused) as exc:
        raise AirflowFailException(str(exc)) from None


@contextmanager
def started_cycle(context: dict, kind: str, trigger):
    """The first task's cycle: the as-of date resolved, the run's cycle started and held, its trigger recorded."""
    from pipeline.cycle import failures_recorded, open_cycle

    with verdicts_not_retried(), shims_quiet():
        config = task_config(context["params"])
        as_of = resolve_as_of(config, context)
        cycle_id = cycle_id_for(config, kind, context["dag_run"].run_id)
        with open_cycle(config, as_of, cycle_id, kind=kind, trigger=trigger, progress=log.info) as cycle, \
                failures_recorded(cycle):
            yield cycle


@contextmanager
def shims_quiet() -> Iterator[None]:
    """No DeprecatedImportWarning while a stage runs: pickle finds a function's module by asking every loaded
    module for its name (``pickle.whichmodule``, for scipy's ufuncs in a model), and each of Airflow's
    deprecated-module shims answers such a probe with a warning: 1,160 log lines in one ``train`` task. The
    pipeline never imports Airflow, so inside a stage every such warning is one of those probes."""
    from airflow.utils.deprecation_tools import DeprecatedImportWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecatedImportWarning)
        yield


@contextmanager
def held_cycle(context: dict, handle: dict[str, Any]):
    """A later task's cycle, held while the task works on it (found from the first task's handle, on any worker)."""
    from pipeline.cycle import failures_recorded, resume_cycle

    with verdicts_not_retried(), shims_quiet():
        config = task_config(context["params"])
        with resume_cycle(config, handle["cycle_id"], handle["kind"], progress=log.info) as cycle, \
                failures_recorded(cycle):
            yield cycle


def recorded_cycle(context: dict, kind: str):
    """The run's cycle, read-only (notifications, the approval form): its id follows from the run id."""
    from pipeline.record import CycleRecord

    config = task_config(context["params"])
    return CycleRecord.find(config, cycle_id_for(config, kind, context["ti"].run_id), (kind,))


def handle(cycle) -> dict[str, Any]:
    """What XCom carries about a cycle: where it is, never its data."""
    return {"cycle_id": cycle.cycle_id, "kind": cycle.kind, "as_of": cycle.as_of.isoformat(),
            "run_dir": cycle.storage.location, "mlflow_run_id": cycle.run_id}
