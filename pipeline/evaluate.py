"""Stage 5: k-fold evaluation of the candidate, and of the champion on the same unseen rows.

For every fold the candidate is fit on the other folds and scored on the held-out
one. The champion is scored on the held-out rows it was not trained on either
(rows outside its training window), and the candidate on exactly those rows too,
by the fold model that did not train on them, so the gate's paired comparison is
fair. Fitting the folds and comparing with a champion are separate steps, so a
backtest compares one set of folds with several champions.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from datetime import date
from typing import Any

import numpy as np
import pandas as pd
from sklearn.model_selection import GroupKFold, KFold, StratifiedGroupKFold, StratifiedKFold, TimeSeriesSplit
from sklearn.pipeline import Pipeline

from pipeline import importance
from pipeline.checkpoint import Checkpoints
from pipeline.config import Config
from pipeline.errors import PipelineError
from pipeline.metrics import ComparedRows, metric_value, task_metrics
from pipeline.results import EarlierVersions, EvaluationResult, FeatureImportance, FoldResult, VersionOnRows
from pipeline.train import EncodedWindow, FitInfo, FrameRows, WindowRows, encode_target, fit_model, predict_scores


@dataclass(frozen=True)
class Champion:
    """The current champion, as the evaluation and the quality check need it: a fitted model, the days it was
    trained on and the k-fold primary metric recorded at its training (None when none is on record)."""

    version: str
    model: Any
    window_start: date
    window_end: date
    kfold_value: float | None = None
    # Its scores on every row of the current window it never trained on (NaN elsewhere), once scored: the quality
    # check and the comparison need the same rows' scores, and a fold ensemble of a million rows takes seconds.
    window_scores: np.ndarray | None = field(default=None, repr=False, compare=False)

    def scores_on(self, rows: np.ndarray, score: RowScorer) -> np.ndarray:
        """Its scores on ``rows`` (a mask over the current window): the recorded ones where they cover the rows."""
        known = self.window_scores
        if known is not None and len(known) == len(rows) and not np.isnan(known[rows]).any():
            return known[rows]
        return score(self.model, rows)


def fold_indices(config: Config, frame: pd.DataFrame, y: np.ndarray) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Row positions of each fold.

    ``days`` keeps each calendar day in one fold: rows of a day share its conditions (weather, a
    campaign, an outage), so a model that trained on a day's other rows predicts them better than
    any model can predict a day it has not seen, which is what the champion is asked to do.
    ``time`` trains on the past and tests on the block that follows.
    """
    evaluation, seed = config.evaluation, config.training.seed
    if config.task == "classification" and evaluation.split != "time":
        _check_class_counts(config, frame)
    if evaluation.split == "time":
        order = np.argsort(frame[config.source.timestamp_column].to_numpy(), kind="stable")
        for train, test in TimeSeriesSplit(n_splits=evaluation.k).split(order):
            yield order[train], order[test]
    elif evaluation.split == "days":
        days = frame[config.source.timestamp_column].dt.normalize().to_numpy()
        if len(np.unique(days)) < evaluation.k:
            raise PipelineError(f"evaluation.split 'days' needs at least k={evaluation.k} days of rows, "
                                f"the window has {len(np.unique(days))}")
        splitter = (StratifiedGroupKFold if config.task == "classification" else GroupKFold)(
            n_splits=evaluation.k, shuffle=True, random_state=seed)
        yield from splitter.split(frame, y, groups=days)
    elif evaluation.split == "stratified" and config.task == "classification":
        yield from StratifiedKFold(n_splits=evaluation.k, shuffle=True, random_state=seed).split(frame, y)
    else:
        yield from KFold(n_splits=evaluation.k, shuffle=True, random_state=seed).split(frame)


def _check_class_counts(config: Config, frame: pd.DataFrame) -> None:
    """Every class needs a row in each of the k folds.

    With fewer, scikit-learn only warns and leaves folds without the class, whose metrics (AUC of a
    single class) are undefined: the estimate the gate judges would silently rest on fewer folds.
    """
    k, counts = config.evaluation.k, frame[config.source.target_column].value_counts()
    rare = counts[counts < k]
    if len(rare):
        # Labels unwrapped from numpy, so they read as the data's values (1, not np.int64(1)).
        classes = ", ".join(f"class {label.item() if isinstance(label, np.generic) else label!r} has {count:,} rows"
                            for label, count in rare.items())
        raise PipelineError(f"k-fold evaluation needs every class in each of evaluation.k={k} folds, but {classes} "
                            f"in the window; lower evaluation.k or widen the window")


