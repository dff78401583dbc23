"""Drift: compare the current window's features with the reference window's.

Evidently's DataDriftPreset computes one drift score per feature and a test per
feature that fails when the feature drifted. Columns that Evidently cannot score
(all null in a window, or constant in both) are left out of its run and
reported as "degenerate": an all-empty column aborts the whole report, and a
constant one gives NaN or raises depending on the method.

Evidently is imported only when a report is computed: it takes seconds to import,
and reading a stored result (``DriftResult.from_dict``) does not need it.
"""

from __future__ import annotations

import html
import json
import math
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.config import Config
from pipeline.errors import ConfigError

NUMERIC = "numeric"
CATEGORICAL = "categorical"

# Methods whose score is a p-value: drift when the score is *below* the threshold.
# Every other method scores a distance: drift when the score reaches the threshold.
# Read from evidently/legacy/calculations/stattests/*.py (0.7.23); the tests check it against Evidently's verdicts.
P_VALUE_METHODS = frozenset({"ks", "chisquare", "z", "mannw", "anderson"})

# Evidently raises for a method used on a kind it does not support; say so before computing anything.
METHODS_BY_KIND = {
    NUMERIC: frozenset({"ks", "wasserstein", "jensenshannon", "psi", "kl_div", "hellinger", "mannw", "anderson", "ed"}),
    CATEGORICAL: frozenset({"jensenshannon", "psi", "chisquare", "z", "kl_div", "hellinger"}),
}


@dataclass
class FeatureDrift:
    feature: str
    kind: str  # "numeric" | "categorical"
    method: str | None  # the Evidently method used; None when degenerate
    score: float | None
    threshold: float | None
    drifted: bool
    status: str  # "drifted" | "stable" | "degenerate"
    note: str  # why a feature is degenerate; "" otherwise

    @property
    def severity(self) -> float:
        """How far past its threshold the score is (> 1 when drifted), comparable across methods."""
        if self.score is None or self.threshold is None:
            return 0.0
        numerator, denominator = (
            (self.threshold, self.score) if self.method in P_VALUE_METHODS else (self.score, self.threshold)
        )
        return numerator / denominator if denominator > 0 else math.inf

    def describe(self) -> str:
        if self.status == "degenerate":
            return f"{self.feature}: {self.note}"
        comparison = ("<" if self.method in P_VALUE_METHODS else ">=") if self.drifted else "vs"
        return f"{self.feature}: {self.method} {self.score:.4g} {comparison} threshold {self.threshold:g}"


@dataclass
class DriftResult:
    features: list[FeatureDrift]  # in config order
    drifted_share: float  # drifted / non-degenerate features
    dataset_drift: bool
    share_threshold: float
    reference_rows: int
    current_rows: int
    sampled_reference_rows: int
    sampled_current_rows: int
    report_path: str
    summary_path: str

    @property
    def drifted_features(self) -> list[str]:
        return [f.feature for f in self.features if f.drifted]

    @property
    def degenerate_features(self) -> list[FeatureDrift]:
        return [f for f in self.features if f.status == "degenerate"]

    def top_drifted(self, n: int | None = None) -> list[FeatureDrift]:
        """Drifted features, largest drift first (the smallest p-value, the largest distance)."""
        ranked = sorted((f for f in self.features if f.drifted), key=lambda f: f.severity, reverse=True)
        return ranked[:n]

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> DriftResult:
        return cls(**{**data, "features": [FeatureDrift(**f) for f in data["features"]]})

    def summary(self, top: int | None = None) -> str:
        """A few lines for logs and notifications; ``top`` limits the drifted features listed."""
        compared = len(self.features) - len(self.degenerate_features)
        verdict = "DETECTED" if self.dataset_drift else "NOT DETECTED"
        lines = [
            f"Dataset drift {verdict}: {len(self.drifted_features)} of {compared} compared features drifted "
            f"(share {self.drifted_share:.0%}, dataset drifts at {self.share_threshold:.0%}); "
            f"rows compared: reference {self.sampled_reference_rows:,} of {self.reference_rows:,}, "
            f"current {self.sampled_current_rows:,} of {self.current_rows:,}"
        ]
        drifted = self.top_drifted()
        if drifted:
            lines.append("drifted, largest first:")
            lines += [f"  {f.describe()}" for f in drifted[:top]]
            if top is not None and len(drifted) > top:
                lines.append(f"  ... and {len(drifted) - top} more")
        if self.degenerate_features:
            lines.append("not compared:")
            lines += [f"  {f.describe()}" for f in self.degenerate_features]
        return "\n".join(lines)


