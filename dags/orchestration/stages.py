"""The DAGs' task bodies: each runs one pipeline stage on the DAG run's cycle and returns a small summary for XCom.

The data stays in the cycle's run directory; XCom carries the first task's handle (where the
cycle is) and a few numbers. A verdict becomes a branch or a failure here, in one place each:
a stopped validation fails its task (not retried); nothing ``retrain_on`` retrains for, or a gate
rejection, ends the run through the branch.
"""

from __future__ import annotations

from typing import Any

from orchestration import runtime

APPROVE, REJECT = "Approve", "Reject"


def load(context: dict, kind: str) -> dict[str, Any]:
    from pipeline.cycle import load_stage

    trigger = runtime.trigger_of(context)
    with runtime.started_cycle(context, kind, trigger) as cycle:
        windows = load_stage(cycle)
    return {**runtime.handle(cycle), "trigger": trigger.kind, "rows": {name: s.rows for name, s in windows.items()}}


def validate(context: dict, handle: dict[str, Any]) -> dict[str, Any]:
    """A stopped validation fails the task at once: it is a verdict on the data, which a retry would not change."""
    from airflow.sdk.exceptions import AirflowFailException

    from pipeline.cycle import validate_stage
    from pipeline.record import FAILED_BATCH, VALIDATION_REPORT

    with runtime.held_cycle(context, handle) as cycle:
        result = validate_stage(cycle)
    if not result.passed:
        raise AirflowFailException(
            f"validation stopped cycle {cycle.cycle_id}; the failing batch is kept at {cycle.url_of(FAILED_BATCH)}\n"
            f"{result.summary()}"
        )
    return {"verdict": result.verdict(), "warnings": len(result.warnings), "report": cycle.url_of(VALIDATION_REPORT)}


def drift(context: dict, handle: dict[str, Any]) -> dict[str, Any]:
    from pipeline.cycle import drift_stage
    from pipeline.record import DRIFT_REPORT

    with runtime.held_cycle(context, handle) as cycle:
        result = drift_stage(cycle)
    return {
        "dataset_drift": result.dataset_drift, "drift_share": round(result.drifted_share, 4),
        "drifted_features": [f.feature for f in result.top_drifted()],
        "report": cycle.url_of(DRIFT_REPORT), "cycle_id": cycle.cycle_id, "as_of": cycle.as_of.isoformat(),
    }


def quality(context: dict, handle: dict[str, Any]) -> dict[str, Any]:
    """The champion's live quality; no champion, or too few live rows, is a summary too (not judged)."""
    from pipeline.cycle import quality_stage

    with runtime.held_cycle(context, handle) as cycle:
        result = quality_stage(cycle)
    return {**result.to_dict(), "verdict": result.verdict}


def retrain_reasons(context: dict, drift_summary: dict[str, Any], quality_summary: dict[str, Any]) -> list[str]:
    """What of the checks' findings the config's ``orchestration.retrain_on`` retrains for."""
    from pipeline.monitor import retrain_reasons as reasons

    config = runtime.task_config(context["params"])
    return reasons(config.orchestration.retrain_on, drift_summary["dataset_drift"], quality_summary["degraded"])


def needs_training(context: dict, drift_summary: dict[str, Any], quality_summary: dict[str, Any]) -> bool:
    config = runtime.task_config(context["params"])
    return (config.orchestration.retrain_on == "always" or bool(context["params"].get("force"))
            or bool(retrain_reasons(context, drift_summary, quality_summary)))


def finish_without_training(context: dict, handle: dict[str, Any]) -> None:
    """``retrain_on`` found nothing to retrain for: the cycle ends here, recorded, with nothing to train."""
    from pipeline.cycle import finish_without_training as finish

    with runtime.held_cycle(context, handle) as cycle:
        finish(cycle)


def train(context: dict, handle: dict[str, Any]) -> dict[str, Any]:
    from pipeline.cycle import train_stage

    with runtime.held_cycle(context, handle) as cycle:
        evaluation = train_stage(cycle)
    return {"primary_metric": evaluation.primary_metric, "mean": evaluation.primary_mean, "std": evaluation.primary_std,
            "k": evaluation.k, "device": evaluation.device, "champion_version": evaluation.champion_version}