def unseen_by_champion(config: Config, frame: pd.DataFrame, champion: Champion) -> np.ndarray:
    """Rows outside the days the champion was trained on: the only rows it may be judged on."""
    days = frame[config.source.timestamp_column].dt.normalize()
    start, end = pd.Timestamp(champion.window_start), pd.Timestamp(champion.window_end)
    return ((days < start) | (days > end)).to_numpy()


def with_window_scores(config: Config, frame: pd.DataFrame, champion: Champion) -> Champion:
    """The champion with its scores on every row of ``frame`` (the current window) it never trained on."""
    unseen = unseen_by_champion(config, frame, champion)
    scores = np.full(len(frame), np.nan)
    if unseen.any():
        scores[unseen] = predict_scores(champion.model, frame, config.task, unseen)
    return replace(champion, window_scores=scores)


@dataclass
class CandidateFolds:
    """The candidate's k-fold run: every row's out-of-fold score, and what each fold's model scored."""

    y: np.ndarray
    scores: np.ndarray
    fold: np.ndarray  # the fold each row was held out in (1-based)
    folds: list[FoldResult]
    best_iterations: list[int | None]
    device: str
    seconds: float
    # Kept only for ``training.final_model: fold_ensemble``, which is made of them: a refit needs none,
    # and k random forests of a large window are large.
    models: list[Pipeline] = field(default_factory=list)
    probe: importance.ImportanceProbe | None = None
    # The window encoded once for the folds (tree families), which the refit reuses.
    encoded: EncodedWindow | None = field(default=None, repr=False)


@dataclass
class FoldPlan:
    """What every k-fold of one window shares: the encoded target, the folds, and (tree families) the window encoded
    once; a search's trials and the candidate's k-fold all run on one plan."""

    y: np.ndarray
    splits: list[tuple[np.ndarray, np.ndarray]]
    fold: np.ndarray  # the fold each row was held out in (1-based; 0: none)
    encoded: EncodedWindow | None
    rows: FrameRows | WindowRows

    @classmethod
    def of(cls, config: Config, frame: pd.DataFrame) -> FoldPlan:
        y = encode_target(config, frame[config.source.target_column])
        splits = list(fold_indices(config, frame, y))
        fold_of_row = np.zeros(len(frame), dtype="int64")
        for number, (_, test_idx) in enumerate(splits, start=1):
            fold_of_row[test_idx] = number
        encoded = EncodedWindow.of(config, frame)
        return cls(y, splits, fold_of_row, encoded, FrameRows(frame) if encoded is None else encoded.rows())


# Called after each fold with (fold number, its held-out rows, their scores, its fit); it may raise to stop the k-fold.
FoldHook = Callable[[int, np.ndarray, np.ndarray, FitInfo], None]


