"""Permutation importance of the candidate and the champion, on the same rows neither trained on.

A feature's importance is how much worse the primary metric gets when that feature's values are
shuffled among the rows, everything else kept (Breiman's permutation importance): it needs no
model internals, so it reads the same for every family and for a fold ensemble. The rows are a
seeded sample of the k-fold's held-out rows (the probe); each is scored by the fold model that
held it out, as the candidate's k-fold metric is, and shuffled only among the probe rows of its
fold. The champion is scored on exactly the same shuffled rows, restricted to the rows it never
saw, so the two importances differ only by the models.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from pipeline.config import Config
from pipeline.metrics import HIGHER_IS_BETTER, metric_value
from pipeline.results import FeatureImportance, ImportanceOf

METHOD = "permutation importance: how much worse {metric} gets with the feature's values shuffled among the rows"

# (model, rows of the probe frame to score with their feature replaced) -> scores, feature-major: see ``_scored``.
Scorer = Callable[[object, pd.DataFrame], np.ndarray]


@dataclass
class ImportanceProbe:
    """The probe rows, their shuffles, and the candidate's scores with each feature shuffled."""

    rows: np.ndarray  # positions in the window, ascending
    frame: pd.DataFrame  # the probe rows' features, in ``rows`` order
    y: np.ndarray
    fold: np.ndarray  # the fold that held each probe row out
    donors: np.ndarray  # [feature, probe row] -> the probe row whose value replaces it
    shuffled: np.ndarray  # [feature, probe row] -> the candidate's score with that feature shuffled


def probe_rows(config: Config, fold_of_row: np.ndarray) -> np.ndarray:
    """A seeded sample of ``evaluation.importance_rows`` of the held-out rows (every one when fewer)."""
    held_out = np.flatnonzero(fold_of_row > 0)
    wanted = config.evaluation.importance_rows
    if len(held_out) <= wanted:
        return held_out
    return np.sort(np.random.default_rng(config.training.seed).choice(held_out, wanted, replace=False))


def draw_donors(config: Config, fold: np.ndarray) -> np.ndarray:
    """For each feature an independent shuffle of the probe rows within each fold."""
    rng = np.random.default_rng(config.training.seed + 1)
    donors = np.tile(np.arange(len(fold)), (len(config.source.features.all), 1))
    for number in np.unique(fold):
        members = np.flatnonzero(fold == number)
        for feature in range(len(donors)):
            donors[feature, members] = rng.permutation(members)
    return donors


def shuffled_frame(config: Config, frame: pd.DataFrame, donors: np.ndarray, members: np.ndarray) -> pd.DataFrame:
    """The ``members`` rows once per feature, that feature's values taken from its donors: one frame, so a model
    scores every shuffle in one call (a call per feature pays the pipeline's overhead that many times)."""
    copies = []
    for feature, name in enumerate(config.source.features.all):
        copy = frame.iloc[members].copy()
        # ``.array`` keeps the column's dtype (a category stays a category).
        copy[name] = frame[name].array[donors[feature, members]]
        copies.append(copy)
    return pd.concat(copies, ignore_index=True)


def _scored(config: Config, model, frame: pd.DataFrame, donors: np.ndarray, members: np.ndarray,
            score: Scorer) -> np.ndarray:
    return score(model, shuffled_frame(config, frame, donors, members)).reshape(len(donors), len(members))


def probe_fold(config: Config, probe: ImportanceProbe, number: int, model, score: Scorer) -> None:
    """The candidate's shuffled scores on the probe rows fold ``number``'s model held out."""
    members = np.flatnonzero(probe.fold == number)
    if len(members):
        probe.shuffled[:, members] = _scored(config, model, probe.frame, probe.donors, members, score)


def new_probe(config: Config, rows: np.ndarray, frame: pd.DataFrame, y: np.ndarray, fold: np.ndarray) -> ImportanceProbe:
    """The probe before any fold's model scored it: ``shuffled`` is filled fold by fold."""
    donors = draw_donors(config, fold)
    return ImportanceProbe(rows, frame.reset_index(drop=True), y, fold, donors, np.full(donors.shape, np.nan))


def _worsening(metric: str, y: np.ndarray, base: np.ndarray, shuffled: np.ndarray) -> list[float]:
    intact = metric_value(metric, y, base)
    sign = 1.0 if HIGHER_IS_BETTER[metric] else -1.0
    return [sign * (intact - metric_value(metric, y, column)) for column in shuffled]


def compare(config: Config, probe: ImportanceProbe | None, candidate_scores: np.ndarray, champion_model,
            compared: np.ndarray, score: Scorer) -> FeatureImportance | None:
    """Both models' importances on the probe rows among ``compared`` (the window's rows the gate compares on);
    ``candidate_scores``: the candidate's out-of-fold score of every row of the window."""
    if probe is None or not len(probe.rows):
        return None
    members = np.flatnonzero(compared[probe.rows])
    if not len(members):
        return None
    metric = config.primary_metric
    y = probe.y[members]
    champion_base = score(champion_model, probe.frame.iloc[members])
    champion_shuffled = _scored(config, champion_model, probe.frame, probe.donors, members, score)
    candidate = _worsening(metric, y, candidate_scores[probe.rows[members]], probe.shuffled[:, members])
    champion = _worsening(metric, y, champion_base, champion_shuffled)
    features = [ImportanceOf(name, c, h) for name, c, h in zip(config.source.features.all, candidate, champion,
                                                                strict=True)]
    return FeatureImportance(METHOD.format(metric=metric), metric, len(members), features)
