"""Stage 4: build and fit a model of the configured family on a training frame.

Every model is one scikit-learn ``Pipeline`` (type coercion → encoding → estimator),
so the encoding travels with the model into the registry and the champion can be
scored on raw rows later; with ``training.final_model: fold_ensemble`` the candidate is
a ``FoldEnsemble`` of the k fold pipelines, which answers the same calls.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import joblib
import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.model_selection import train_test_split
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler
from sklearn.utils.metaestimators import available_if
from threadpoolctl import threadpool_limits

from pipeline.checkpoint import FitCheckpoint, fit_checkpointed
from pipeline.config import Config
from pipeline.errors import ConfigError, PipelineError
from pipeline.families import FAMILIES


class FeatureCoercer(BaseEstimator, TransformerMixin):
    """Select the schema's features and give them stable types (numbers as float, categories as str)."""

    def __init__(self, numeric: list[str], categorical: list[str]):
        self.numeric = numeric
        self.categorical = categorical

    def fit(self, X: pd.DataFrame, y=None) -> FeatureCoercer:
        return self

    def transform(self, X: pd.DataFrame) -> pd.DataFrame:
        out = pd.DataFrame(index=X.index)
        for column in self.numeric:
            out[column] = pd.to_numeric(X[column], errors="coerce").astype("float64")
        for column in self.categorical:
            values = X[column]
            out[column] = values.astype(str).where(values.notna(), np.nan)
        return out


class OrdinalCodes(BaseEstimator, TransformerMixin):
    """The tree families' encoding: the numbers as they are and each category as its index among the categories
    seen in fit (sorted; an unseen or missing one is NaN), in one float32 matrix.

    The codes are OrdinalEncoder's, but OrdinalEncoder behind a ColumnTransformer compares Python strings row by
    row and stacks a float64 copy of every column: 2.2 s and 230 MB at a million rows against 0.2 s and 115 MB
    here, paid at every fold fit and every scoring. float32 loses nothing: XGBoost and the random forest compare
    float32 values, and the codes are exact integers.
    """

    def __init__(self, numeric: list[str], categorical: list[str]):
        self.numeric = numeric
        self.categorical = categorical

    def fit(self, X: pd.DataFrame, y=None) -> OrdinalCodes:
        self.categories_ = [np.array(sorted(X[column].dropna().unique()), dtype=object) for column in self.categorical]
        return self

    def transform(self, X: pd.DataFrame) -> np.ndarray:
        encoded = np.empty((len(X), len(self.numeric) + len(self.categorical)), dtype="float32")
        for j, column in enumerate(self.numeric):
            encoded[:, j] = X[column].to_numpy()
        for j, (column, categories) in enumerate(zip(self.categorical, self.categories_, strict=True), start=len(self.numeric)):
            codes = pd.Categorical(X[column], categories=categories).codes
            encoded[:, j] = np.where(codes < 0, np.nan, codes)
        return encoded


@dataclass(frozen=True)
class FitInfo:
    best_iteration: int | None
    seconds: float
    resumed_rounds: int = 0  # the rounds a checkpoint held when the fit resumed from it


def gpu_visible() -> bool:
    """True when an NVIDIA GPU is visible to this process and XGBoost was built with CUDA."""
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) in ("", "-1"):
        return False
    import xgboost

    if not xgboost.build_info().get("USE_CUDA"):
        return False
    gpus = Path("/proc/driver/nvidia/gpus")
    if gpus.is_dir() and any(gpus.iterdir()):
        return True
    if shutil.which("nvidia-smi"):
        listed = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, check=False)
        return listed.returncode == 0 and "GPU" in listed.stdout
    return False


def resolve_device(config: Config) -> str:
    """The device that will train: XGBoost silently falls back to the CPU, so a missing GPU is our error."""
    requested, family = config.training.device, FAMILIES[config.training.family]
    if requested == "cpu":
        return "cpu"
    if requested == "cuda":
        if not family.cuda:
            cuda_families = [f.name for f in FAMILIES.values() if f.cuda]
            raise ConfigError(f"training.device 'cuda' needs training.family {' or '.join(map(repr, cuda_families))} "
                              f"(got {family.name!r})")
        if not gpu_visible():
            raise PipelineError(
                "training.device is 'cuda' but no NVIDIA GPU is visible to this process "
                "(check nvidia-smi and CUDA_VISIBLE_DEVICES, or set device: auto / cpu)"
            )
        return "cuda"
    return "cuda" if family.cuda and gpu_visible() else "cpu"