def fit_folds(config: Config, frame: pd.DataFrame, device: str, progress=None, plan: FoldPlan | None = None,
              after_fold: FoldHook | None = None, keep_models: bool | None = None, probe: bool = True,
              checkpoints: Checkpoints | None = None) -> CandidateFolds:
    """Fit the candidate on each fold's training rows and score the rows it held out (and, ``probe``, its importance
    probe). ``keep_models``: keep the fold models (default: when the final model is made of them)."""
    started = time.perf_counter()
    plan = plan or FoldPlan.of(config, frame)
    y, fold_of_row = plan.y, plan.fold
    scores = np.full(len(frame), np.nan)
    importance_probe = None
    if probe:
        probe_rows = importance.probe_rows(config, fold_of_row)
        importance_probe = importance.new_probe(config, probe_rows, frame.iloc[probe_rows], y[probe_rows],
                                                fold_of_row[probe_rows])
    folds: list[FoldResult] = []
    best_iterations: list[int | None] = []
    models: list[Pipeline] = []
    if keep_models is None:
        keep_models = config.training.final_model == "fold_ensemble"
    for number, (train_idx, test_idx) in enumerate(plan.splits, start=1):
        if progress:
            progress(f"fold {number}/{config.evaluation.k}: fitting on {len(train_idx):,} rows")
        checkpoint = checkpoints.of(f"fold-{number}") if checkpoints else None
        model, info = fit_model(config, plan.rows.take(train_idx), y[train_idx], device, checkpoint)
        if progress and info.resumed_rounds:
            progress(f"fold {number}: resumed from its checkpoint at round {info.resumed_rounds}")
        best_iterations.append(info.best_iteration)
        if keep_models:
            models.append(model)
        scores[test_idx] = plan.rows.take(test_idx).scores(model, config.task)
        if importance_probe is not None:
            importance.probe_fold(config, importance_probe, number, model, local_scorer(config))
        folds.append(FoldResult(
            fold=number, train_rows=len(train_idx), test_rows=len(test_idx),
            metrics={name: metric_value(name, y[test_idx], scores[test_idx]) for name in task_metrics(config.task)},
        ))
        if after_fold:
            after_fold(number, test_idx, scores[test_idx], info)
    return CandidateFolds(y, scores, fold_of_row, folds, best_iterations, device, time.perf_counter() - started,
                          models, importance_probe, plan.encoded)


def probe_importance(config: Config, frame: pd.DataFrame, candidate: CandidateFolds) -> None:
    """The importance probe of folds fitted without one (a search's trial), from their kept models."""
    probe_rows = importance.probe_rows(config, candidate.fold)
    candidate.probe = importance.new_probe(config, probe_rows, frame.iloc[probe_rows], candidate.y[probe_rows],
                                           candidate.fold[probe_rows])
    for number, model in enumerate(candidate.models, start=1):
        importance.probe_fold(config, candidate.probe, number, model, local_scorer(config))


def local_scorer(config: Config):
    """Scores of rows held in this process, for the importance probe."""
    return lambda model, rows: predict_scores(model, rows, config.task)


# (a model, which rows of the window) -> its scores on those rows, in row order: where the rows are held.
RowScorer = Callable[[Any, np.ndarray], np.ndarray]


def rows_in_frame(config: Config, frame: pd.DataFrame) -> RowScorer:
    return lambda model, rows: predict_scores(model, frame, config.task, rows)


def compare_with_champion(
    config: Config, frame: pd.DataFrame, candidate: CandidateFolds, champion: Champion | None,
    score_rows: RowScorer | None = None,
) -> tuple[EvaluationResult, ComparedRows | None]:
    """The evaluation against one champion: it is scored on the rows it never saw, and so is the candidate.

    Only the ``time`` split leaves rows no fold model predicted (the first block); they are not compared.
    ``frame`` needs only the timestamp column when ``score_rows`` scores the rows elsewhere (on a cluster).
    """
    folds = [replace(f) for f in candidate.folds]
    compared = None
    if champion is not None:
        rows = compared_rows(config, frame, candidate, champion)
        score = score_rows or rows_in_frame(config, frame)
        champion_scores = champion.scores_on(rows, score) if rows.any() else np.array([])
        compared = ComparedRows(
            timestamps=frame[config.source.timestamp_column].to_numpy()[rows], y=candidate.y[rows],
            candidate=candidate.scores[rows], champion=champion_scores, fold=candidate.fold[rows],
        )
        primary = config.primary_metric
        for result in folds:
            in_fold = compared.fold == result.fold
            result.compare_rows = int(in_fold.sum())
            if result.compare_rows:
                result.candidate_compare = metric_value(primary, compared.y[in_fold], compared.candidate[in_fold])
                result.champion_compare = metric_value(primary, compared.y[in_fold], compared.champion[in_fold])
    names = task_metrics(config.task)
    values = {name: np.array([f.metrics[name] for f in folds]) for name in names}
    evaluation = EvaluationResult(
        task=config.task, primary_metric=config.primary_metric, split=config.evaluation.split, k=config.evaluation.k,
        rows=len(frame), folds=folds,
        metric_means={n: float(np.nanmean(v)) for n, v in values.items()},
        metric_stds={n: float(np.nanstd(v, ddof=1)) for n, v in values.items()},
        champion_version=champion.version if champion else None,
        champion_window=f"{champion.window_start}..{champion.window_end}" if champion else None,
        device=candidate.device, seconds=candidate.seconds, best_iterations=candidate.best_iterations,
        window_days=config.windows.current_days,
    )
    return evaluation, compared


