"""Deciding on a candidate: the one approval policy, and the one way every caller decides.

The CLI (``pipeline promote`` / ``reject``), the DAG's ``promote`` / ``record_rejection`` tasks and
a cycle's own auto-approval all go through :func:`decide`, which

1. refuses when the cycle cannot take the decision (a superseded candidate, a promoted one rejected);
2. applies it to the registry through the promotion log (``pipeline.promote``);
3. records the approval with the cycle (``approval.json``: who, when, through what, why, the log row);
4. moves the cycle's status: ``awaiting_approval → promoted | rejected``.

Each call is a decision to act on: a cycle that merely runs again replays its recorded decision
instead (``pipeline.cycle.promote_stage``).
"""

from __future__ import annotations

from typing import Literal

from pipeline import locks, promote, registry
from pipeline.config import Config
from pipeline.record import (
    APPROVAL,
    REGISTRATION,
    Approval,
    ApprovalSource,
    CycleRecord,
    Decision,
    Status,
    VersionTags,
    check_transition,
    find_run,
)

# How long a decision from the CLI waits for a stage of the same cycle that is still running.
DECISION_WAIT_S = 30.0


def auto_approval(config: Config, requested: bool | None = None, triggered_by: str | None = None) -> Approval | None:
    """The approval a passing candidate gets without asking, if any.

    ``requested`` is this run's choice (the trigger form's *Auto-approve*); without one, the config's
    ``promotion.approval`` decides.
    """
    if requested is None:
        if config.promotion.approval != "auto":
            return None
        return Approval("approved", "auto-approval", "auto", "promotion.approval: auto")
    if not requested:
        return None
    actor = "auto-approval" + (f" (run triggered by {triggered_by})" if triggered_by else "")
    return Approval("approved", actor, "auto", "auto-approval for this run")


def reviewer_decision(approved: bool, actor: str, source: ApprovalSource, comment: str | None = None) -> Approval:
    """A person's decision; one taken in Airflow without a comment says where it was taken."""
    decision: Literal["approved", "rejected"] = "approved" if approved else "rejected"
    return Approval(decision, actor, source, comment or (f"{decision} in Airflow" if source == "airflow" else None))


def timeout_rejection(config: Config) -> Approval:
    hours = config.orchestration.approval_timeout_hours
    return Approval("rejected", "approval-timeout", "airflow", f"no answer within {hours:g} h: treated as rejected")


def decide(cycle: CycleRecord, approval: Approval, override: bool = False) -> Decision:
    """Apply ``approval`` to the cycle's registered version; the caller holds the cycle's lock."""
    version = cycle.require(REGISTRATION).version
    target = Status.PROMOTED if approval.approved else Status.REJECTED
    current = cycle.status()
    check_transition(cycle.cycle_id, current.status if current else None, target)
    entry = _apply(cycle.config, version, approval, override)
    decision = cycle.read(APPROVAL)
    # The same decider again (a retried task) adds no log row: the recorded approval, with its time, stands.
    if decision is None or decision.entry != entry:
        decision = Decision(approval, version, entry)
        cycle.write(APPROVAL, decision)
    settle(cycle, decision)
    return decision


def settle(cycle: CycleRecord, decision: Decision) -> None:
    """Move the cycle to the status its recorded decision gives it."""
    approval = decision.approval
    target = Status.PROMOTED if approval.approved else Status.REJECTED
    cycle.set_status(target, detail=f"{approval.decision} by {approval.actor} ({approval.source})")


def decide_version(config: Config, version: str, approval: Approval, override: bool = False) -> Decision:
    """Decide on a version by its number (the CLI): through its cycle when it has one, else on the registry alone."""
    version = str(version)
    cycle_id = VersionTags.of(registry.get_version(config, version)).cycle_id
    if cycle_id is None or find_run(config, cycle_id, ("retrain",)) is None:
        return Decision(approval, version, _apply(config, version, approval, override))
    with locks.cycle_lock(config, cycle_id, wait_s=DECISION_WAIT_S):
        return decide(CycleRecord.find(config, cycle_id), approval, override)


def _apply(config: Config, version: str, approval: Approval, override: bool):
    if approval.approved:
        return promote.promote(config, version, actor=approval.actor, reason=approval.comment, override=override)
    return promote.reject(config, version, actor=approval.actor, reason=approval.comment)
