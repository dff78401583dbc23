"""What a reviewer and a notification recipient read, built from real cycles on a small warehouse."""

from __future__ import annotations

from datetime import date

import pytest

from pipeline import registry
from pipeline.approval import decide_version, reviewer_decision
from pipeline.cycle import run_cycle
from pipeline.record import EVIDENCE, CycleOutcome, CycleRecord, Status
from pipeline.review import approval_body, approval_subject, message
from pipeline.summary import format_significant
from tests.conftest import label_flip_store


@pytest.fixture(scope="module")
def cycles(tmp_path_factory):
    """v1 promoted by a person from a cycle as of 01-10; then, after the label relation flipped, a better candidate waits."""
    config = label_flip_store(tmp_path_factory.mktemp("review"), registry={"ui_url": "http://mlflow.example:5000/"})
    first = run_cycle(config, date(2026, 1, 10))
    decide_version(config, first.version.version, reviewer_decision(True, "alice", "cli"))
    second = run_cycle(config, date(2026, 1, 20))
    assert second.status == Status.AWAITING_APPROVAL, second.status
    return config, first, second


def test_a_recorded_cycle_reads_back_as_it_ran(cycles):
    config, first, second = cycles
    found = CycleRecord.find(config)  # the newest
    assert found.cycle_id == second.cycle.cycle_id and found.run_id == second.cycle.run_id
    outcome = CycleOutcome.read(CycleRecord.find(config, first.cycle.cycle_id))
    assert first.status == Status.AWAITING_APPROVAL and outcome.status == Status.PROMOTED  # decided afterwards
    assert outcome.verdict == first.verdict and outcome.evaluation == first.evaluation
    assert outcome.windows == first.windows and outcome.trigger == first.trigger
    assert outcome.version.version == "1" and outcome.decision.entry.actor == "alice"
    assert outcome.decision.approval.source == "cli"


def test_the_approval_shows_fold_numbers_data_drift_and_links(cycles):
    _, first, second = cycles
    outcome = CycleOutcome.read(second.cycle)
    verdict = outcome.verdict
    assert approval_subject(outcome).startswith(f"Promote test_model v{outcome.version.version} (vs champion v1, as of 2026-01-20)")
    body = approval_body(outcome)
    assert f"### Gate {'PASSED' if verdict.passed else 'REJECTED'} — roc_auc" in body
    assert f"on the same {verdict.compare_rows:,} unseen rows" in body and "p = " in body
    assert "| fold | candidate | champion v1 |" in body
    folds = body.split("| fold |")[1].split("\n\n")[0]
    assert folds.count("\n| ") == len(verdict.fold_candidate)  # one row per fold
    assert f"| 1 | {verdict.fold_candidate[0]:.4f} | {verdict.fold_champion[0]:.4f} |" in body
    assert "- current: 2026-01-16..2026-01-20" in body and "Validation PASSED" in body and "### Drift" in body
    # The champion it would replace, on the rows it never saw: its live roc_auc next to what its k-fold promised.
    quality = outcome.quality
    assert quality.champion_version == "1" and quality.degraded  # the label relation flipped on 01-11
    assert f"### Champion v1 live quality\nchampion v1 DEGRADED: roc_auc {quality.live_value:.4f}" in body
    assert "| as of | cycle | live | k-fold | rows | error | verdict |" in body
    assert (f"| 2026-01-20 | retrain `{second.cycle.cycle_id}` | {quality.live_value:.4f} | {quality.kfold_value:.4f} | "
            f"{quality.rows:,} | {quality.degradation:+.1%} | degraded |") in body
    # The reports open on the review pages inside Airflow, never as server paths or on MLflow's UI port.
    cycle_id, version = second.cycle.cycle_id, outcome.version.version
    assert f"- [Drift report](/pipeline/drift/{cycle_id})" in body
    assert f"- [Validation](/pipeline/validation/{cycle_id})" in body
    assert f"(/pipeline/models/{version})" in body and str(second.cycle.storage.location) not in body
    # MLflow's UI opens on the model-training views (its runs table), not on the GenAI overview.
    experiment = registry.client(second.cycle.config).get_run(second.cycle.run_id).info.experiment_id
    runs = f"http://mlflow.example:5000/#/experiments/{experiment}/runs"
    assert f"[MLflow run]({runs}/{second.cycle.run_id}?workflowType=machine_learning)" in body
    assert f"[Every cycle's run in MLflow]({runs}?workflowType=machine_learning)" in body


