"""The evidence a reviewer approves on: candidate and champion on the same rows, neither trained on them.

Computed at the gate from the compared rows (the rows of each fold the champion never saw, each
scored by the fold model that held it out and by the champion), so it costs no scoring of its own:
every metric for both models; for classification the confusion matrix at the models' class
threshold and a reliability (calibration) table; for regression the residuals against the
prediction; for both the primary metric over time and how far apart the two models' predictions are.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from pipeline.metrics import ComparedRows, metric_value, task_metrics
from pipeline.results import Binned, Evidence, FeatureImportance, ModelEvidence, TimeBucket

# The class threshold of ``predict`` and of f1: a probability of the positive class of at least one half.
CLASS_THRESHOLD = 0.5
BINS = 10  # reliability and residual bins, each holding a tenth of the rows
TIME_BUCKETS = 8  # at most; equal spans of the compared rows' time range, empty ones left out


def _bins(scores: np.ndarray, values: np.ndarray) -> list[Binned]:
    order = np.argsort(scores, kind="stable")
    return [Binned(float(scores[part].mean()), float(values[part].mean()), len(part))
            for part in np.array_split(order, min(BINS, len(order))) if len(part)]


def _time_buckets(timestamps: np.ndarray) -> tuple[list[TimeBucket], np.ndarray]:
    stamps = pd.to_datetime(pd.Series(timestamps))
    if stamps.dt.tz is not None:
        stamps = stamps.dt.tz_convert("UTC").dt.tz_localize(None)
    low, high = stamps.min(), stamps.max()
    edges = pd.date_range(low, high, periods=TIME_BUCKETS + 1) if high > low else pd.DatetimeIndex([low, high])
    index = np.clip(np.searchsorted(edges[1:-1], stamps, side="right"), 0, len(edges) - 2)
    used, renumbered = np.unique(index, return_inverse=True)
    buckets = [TimeBucket(str(stamps[index == b].min()), str(stamps[index == b].max()), int((index == b).sum()))
               for b in used]
    return buckets, renumbered


def _model(task: str, primary: str, y: np.ndarray, scores: np.ndarray, bucket: np.ndarray,
           buckets: int) -> ModelEvidence:
    metrics = {name: metric_value(name, y, scores) for name in task_metrics(task)}
    by_time = [metric_value(primary, y[bucket == b], scores[bucket == b]) for b in range(buckets)]
    if task == "classification":
        predicted = scores >= CLASS_THRESHOLD
        truth = y.astype(bool)
        confusion = [[int((~truth & ~predicted).sum()), int((~truth & predicted).sum())],
                     [int((truth & ~predicted).sum()), int((truth & predicted).sum())]]
        return ModelEvidence(metrics, by_time, _bins(scores, y.astype(float)), confusion)
    return ModelEvidence(metrics, by_time, _bins(scores, y - scores))


def _wasserstein(first: np.ndarray, second: np.ndarray) -> float:
    """The 1-Wasserstein distance of two samples of the same size: the mean gap between their sorted values."""
    return float(np.mean(np.abs(np.sort(first) - np.sort(second))))


def gather(task: str, primary_metric: str, champion_version: str, compared: ComparedRows,
           importance: FeatureImportance | None = None) -> Evidence | None:
    """The evidence on the compared rows, with both models' feature importances (measured at the train stage where
    the rows' features are); None when there are no compared rows (no champion, or it saw every row)."""
    if not len(compared):
        return None
    y = compared.y.astype(float)
    buckets, bucket = _time_buckets(compared.timestamps)
    candidate = _model(task, primary_metric, y, compared.candidate, bucket, len(buckets))
    champion = _model(task, primary_metric, y, compared.champion, bucket, len(buckets))
    spread = float(np.std(compared.champion)) or 1.0
    shift = _wasserstein(compared.candidate, compared.champion) / spread
    flips = None
    if task == "classification":
        flips = float(np.mean((compared.candidate >= CLASS_THRESHOLD) != (compared.champion >= CLASS_THRESHOLD)))
    return Evidence(task, primary_metric, len(compared), champion_version, candidate, champion, buckets, shift, flips,
                    CLASS_THRESHOLD if task == "classification" else None, importance)