def gate(context: dict, handle: dict[str, Any]) -> dict[str, Any]:
    """The gate's verdict; a rejection is an outcome, not a fault: the task succeeds and the run ends."""
    from pipeline.cycle import gate_stage
    from pipeline.record import CycleOutcome
    from pipeline.summary import format_outcome

    with runtime.held_cycle(context, handle) as cycle:
        verdict = gate_stage(cycle)
    if not verdict.passed:
        runtime.log.info("%s", format_outcome(CycleOutcome.read(cycle)))
    return {"passed": verdict.passed, "improvement": verdict.improvement, "p_value": verdict.p_value,
            "champion_version": verdict.champion_version, "reasons": verdict.reasons}


def register(context: dict, handle: dict[str, Any]) -> dict[str, Any]:
    """The registration, with the cycle's handle: what the approval tasks take."""
    from pipeline.cycle import register_stage

    with runtime.held_cycle(context, handle) as cycle:
        version = register_stage(cycle)
    return {**handle, "version": version.version, "aliases": version.aliases}


def _auto_approval(context: dict):
    from pipeline.approval import auto_approval

    requested = context["params"].get("auto_approve")
    return auto_approval(runtime.task_config(context["params"]), None if requested is None else bool(requested),
                         context["dag_run"].triggering_user_name)


def route_approval(context: dict, registered: dict[str, Any]) -> str:
    """Straight to ``promote`` when this run is auto-approved; otherwise to the reviewer."""
    from pipeline.cycle import promote_stage

    if _auto_approval(context) is not None:
        context["ti"].xcom_push(key="route", value="auto")
        return "promote"
    with runtime.held_cycle(context, registered) as cycle:
        promote_stage(cycle, None)  # awaiting a person, unless a decision is on record already
    context["ti"].xcom_push(key="route", value="review")
    return "review"


def promote(context: dict, registered: dict[str, Any]) -> dict[str, Any]:
    """Promote only on an explicit approval: the reviewer's Approve, or auto-approval chosen for this run.

    Trigger rules alone do not guard the champion: whatever let this task start, it refuses
    unless one of the two is on record.
    """
    from airflow.sdk.exceptions import AirflowFailException

    from pipeline.approval import decide, reviewer_decision
    from pipeline.record import CycleOutcome
    from pipeline.summary import format_outcome

    ti = context["ti"]
    decision = ti.xcom_pull(task_ids="review", key="decision")
    route = ti.xcom_pull(task_ids="route_approval", key="route")
    if decision is not None:
        if decision["chosen"] != APPROVE:
            raise AirflowFailException(f"the reviewer chose {decision['chosen']!r}: refusing to promote")
        approval = reviewer_decision(True, decision["user"], "airflow", decision["comment"])
    elif route == "auto" and (auto := _auto_approval(context)) is not None:
        approval = auto
    else:
        raise AirflowFailException("no approval on record for this run: refusing to promote")
    with runtime.held_cycle(context, registered) as cycle, runtime.verdicts_not_retried(), \
            cycle.stage("promote", restart=False):
        recorded = decide(cycle, approval)
    runtime.log.info("%s", format_outcome(CycleOutcome.read(cycle)))
    return {"version": recorded.version, "seq": recorded.entry.seq, "actor": recorded.entry.actor}


def record_rejection(context: dict, registered: dict[str, Any]) -> dict[str, Any]:
    """The reviewer rejected, or nobody answered in time (which counts as a rejection): recorded, champion untouched."""
    from pipeline.approval import decide, reviewer_decision, timeout_rejection

    decision = context["ti"].xcom_pull(task_ids="review", key="decision")
    with runtime.held_cycle(context, registered) as cycle, runtime.verdicts_not_retried():
        if decision["timed_out"]:
            approval = timeout_rejection(cycle.config)
        else:
            approval = reviewer_decision(False, decision["user"], "airflow", decision["comment"])
        recorded = decide(cycle, approval)
    return {"version": recorded.version, "seq": recorded.entry.seq, "actor": recorded.entry.actor,
            "reason": recorded.entry.reason}
