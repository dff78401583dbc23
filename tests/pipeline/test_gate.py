"""The gate: one case per reason, on hand-made evaluation numbers."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pipeline.config import Gate
from pipeline.gate import corrected_resampled_ttest, decide
from pipeline.results import EvaluationResult, FoldResult


def evaluation(
    candidate: list[float], champion: list[float] | None = None, metric: str = "roc_auc",
    compare_rows: int = 1000, rows_per_fold: int = 1000, k: int | None = None,
) -> EvaluationResult:
    k = k or len(candidate)
    folds = [
        FoldResult(
            fold=i + 1, train_rows=rows_per_fold * (k - 1), test_rows=rows_per_fold, metrics={metric: c},
            compare_rows=compare_rows if champion else 0,
            candidate_compare=c if champion else None, champion_compare=champion[i] if champion else None,
        )
        for i, c in enumerate(candidate)
    ]
    return EvaluationResult(
        task="classification" if metric in ("roc_auc", "f1", "log_loss") else "regression",
        primary_metric=metric, split="stratified", k=k, rows=rows_per_fold * k, folds=folds,
        metric_means={metric: float(np.mean(candidate))}, metric_stds={metric: float(np.std(candidate, ddof=1))},
        champion_version="3" if champion else None, champion_window="2026-01-01..2026-01-28" if champion else None,
    )


def failed(verdict) -> list[str]:
    return [c.name for c in verdict.checks if not c.passed]


STRONG = [0.80, 0.81, 0.805, 0.812, 0.808]
WEAKER = [0.75, 0.76, 0.752, 0.758, 0.751]


def test_first_cycle_passes_on_floors_alone():
    verdict = decide(evaluation(STRONG), Gate(floors={"roc_auc": 0.7}, max_fold_std=0.02), "c1")
    assert verdict.passed
    assert verdict.champion_version is None and verdict.p_value is None
    assert any(c.name == "champion" and "floors alone" in c.detail for c in verdict.checks)


def test_better_candidate_passes_with_every_number_recorded():
    verdict = decide(evaluation(STRONG, WEAKER), Gate(floors={"roc_auc": 0.7}, min_improvement=0.01), "c2")
    assert verdict.passed, verdict.reasons
    assert verdict.improvement == pytest.approx(np.mean(STRONG) - np.mean(WEAKER))
    assert verdict.p_value < 0.05 and verdict.t_statistic > 0
    assert verdict.fold_champion == WEAKER and verdict.compare_rows == 5000
    assert verdict.to_dict() == type(verdict).from_dict(verdict.to_dict()).to_dict()


@pytest.mark.parametrize(
    ("result", "gate", "reason"),
    [
        pytest.param(evaluation(WEAKER), Gate(floors={"roc_auc": 0.8}), "floor roc_auc", id="below-floor"),
        pytest.param(
            evaluation([0.9, 0.7, 0.85, 0.72, 0.88]), Gate(max_fold_std=0.05), "fold spread", id="fold-spread-too-wide"
        ),
        pytest.param(evaluation(STRONG, WEAKER), Gate(min_improvement=0.1), "margin", id="improvement-below-margin"),
        pytest.param(
            evaluation([0.80, 0.76, 0.81, 0.75, 0.80], [0.78, 0.78, 0.78, 0.78, 0.78]), Gate(alpha=0.05),
            "significance", id="improvement-not-significant",
        ),
        pytest.param(evaluation(WEAKER, STRONG), Gate(), "margin", id="worse-than-champion"),
        pytest.param(
            evaluation(STRONG, WEAKER, compare_rows=10), Gate(min_compare_rows=200), "comparable rows",
            id="too-few-unseen-rows",
        ),
        pytest.param(
            evaluation([0.30, 0.31, 0.30, 0.29, 0.30], metric="log_loss"), Gate(floors={"log_loss": 0.25}),
            "floor log_loss", id="lower-is-better-floor",
        ),
    ],
)
def test_each_failing_reason_rejects(result, gate, reason):
    verdict = decide(result, gate, "c")
    assert not verdict.passed
    assert reason in failed(verdict)
    assert any(r.startswith(f"FAIL {reason}") for r in verdict.reasons)


def test_lower_is_better_metric_improves_when_it_falls():
    candidate, champion = [10.0, 10.2, 9.9, 10.1, 10.0], [12.0, 12.1, 11.8, 12.2, 12.0]
    verdict = decide(evaluation(candidate, champion, metric="rmse"), Gate(floors={"rmse": 11}, min_improvement=1.0), "c")
    assert verdict.passed, verdict.reasons
    assert verdict.improvement == pytest.approx(np.mean(champion) - np.mean(candidate))


def test_unscorable_fold_rejects():
    result = evaluation(STRONG, WEAKER)
    result.folds[2].champion_compare = math.nan
    assert "comparable rows" in failed(decide(result, Gate(), "c"))


@pytest.mark.parametrize(
    ("differences", "ratio", "expected_t"),
    [
        pytest.param([0.01, 0.02, 0.015, 0.012, 0.018], 0.25, None, id="typical"),
        pytest.param([0.01] * 5, 0.25, math.inf, id="zero-variance-positive"),
        pytest.param([-0.01] * 5, 0.25, -math.inf, id="zero-variance-negative"),
    ],
)
def test_corrected_ttest(differences, ratio, expected_t):
    t, p = corrected_resampled_ttest(np.array(differences), ratio)
    if expected_t is None:
        d = np.array(differences)
        expected = d.mean() / math.sqrt((1 / 5 + ratio) * d.var(ddof=1))
        assert t == pytest.approx(expected)
        assert 0 < p < 0.05
        # the correction makes the test more conservative than a plain paired t-test
        plain = d.mean() / math.sqrt(d.var(ddof=1) / 5)
        assert t < plain
    else:
        assert t == expected_t
        assert p == (0.0 if expected_t > 0 else 1.0)