def resolve_threads(config: Config) -> int:
    """Threads per fit: ``training.threads``, or with ``auto`` the CPUs this process may run on.

    joblib counts what the process may use (its CPU affinity and a cgroup's CPU quota, as in a
    container), not the machine's cores: more threads than that only wait on each other.
    """
    threads = config.training.threads
    return joblib.cpu_count() if threads == "auto" else threads


@contextmanager
def fit_threads(config: Config) -> Iterator[int]:
    """Around a fit: BLAS and OpenMP pools capped at the fit's thread count, so nothing runs nested on top of it."""
    threads = resolve_threads(config)
    with threadpool_limits(limits=threads):
        yield threads


def _encoder(config: Config) -> OrdinalCodes | ColumnTransformer:
    numeric, categorical = list(config.source.features.numeric), list(config.source.features.categorical)
    if FAMILIES[config.training.family].ordinal_encoding:
        # Trees split on ordinal codes; unseen and missing categories become NaN, which all three handle.
        return OrdinalCodes(numeric, categorical)
    numeric_steps = Pipeline([("impute", SimpleImputer(strategy="median")), ("scale", StandardScaler())])
    categorical_steps = Pipeline(
        [
            ("impute", SimpleImputer(strategy="constant", fill_value="__missing__")),
            ("onehot", OneHotEncoder(handle_unknown="ignore")),
        ]
    )
    return ColumnTransformer([("num", numeric_steps, numeric), ("cat", categorical_steps, categorical)])


def build_model(config: Config, device: str) -> Pipeline:
    """An unfitted pipeline; raises ConfigError when training.params don't fit the family."""
    features = config.source.features
    try:
        estimator = FAMILIES[config.training.family].build(config, device, resolve_threads(config))
    except TypeError as exc:
        raise ConfigError(f"training.params do not fit family {config.training.family!r}: {exc}") from None
    return Pipeline(
        [
            ("coerce", FeatureCoercer(list(features.numeric), list(features.categorical))),
            ("encode", _encoder(config)),
            ("model", estimator),
        ]
    )


def encode_target(config: Config, target: pd.Series) -> np.ndarray:
    """Binary classes become 0/1 (the larger label is the positive class); regression targets become float."""
    if config.task == "regression":
        return pd.to_numeric(target, errors="raise").to_numpy(dtype="float64")
    classes = sorted(pd.unique(target.dropna()))
    if len(classes) != 2:
        raise PipelineError(
            f"target {config.source.target_column!r} must have exactly two classes for classification, "
            f"found {len(classes)}: {classes[:10]}"
        )
    return (target.to_numpy() == classes[1]).astype("int64")


class FrameRows:
    """Rows of a frame by position, as a pipeline's head (coercion and encoding) fits and encodes them."""

    def __init__(self, frame: pd.DataFrame, positions: np.ndarray | None = None):
        self.frame, self.positions = frame, positions

    def __len__(self) -> int:
        return len(self.frame) if self.positions is None else len(self.positions)

    def take(self, positions: np.ndarray) -> FrameRows:
        return FrameRows(self.frame, positions if self.positions is None else self.positions[positions])

    def _rows(self) -> pd.DataFrame:
        return self.frame if self.positions is None else self.frame.iloc[self.positions]

    def fit_encode(self, head: Pipeline, y: np.ndarray) -> np.ndarray:
        return head.fit_transform(self._rows(), y)

    def encode(self, head: Pipeline) -> np.ndarray:
        return head.transform(self._rows())

    def scores(self, model: Pipeline, task: str) -> np.ndarray:
        """``predict_scores`` of these rows, a chunk at a time (no copy of them)."""
        return predict_scores(model, self.frame, task, self.positions)


