"""
### Monitor drift

load → validate → drift → signal_drift, on `orchestration.monitor_schedule`.

Compares the current window (as of the run's date) with the champion's training window
(or, before the first champion, the window just before it). When the dataset drifts,
`signal_drift` emits an event on the model's `drift_detected` asset, carrying the drift
share, the drifted features, the report's location and the cycle id; `retrain_model`
runs on that event. No drift: no event. A validation failure fails the run, no event.
"""

from __future__ import annotations

from airflow.sdk import Asset, CronTriggerTimetable, Param, dag, task

from orchestration import runtime
from orchestration.checks import data_checks
from orchestration.notify import PipelineNotifier

CONFIG = runtime.parse_time_config()
DRIFT_DETECTED = Asset(runtime.drift_asset_name(CONFIG))


def signal_when_drifted(context: dict, summary: dict) -> str | None:
    return "signal_drift" if summary["dataset_drift"] else None


@dag(
    dag_id="monitor_drift",
    schedule=CronTriggerTimetable(CONFIG.orchestration.monitor_schedule, timezone=CONFIG.orchestration.timezone),
    # No start_date on purpose: with one, unpausing starts the latest tick's run at once (catchup skips only
    # the older ones); without, the first scheduled run waits for the next tick.
    catchup=False,
    max_active_runs=1,
    default_args=runtime.default_args(CONFIG),
    tags=["ml", "drift", CONFIG.model_name],
    doc_md=__doc__,
    params={
        "as_of": Param(None, type=["null", "string"], format="date", title="As of",
                       description="Last day of the window to check. Empty: the schedule's rule."),
    },
)
def monitor_drift():
    @task(outlets=[DRIFT_DETECTED], on_success_callback=PipelineNotifier("drift_detected", kind="monitor"))
    def signal_drift(**context):
        summary = context["ti"].xcom_pull(task_ids="drift", key="summary")
        context["outlet_events"][DRIFT_DETECTED].extra = summary
        return summary

    _, checked = data_checks("monitor", signal_when_drifted)
    checked >> signal_drift()


monitor_drift()