def compared_rows(config: Config, frame: pd.DataFrame, candidate: CandidateFolds, champion: Champion) -> np.ndarray:
    """The rows the gate compares on: held out by a fold model, and outside the champion's training days."""
    return unseen_by_champion(config, frame, champion) & (candidate.fold > 0)


def evaluate_kfold(
    config: Config, frame: pd.DataFrame, device: str, champion: Champion | None = None, progress=None
) -> tuple[EvaluationResult, ComparedRows | None]:
    """Fit and score the candidate on each fold; score the champion on the same unseen held-out rows."""
    return compare_with_champion(config, frame, fit_folds(config, frame, device, progress), champion)


EARLIER_VERSIONS_SCORED = 3  # besides the previous champion: the newest other versions


def score_earlier_versions(config: Config, frame: pd.DataFrame, candidate: CandidateFolds, champion: Champion | None,
                           cycle_id: str, score_rows: RowScorer | None = None) -> EarlierVersions:
    """The previous champion and the newest other versions, each with the candidate, on the rows of the gate's
    comparison that the version never trained on either: after a rollback, the version rolled back is among them.

    ``frame`` needs only the timestamp column when ``score_rows`` scores the rows elsewhere (on a cluster)."""
    from pipeline import registry
    from pipeline.record import VersionTags

    primary = config.primary_metric
    score = score_rows or rows_in_frame(config, frame)
    compared = candidate.fold > 0 if champion is None else compared_rows(config, frame, candidate, champion)
    previous = registry.alias_version(config, registry.PREVIOUS)
    newest = [v for v in reversed(registry.list_versions(config))
              if VersionTags.of(v).cycle_id != cycle_id and (champion is None or v.version != champion.version)]
    chosen = ([previous] if previous is not None and (champion is None or previous.version != champion.version) else [])
    chosen += [v for v in newest if previous is None or v.version != previous.version][:EARLIER_VERSIONS_SCORED]
    scored = []
    for info in chosen:
        role = "previous champion" if previous is not None and info.version == previous.version else "earlier version"
        tags = VersionTags.of(info)
        if tags.window is None:
            scored.append(VersionOnRows(info.version, role, 0, note="its training window is not on record"))
            continue
        rows = compared & unseen_by_champion(config, frame, Champion(info.version, None, *tags.window))
        if not rows.any():
            scored.append(VersionOnRows(info.version, role, 0, note="it trained on every compared row"))
            continue
        try:
            scores = score(registry.load_model(config, info.version), rows)
        except (PipelineError, KeyError, ValueError) as exc:  # refused by its manifest, or other features
            scored.append(VersionOnRows(info.version, role, 0, note=f"not scored: {str(exc).splitlines()[0][:200]}"))
            continue
        y = candidate.y[rows]
        scored.append(VersionOnRows(info.version, role, int(rows.sum()), metric_value(primary, y, scores),
                                    metric_value(primary, y, candidate.scores[rows])))
    return EarlierVersions(primary, scored)


@dataclass
class ReviewScores:
    """What the reviewer sees beyond the gate's comparison, scored where the window's rows are (train stage)."""

    earlier: EarlierVersions
    importance: FeatureImportance | None


def review_scores(config: Config, frame: pd.DataFrame, candidate: CandidateFolds, champion: Champion | None,
                  cycle_id: str, score_rows: RowScorer | None = None) -> ReviewScores:
    """Earlier versions beside the candidate, and both models' feature importances on the compared rows."""
    earlier = score_earlier_versions(config, frame, candidate, champion, cycle_id, score_rows)
    shuffled = None if champion is None else importance.compare(
        config, candidate.probe, candidate.scores, champion.model, compared_rows(config, frame, candidate, champion),
        local_scorer(config))
    return ReviewScores(earlier, shuffled)