class EncodedWindow:
    """A window coerced and encoded once for the several fits of a tree family (k folds, then a refit).

    Each fit's encoder still learns the categories of its own rows only, as its pipeline would on
    those rows; its matrix is then a gather of the window's rows and a remap of each category's
    code, not another coercion and encoding of its rows: that pass was a copy of the fold's rows
    beside its encoded matrix, and at every fold. ``rows`` gives what ``fit_model`` takes.
    """

    def __init__(self, config: Config, frame: pd.DataFrame):
        numeric, categorical = list(config.source.features.numeric), list(config.source.features.categorical)
        self.categorical = FeatureCoercer([], categorical).transform(frame)
        self.codes = OrdinalCodes(numeric, categorical).fit(self.categorical)
        coerce = FeatureCoercer(numeric, categorical)
        self.encoded = np.empty((len(frame), len(numeric) + len(categorical)), dtype="float32")
        # A chunk of rows coerced at a time: a coerced copy of the whole window would double it at its peak.
        for start in range(0, len(frame), SCORED_ROWS_AT_ONCE):
            rows = slice(start, start + SCORED_ROWS_AT_ONCE)
            self.encoded[rows] = self.codes.transform(coerce.transform(frame.iloc[rows]))

    @classmethod
    def of(cls, config: Config, frame: pd.DataFrame) -> EncodedWindow | None:
        """None for a family whose encoding (one-hot, scaling) is not a code per category."""
        return cls(config, frame) if FAMILIES[config.training.family].ordinal_encoding else None

    def rows(self, positions: np.ndarray | None = None) -> WindowRows:
        return WindowRows(self, np.arange(len(self.encoded)) if positions is None else positions)

    def matrix(self, codes: OrdinalCodes, positions: np.ndarray) -> np.ndarray:
        """The rows at ``positions`` as ``codes`` (an encoder fitted on other rows of the window) encodes them."""
        matrix = self.encoded[positions]
        first = len(self.codes.numeric)
        for j, (known, own) in enumerate(zip(self.codes.categories_, codes.categories_, strict=True), start=first):
            at = np.searchsorted(own, known).clip(max=max(len(own) - 1, 0))
            remap = np.where(own[at] == known, at, np.nan) if len(own) else np.full(len(known), np.nan)
            column = matrix[:, j]
            present = ~np.isnan(column)
            column[present] = remap[column[present].astype(np.intp)]
        return matrix


class WindowRows:
    """Rows of an ``EncodedWindow`` by position: ``FrameRows``' calls, answered from the encoded matrix."""

    def __init__(self, window: EncodedWindow, positions: np.ndarray):
        self.window, self.positions = window, positions

    def __len__(self) -> int:
        return len(self.positions)

    def take(self, positions: np.ndarray) -> WindowRows:
        return WindowRows(self.window, self.positions[positions])

    def fit_encode(self, head: Pipeline, y: np.ndarray) -> np.ndarray:
        coerce, codes = head[0], head[-1]
        coerce.fit(None)
        codes.fit(self.window.categorical.iloc[self.positions])
        return self.encode(head)

    def encode(self, head: Pipeline) -> np.ndarray:
        return self.window.matrix(head[-1], self.positions)

    def scores(self, model: Pipeline, task: str) -> np.ndarray:
        """``predict_scores`` of these rows, from the window's encoded matrix."""
        return _scores(model[-1], self.encode(model[:-1]), task)


def fit_model(config: Config, X: pd.DataFrame | FrameRows | WindowRows, y: np.ndarray,
              device: str, checkpoint: FitCheckpoint | None = None) -> tuple[Pipeline, FitInfo]:
    """Fit one model on a frame's rows or an encoded window's; XGBoost early-stops on an inner validation split
    carved from them. ``checkpoint``: a family that checkpoints resumes from it and saves to it."""
    started = time.perf_counter()
    model = build_model(config, device)
    rows = FrameRows(X) if isinstance(X, pd.DataFrame) else X
    training, family = config.training, FAMILIES[config.training.family]
    resumed = 0
    with fit_threads(config):
        if family.eval_set_early_stopping and training.early_stopping_rounds:
            stratify = y if config.task == "classification" else None
            fit_at, validate_at = train_test_split(
                np.arange(len(rows)), test_size=training.validation_fraction, random_state=training.seed,
                stratify=stratify,
            )
            fitted, validated = rows.take(fit_at), rows.take(validate_at)
            head = model[:-1]
            encoded = fitted.fit_encode(head, y[fit_at])
            eval_set = [(validated.encode(head), y[validate_at])]
            if checkpoint is not None and family.checkpoints:
                resumed = fit_checkpointed(model[-1], checkpoint, encoded, y[fit_at], eval_set)
            else:
                model[-1].fit(encoded, y[fit_at], eval_set=eval_set, verbose=False)
            best = family.best_iteration(model[-1])
        elif checkpoint is not None and family.checkpoints:
            resumed = fit_checkpointed(model[-1], checkpoint, rows.fit_encode(model[:-1], y), y, None)
            best = None
        else:
            model[-1].fit(rows.fit_encode(model[:-1], y), y)
            # Without an eval set there is no best iteration to speak of for a family that stops on one.
            best = None if family.eval_set_early_stopping else family.best_iteration(model[-1])
    return model, FitInfo(best_iteration=best, seconds=time.perf_counter() - started, resumed_rounds=resumed)


