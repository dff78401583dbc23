"""End to end on the demo warehouse: first champion, covariate shift, concept drift, rollback.

Real SQLite, Great Expectations, Evidently, XGBoost and MLflow; the demo's documented dates
(pipeline/demo.py) say where drift must and must not be found.
"""

from __future__ import annotations

from datetime import date

import numpy as np
import pytest

from pipeline import demo, promote, registry
from pipeline.config import DEMO_CONFIG, load_config
from pipeline.cycle import run_cycle
from pipeline.record import Status, recorded_config
from pipeline.summary import format_outcome, format_status
from tests.conftest import migrated_mlflow_store, write_config

BEFORE_SHIFT = date(2026, 2, 26)   # current window 01-30..02-26: one regime throughout
AFTER_SHIFT = date(2026, 3, 28)    # 03-01..03-28: covariate shift, no new category yet
AFTER_CONCEPT = date(2026, 5, 28)  # 05-01..05-28: the feature→label relation changed


@pytest.fixture(scope="module")
def demo_environ(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo")
    demo.seed_demo(f"sqlite:///{root / 'warehouse.db'}")
    migrated_mlflow_store(root / "mlflow.db")
    environ = {
        "PIPELINE_SOURCE_URL": f"sqlite:///{root / 'warehouse.db'}",
        "PIPELINE_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}",
        "PIPELINE_ARTIFACT_ROOT": str(root / "artifacts"),
        "PIPELINE_DATABASE_URL": f"sqlite:///{root / 'pipeline.db'}",
        "PIPELINE_STORAGE_ROOT": str(root / "runs"),
    }
    return environ


@pytest.fixture(scope="module")
def demo_config(demo_environ):
    return load_config(DEMO_CONFIG, environ=demo_environ)


@pytest.fixture(scope="module")
def first(demo_config):
    return run_cycle(demo_config, BEFORE_SHIFT)


def test_first_cycle_promotes_a_champion_on_floors_alone(demo_config, first):
    assert first.status == Status.PROMOTED, format_outcome(first)
    assert first.validation.passed and not first.drift.dataset_drift and first.drift.drifted_features == []
    assert first.verdict.passed and first.verdict.champion_version is None
    assert first.evaluation.primary_mean > 0.7 and len(first.evaluation.folds) == 5
    assert registry.aliases(demo_config) == {"champion": first.version.version}
    tags = first.version.tags
    assert (tags["window.start"], tags["window.end"]) == ("2026-01-30", "2026-02-26")
    assert tags["window.sha256"] == first.windows.current.sha256 and tags["device"] == "cpu"
    [entry] = promote.history(demo_config)
    assert (entry.action, entry.actor, entry.to_version) == ("promote", "auto-approval", first.version.version)
    assert first.decision.entry == entry and first.decision.approval.source == "auto"
    for report in ("validation.html", "drift.html", "drift.json", "evaluation.json", "gate.json", "current.parquet",
                   "approval.json", "status.json"):
        assert (first.cycle.storage.local_dir / report).is_file(), report
    run = registry.client(demo_config).get_run(first.cycle.run_id)
    assert (run.info.status, run.data.tags["cycle.status"]) == ("FINISHED", "promoted")


def test_rerunning_a_cycle_reuses_its_run_and_version(demo_config, first):
    again = run_cycle(demo_config, BEFORE_SHIFT)
    assert again.cycle.run_id == first.cycle.run_id
    assert again.version.version == first.version.version
    assert [v.version for v in registry.list_versions(demo_config)] == [first.version.version]
    assert registry.aliases(demo_config) == {"champion": first.version.version}
    assert len(promote.history(demo_config)) == 1
    runs = registry.find_runs(demo_config, "retrain", max_results=10)
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    fold_history = registry.client(demo_config).get_metric_history(first.cycle.run_id, "fold.roc_auc")
    assert len(fold_history) == 5  # logged twice, stored once


@pytest.fixture(scope="module")
def shifted(demo_config, first):
    return run_cycle(demo_config, AFTER_SHIFT)


def test_covariate_shift_is_detected_in_the_shifted_features_only(demo_config, first, shifted):
    drift = shifted.drift
    assert (drift.reference_rows, shifted.windows.reference.start) == (first.windows.current.rows, date(2026, 1, 30))
    assert sorted(drift.drifted_features) == sorted(demo.SHIFTED_FEATURES)
    assert drift.dataset_drift


def test_without_concept_drift_the_gate_keeps_the_champion(demo_config, first, shifted):
    # The label relation did not change: the retrained candidate is not better by the configured margin.
    assert shifted.status == Status.GATE_REJECTED, format_outcome(shifted)
    assert [r.split(":")[0] for r in shifted.verdict.failures] == ["FAIL improvement"], shifted.verdict.reasons
    assert registry.aliases(demo_config)["champion"] == first.version.version
    assert len(registry.list_versions(demo_config)) == 1
    assert registry.client(demo_config).get_run(shifted.cycle.run_id).info.status == "FINISHED"


@pytest.fixture(scope="module")
def concept(demo_config, shifted):
    return run_cycle(demo_config, AFTER_CONCEPT)


def test_after_concept_drift_retraining_beats_the_stale_champion(demo_config, shifted, concept):
    verdict = concept.verdict
    assert concept.status == Status.PROMOTED, format_outcome(concept)
    assert verdict.champion_version is not None and verdict.compare_rows == concept.windows.current.rows
    assert verdict.improvement > 0.05 and verdict.p_value < demo_config.gate.alpha
    assert all(c > h for c, h in zip(verdict.fold_candidate, verdict.fold_champion, strict=True))
    assert set(demo.SHIFTED_FEATURES) | {demo.NEW_CATEGORY[0]} <= set(concept.drift.drifted_features)
    assert registry.aliases(demo_config) == {"champion": concept.version.version, "previous-champion": verdict.champion_version}
    assert concept.version.tags["gate.champion_version"] == verdict.champion_version
    summary = format_outcome(concept)
    for line in (
        f"Cycle demo_churn-{AFTER_CONCEPT}", "Dataset drift DETECTED", "payment_method: jensenshannon",
        f"Champion    v{verdict.champion_version} realised roc_auc {verdict.champion_compare:.4f} "
        f"on the {verdict.compare_rows:,} rows since its window",
        "PASS improvement:", "sign-flip test over 20 time blocks",
        f"Registry    demo_churn v{concept.version.version} (champion)",
        "auto-approval: promoted", "drift.html",
    ):
        assert line in summary, f"{line!r} not in\n{summary}"


def test_rollback_restores_the_previous_champion(demo_config, concept):
    stale = concept.verdict.champion_version
    entry = promote.rollback(demo_config, actor="on-call", reason="test rollback")
    assert (entry.from_version, entry.to_version) == (concept.version.version, stale)
    assert registry.aliases(demo_config)["champion"] == stale
    actions = [(e.action, e.to_version) for e in promote.history(demo_config)]
    assert actions[0] == ("rollback", stale) and actions[1] == ("promote", concept.version.version)
    status = format_status(demo_config)
    assert f"champion           v{stale}" in status and "on-call: rolled back to" in status


def test_the_regression_demo_runs_a_cycle(demo_environ):
    config = load_config(DEMO_CONFIG.with_name("demo_regression.yaml"), environ=demo_environ)
    outcome = run_cycle(config, BEFORE_SHIFT)
    assert outcome.status == Status.PROMOTED, format_outcome(outcome)
    assert outcome.evaluation.primary_metric == "rmse" and set(outcome.evaluation.metric_means) == {"rmse", "mae", "r2"}
    assert outcome.evaluation.metric_means["r2"] > 0.5
    assert registry.aliases(config) == {"champion": outcome.version.version}


def test_passwords_never_reach_the_recorded_config(tmp_path):
    config = load_config(write_config(tmp_path), environ={"PIPELINE_SOURCE_URL": "postgresql://u:s3cret@db/w"})
    assert recorded_config(config)["source"]["url"] == "postgresql://u:***@db/w"


def test_feature_names_mlflow_refuses_still_get_a_drift_metric(tmp_path):
    import sqlalchemy as sa

    from pipeline.validate import propose_suite, write_suite
    from tests.conftest import config_dict, small_frame

    odd = "price ($) <€>"
    frame = small_frame(600, days=10).rename(columns={"x_num": odd})
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'warehouse.db'}")
    frame.to_sql("events", engine, index=False)
    engine.dispose()
    source = {**config_dict(tmp_path)["source"], "features": {"numeric": [odd, "y_num"], "categorical": ["color"]}}
    config = load_config(write_config(tmp_path, source=source), environ={})
    write_suite(propose_suite(config, frame), config.validation.suite)

    outcome = run_cycle(config, date(2026, 1, 10), until="drift")

    metrics = registry.client(config).get_run(outcome.cycle.run_id).data.metrics
    assert "drift.score.price ___ ___" in metrics and odd in [f.feature for f in outcome.drift.features]


