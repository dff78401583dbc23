"""
### Retrain the model: nightly, on drift or degradation, or by hand

load → validate → drift → monitor_model → train (k-fold) → gate → register (`challenger`) → approval → promote

* **When**: every night (`orchestration.retrain_schedule`) *and* whenever `monitor_drift`
  emits its event (drift, or a degraded champion, as `orchestration.retrain_on` says); or from
  the trigger form. With `retrain_on` other than `always`, a run trains only when its own checks
  find what `retrain_on` names (drift, the champion's live quality degraded, either), or when
  the form forces it; otherwise it ends at `no_training`.
* **Gate**: the candidate must clear the floors and beat the champion, by more than
  `gate.min_improvement`, on the rows neither model trained on (a sign-flip test over time
  blocks). A rejection ends the run here, recorded; nothing is asked.
* **Approval**: the registered challenger waits under *Required Actions*. Approve → promoted
  (the promotion log names you); Reject, or no answer within `orchestration.approval_timeout_hours`
  → recorded as rejected, the champion untouched. Auto-approval only when the config says
  `promotion.approval: auto` or the trigger form asks for it.
* **Data**: every task reads and writes the run's cycle directory under `storage.root`;
  XCom carries only its location and small summaries. Re-running a task reuses the run's
  MLflow run and model version.
"""

from __future__ import annotations

from airflow.sdk import Asset, AssetOrTimeSchedule, CronTriggerTimetable, Param, TriggerRule, dag, task

from orchestration import runtime
from orchestration.approval import REVIEW_FORM, ReviewOperator
from orchestration.checks import data_checks
from orchestration.notify import PipelineNotifier

CONFIG = runtime.parse_time_config()
ORCHESTRATION = CONFIG.orchestration
# Only `train` goes to a dedicated queue (e.g. the GPU worker's); unset, it stays on the default queue.
TRAIN_QUEUE = {"queue": CONFIG.training.queue} if CONFIG.training.queue else {}


def train_or_stop(context: dict, drift: dict, quality: dict) -> str:
    from orchestration import stages

    return "train" if stages.needs_training(context, drift, quality) else "no_training"


@dag(
    dag_id="retrain_model",
    schedule=AssetOrTimeSchedule(
        timetable=CronTriggerTimetable(ORCHESTRATION.retrain_schedule, timezone=ORCHESTRATION.timezone),
        assets=[Asset(runtime.drift_asset_name(CONFIG))],
    ),
    # No start_date on purpose: with one, unpausing starts the latest tick's run at once (catchup skips only
    # the older ones); without, the first scheduled run waits for the next tick.
    catchup=False,
    max_active_runs=1,
    default_args=runtime.default_args(CONFIG),
    tags=["ml", "retraining", CONFIG.model_name],
    doc_md=__doc__,
    params={
        "as_of": Param(None, type=["null", "string"], format="date", title="As of",
                       description="Last day of the training window. Empty: the newest day in the source."),
        "force": Param(False, type="boolean", title="Force retrain",
                       description="Train even when the checks find nothing the config's retrain_on retrains for."),
        "family": Param(CONFIG.training.family, type="string", enum=runtime.families_for(CONFIG.task), title="Model family"),
        "k": Param(CONFIG.evaluation.k, type="integer", minimum=2, maximum=20, title="Folds (k)"),
        "tune_trials": Param(CONFIG.training.search.trials, type="integer", minimum=0, maximum=1000, title="Tune (trials)",
                             description="Hyperparameter search trials inside the k-fold (training.search); 0: off."),
        "auto_approve": Param(CONFIG.promotion.approval == "auto", type="boolean", title="Auto-approve",
                              description="Promote a candidate that passes the gate without asking (dev/demo)."),
        # Optional text fields allow null: Airflow's form treats a plain string as required and blocks Trigger.
        "note": Param(None, type=["null", "string"], maxLength=500, title="Note", description="Recorded with the cycle."),
    },
)
def retrain_model():
    @task
    def no_training(handle, **context):
        from orchestration import stages

        stages.finish_without_training(context, handle)

    @task(**TRAIN_QUEUE)
    def train(handle, **context):
        from orchestration import stages

        return stages.train(context, handle)

    @task.branch(on_success_callback=PipelineNotifier("gate_rejected"))
    def gate(handle, **context):
        from orchestration import stages

        verdict = stages.gate(context, handle)
        context["ti"].xcom_push(key="verdict", value=verdict)
        return "register" if verdict["passed"] else None

    @task
    def register(handle, **context):
        from orchestration import stages

        return stages.register(context, handle)

    @task.branch
    def route_approval(registered, **context):
        from orchestration import stages

        return stages.route_approval(context, registered)

    review = ReviewOperator(
        task_id="review",
        timeout_hours=ORCHESTRATION.approval_timeout_hours,
        approvers=ORCHESTRATION.approvers,
        params=REVIEW_FORM,
        notifiers=[PipelineNotifier("approval_waiting")],
    )

    @task(trigger_rule=TriggerRule.NONE_FAILED_MIN_ONE_SUCCESS, on_success_callback=PipelineNotifier("promotion_done"))
    def promote(registered, **context):
        from orchestration import stages

        return stages.promote(context, registered)

    @task
    def record_rejection(registered, **context):
        from orchestration import stages

        return stages.record_rejection(context, registered)

    # The decision tasks take the registration, not the load handle: were `load` their upstream, its
    # success would let `promote`'s trigger rule start it after a gate rejection.
    handle, checked = data_checks("retrain", train_or_stop)
    trained = train(handle)
    checked >> [no_training(handle), trained]
    registered = register(handle)
    trained >> gate(handle) >> registered
    routed = route_approval(registered)
    promoted = promote(registered)
    routed >> [review, promoted]
    review >> [promoted, record_rejection(registered)]


retrain_model()