def detect_drift(config: Config, reference: pd.DataFrame, current: pd.DataFrame, run_dir: Path) -> DriftResult:
    """Compare the configured features of two windows; write ``drift.html`` and ``drift.json`` to ``run_dir``."""
    kinds = {name: NUMERIC for name in config.source.features.numeric}
    kinds |= {name: CATEGORICAL for name in config.source.features.categorical}
    settings = {name: _method_and_threshold(config, name, kind) for name, kind in kinds.items()}

    sampled_reference = _prepare(reference, kinds, config)
    sampled_current = _prepare(current, kinds, config)

    notes = {name: _degenerate_note(sampled_reference[name], sampled_current[name]) for name in kinds}
    compared = [name for name in kinds if not notes[name]]

    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    report_path = run_dir / "drift.html"
    scores = (
        _run_evidently(
            sampled_reference[compared], sampled_current[compared], kinds, settings,
            config.drift.dataset_drift_share, report_path,
        )
        if compared
        else {}
    )

    features = [
        _feature_drift(name, kind, *settings[name], notes[name], scores.get(name)) for name, kind in kinds.items()
    ]
    computable = [f for f in features if f.status != "degenerate"]
    drifted_share = sum(f.drifted for f in computable) / len(computable) if computable else 0.0
    result = DriftResult(
        features=features,
        drifted_share=drifted_share,
        dataset_drift=drifted_share >= config.drift.dataset_drift_share,
        share_threshold=config.drift.dataset_drift_share,
        reference_rows=len(reference),
        current_rows=len(current),
        sampled_reference_rows=len(sampled_reference),
        sampled_current_rows=len(sampled_current),
        report_path=str(report_path),
        summary_path=str(run_dir / "drift.json"),
    )
    if not compared:
        report_path.write_text(_nothing_compared_html(result))
    Path(result.summary_path).write_text(json.dumps(result.to_dict(), indent=2, allow_nan=False))
    return result


def _feature_drift(
    name: str, kind: str, method: str, threshold: float, note: str, scored: tuple[float, bool] | None
) -> FeatureDrift:
    """The verdict on one feature; ``scored`` is Evidently's (score, drifted), None when it was not run."""
    if not note and math.isnan(scored[0]):
        note = f"Evidently returned no score (NaN) for method {method}"
    if note:
        return FeatureDrift(name, kind, None, None, None, False, "degenerate", note)
    score, drifted = scored
    return FeatureDrift(name, kind, method, score, threshold, drifted, "drifted" if drifted else "stable", "")


def _method_and_threshold(config: Config, feature: str, kind: str) -> tuple[str, float]:
    drift = config.drift
    default_method, default_threshold = (
        (drift.num_method, drift.num_threshold) if kind == NUMERIC else (drift.cat_method, drift.cat_threshold)
    )
    override = drift.per_feature.get(feature)
    method = (override and override.method) or default_method
    threshold = default_threshold if override is None or override.threshold is None else override.threshold
    if method not in METHODS_BY_KIND[kind]:
        raise ConfigError(
            f"drift method {method!r} does not apply to {kind} feature {feature!r}; "
            f"use one of {sorted(METHODS_BY_KIND[kind])}"
        )
    return method, threshold


def _prepare(frame: pd.DataFrame, kinds: dict[str, str], config: Config) -> pd.DataFrame:
    """The feature columns, sampled to ``drift.sample_rows``, with one dtype per kind."""
    features = frame[list(kinds)]
    limit = config.drift.sample_rows
    if limit is not None and len(features) > limit:
        features = features.sample(n=limit, random_state=config.training.seed, ignore_index=True)
    return pd.DataFrame(
        {
            name: _as_numbers(features[name]) if kind == NUMERIC else _as_strings(features[name])
            for name, kind in kinds.items()
        }
    )


