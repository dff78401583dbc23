"""The evidence on the compared rows: both models' metrics, class errors or residuals, over time, and their gap."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipeline.evidence import BINS, TIME_BUCKETS, gather
from pipeline.metrics import ComparedRows, metric_value
from pipeline.results import Evidence, FeatureImportance, ImportanceOf


def compared(y, candidate, champion, days: int = 14, tz: str | None = None) -> ComparedRows:
    n = len(y)
    stamps = pd.date_range("2026-01-01", periods=n, freq=pd.Timedelta(days=days) / max(n, 1), tz=tz).to_numpy()
    return ComparedRows(stamps, np.asarray(y), np.asarray(candidate, float), np.asarray(champion, float),
                        np.ones(n, dtype=int))


def test_classification_evidence_counts_the_class_errors_of_each_model():
    y = np.array([0, 0, 1, 1, 1, 0, 1, 0] * 25)
    candidate = np.where(y == 1, 0.8, 0.2)  # always right
    champion = np.tile([0.6, 0.4, 0.3, 0.9, 0.7, 0.1, 0.45, 0.55], 25)  # right on half
    evidence = gather("classification", "roc_auc", "1", compared(y, candidate, champion))

    assert evidence.rows == 200 and evidence.threshold == 0.5
    assert evidence.candidate.confusion == [[100, 0], [0, 100]]
    assert evidence.champion.confusion == [[50, 50], [50, 50]]
    assert evidence.class_flips == pytest.approx(0.5)
    assert evidence.candidate.metrics["roc_auc"] == 1.0
    assert evidence.champion.metrics["log_loss"] == pytest.approx(metric_value("log_loss", y, champion))


def test_reliability_bins_hold_equal_rows_and_the_observed_rate():
    rng = np.random.default_rng(0)
    scores = rng.random(1000)
    y = (rng.random(1000) < scores).astype(int)  # calibrated by construction
    evidence = gather("classification", "roc_auc", "1", compared(y, scores, scores))

    bins = evidence.candidate.bins
    assert len(bins) == BINS and {b.rows for b in bins} == {100}
    assert all(abs(b.predicted - b.observed) < 0.12 for b in bins)
    assert [b.predicted for b in bins] == sorted(b.predicted for b in bins)
    assert evidence.prediction_shift == 0.0 and evidence.class_flips == 0.0  # one model twice


def test_regression_evidence_bins_residuals_against_the_prediction_and_scores_each_time_bucket():
    rng = np.random.default_rng(1)
    y = rng.normal(100, 10, size=800)
    candidate = y + rng.normal(0, 1, size=800)
    champion = y + 5.0  # biased: every residual is -5
    evidence = gather("regression", "rmse", "3", compared(y, candidate, champion, days=28, tz="Europe/Paris"))

    assert evidence.threshold is None and evidence.candidate.confusion is None and evidence.class_flips is None
    assert all(b.observed == pytest.approx(-5.0) for b in evidence.champion.bins)
    assert len(evidence.buckets) == TIME_BUCKETS and sum(b.rows for b in evidence.buckets) == 800
    assert all(rmse == pytest.approx(5.0) for rmse in evidence.champion.by_time)
    assert all(rmse < 1.5 for rmse in evidence.candidate.by_time)
    assert evidence.prediction_shift == pytest.approx(5.0 / np.std(champion), rel=0.2)


def test_rows_of_one_instant_are_one_time_bucket():
    y = np.array([0, 1] * 50)
    rows = compared(y, y * 0.9, y * 0.8)
    rows.timestamps[:] = rows.timestamps[0]
    assert [b.rows for b in gather("classification", "roc_auc", "1", rows).buckets] == [100]


def test_no_compared_rows_no_evidence():
    assert gather("classification", "roc_auc", "1", compared(np.array([]), [], [])) is None


def test_evidence_reads_back_as_written():
    y = np.array([0, 1] * 60)
    importance = FeatureImportance("permutation", "f1", 120, [ImportanceOf("x_num", 0.2, 0.01)])
    for shown in (None, importance):
        evidence = gather("classification", "f1", "2", compared(y, y * 0.7 + 0.1, np.full(120, 0.5)), shown)
        assert Evidence.from_dict(evidence.to_dict()) == evidence
