"""What the review pages list, from real cycles on a small warehouse; reports only from where they belong."""

from __future__ import annotations

import os
from datetime import date

import pytest
import sqlalchemy as sa

from pipeline import catalog, registry
from pipeline.approval import decide_version, reviewer_decision
from pipeline.config import load_config
from pipeline.cycle import drift_stage, load_stage, open_cycle, quality_stage, run_cycle, validate_stage
from pipeline.record import Status, Trigger
from pipeline.validate import propose_suite, write_suite
from tests.conftest import small_frame, write_config


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    """A retraining cycle waiting for approval, then a monitoring cycle on shifted data."""
    root = tmp_path_factory.mktemp("catalog")
    frame = small_frame(3000, days=20)
    shifted = frame["ts"] >= "2026-01-11"
    frame.loc[shifted, "x_num"] += 3.0
    engine = sa.create_engine(f"sqlite:///{root / 'warehouse.db'}")
    frame.to_sql("events", engine, index=False)
    engine.dispose()
    config = load_config(write_config(root, training={"family": "logistic_regression", "params": {}}), environ={})
    write_suite(propose_suite(config, frame), config.validation.suite)
    retrain = run_cycle(config, date(2026, 1, 10))
    # No champion yet: compare the shifted days with everything since the first day.
    monitoring = config.model_copy(update={"windows": config.windows.model_copy(
        update={"initial_reference_start": date(2026, 1, 1)})})
    with open_cycle(monitoring, date(2026, 1, 20), "test_model-monitor-1", kind="monitor",
                    trigger=Trigger("nightly")) as monitor:
        windows = load_stage(monitor)
        validate_stage(monitor, windows)
        drift_stage(monitor)
        quality_stage(monitor, windows)
    return config, retrain, monitor


def test_cycles_newest_first_with_their_verdicts(recorded):
    config, retrain, monitor = recorded
    listed = catalog.cycle_page(config).cycles
    assert [c.cycle_id for c in listed] == ["test_model-monitor-1", "test_model-2026-01-10"]
    newest, oldest = listed
    assert (newest.kind, newest.trigger, newest.as_of, newest.status) == ("monitor", "nightly", date(2026, 1, 20),
                                                                          "drift_detected")
    assert newest.dataset_drift is True and "x_num" in newest.drifted_features and newest.drift_share > 0
    assert (oldest.kind, oldest.trigger, oldest.status, oldest.gate) == ("retrain", "cli", "awaiting_approval", "passed")
    assert oldest.validation == "passed" and oldest.mlflow_run_id == retrain.cycle.run_id


def test_a_listed_cycle_carries_what_the_pages_show_without_opening_its_files(recorded):
    config, retrain, monitor = recorded
    newest, oldest = catalog.cycle_page(config).cycles
    windows = retrain.windows
    assert oldest.reference_window == (windows.reference.start, windows.reference.end)
    assert oldest.current_window == (windows.current.start, windows.current.end)
    assert oldest.current_rows == windows.current.rows
    assert (oldest.validation_critical, oldest.validation_warnings) == (0, len(retrain.validation.warnings))
    assert newest.drift_methods == {"x_num": "wasserstein", "y_num": "wasserstein", "color": "jensenshannon"}
    assert newest.drift_thresholds == {"x_num": config.drift.numeric_floor, "y_num": config.drift.numeric_floor,
                                       "color": config.drift.categorical_floor}
    assert (oldest.primary_metric, oldest.candidate_mean) == ("roc_auc", pytest.approx(retrain.evaluation.primary_mean))
    assert catalog.evaluation(config, retrain.cycle.cycle_id) == retrain.evaluation


def test_every_listed_cycle_carries_its_drift_scores(recorded):
    config, _, _ = recorded
    newest, oldest = catalog.cycle_page(config).cycles
    assert set(newest.drift_scores) == set(oldest.drift_scores) == {"x_num", "y_num", "color"}
    assert newest.drift_scores["x_num"] > oldest.drift_scores["x_num"]  # the shift shows as a rising score