def _as_numbers(column: pd.Series) -> pd.Series:
    # Type checks belong to validation; here a value that is not a number is simply missing.
    return pd.to_numeric(column, errors="coerce").astype("float64")


def _as_strings(column: pd.Series) -> pd.Series:
    """Each value as text, missing ones NaN; mixed types (1, "1", True) break Evidently's category counts.

    Rows share one string object per category: Evidently hashes the values many times, and
    per-row objects scattered by sampling a large frame made that 4x slower at 100k rows.
    """
    codes, labels = pd.factorize(column.astype(object).map(str, na_action="ignore"))
    labels_then_missing = np.append(labels.astype(object), np.nan)  # missing values have code -1
    return pd.Series(labels_then_missing[codes], index=column.index)


def _degenerate_note(reference: pd.Series, current: pd.Series) -> str:
    """Why a column cannot be scored, or "" when it can."""
    empty = [window for window, column in (("reference", reference), ("current", current)) if column.isna().all()]
    if empty:
        return f"all values null in {' and '.join(empty)} window" + ("s" if len(empty) > 1 else "")
    reference_values, current_values = reference.dropna().unique(), current.dropna().unique()
    if len(reference_values) > 1 or len(current_values) > 1:
        return ""
    if reference_values[0] == current_values[0]:
        return f"constant in both windows (value '{reference_values[0]}')"
    return f"constant in both windows (reference '{reference_values[0]}', current '{current_values[0]}')"


def _run_evidently(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    kinds: dict[str, str],
    settings: dict[str, tuple[str, float]],
    drift_share: float,
    report_path: Path,
) -> dict[str, tuple[float, bool]]:
    """Run the preset on the frames' columns, save its HTML, and return {feature: (score, drifted)}."""
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    columns = list(reference.columns)
    definition = DataDefinition(
        numerical_columns=[n for n in columns if kinds[n] == NUMERIC],
        categorical_columns=[n for n in columns if kinds[n] == CATEGORICAL],
    )
    # Every column gets its method and threshold by name: Evidently's own defaults depend on the row count.
    preset = DataDriftPreset(
        columns=columns,
        drift_share=drift_share,
        per_column_method={n: settings[n][0] for n in columns},
        per_column_threshold={n: settings[n][1] for n in columns},
    )
    with warnings.catch_warnings():
        # A column constant in one window makes Evidently's plots divide by zero; the score is unaffected.
        warnings.filterwarnings("ignore", "invalid value encountered", RuntimeWarning)
        snapshot = Report([preset], include_tests=True).run(
            current_data=Dataset.from_pandas(current, data_definition=definition),
            reference_data=Dataset.from_pandas(reference, data_definition=definition),
        )
        snapshot.save_html(str(report_path))
    return _scores(snapshot.dict())


def _scores(snapshot: dict) -> dict[str, tuple[float, bool]]:
    """Per column: the ValueDrift metric's score, and whether its test failed (Evidently's "drifted")."""
    failed_metrics = {t["metric_config"]["metric_id"] for t in snapshot["tests"] if t["status"] == "FAIL"}
    return {
        m["config"]["column"]: (float(m["value"]), m["id"] in failed_metrics)
        for m in snapshot["metrics"]
        if m["config"]["type"].endswith(":ValueDrift")
    }


def _nothing_compared_html(result: DriftResult) -> str:
    rows = "".join(
        f"<tr><td>{html.escape(f.feature)}</td><td>{f.kind}</td><td>{html.escape(f.note)}</td></tr>"
        for f in result.features
    )
    return (
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>Data drift</title></head><body>"
        "<h1>Data drift: no feature could be compared</h1>"
        f"<p>Reference rows: {result.reference_rows:,}; current rows: {result.current_rows:,}.</p>"
        f"<table border='1'><tr><th>feature</th><th>kind</th><th>why</th></tr>{rows}</table>"
        "</body></html>"
    )
