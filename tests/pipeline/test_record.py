"""The cycle record: safe ids, the status machine (mirrored on the MLflow run), typed files that read back whole."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path

import pytest

from pipeline import registry
from pipeline.errors import ConfigError, PipelineError, PromotionRefused, StorageError
from pipeline.record import (
    APPROVAL,
    QUALITY,
    STATUS,
    TRIGGER,
    Approval,
    CycleOutcome,
    CycleRecord,
    Decision,
    LogEntry,
    Status,
    Trigger,
    TriggerEvent,
    check_cycle_id,
    check_transition,
    run_name,
)
from pipeline.results import ModelQuality


@pytest.mark.parametrize("cycle_id", ["demo_churn-2026-05-28", "m-retrain-manual__2026-11-22T18-31-33.870509-00-00_x"])
def test_safe_cycle_ids_pass(cycle_id):
    assert check_cycle_id(cycle_id) == cycle_id


@pytest.mark.parametrize(
    "cycle_id",
    [
        pytest.param("../../../escaped", id="traversal"), pytest.param("a/b", id="separator"),
        pytest.param("it's", id="quote"), pytest.param("..", id="dot-dot"), pytest.param(".hidden", id="leading-dot"),
        pytest.param("", id="empty"), pytest.param("x" * 201, id="too-long"), pytest.param("a b", id="space"),
    ],
)
def test_unsafe_cycle_ids_are_refused(cycle_id):
    with pytest.raises(ConfigError, match="is not allowed"):
        check_cycle_id(cycle_id)


@pytest.mark.parametrize(
    "current, new",
    [
        pytest.param(None, Status.RUNNING, id="start"),
        pytest.param(Status.RUNNING, Status.AWAITING_APPROVAL, id="registered"),
        pytest.param(Status.AWAITING_APPROVAL, Status.PROMOTED, id="approved"),
        pytest.param(Status.AWAITING_APPROVAL, Status.SUPERSEDED, id="superseded"),
        pytest.param(Status.REJECTED, Status.PROMOTED, id="override"),
        pytest.param(Status.FAILED, Status.RUNNING, id="retry"),
        pytest.param(Status.PROMOTED, Status.RUNNING, id="rerun"),
        pytest.param(Status.PROMOTED, Status.PROMOTED, id="same-again"),
    ],
)
def test_allowed_transitions(current, new):
    check_transition("c", current, new)


@pytest.mark.parametrize(
    "current, new, error",
    [
        pytest.param(Status.GATE_REJECTED, Status.PROMOTED, PromotionRefused, id="promote-a-rejected-candidate"),
        pytest.param(Status.PROMOTED, Status.REJECTED, PromotionRefused, id="reject-the-promoted"),
        pytest.param(Status.SUPERSEDED, Status.PROMOTED, PromotionRefused, id="approve-a-superseded-candidate"),
        pytest.param(Status.SUPERSEDED, Status.RUNNING, PipelineError, id="rerun-a-superseded-cycle"),
        pytest.param(Status.VALIDATION_STOPPED, Status.AWAITING_APPROVAL, PipelineError, id="skip-the-stages"),
    ],
)
def test_refused_transitions(current, new, error):
    with pytest.raises(error, match=f"cycle c is {current.value}: it cannot become {new.value}"):
        check_transition("c", current, new)


@pytest.mark.parametrize("cycle_id, kind, name", [
    pytest.param("demo_churn-retrain-manual__2026-12-02T22-03-46.962157-00-00", "retrain",
                 "2026-06-29 retrain manual__2026-12-02T22-03-46.962157-00-00", id="airflow-run"),
    pytest.param("demo_churn-monitor-scheduled__2026-06-30T00-00-00-00-00", "monitor",
                 "2026-06-29 monitor scheduled__2026-06-30T00-00-00-00-00", id="scheduled-monitor"),
    pytest.param("demo_churn-2026-06-29", "retrain", "2026-06-29 retrain", id="cli-default-id"),
    pytest.param("demo_churn-2026-06-29-retry", "retrain", "2026-06-29 retrain 2026-06-29-retry", id="cli-own-id"),
])
def test_a_cycles_run_name_starts_with_its_as_of_date_and_kind(cycle_id, kind, name):
    assert run_name("demo_churn", cycle_id, kind, date(2026, 6, 29)) == name


@pytest.fixture
def record(config):
    trigger = Trigger("manual", user="alice", dag_id="retrain_model", run_id="manual__1", note="after the fix",
                      events=[TriggerEvent("m.drift_detected", "monitor_drift/r1", {"as_of": "2026-01-10"})])
    return CycleRecord.start(config, date(2026, 1, 10), "test_model-c1", "retrain", trigger)


def test_a_started_cycle_is_running_in_both_stores(record):
    status = record.require(STATUS)
    assert status.status == Status.RUNNING and status.stages == {}
    run = registry.client(record.config).get_run(record.run_id)
    assert (run.info.status, run.data.tags["cycle.status"], run.data.tags["trigger"]) == ("RUNNING", "running", "manual")
    assert run.data.tags["airflow.run_id"] == "manual__1" and run.data.tags["as_of"] == "2026-01-10"
    assert run.info.run_name == "2026-01-10 retrain c1"
    experiment = registry.client(record.config).get_experiment(run.info.experiment_id)
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"  # opens on the runs table
    assert record.read(TRIGGER).events[0].extra == {"as_of": "2026-01-10"}
    assert "password" not in record.local_path("config.yaml").read_text()


@pytest.mark.parametrize(
    "status, run_status",
    [pytest.param(Status.PAUSED, "SCHEDULED", id="paused"), pytest.param(Status.FAILED, "FAILED", id="failed"),
     pytest.param(Status.GATE_REJECTED, "FINISHED", id="rejected-by-the-gate"),
     pytest.param(Status.VALIDATION_STOPPED, "FAILED", id="stopped-by-validation")],
)
def test_the_mlflow_run_follows_the_cycle_status(record, status, run_status):
    record.set_status(status, detail="why")
    assert record.require(STATUS).detail == "why"
    assert registry.client(record.config).get_run(record.run_id).info.status == run_status
    record.set_status(Status.RUNNING)
    assert registry.client(record.config).get_run(record.run_id).info.status == "RUNNING"


def test_a_refused_transition_changes_nothing(record):
    record.set_status(Status.GATE_REJECTED)
    with pytest.raises(PromotionRefused):
        record.set_status(Status.PROMOTED)
    assert record.require(STATUS).status == Status.GATE_REJECTED
    assert registry.client(record.config).get_run(record.run_id).data.tags["cycle.status"] == "gate_rejected"


def test_stage_timings_accumulate_across_tasks(record):
    with record.stage("load"):
        pass
    again = CycleRecord.find(record.config, record.cycle_id)  # the next task, another process
    with again.stage("validate"):
        pass
    assert set(again.require(STATUS).stages) == {"load", "validate"}


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="the kernel's peak reset is Linux's")
def test_each_stage_reports_its_own_peak_memory_not_the_process_peak_so_far(record):
    import numpy as np

    with record.stage("load"):
        held = np.ones(300 * 2**20 // 8)  # 300 MiB, touched
        del held
    with record.stage("validate"):
        pass
    stages = record.require(STATUS).stages
    assert stages["load"].peak_rss_mb - stages["validate"].peak_rss_mb > 250


def test_records_read_back_as_written(record):
    at = datetime(2026, 1, 11, 9, 30, tzinfo=UTC)
    entry = LogEntry(3, at, "alice", "promote", "1", "2", "test_model-c1", "looks good")
    decision = Decision(Approval("approved", "alice", "airflow", "looks good", at), "2", entry)
    record.write(APPROVAL, decision)
    assert CycleRecord.find(record.config, record.cycle_id).read(APPROVAL) == decision
    quality = ModelQuality("roc_auc", "1", True, True, "why", rows=700, live_start=date(2026, 1, 6),
                           live_end=date(2026, 1, 10), live_value=0.61, kfold_value=0.8, degradation=0.95)
    record.write(QUALITY, quality)
    assert CycleRecord.find(record.config, record.cycle_id).read(QUALITY) == quality


DRIFT_EXTRA = {"drift_share": 0.4, "drifted_features": ["x_num"], "cycle_id": "m-1", "as_of": "2026-01-10"}
QUALITY_EXTRA = {"champion_version": "1", "primary_metric": "roc_auc", "live_value": 0.6, "kfold_value": 0.8,
                 "degradation": 1.0}


@pytest.mark.parametrize(
    ("extra", "lines"),
    [
        pytest.param(DRIFT_EXTRA, ["drift event from monitor_drift/r1: share 40% (cycle m-1, as of 2026-01-10); "
                                   "drifted: x_num"], id="drift-event-before-reasons"),
        pytest.param({**DRIFT_EXTRA, "reasons": ["degradation"], "quality": QUALITY_EXTRA},
                     ["degradation event from monitor_drift/r1: champion v1 roc_auc 0.6000 live vs 0.8000 k-fold, "
                      "error +100.0% (cycle m-1, as of 2026-01-10)"], id="degradation-event"),
        pytest.param({**DRIFT_EXTRA, "reasons": ["drift", "degradation"], "quality": QUALITY_EXTRA},
                     ["drift event from", "degradation event from"], id="both"),
    ],
)
def test_a_trigger_says_what_each_event_reported(extra, lines):
    described = Trigger("drift", events=[TriggerEvent("m.drift_detected", "monitor_drift/r1", extra)]).describe()
    assert [line[:len(expected)] for line, expected in zip(described.splitlines()[1:], lines, strict=True)] == lines


def test_a_damaged_record_is_a_clear_error(record):
    record.local_path("status.json").write_text('{"status": "runn')
    with pytest.raises(StorageError, match=r"status.json of cycle test_model-c1 at .* is unreadable"):
        CycleOutcome.read(record)


def test_an_unknown_cycle_is_a_clear_error(config):
    with pytest.raises(PipelineError, match="no retrain cycle nope of 'test_model' is recorded"):
        CycleRecord.find(config, "nope")


def entry(action: str, was: str | None, to: str) -> LogEntry:
    return LogEntry(1, datetime(2026, 6, 1, tzinfo=UTC), "alice", action, was, to, None, None)


@pytest.mark.parametrize("logged, event", [
    pytest.param(entry("promote", None, "1"), "promoted v1 (first champion)", id="first-promotion"),
    pytest.param(entry("promote", "1", "2"), "promoted v2 (was v1)", id="promotion"),
    pytest.param(entry("rollback", "2", "1"), "rolled back to v1 (was v2)", id="rollback"),
    pytest.param(entry("reject", "1", "3"), "rejected v3 (champion stays v1)", id="rejection"),
    pytest.param(entry("reject", None, "1"), "rejected v1 (no champion)", id="rejection-without-champion"),
    pytest.param(entry("override", "1", "3"), "promoted v3 over its rejection (was v1)", id="override"),
])
def test_alias_history_reads_as_events(logged, event):
    assert logged.event() == event
