"""Drift: compare the current window's features with the reference window's.

The verdict is the pipeline's own, computed on every row of both windows
(``pipeline.drift_stats``). A feature drifts when its shift is both significant and large
enough to matter:

- significant: its two-sample test's p-value is below ``drift.alpha`` divided by the number of
  features (Bonferroni), so two windows drawn from one distribution raise a dataset alarm at most
  at rate ``alpha`` whatever their size;
- large enough: its distance reaches the floor of its kind (``numeric_floor`` reference standard
  deviations of Wasserstein distance, ``categorical_floor`` of Jensen-Shannon distance), so a
  window of millions of rows does not alarm on a trivial shift.

The dataset drifts when any feature does (``dataset_rule: any``), or when ``dataset_drift_share``
of the compared features do (``share``). Evidently renders the report, on samples of at most
``drift.sample_rows`` rows, with the same distances and the thresholds that decided, and the
report opens with the pipeline's verdict table. Evidently is imported only then: it takes
seconds to import, and reading a stored result (``DriftResult.from_dict``) does not need it.
"""

from __future__ import annotations

import html
import math
import os
import time
import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline import drift_stats
from pipeline.config import Config
from pipeline.results import DriftResult, FeatureDrift

NUMERIC = "numeric"
CATEGORICAL = "categorical"
METHODS = {NUMERIC: "wasserstein", CATEGORICAL: "jensenshannon"}
# Evidently's Jensen-Shannon distance is in natural-log units; the pipeline's is base 2 (0..1).
EVIDENTLY_JS_FACTOR = math.sqrt(math.log(2))


def detect_drift(config: Config, reference: pd.DataFrame, current: pd.DataFrame, report: Path) -> DriftResult:
    """Judge the configured features of two windows; write the HTML report to ``report``."""
    result = judge_drift(config, reference, current)
    write_report(config, reference, current, result, report)
    return result


def write_report(config: Config, reference: pd.DataFrame, current: pd.DataFrame, result: DriftResult,
                 report: Path) -> None:
    """Evidently's report on (samples of) the windows, opening with ``result``; a page of its own without features."""
    compared = [f.feature for f in result.features if f.status != "degenerate" and f.score is not None]
    if compared:
        _run_evidently(config, reference, current, result, compared, report)
    else:
        report.write_text(_page("Data drift: no feature could be compared", result), encoding="utf-8")


FeatureJudge = Callable[[str, str, float, float], FeatureDrift]  # (feature, kind, floor, alpha) -> its verdict


def judge_drift(config: Config, reference: pd.DataFrame, current: pd.DataFrame) -> DriftResult:
    """The verdict on every configured feature of two windows, and on the dataset, from all their rows."""
    seed = config.training.seed
    return judge_windows(config, len(reference), len(current), lambda name, kind, floor, alpha: judge_feature(
        name, kind, reference[name], current[name], floor, alpha, seed))


def judge_windows(config: Config, reference_rows: int, current_rows: int, judge: FeatureJudge) -> DriftResult:
    """The dataset's verdict from each feature's (``judge``), for windows of these sizes wherever they are held."""
    started = time.perf_counter()
    kinds = _kinds(config)
    drift, minimum = config.drift, config.windows.min_rows
    feature_alpha = drift.alpha / len(kinds)
    notes = []
    if reference_rows < minimum:
        notes.append(f"the reference window has {reference_rows:,} rows, below windows.min_rows {minimum:,}: "
                     "drift is not judged on it")
        features = [FeatureDrift(name, kind, METHODS[kind], None, None, False, "degenerate", notes[0])
                    for name, kind in kinds.items()]
    else:
        # numpy's sorts release the GIL: the features are binned side by side, on the cores the process may use.
        with ThreadPoolExecutor(max_workers=len(os.sched_getaffinity(0))) as pool:
            features = list(pool.map(lambda item: judge(item[0], item[1], _floor(config, *item), feature_alpha),
                                     kinds.items()))
    computable = [f for f in features if f.status != "degenerate"]
    drifted = sum(f.drifted for f in computable)
    share = drifted / len(computable) if computable else 0.0
    dataset_drift = drifted > 0 if drift.dataset_rule == "any" else (bool(computable) and share >= drift.dataset_drift_share)
    return DriftResult(
        features=features, drifted_share=share, dataset_drift=dataset_drift, share_threshold=drift.dataset_drift_share,
        reference_rows=reference_rows, current_rows=current_rows,
        sampled_reference_rows=min(reference_rows, drift.sample_rows or reference_rows),
        sampled_current_rows=min(current_rows, drift.sample_rows or current_rows),
        rule=drift.dataset_rule, alpha=drift.alpha, notes=notes, seconds=round(time.perf_counter() - started, 3),
    )