def _classifies(ensemble: FoldEnsemble) -> bool:
    return ensemble.task == "classification"


class FoldEnsemble(BaseEstimator):
    """The k fold models of a k-fold run as one model: the mean of their class probabilities (classification)
    or of their predictions (regression).

    Each row of the window trained k - 1 of the k models, so the ensemble learned from the whole
    window without a refit; it answers ``predict`` and ``predict_proba`` like the Pipeline it stands for.
    """

    def __init__(self, models: list[Pipeline], task: str):
        self.models = models
        self.task = task

    @property
    def classes_(self) -> np.ndarray:
        return self.models[0].classes_

    def _coerced(self, X: pd.DataFrame) -> pd.DataFrame:
        # Every fold model starts with the same FeatureCoercer, which learns nothing: the rows are coerced once, not k times.
        return self.models[0][0].transform(X)

    @available_if(_classifies)
    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:
        coerced = self._coerced(X)
        return np.mean([model[1:].predict_proba(coerced) for model in self.models], axis=0)

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        if _classifies(self):
            return self.classes_[np.argmax(self.predict_proba(X), axis=1)]
        coerced = self._coerced(X)
        return np.mean([model[1:].predict(coerced) for model in self.models], axis=0)


def final_candidate(
    config: Config, X: pd.DataFrame, y: np.ndarray, fold_models: list[Pipeline], device: str, progress=None,
    encoded: EncodedWindow | None = None, checkpoint: FitCheckpoint | None = None,
) -> tuple[Pipeline | FoldEnsemble, FitInfo]:
    """The model a cycle registers and a backtest step keeps, as ``training.final_model`` says (decided here only).

    ``refit``: one more fit on all rows; ``fold_ensemble``: the k fold models, no fit (``fold_models``
    must then hold them: ``pipeline.evaluate.fit_folds`` keeps them for this setting). ``encoded``: ``X`` encoded
    once for the folds, which the refit reuses; ``checkpoint``: the refit's.
    """
    if config.training.final_model == "fold_ensemble":
        if len(fold_models) != config.evaluation.k:
            raise PipelineError(f"a fold ensemble needs the {config.evaluation.k} fold models, got {len(fold_models)}")
        if progress:
            progress(f"final model: the {len(fold_models)} fold models averaged (no refit)")
        return FoldEnsemble(list(fold_models), config.task), FitInfo(best_iteration=None, seconds=0.0)
    if progress:
        progress(f"final fit on all {len(X):,} rows")
    return fit_model(config, X if encoded is None else encoded.rows(), y, device, checkpoint)


SCORED_ROWS_AT_ONCE = 100_000  # the coerced and encoded copies a scoring makes are of this many rows, not the window's


def predict_scores(model: Pipeline | FoldEnsemble, X: pd.DataFrame, task: str,
                   rows: np.ndarray | None = None) -> np.ndarray:
    """Positive-class probability for classification, the prediction for regression: of every row of ``X``, or of
    ``rows`` (a boolean mask or positions), in order; a chunk at a time, so no copy of the whole window is made."""
    positions = np.arange(len(X)) if rows is None else np.flatnonzero(rows) if rows.dtype == bool else rows
    if rows is None and len(X) <= SCORED_ROWS_AT_ONCE:
        return _scores(model, X, task)
    chunks = [_scores(model, X.iloc[positions[start:start + SCORED_ROWS_AT_ONCE]], task)
              for start in range(0, len(positions), SCORED_ROWS_AT_ONCE)]
    return np.concatenate(chunks) if chunks else np.array([], dtype="float64")


def _scores(model: Pipeline | FoldEnsemble, X: pd.DataFrame | np.ndarray, task: str) -> np.ndarray:
    if task == "classification":
        return model.predict_proba(X)[:, 1]
    return model.predict(X)
