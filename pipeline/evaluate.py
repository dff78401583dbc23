"""Stage 5: k-fold evaluation of the candidate, and of the champion on the same unseen rows.

For every fold the candidate is fit on the other folds and scored on the held-out
one. The champion is scored on the held-out rows it was not trained on either
(rows after the end of its training window), and the candidate on exactly those
rows too, so the paired comparison in the gate is fair.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from typing import Any

import numpy as np
import pandas as pd
from sklearn import metrics as skm
from sklearn.model_selection import KFold, StratifiedKFold, TimeSeriesSplit

from pipeline.config import CLASSIFICATION_METRICS, REGRESSION_METRICS, Config
from pipeline.results import EvaluationResult, FoldResult
from pipeline.train import encode_target, fit_model, predict_scores

HIGHER_IS_BETTER = {"roc_auc": True, "f1": True, "r2": True, "log_loss": False, "rmse": False, "mae": False}


def metric_value(name: str, y_true: np.ndarray, scores: np.ndarray) -> float:
    """One metric; NaN where it is undefined (e.g. AUC on rows of a single class)."""
    if len(y_true) == 0:
        return float("nan")
    if name == "roc_auc":
        return float(skm.roc_auc_score(y_true, scores)) if len(np.unique(y_true)) == 2 else float("nan")
    if name == "log_loss":
        return float(skm.log_loss(y_true, np.clip(scores, 1e-15, 1 - 1e-15), labels=[0, 1]))
    if name == "f1":
        return float(skm.f1_score(y_true, (scores >= 0.5).astype(int), zero_division=0.0))
    if name == "rmse":
        return float(skm.root_mean_squared_error(y_true, scores))
    if name == "mae":
        return float(skm.mean_absolute_error(y_true, scores))
    if name == "r2":
        return float(skm.r2_score(y_true, scores)) if len(y_true) > 1 else float("nan")
    raise ValueError(f"unknown metric {name!r}")


def task_metrics(task: str) -> tuple[str, ...]:
    return CLASSIFICATION_METRICS if task == "classification" else REGRESSION_METRICS


@dataclass(frozen=True)
class Champion:
    """The current champion, as the evaluation needs it: a fitted model and the days it was trained on."""

    version: str
    model: Any
    window_start: date
    window_end: date


def fold_indices(config: Config, frame: pd.DataFrame, y: np.ndarray) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Row positions of each fold; ``time`` splits train on the past and test on the block that follows."""
    evaluation, seed = config.evaluation, config.training.seed
    if evaluation.split == "time":
        order = np.argsort(frame[config.source.timestamp_column].to_numpy(), kind="stable")
        for train, test in TimeSeriesSplit(n_splits=evaluation.k).split(order):
            yield order[train], order[test]
    elif evaluation.split == "stratified" and config.task == "classification":
        yield from StratifiedKFold(n_splits=evaluation.k, shuffle=True, random_state=seed).split(frame, y)
    else:
        yield from KFold(n_splits=evaluation.k, shuffle=True, random_state=seed).split(frame)


def unseen_by_champion(config: Config, frame: pd.DataFrame, champion: Champion) -> np.ndarray:
    """Rows outside the days the champion was trained on: the only rows it may be judged on."""
    days = frame[config.source.timestamp_column].dt.normalize()
    start, end = pd.Timestamp(champion.window_start), pd.Timestamp(champion.window_end)
    return ((days < start) | (days > end)).to_numpy()


def evaluate_kfold(
    config: Config, frame: pd.DataFrame, device: str, champion: Champion | None = None, progress=None
) -> EvaluationResult:
    """Fit and score the candidate on each fold; score the champion on the same unseen held-out rows."""
    started = time.perf_counter()
    task, primary = config.task, config.primary_metric
    y = encode_target(config, frame[config.source.target_column])
    unseen = unseen_by_champion(config, frame, champion) if champion else np.zeros(len(frame), dtype=bool)
    folds: list[FoldResult] = []
    best_iterations: list[int | None] = []
    for number, (train_idx, test_idx) in enumerate(fold_indices(config, frame, y), start=1):
        if progress:
            progress(f"fold {number}/{config.evaluation.k}: fitting on {len(train_idx):,} rows")
        model, info = fit_model(config, frame.iloc[train_idx], y[train_idx], device)
        best_iterations.append(info.best_iteration)
        X_test, y_test = frame.iloc[test_idx], y[test_idx]
        scores = predict_scores(model, X_test, task)
        result = FoldResult(
            fold=number, train_rows=len(train_idx), test_rows=len(test_idx),
            metrics={name: metric_value(name, y_test, scores) for name in task_metrics(task)},
        )
        if champion is not None:
            compare = unseen[test_idx]
            result.compare_rows = int(compare.sum())
            if result.compare_rows:
                champion_scores = predict_scores(champion.model, X_test[compare], task)
                result.candidate_compare = metric_value(primary, y_test[compare], scores[compare])
                result.champion_compare = metric_value(primary, y_test[compare], champion_scores)
        folds.append(result)
    names = task_metrics(task)
    values = {name: np.array([f.metrics[name] for f in folds]) for name in names}
    return EvaluationResult(
        task=task, primary_metric=primary, split=config.evaluation.split, k=config.evaluation.k, rows=len(frame),
        folds=folds,
        metric_means={n: float(np.nanmean(v)) for n, v in values.items()},
        metric_stds={n: float(np.nanstd(v, ddof=1)) for n, v in values.items()},
        champion_version=champion.version if champion else None,
        champion_window=f"{champion.window_start}..{champion.window_end}" if champion else None,
        device=device, seconds=time.perf_counter() - started, best_iterations=best_iterations,
    )