def test_the_approval_shows_both_models_on_the_same_unseen_rows(cycles):
    _, _, second = cycles
    outcome = CycleOutcome.read(second.cycle)
    evidence = second.cycle.read(EVIDENCE)
    body = approval_body(outcome)

    assert evidence.rows == outcome.verdict.compare_rows and evidence.champion_version == "1"
    assert f"### Candidate and champion v1 on the same {evidence.rows:,} unseen rows" in body
    for name in ("roc_auc", "log_loss", "f1"):
        assert (f"| {name} | {evidence.candidate.metrics[name]:.4f} | {evidence.champion.metrics[name]:.4f} |"
                in body), name
    (tn, fp), (fn, tp) = evidence.candidate.confusion
    assert f"- candidate: {tn:,} · {fp:,} · {fn:,} · {tp:,}" in body and "change class" in body
    assert "calibration: largest gap" in body and "Wasserstein distance of" in body
    assert "| time bucket | rows | candidate roc_auc | champion v1 |" in body
    importance = evidence.importance
    assert importance.rows == min(evidence.rows, second.cycle.config.evaluation.importance_rows)
    assert (f"Feature importance, the largest changes ({importance.method}; {importance.rows:,} of the rows):"
            in body)
    top = importance.top_changes()[0]
    assert (f"| {top.feature} | {format_significant(top.candidate)} | {format_significant(top.champion)} | "
            f"{format_significant(top.candidate - top.champion, signed=True)} | "
            f"{importance.rank(top.feature, 'candidate')} / {importance.rank(top.feature, 'champion')} |") in body


def test_a_first_champion_has_no_champion_to_compare_with(cycles):
    _, first, _ = cycles
    assert first.cycle.read(EVIDENCE) is None
    assert "unseen rows" not in approval_body(CycleOutcome.read(first.cycle)).split("### Data")[0].split("|")[0]


@pytest.mark.parametrize(
    "event, which, expected",
    [
        pytest.param("promotion_done", "first", "[test_model] v1 promoted to champion", id="promoted"),
        pytest.param("promotion_done", "second", None, id="not-promoted-yet"),
        pytest.param("gate_rejected", "first", None, id="gate-passed"),
        pytest.param("approval_waiting", "first", "[test_model] v1 waits for approval", id="waiting"),
    ],
)
def test_messages_only_for_what_happened(cycles, event, which, expected):
    _, first, second = cycles
    cycle = {"first": first, "second": second}[which].cycle
    sent = message(event, CycleOutcome.read(cycle), link="http://airflow.example/required_actions")
    if expected is None:
        assert sent is None
    else:
        assert sent.subject == expected and sent.text.startswith(f"Cycle {cycle.cycle_id} (as of {cycle.as_of})")
        assert "Link: http://airflow.example/required_actions" in sent.text


def test_drift_is_announced_exactly_when_detected(cycles):
    _, first, second = cycles
    for cycle in (first.cycle, second.cycle):
        outcome = CycleOutcome.read(cycle)
        sent = message("drift_detected", outcome)
        drift = outcome.drift
        assert (sent is None) == (not drift.dataset_drift)


def test_the_approval_gives_a_regressions_residuals_and_importance_changes_to_the_metrics_scale():
    import numpy as np

    from pipeline.evidence import gather
    from pipeline.results import FeatureImportance, ImportanceOf
    from pipeline.review import _evidence_section
    from tests.pipeline.test_evidence import compared

    rng = np.random.default_rng(1)
    y = rng.normal(100, 10, size=800)
    importance = FeatureImportance("permutation", "rmse", 800, [ImportanceOf("hr", 170.5648, 140.5496),
                                                                 ImportanceOf("temp", 0.23104, 2.33421)])
    evidence = gather("regression", "rmse", "3", compared(y, y + rng.normal(0, 1, size=800), y + 5.0), importance)
    body = "\n".join(_evidence_section(evidence))
    assert "champion v3 from -5 to -5" in body  # every residual of the biased champion
    assert "| hr | 170.6 | 140.5 | +30.02 | 1 / 1 |" in body and "| temp | 0.2310 | 2.334 | -2.103 | 2 / 2 |" in body