@pytest.mark.parametrize(
    ("reference", "notes"),
    [
        pytest.param("champion_window", ["the reference window 2025-12-29..2026-01-02 has rows only from 2026-01-01"],
                     id="before-the-data-starts"),
        pytest.param("same_period_last_year", [
            "drift.reference same_period_last_year: 2025-01-04..2025-01-08 has 0 rows (the history is shorter); "
            "compared with 2025-12-29..2026-01-02 instead",
            "the reference window 2025-12-29..2026-01-02 has rows only from 2026-01-01"], id="no-history-a-year-back"),
    ],
)
def test_the_summary_says_when_the_reference_window_is_not_what_was_asked(tmp_path, reference, notes):
    import sqlalchemy as sa

    from pipeline.validate import propose_suite, write_suite
    from tests.conftest import small_frame

    frame = small_frame(600, days=10)
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'warehouse.db'}")
    frame.to_sql("events", engine, index=False)
    engine.dispose()
    config = load_config(write_config(tmp_path, drift={"reference": reference}), environ={})
    write_suite(propose_suite(config, frame), config.validation.suite)

    outcome = run_cycle(config, date(2026, 1, 7), until="drift")

    assert [note.split(" (")[0] if "rows only" in note else note for note in outcome.windows.notes] == notes
    assert (outcome.windows.reference.start, outcome.windows.reference.first_day) == (date(2025, 12, 29),
                                                                                      date(2026, 1, 1))
    summary = format_outcome(outcome)
    assert all(f"note: {note}" in summary for note in notes)


