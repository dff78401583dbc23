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
import math
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.config import Config
from pipeline.errors import ConfigError
from pipeline.results import DriftResult, FeatureDrift

NUMERIC = "numeric"
CATEGORICAL = "categorical"

# Evidently raises for a method used on a kind it does not support; say so before computing anything.
METHODS_BY_KIND = {
    NUMERIC: frozenset({"ks", "wasserstein", "jensenshannon", "psi", "kl_div", "hellinger", "mannw", "anderson", "ed"}),
    CATEGORICAL: frozenset({"jensenshannon", "psi", "chisquare", "z", "kl_div", "hellinger"}),
}


def detect_drift(config: Config, reference: pd.DataFrame, current: pd.DataFrame, report: Path) -> DriftResult:
    """Compare the configured features of two windows; write the HTML report to ``report``."""
    kinds = {name: NUMERIC for name in config.source.features.numeric}
    kinds |= {name: CATEGORICAL for name in config.source.features.categorical}
    settings = {name: _method_and_threshold(config, name, kind) for name, kind in kinds.items()}

    sampled_reference = _prepare(reference, kinds, config)
    sampled_current = _prepare(current, kinds, config)

    notes = {name: _degenerate_note(sampled_reference[name], sampled_current[name]) for name in kinds}
    compared = [name for name in kinds if not notes[name]]

    scores = (
        _run_evidently(
            sampled_reference[compared], sampled_current[compared], kinds, settings,
            config.drift.dataset_drift_share, report,
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
    )
    if not compared:
        report.write_text(_nothing_compared_html(result))
    return result


def _feature_drift(
    name: str, kind: str, method: str, threshold: float, note: str, scored: tuple[float, bool] | None
) -> FeatureDrift:
    """The verdict on one feature; ``scored`` is Evidently's (score, drifted), None when it was not run."""
    if scored is None or math.isnan(scored[0]):
        note = note or f"Evidently returned no score (NaN) for method {method}"
    if note or scored is None:
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
    report: Path,
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
        snapshot.save_html(str(report))
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
