"""Deciding on candidates: the auto-approval policy, decisions that close their cycle, superseded candidates, re-runs."""

from __future__ import annotations

from datetime import date

import pytest

from pipeline import promote, registry
from pipeline.approval import auto_approval, decide_version, reviewer_decision, timeout_rejection
from pipeline.config import load_config
from pipeline.cycle import run_cycle
from pipeline.errors import PipelineError, PromotionRefused
from pipeline.record import CycleOutcome, CycleRecord, Status
from tests.conftest import label_flip_store, write_config


@pytest.mark.parametrize(
    "approval, requested, expected",
    [
        pytest.param("auto", None, ("auto-approval", "promotion.approval: auto"), id="config-auto"),
        pytest.param("manual", None, None, id="config-manual"),
        pytest.param("manual", True, ("auto-approval (run triggered by alice)", "auto-approval for this run"), id="form-on"),
        pytest.param("auto", False, None, id="form-off-wins"),
    ],
)
def test_auto_approval_policy(tmp_path, approval, requested, expected):
    config = load_config(write_config(tmp_path, promotion={"approval": approval}), environ={})
    decided = auto_approval(config, requested, triggered_by="alice")
    assert (None if decided is None else (decided.actor, decided.comment)) == expected
    assert decided is None or (decided.approved and decided.source == "auto")


def test_an_unanswered_question_is_a_rejection(config):
    rejection = timeout_rejection(config)
    assert (rejection.decision, rejection.actor, rejection.comment) == (
        "rejected", "approval-timeout", "no answer within 24 h: treated as rejected")


@pytest.fixture(scope="module")
def history(tmp_path_factory):
    """Manual approval; the label relation flips on 01-11, so a cycle as of 01-20 beats one as of 01-10."""
    return label_flip_store(tmp_path_factory.mktemp("approval"))


def status_of(config, cycle_id: str) -> Status:
    return CycleOutcome.read(CycleRecord.find(config, cycle_id)).status


def test_a_decision_closes_its_cycle_and_a_rerun_keeps_it_after_a_rollback(history):
    config = history
    first = run_cycle(config, date(2026, 1, 10))
    decide_version(config, first.version.version, reviewer_decision(True, "alice", "cli"))
    second = run_cycle(config, date(2026, 1, 20))
    assert second.status == Status.AWAITING_APPROVAL and second.verdict.champion_version == first.version.version
    decided = decide_version(config, second.version.version, reviewer_decision(True, "bob", "cli", "flip explained"))
    assert status_of(config, second.cycle.cycle_id) == Status.PROMOTED
    assert (decided.approval.actor, decided.entry.action, decided.entry.reason) == ("bob", "promote", "flip explained")
    run = registry.client(config).get_run(second.cycle.run_id)
    assert (run.info.status, run.data.tags["cycle.status"]) == ("FINISHED", "promoted")

    promote.rollback(config, actor="ops", reason="test")
    log_before = promote.history(config)
    again = run_cycle(config, date(2026, 1, 20))  # the same cycle, run again: its decision stands, nothing re-applied
    assert again.status == Status.PROMOTED and again.decision == decided
    assert registry.aliases(config)["champion"] == first.version.version
    assert promote.history(config) == log_before

    with pytest.raises(PromotionRefused, match="is already the champion"):
        decide_version(config, first.version.version, reviewer_decision(True, "carol", "cli"))


def test_a_newer_candidate_supersedes_the_waiting_one(history):
    config = history
    older = run_cycle(config, date(2026, 1, 20), cycle_id="test_model-older")
    newer = run_cycle(config, date(2026, 1, 20), cycle_id="test_model-newer")
    assert newer.status == Status.AWAITING_APPROVAL
    assert status_of(config, older.cycle.cycle_id) == Status.SUPERSEDED
    assert registry.aliases(config)["challenger"] == newer.version.version
    log_before = promote.history(config)

    with pytest.raises(PromotionRefused, match="cycle test_model-older is superseded: it cannot become promoted"):
        decide_version(config, older.version.version, reviewer_decision(True, "alice", "cli"))
    with pytest.raises(PipelineError, match="is superseded: it cannot become running"):
        run_cycle(config, date(2026, 1, 20), cycle_id="test_model-older")
    assert promote.history(config) == log_before
    assert registry.aliases(config)["challenger"] == newer.version.version


def test_a_rejected_cycle_run_again_stays_rejected(history):
    config = history
    cycle = run_cycle(config, date(2026, 1, 20), cycle_id="test_model-rejected")
    decide_version(config, cycle.version.version, reviewer_decision(False, "carol", "cli", "not now"))
    log_before = promote.history(config)
    again = run_cycle(config, date(2026, 1, 20), cycle_id="test_model-rejected")
    assert again.status == Status.REJECTED and again.decision.approval.actor == "carol"
    assert registry.CHALLENGER not in again.version.aliases
    assert promote.history(config) == log_before
