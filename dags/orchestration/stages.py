"""The DAGs' task bodies: each runs one pipeline stage on the DAG run's cycle and returns a small summary for XCom.

The data stays in the cycle's run directory; XCom carries its location and a few numbers.
"""

from __future__ import annotations

from typing import Any

from orchestration import runtime

APPROVE, REJECT = "Approve", "Reject"


def load(context: dict, kind: str) -> dict[str, Any]:
    from pipeline.cycle import load_stage

    cycle = runtime.start_cycle(context, kind)
    with runtime.verdicts_not_retried():
        snapshots = load_stage(cycle)
    return {**runtime.handle(cycle), "trigger": cycle.read_json("trigger.json")["kind"],
            "rows": {name: snap.rows for name, snap in snapshots.items()}}


def validate(context: dict, kind: str) -> dict[str, Any]:
    from pipeline.cycle import validate_stage

    cycle = runtime.reopen_cycle(context, kind)
    with runtime.verdicts_not_retried():
        result = validate_stage(cycle)
    return {"verdict": result.verdict(), "warnings": len(result.warnings), "report": cycle.storage.url_of("validation.html")}


def drift(context: dict, kind: str) -> dict[str, Any]:
    from pipeline.cycle import drift_stage

    cycle = runtime.reopen_cycle(context, kind)
    result = drift_stage(cycle)
    return {
        "dataset_drift": result.dataset_drift, "drift_share": round(result.drifted_share, 4),
        "drifted_features": [f.feature for f in result.top_drifted()],
        "report": cycle.storage.url_of("drift.html"), "cycle_id": cycle.cycle_id, "as_of": cycle.as_of.isoformat(),
    }


def needs_training(context: dict, drift_summary: dict[str, Any]) -> bool:
    config = runtime.task_config(context["params"])
    return config.orchestration.retrain_on == "always" or drift_summary["dataset_drift"] or bool(context["params"].get("force"))


def finish_without_training(context: dict) -> None:
    """``retrain_on: drift`` and nothing drifted: the cycle ends here, recorded, with nothing to train."""
    from pipeline.cycle import finish_cycle

    cycle = runtime.reopen_cycle(context, "retrain")
    finish_cycle(cycle, "no_drift", "FINISHED")


def train(context: dict) -> dict[str, Any]:
    from pipeline.cycle import train_stage

    cycle = runtime.reopen_cycle(context, "retrain")
    evaluation = train_stage(cycle)
    return {"primary_metric": evaluation.primary_metric, "mean": evaluation.primary_mean, "std": evaluation.primary_std,
            "k": evaluation.k, "device": evaluation.device, "champion_version": evaluation.champion_version}


def gate(context: dict) -> dict[str, Any]:
    """The gate's verdict; a rejection is an outcome, not a fault: the task succeeds and the run ends."""
    from pipeline.cycle import gate_stage, recorded_outcome
    from pipeline.errors import GateRejected
    from pipeline.gate import GateVerdict
    from pipeline.summary import format_outcome

    cycle = runtime.reopen_cycle(context, "retrain")
    try:
        verdict = gate_stage(cycle)
    except GateRejected as exc:
        runtime.log.info("%s\n%s", exc, format_outcome(recorded_outcome(cycle)))
        verdict = GateVerdict.from_dict(cycle.read_json("gate.json"))
    return {"passed": verdict.passed, "improvement": verdict.improvement, "p_value": verdict.p_value,
            "champion_version": verdict.champion_version, "reasons": verdict.reasons}


def register(context: dict) -> dict[str, Any]:
    from pipeline.cycle import register_stage

    cycle = runtime.reopen_cycle(context, "retrain")
    with runtime.verdicts_not_retried():
        version = register_stage(cycle)
    return {"version": version.version, "aliases": version.aliases}


def auto_approved(context: dict) -> bool:
    params = context["params"]
    if params.get("auto_approve") is not None:
        return bool(params["auto_approve"])
    return runtime.task_config(params).promotion.approval == "auto"


def route_approval(context: dict) -> str:
    """Straight to ``promote`` when this run is auto-approved; otherwise to the reviewer."""
    from pipeline.cycle import finish_cycle

    if auto_approved(context):
        context["ti"].xcom_push(key="route", value="auto")
        return "promote"
    finish_cycle(runtime.reopen_cycle(context, "retrain"), "awaiting_approval", "FINISHED")
    context["ti"].xcom_push(key="route", value="review")
    return "review"


def promote(context: dict) -> dict[str, Any]:
    """Promote only on an explicit approval: the reviewer's Approve, or auto-approval chosen for this run.

    Trigger rules alone do not guard the champion: whatever let this task start, it refuses
    unless one of the two is on record.
    """
    from airflow.sdk.exceptions import AirflowFailException

    from pipeline import promote as promotion
    from pipeline.cycle import finish_cycle, recorded_outcome
    from pipeline.summary import format_outcome

    ti = context["ti"]
    decision = ti.xcom_pull(task_ids="review", key="decision")
    route = ti.xcom_pull(task_ids="route_approval", key="route")
    if decision is not None:
        if decision["chosen"] != APPROVE:
            raise AirflowFailException(f"the reviewer chose {decision['chosen']!r}: refusing to promote")
        actor, reason = decision["user"], decision["comment"] or "approved in Airflow"
    elif route == "auto" and auto_approved(context):
        requested_by = context["dag_run"].triggering_user_name
        actor = "auto-approval" + (f" (run triggered by {requested_by})" if requested_by else "")
        reason = "auto-approval for this run"
    else:
        raise AirflowFailException("no approval on record for this run: refusing to promote")
    cycle = runtime.reopen_cycle(context, "retrain")
    version = cycle.read_json("registered.json")["version"]
    with runtime.verdicts_not_retried(), cycle.stage("promote"):
        entry = promotion.promote(cycle.config, version, actor=actor, reason=reason)
    finish_cycle(cycle, "promoted", "FINISHED")
    runtime.log.info("%s", format_outcome(recorded_outcome(cycle)))
    return {"version": version, "seq": entry.seq, "actor": entry.actor}


def record_rejection(context: dict) -> dict[str, Any]:
    """The reviewer rejected, or nobody answered in time (which counts as a rejection): recorded, champion untouched."""
    from pipeline import promote as promotion
    from pipeline.cycle import finish_cycle

    decision = context["ti"].xcom_pull(task_ids="review", key="decision")
    cycle = runtime.reopen_cycle(context, "retrain")
    version = cycle.read_json("registered.json")["version"]
    if decision["timed_out"]:
        hours = cycle.config.orchestration.approval_timeout_hours
        actor, reason = "approval-timeout", f"no answer within {hours:g} h: treated as rejected"
    else:
        actor, reason = decision["user"], decision["comment"] or "rejected in Airflow"
    with runtime.verdicts_not_retried():
        entry = promotion.reject(cycle.config, version, actor=actor, reason=reason)
    finish_cycle(cycle, "rejected", "FINISHED")
    return {"version": version, "seq": entry.seq, "actor": entry.actor, "reason": reason}
