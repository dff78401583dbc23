"""Airflow glue shared by the DAGs: the config, a DAG run's cycle, the source connection, and verdicts vs faults.

Only cheap imports at module level (the config model: pydantic and yaml, which Airflow
loads anyway); the pipeline's stages are imported inside the functions that run them.
"""

from __future__ import annotations

import logging
import os
import re
from contextlib import contextmanager
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from pipeline.cli import DEMO_CONFIG
from pipeline.config import Config, load_config

CONFIG_ENV = "PIPELINE_CONFIG"
FAMILIES = {
    "classification": ["xgboost", "hist_gradient_boosting", "random_forest", "logistic_regression"],
    "regression": ["xgboost", "hist_gradient_boosting", "random_forest", "ridge"],
}
TRIGGERS = {"scheduled": "nightly", "asset_triggered": "drift", "manual": "manual"}
log = logging.getLogger("pipeline.dags")


def config_path() -> Path:
    return Path(os.environ.get(CONFIG_ENV) or DEMO_CONFIG)


def parse_time_config() -> Config:
    """The config as the DAG files see it when parsed: schedules, names and the trigger form's defaults."""
    return load_config(config_path())


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
    config = load_config(config_path())
    if params.get("family"):
        config.training.family = params["family"]
    if params.get("k"):
        config.evaluation.k = int(params["k"])
    if config.source.connection_id:
        url = connection_url(config.source.connection_id)
        if url:
            config.source.url = url
    return config


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
    return f"{config.model_name}-{kind}-{re.sub(r'[^A-Za-z0-9_.-]+', '-', run_id)}".rstrip("-")


def resolve_as_of(config: Config, context: dict) -> date:
    """The form's date; else a drift event's date; else the last full day before a scheduled run; else the newest data."""
    from pipeline.data import latest_day

    dag_run, params = context["dag_run"], context["params"]
    if params.get("as_of"):
        return date.fromisoformat(params["as_of"])
    event_days = [e.extra["as_of"] for e in dag_run.consumed_asset_events if e.extra.get("as_of")]
    if event_days:
        return date.fromisoformat(max(event_days))
    if getattr(dag_run.run_type, "value", dag_run.run_type) == "scheduled" and config.orchestration.scheduled_as_of == "previous_day":
        import pendulum

        scheduled = pendulum.instance(dag_run.logical_date or dag_run.run_after).in_timezone(config.orchestration.timezone)
        return scheduled.date() - timedelta(days=1)
    return latest_day(config.source)


def trigger_of(context: dict) -> dict[str, Any]:
    """What started this run, as recorded in the cycle's ``trigger.json``."""
    dag_run, params = context["dag_run"], context["params"]
    run_type = getattr(dag_run.run_type, "value", dag_run.run_type)
    return {
        "kind": TRIGGERS.get(run_type, run_type),
        "dag_id": dag_run.dag_id,
        "run_id": dag_run.run_id,
        "user": dag_run.triggering_user_name,
        "note": params.get("note") or None,
        "events": [
            {"asset": e.asset.name, "source": f"{e.source_dag_id}/{e.source_run_id}", "extra": dict(e.extra)}
            for e in dag_run.consumed_asset_events
        ],
    }


@contextmanager
def verdicts_not_retried():
    """A stopped validation, a bad config or a refused promotion is a verdict: fail now, no retries."""
    from airflow.sdk.exceptions import AirflowFailException

    from pipeline.errors import ConfigError, PromotionRefused, ValidationStopped

    try:
        yield
    except (ValidationStopped, ConfigError, PromotionRefused) as exc:
        raise AirflowFailException(str(exc)) from None


def start_cycle(context: dict, kind: str):
    """The first task: resolve the as-of date, open the run's cycle, record its trigger."""
    from pipeline.cycle import open_cycle

    with verdicts_not_retried():
        config = task_config(context["params"])
        as_of = resolve_as_of(config, context)
        trigger = trigger_of(context)
        cycle = open_cycle(
            config, as_of, cycle_id_for(config, kind, context["dag_run"].run_id), progress=log.info, kind=kind,
            tags={"airflow.dag_id": trigger["dag_id"], "airflow.run_id": trigger["run_id"], "trigger": trigger["kind"]},
        )
        cycle.write_json("trigger.json", trigger)
        cycle.storage.push()
    return cycle


def reopen_cycle(context: dict, kind: str):
    """A later task: the cycle the first task opened (found through its XCom, on any worker)."""
    from pipeline.cycle import open_cycle

    handle = context["ti"].xcom_pull(task_ids="load")
    with verdicts_not_retried():
        config = task_config(context["params"])
        return open_cycle(config, date.fromisoformat(handle["as_of"]), handle["cycle_id"], progress=log.info, kind=kind)


def handle(cycle) -> dict[str, Any]:
    """What XCom carries about a cycle: where it is, never its data."""
    return {"cycle_id": cycle.cycle_id, "as_of": cycle.as_of.isoformat(), "run_dir": cycle.storage.location,
            "mlflow_run_id": cycle.run_id}
