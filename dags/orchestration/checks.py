"""load → validate → drift: the first three tasks of both DAGs, made by one factory.

``load`` starts the run's cycle and returns its handle; the tasks after it take that handle
as an argument, so the graph shows what flows where. ``drift`` is a branch: the DAG passes
the function that picks what follows from the drift summary.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from airflow.sdk import task
from airflow.sdk.definitions.xcom_arg import XComArg

from orchestration.links import with_report_link

AfterDrift = Callable[[dict, dict[str, Any]], str | None]


def data_checks(kind: str, after_drift: AfterDrift) -> tuple[XComArg, XComArg]:
    """Add the three tasks to the DAG being defined; returns the cycle's handle and the drift branch."""

    @task(task_id="load")
    def load(**context) -> dict[str, Any]:
        from orchestration import stages

        return stages.load(context, kind)

    @task(task_id="validate")
    def validate(handle: dict[str, Any], **context) -> dict[str, Any]:
        from orchestration import stages

        return stages.validate(context, handle)

    @task.branch(task_id="drift")
    def drift(handle: dict[str, Any], **context) -> str | None:
        from orchestration import stages

        summary = stages.drift(context, handle)
        context["ti"].xcom_push(key="summary", value=summary)
        return after_drift(context, summary)

    handle = load()
    validated = with_report_link(validate(handle), "validation", kind)
    checked = with_report_link(drift(handle), "drift", kind)
    validated >> checked
    return handle, checked