@pytest.fixture(scope="module")
def monitored(tmp_path_factory):
    """Champion v1 as of 01-10, the labels turn on 01-11, v2 as of 01-15; monitoring cycles of both champions.

    Each monitoring cycle runs the stages its DAG runs: load, validate, drift, quality.
    """
    from pipeline.approval import decide_version, reviewer_decision
    from pipeline.cycle import drift_stage, load_stage, open_cycle, quality_stage, validate_stage
    from pipeline.record import CycleOutcome, Trigger
    from tests.conftest import label_flip_store

    config = label_flip_store(tmp_path_factory.mktemp("monitored"))

    def retrain(as_of: date):
        outcome = run_cycle(config, as_of)
        decide_version(config, outcome.version.version, reviewer_decision(True, "alice", "cli"))
        return outcome

    def monitor(as_of: date, name: str) -> CycleOutcome:
        with open_cycle(config, as_of, f"test_model-monitor-{name}", kind="monitor", trigger=Trigger("nightly")) as cycle:
            windows = load_stage(cycle)
            validate_stage(cycle, windows)
            drift_stage(cycle)
            quality_stage(cycle, windows)
        return CycleOutcome.read(cycle)

    first = retrain(date(2026, 1, 10))
    stale = monitor(date(2026, 1, 20), "v1")
    second = retrain(date(2026, 1, 15))
    fresh = monitor(date(2026, 1, 15), "v2-at-once")
    later = monitor(date(2026, 1, 20), "v2")
    return config, {"first": first, "stale": stale, "second": second, "fresh": fresh, "later": later}