def _kinds(config: Config) -> dict[str, str]:
    return {name: NUMERIC for name in config.source.features.numeric} | {
        name: CATEGORICAL for name in config.source.features.categorical}


def _floor(config: Config, feature: str, kind: str) -> float:
    override = config.drift.per_feature.get(feature)
    if override is not None and override.floor is not None:
        return override.floor
    return config.drift.numeric_floor if kind == NUMERIC else config.drift.categorical_floor


def judge_feature(
    name: str, kind: str, reference: pd.Series, current: pd.Series, floor: float, alpha: float, seed: int,
) -> FeatureDrift:
    """One feature's verdict: drifted when significant at ``alpha`` and at least ``floor`` apart."""
    if kind == CATEGORICAL:
        return judge_categories(name, drift_stats.category_counts(reference), drift_stats.category_counts(current),
                                floor, alpha)
    reference_values, current_values = finite_numbers(reference), finite_numbers(current)
    return judge_numbers(name, len(reference_values), len(current_values),
                         lambda: drift_stats.bin_numeric(reference_values, current_values, seed), floor, alpha)


def _verdict(name: str, kind: str, score: float, p_value: float, floor: float, alpha: float, note: str = "") -> FeatureDrift:
    drifted = p_value < alpha and score >= floor
    return FeatureDrift(name, kind, METHODS[kind], score, floor, drifted, "drifted" if drifted else "stable", note,
                        p_value=p_value, alpha=alpha)


def judge_categories(name: str, reference: pd.Series, current: pd.Series, floor: float, alpha: float) -> FeatureDrift:
    """A categorical feature's verdict from each window's ``drift_stats.category_counts``."""
    method = METHODS[CATEGORICAL]
    counts = {"reference": reference, "current": current}
    empty = [window for window, rows in counts.items() if not rows.drop(drift_stats.MISSING, errors="ignore").any()]
    if len(empty) == 2:
        return FeatureDrift(name, CATEGORICAL, method, None, floor, False, "degenerate", "all values null in both windows")
    binned = drift_stats.bin_categories(reference, current)
    if len(binned.reference) == 1:
        return _verdict(name, CATEGORICAL, 0.0, 1.0, floor, alpha,
                        f"constant in both windows (value '{reference.index[-1]}')")
    note = f"all values null in the {empty[0]} window only" if empty else ""
    return _verdict(name, CATEGORICAL, drift_stats.jensen_shannon(binned), drift_stats.chi_square_p_value(binned),
                    floor, alpha, note)


def judge_numbers(
    name: str, reference_values: int, current_values: int, binned: Callable[[], drift_stats.Binned], floor: float,
    alpha: float,
) -> FeatureDrift:
    """A numeric feature's verdict from the windows' counts of finite values and their ``binned`` counts."""
    method = METHODS[NUMERIC]
    empty = [window for window, values in (("reference", reference_values), ("current", current_values)) if not values]
    if len(empty) == 2:
        return FeatureDrift(name, NUMERIC, method, None, floor, False, "degenerate", "all values null in both windows")
    if empty:
        # A column that stopped (or started) being filled is the largest drift there is.
        return FeatureDrift(name, NUMERIC, method, None, floor, True, "drifted",
                            f"all values null in the {empty[0]} window only", p_value=0.0, alpha=alpha)
    bins = binned()
    assert bins.positions is not None
    if len(bins.positions) == 1:
        return _verdict(name, NUMERIC, 0.0, 1.0, floor, alpha, f"constant in both windows (value {bins.positions[0]:g})")
    return _verdict(name, NUMERIC, drift_stats.wasserstein(bins), drift_stats.ks_p_value(bins), floor, alpha)


def finite_numbers(column: pd.Series) -> np.ndarray:
    """The finite values; type checks belong to validation, here a value that is not a number is missing."""
    if column.dtype.kind in "fiub":  # plain numpy numbers: one contiguous copy at most (a frame's block is strided)
        values = np.ascontiguousarray(column.to_numpy(dtype="float64", copy=False))
    else:
        values = pd.to_numeric(column, errors="coerce").to_numpy(dtype="float64", na_value=np.nan)
    finite = np.isfinite(values)
    return values if finite.all() else values[finite]


def _as_text(column: pd.Series) -> pd.Series:
    """Each value as text, missing ones NaN: 1, "1" and True are one category in both windows.

    Converting the distinct values only is what keeps a million-row column cheap.
    """
    codes, labels = pd.factorize(column, use_na_sentinel=True)
    text = np.append(np.array([str(label) for label in labels], dtype=object), np.nan)
    return pd.Series(text[codes], index=column.index)


def report_rows(rows: int, limit: int | None, seed: int) -> np.ndarray | None:
    """The positions of the rows the report shows (``DataFrame.sample``'s draw, in its order); None: every row."""
    if limit is None or rows <= limit:
        return None
    return np.random.RandomState(seed).choice(rows, size=limit, replace=False)


