"""load → validate → drift → monitor_model: the first four tasks of both DAGs, made by one factory.

``load`` starts the run's cycle and returns its handle; the tasks after it take that handle
as an argument, so the graph shows what flows where. ``monitor_model`` checks the champion's
live quality and is a branch: the DAG passes the function that picks what follows from the
drift and quality summaries.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from airflow.sdk import task
from airflow.sdk.definitions.xcom_arg import XComArg

from orchestration.links import with_report_link

AfterChecks = Callable[[dict, dict[str, Any], dict[str, Any]], str | None]


def data_checks(kind: str, after_checks: AfterChecks) -> tuple[XComArg, XComArg]:
    """Add the four tasks to the DAG being defined; returns the cycle's handle and the branch after the checks."""

    @task(task_id="load")
    def load(**context) -> dict[str, Any]:
        from orchestration import stages

        return stages.load(context, kind)

    @task(task_id="validate")
    def validate(handle: dict[str, Any], **context) -> dict[str, Any]:
        from orchestration import stages

        return stages.validate(context, handle)

    @task(task_id="drift")
    def drift(handle: dict[str, Any], **context) -> dict[str, Any]:
        from orchestration import stages

        return stages.drift(context, handle)

    @task.branch(task_id="monitor_model")
    def monitor_model(handle: dict[str, Any], drift_summary: dict[str, Any], **context) -> str | None:
        from orchestration import stages

        summary = stages.quality(context, handle)
        context["ti"].xcom_push(key="summary", value=summary)
        return after_checks(context, drift_summary, summary)

    handle = load()
    validated = with_report_link(validate(handle), "validation", kind)
    drifted = with_report_link(drift(handle), "drift", kind)
    validated >> drifted
    return handle, monitor_model(handle, drifted)