def test_a_monitoring_cycle_ends_degraded_when_its_champion_is(monitored):
    from pipeline import catalog

    config, cycles = monitored
    stale = cycles["stale"]
    assert stale.status == Status.DEGRADED, format_outcome(stale)
    quality = stale.quality
    assert quality.champion_version == "1" and quality.degraded and quality.rows == stale.windows.current.rows
    assert quality.kfold_value == pytest.approx(cycles["first"].evaluation.primary_mean, abs=1e-6)
    assert (stale.cycle.storage.local_dir / "quality.json").is_file()
    run = registry.client(config).get_run(stale.cycle.run_id)
    assert run.data.metrics["quality.live"] == pytest.approx(quality.live_value)
    assert run.data.tags["quality.verdict"] == "degraded" and run.data.tags["quality.champion_version"] == "1"
    assert catalog.cycle(config, stale.cycle.cycle_id).quality == "degraded"


def test_a_retraining_cycle_checks_the_champion_it_starts_with(monitored):
    _, cycles = monitored
    first, second = cycles["first"], cycles["second"]
    assert first.quality.verdict == "no_champion" and "no champion yet" in format_outcome(first)
    assert second.quality.champion_version == "1" and second.quality.degraded  # the labels turned on 01-11
    assert second.verdict.champion_version == "1" and second.verdict.passed


@pytest.mark.parametrize(
    ("cycle", "status", "verdict", "reason"),
    [
        pytest.param("later", Status.NO_DRIFT, "healthy", "sign-flip test", id="healthy"),
        pytest.param("fresh", Status.NO_DRIFT, "not_judged", "only 0 labelled rows", id="no-rows-since-its-window"),
    ],
)
def test_a_monitoring_cycle_of_a_sound_champion_ends_on_its_drift(monitored, cycle, status, verdict, reason):
    outcome = monitored[1][cycle]
    assert outcome.status == status and outcome.quality.champion_version == "2"
    assert outcome.quality.verdict == verdict and reason in outcome.quality.reason


def test_summaries_show_the_champions_live_quality_next_to_its_k_fold_estimate(monitored):
    config, cycles = monitored
    status = format_status(config)
    kfold = cycles["second"].evaluation.primary_mean
    assert f"Champion v2 live quality (roc_auc {kfold:.4f} k-fold when trained; newest first)" in status
    trend = status.split("live quality", 1)[1].splitlines()[1:3]
    assert trend[0].startswith(f"  2026-01-20 monitor live {cycles['later'].quality.live_value:.4f} vs k-fold {kfold:.4f}")
    assert trend[0].endswith(": healthy  (test_model-monitor-v2)")
    assert trend[1].startswith("  2026-01-15 monitor live n/a") and ": not judged  (test_model-monitor-v2-at-once)" in trend[1]
    [retrained] = [line for line in status.splitlines() if line.startswith("  test_model-2026-01-15 ")]
    assert "quality: degraded" in retrained  # the cycle that trained v2 found v1 degraded
    summary = format_outcome(cycles["stale"])
    assert "  Quality     champion v1 DEGRADED: roc_auc " in summary
    assert "      trend of v1's roc_auc, newest first:" in summary and "retrain live" in summary  # the 01-15 retraining
    assert "quality.json" in summary


def test_retraining_only_on_degradation_ends_without_training_when_the_champion_holds(monitored):
    from pipeline.cycle import drift_stage, finish_without_training, load_stage, open_cycle, quality_stage, validate_stage

    config, _ = monitored
    watching = config.model_copy(update={"orchestration": config.orchestration.model_copy(
        update={"retrain_on": "degradation"})})
    with open_cycle(watching, date(2026, 1, 20), "test_model-degradation-only") as cycle:
        windows = load_stage(cycle)
        validate_stage(cycle, windows)
        drift_stage(cycle)
        quality = quality_stage(cycle, windows)
        finish_without_training(cycle)
    recorded = cycle.status()
    assert not quality.degraded and recorded.status == Status.NOT_DEGRADED and recorded.detail == quality.summary()