def _sample(frame: pd.DataFrame, columns: list[str], limit: int | None, seed: int) -> pd.DataFrame:
    # The rows first, then the columns: a million-row window is never copied whole for a sample of it.
    chosen = report_rows(len(frame), limit, seed)
    if chosen is None:
        return frame[columns]
    return frame.iloc[chosen][columns].reset_index(drop=True)


def _run_evidently(
    config: Config, reference: pd.DataFrame, current: pd.DataFrame, result: DriftResult, compared: list[str],
    report: Path,
) -> None:
    """Evidently's report of the compared features, with the pipeline's distances and floors, verdict table first."""
    from evidently import DataDefinition, Dataset, Report
    from evidently.metrics import ValueDrift

    kinds = _kinds(config)
    def prepared(frame: pd.DataFrame) -> pd.DataFrame:
        sample = _sample(frame, compared, config.drift.sample_rows, config.training.seed)
        return pd.DataFrame({name: pd.to_numeric(sample[name], errors="coerce").astype("float64")
                             if kinds[name] == NUMERIC else _as_text(sample[name]) for name in compared})

    floors = {f.feature: f.threshold for f in result.features if f.feature in compared}
    definition = DataDefinition(
        numerical_columns=[n for n in compared if kinds[n] == NUMERIC],
        categorical_columns=[n for n in compared if kinds[n] == CATEGORICAL],
    )
    # One ValueDrift per column, with the pipeline's distance and floor: Evidently's DataDriftPreset computes each
    # column's drift three times over (2.7 times the cost), for a dataset verdict the page opens with anyway.
    metrics = [ValueDrift(column=n, method=METHODS[kinds[n]],
                          threshold=(floors[n] or 0.0) * (EVIDENTLY_JS_FACTOR if kinds[n] == CATEGORICAL else 1.0))
               for n in compared]
    with warnings.catch_warnings():
        # A column constant in one window makes Evidently's plots divide by zero; the score is unaffected.
        warnings.filterwarnings("ignore", "invalid value encountered", RuntimeWarning)
        snapshot = Report(metrics, include_tests=True).run(
            current_data=Dataset.from_pandas(prepared(current), data_definition=definition),
            reference_data=Dataset.from_pandas(prepared(reference), data_definition=definition),
        )
        snapshot.save_html(str(report))
    page = report.read_text(encoding="utf-8")
    body = page.find("<body")
    opening = page.find(">", body) + 1 if body >= 0 else 0
    report.write_text(page[:opening] + _verdict_table(result) + page[opening:], encoding="utf-8")


def _verdict_table(result: DriftResult) -> str:
    """The pipeline's verdict, the thresholds that decided and the rows they used."""
    rows = "".join(
        "<tr>"
        f"<td>{html.escape(f.feature)}</td><td>{f.kind}</td><td>{f.status}</td>"
        f"<td>{'' if f.score is None else f'{f.score:.4g}'}</td><td>{'' if f.threshold is None else f'{f.threshold:g}'}</td>"
        f"<td>{'' if f.p_value is None else f'{f.p_value:.3g}'}</td><td>{'' if f.alpha is None else f'{f.alpha:.3g}'}</td>"
        f"<td>{html.escape(f.note)}</td></tr>"
        for f in result.features
    )
    notes = "".join(f"<p>{html.escape(note)}</p>" for note in result.notes)
    return (
        "<section style='font-family:sans-serif;margin:1em'>"
        f"<h2>Pipeline verdict: dataset drift {'DETECTED' if result.dataset_drift else 'NOT DETECTED'}</h2>"
        f"<p>{html.escape(result.rule_text())}. Every row compared: reference {result.reference_rows:,}, "
        f"current {result.current_rows:,}; the Evidently report below uses samples of at most "
        f"{max(result.sampled_reference_rows, result.sampled_current_rows):,} rows. A feature drifts when its "
        "distance (Wasserstein in reference standard deviations; Jensen-Shannon, base 2) reaches its floor and "
        "its test's p-value (Kolmogorov-Smirnov; chi-square) is below its alpha. Evidently shows Jensen-Shannon "
        "in natural-log units: its threshold is the floor times 0.833.</p>"
        f"{notes}<table border='1' cellpadding='3'><tr><th>feature</th><th>kind</th><th>verdict</th><th>distance</th>"
        f"<th>floor</th><th>p-value</th><th>alpha</th><th>note</th></tr>{rows}</table></section>"
    )


def _page(title: str, result: DriftResult) -> str:
    return (
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>Data drift</title></head><body>"
        f"<h1>{html.escape(title)}</h1>{_verdict_table(result)}</body></html>"
    )