def test_pending_approvals_are_the_waiting_retraining_cycles(recorded):
    config, retrain, _ = recorded
    assert [c.cycle_id for c in catalog.pending_approvals(config)] == [retrain.cycle.cycle_id]


def test_a_report_of_a_recorded_cycle(recorded):
    config, _, monitor = recorded
    path = catalog.report_file(config, "test_model-monitor-1", "drift.html")
    assert path == monitor.local_path("drift.html").resolve() and "<html" in path.read_text().lower()


@pytest.mark.parametrize(
    "cycle_id, name",
    [
        pytest.param("test_model-monitor-1", "current.parquet", id="not-a-report"),
        pytest.param("test_model-monitor-1", "../../warehouse.db", id="dot-dot-in-name"),
        pytest.param("../test_model-monitor-1", "drift.html", id="dot-dot-in-cycle"),
        pytest.param("/etc", "drift.html", id="absolute-cycle"),
        pytest.param("no-such-cycle", "drift.html", id="unrecorded-cycle"),
    ],
)
def test_anything_else_is_not_recorded(recorded, cycle_id, name):
    config, _, _ = recorded
    with pytest.raises(catalog.NotRecorded):
        catalog.report_file(config, cycle_id, name)


def test_a_symlink_out_of_the_storage_root_is_refused(recorded, tmp_path):
    config, retrain, _ = recorded
    outside = tmp_path / "secret.html"
    outside.write_text("<p>not yours</p>")
    report = retrain.cycle.local_path("validation.html")
    kept = report.read_bytes()
    report.unlink()
    os.symlink(outside, report)
    try:
        with pytest.raises(catalog.NotRecorded):
            catalog.report_file(config, retrain.cycle.cycle_id, "validation.html")
    finally:
        report.unlink()
        report.write_bytes(kept)


def test_validation_and_gate_records_of_a_cycle(recorded):
    config, retrain, _ = recorded
    result, kept = catalog.validation(config, retrain.cycle.cycle_id)
    assert result.passed and kept is None and len(result.outcomes) == len(retrain.validation.outcomes)
    assert catalog.gate_verdict(config, retrain.cycle.cycle_id) == retrain.verdict
    with pytest.raises(catalog.NotRecorded):
        catalog.gate_verdict(config, "test_model-monitor-1")  # a monitoring cycle has no gate


def test_a_cycle_is_found_by_id_however_many_came_after(recorded):
    config, retrain, _ = recorded
    mlflow_client = registry.client(config)
    monitoring = registry.find_experiment_id(config, "monitor")
    for hour in range(205):  # more than a list page holds
        mlflow_client.create_run(monitoring, tags={"cycle_id": f"test_model-monitor-h{hour}", "as_of": "2026-01-21"})
    assert catalog.cycle(config, retrain.cycle.cycle_id).mlflow_run_id == retrain.cycle.run_id
    assert catalog.report_file(config, retrain.cycle.cycle_id, "drift.html").is_file()


@pytest.mark.parametrize("cycle_id", [pytest.param("it's", id="quote"), pytest.param("../x", id="traversal")])
def test_an_impossible_cycle_id_is_not_recorded(recorded, cycle_id):
    config, _, _ = recorded
    with pytest.raises(catalog.NotRecorded):
        catalog.cycle(config, cycle_id)


def test_reading_an_unused_store_creates_nothing(tmp_path):
    config = load_config(write_config(tmp_path), environ={})
    assert catalog.cycle_page(config).cycles == [] and catalog.pending_approvals(config) == []
    with pytest.raises(catalog.NotRecorded):
        catalog.cycle(config, "test_model-2026-01-10")
    assert [e.name for e in registry.client(config).search_experiments()] == ["Default"]


# Last: it decides the cycle the tests above read while it waits.
def test_a_decision_outside_airflow_ends_the_wait(recorded):
    config, retrain, _ = recorded
    decide_version(config, retrain.version.version, reviewer_decision(False, "carol", "cli", "decided with the CLI"))
    assert catalog.pending_approvals(config) == []
    assert catalog.cycle(config, retrain.cycle.cycle_id).status == Status.REJECTED