def test_a_cycle_says_loudly_when_the_champion_alias_was_moved_outside_the_pipeline(tmp_path):
    from tests.conftest import cli_champion_store

    cli_champion_store(tmp_path, "2026-01-10")
    config = load_config(tmp_path / "config.yaml", environ={})
    registry.set_alias(config, registry.CHAMPION, None)  # deleted by hand in the MLflow UI

    outcome = run_cycle(config, date(2026, 1, 9), until="validate")

    [warning] = [note for note in outcome.windows.notes if note.startswith("WARNING")]
    assert "champion alias of 'test_model' is v- but the promotion log's last champion move is v1" in warning
    assert f"note: {warning}" in format_outcome(outcome)


def test_a_fold_ensemble_is_registered_gated_and_challenged_like_a_refit_model(tmp_path):
    import mlflow

    from pipeline.train import FoldEnsemble
    from tests.conftest import label_flip_store, small_frame

    config = label_flip_store(tmp_path, training={"final_model": "fold_ensemble"}, promotion={"approval": "auto"})
    first = run_cycle(config, date(2026, 1, 10))
    assert first.status == Status.PROMOTED, format_outcome(first)
    champion = registry.load_model(config, first.version.version)  # verified and loaded with the allow-list
    assert isinstance(champion, FoldEnsemble) and len(champion.models) == config.evaluation.k
    run = registry.client(config).get_run(first.cycle.run_id).data
    assert run.params["final_model"] == "fold_ensemble" and run.metrics["final.fit_s"] == 0.0

    # The labels flip on 01-11: the next ensemble must beat the champion ensemble on the rows it never saw.
    second = run_cycle(config, date(2026, 1, 20))
    assert second.status == Status.PROMOTED, format_outcome(second)
    assert second.verdict.champion_version == first.version.version and second.verdict.compare_rows >= 50
    assert second.verdict.improvement > 0
    rows = small_frame(20)[config.source.features.all].astype({"x_num": "float64", "y_num": "float64"})
    expected = registry.load_model(config, second.version.version).predict_proba(rows)
    # Last: on a local artifact store MLflow's loader writes a registered_model_meta file beside the model's files.
    served = mlflow.pyfunc.load_model(f"models:/{config.model_name}/{second.version.version}")
    np.testing.assert_allclose(served.predict(rows), expected)


@pytest.mark.parametrize(
    ("recorded_for", "reused"),
    [
        pytest.param("these snapshots", True, id="same-champion-and-snapshots-reused"),
        pytest.param("earlier snapshots", False, id="snapshots-written-again-scored-anew"),
    ],
)
def test_the_train_stage_reuses_the_champions_scores_from_the_quality_check(tmp_path, recorded_for, reused):
    import pandas as pd

    from pipeline.cycle import drift_stage, load_stage, open_cycle, quality_stage, train_stage, validate_stage
    from pipeline.metrics import ComparedRows
    from pipeline.record import CHAMPION_SCORES, COMPARED
    from tests.conftest import label_flip_store

    config = label_flip_store(tmp_path, promotion={"approval": "auto"})
    assert run_cycle(config, date(2026, 1, 10)).status == Status.PROMOTED
    with open_cycle(config, date(2026, 1, 20), "test_model-reuse") as cycle:
        windows = load_stage(cycle)
        validate_stage(cycle, windows)
        drift_stage(cycle)
        quality_stage(cycle, windows)
        path = cycle.local_path(CHAMPION_SCORES)
        recorded = pd.read_parquet(path)
        [column] = recorded.columns
        assert column == f"v1@{windows.snapshot_id}" and len(recorded) == windows.current.rows
        # Marked scores, so the comparison shows which it used: the recorded ones or a fresh scoring.
        pd.DataFrame({column: recorded[column].where(recorded[column].isna(), 0.25)}).to_parquet(path, index=False)
        if recorded_for == "earlier snapshots":
            windows = load_stage(cycle)  # the same rows, snapshotted again: their order is not promised
        train_stage(cycle, windows)
        champion = ComparedRows.read_parquet(cycle.local_path(COMPARED)).champion
    assert len(champion) > 0
    assert bool((champion == 0.25).all()) is reused
