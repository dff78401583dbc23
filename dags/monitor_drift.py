"""
### Monitor drift and the champion's quality

load → validate → drift → monitor_model → signal_drift, on `orchestration.monitor_schedule`.

Compares the current window (as of the run's date) with the champion's training window
(or, before the first champion, the window just before it), then scores the champion on the
current window's labelled rows it never trained on against its k-fold estimate
(`monitoring` in the config). When what was found is what `orchestration.retrain_on`
retrains for — drift (`always`, `drift`), a degraded champion (`degradation`), either
(`drift_or_degradation`) — `signal_drift` emits an event on the model's `drift_detected`
asset, carrying the drift share, the drifted features, the report's location, the cycle id,
the quality check and its `reasons`; `retrain_model` runs on that event. Otherwise: no event.
A validation failure fails the run, no event.
"""

from __future__ import annotations

from airflow.sdk import Asset, CronTriggerTimetable, Param, dag, task

from orchestration import runtime
from orchestration.checks import data_checks
from orchestration.notify import PipelineNotifier

CONFIG = runtime.parse_time_config()
DRIFT_DETECTED = Asset(runtime.drift_asset_name(CONFIG))


def signal_when_retrain_on_asks(context: dict, drift: dict, quality: dict) -> str | None:
    from orchestration import stages

    reasons = stages.retrain_reasons(context, drift, quality)
    if not reasons:
        return None
    context["ti"].xcom_push(key="event", value={**drift, "quality": quality, "reasons": reasons})
    return "signal_drift"


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
        event = context["ti"].xcom_pull(task_ids="monitor_model", key="event")
        context["outlet_events"][DRIFT_DETECTED].extra = event
        return event

    _, checked = data_checks("monitor", signal_when_retrain_on_asks)
    checked >> signal_drift()


monitor_drift()
