"""Monitoring the champion: is it as good on new labelled rows as its k-fold estimate promised?

Labels arrive in the source table with the features, so the current window's rows after the
champion's training window, up to the as-of date minus ``monitoring.label_delay_days`` (rows whose
labels have had time to arrive), are rows it never saw, with the truth. Its primary metric on them
is its live quality; the k-fold estimate recorded when it was trained is what it promised.

Degradation is the relative rise of error (the metric for losses, 1 - the metric for scores, as in
the gate), so one margin fits every dataset: 0.3 is 30 % more error than promised. The champion is
*degraded* when its live error exceeds the estimate by more than ``monitoring.degradation_margin``
with confidence 1 - ``monitoring.alpha``. The test is the gate's blocked test with a constant in
place of the second model: the live rows are cut, in time order, into contiguous blocks; each
block's delete-one jackknife pseudo-value estimates log(live error / k-fold error), and random sign
flips of their excess over log(1 + margin) give a one-sided p. Blocks keep runs of correlated
errors (a bad hour, a bad day) together, so the evidence grows with the rows without counting
neighbouring rows as independent ones.

The k-fold estimate is taken as exact: it comes from a whole window of rows, so its noise is
usually small next to the live rows'. The margin absorbs the rest, including the optimism of a
shuffled k-fold split on data whose neighbouring rows resemble each other (``evaluation.split:
days`` or ``time`` gives an estimate closer to what new days will show).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import date, timedelta
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from scipy import stats

from pipeline.config import Config, Monitoring, RetrainOn
from pipeline.gate import BlockTest, block_sums, error_of, metric_from_sums, time_blocks
from pipeline.metrics import auc_without_blocks, metric_value
from pipeline.results import ModelQuality
from pipeline.train import encode_target, predict_scores

if TYPE_CHECKING:
    from pipeline.evaluate import Champion

# What each ``orchestration.retrain_on`` retrains for, of what monitoring finds. `always` retrains every run
# anyway; drift still starts a run early, as it did before the quality check existed.
WATCHED: dict[str, tuple[str, ...]] = {
    "always": ("drift",), "drift": ("drift",), "degradation": ("degradation",),
    "drift_or_degradation": ("drift", "degradation"),
}
MEAN_LOSSES = ("rmse", "mae", "log_loss")  # means over rows: a block's removal is a subtraction of sums


def retrain_reasons(retrain_on: RetrainOn | str, dataset_drift: bool, degraded: bool) -> list[str]:
    """What of the checks' findings ``retrain_on`` (or the backtest policy of that name) retrains for:
    ``drift``, ``degradation``, both or none."""
    found = {"drift": dataset_drift, "degradation": degraded}
    return [reason for reason in WATCHED[retrain_on] if found[reason]]


def live_rows(config: Config, frame: pd.DataFrame, champion: Champion, as_of: date) -> np.ndarray:
    """The rows the champion never trained on whose labels are in: after its window, up to as-of minus the delay."""
    source = config.source
    days = frame[source.timestamp_column].dt.normalize()
    labelled_until = pd.Timestamp(as_of - timedelta(days=config.monitoring.label_delay_days))
    after_window = days > pd.Timestamp(champion.window_end)
    return (after_window & (days <= labelled_until) & frame[source.target_column].notna()).to_numpy()


def minimum_live_rows(monitoring: Monitoring, window_rows: int) -> int:
    """Fewest live rows the check judges on: a share of the current window's rows (two at least)."""
    return max(math.ceil(monitoring.min_live_share * window_rows), 2)


@dataclass(frozen=True)
class DegradationTest:
    """The blocked test's numbers, as relative rises of error (0.3: 30 % more error than the k-fold estimate)."""

    live_value: float
    degradation: float
    lower: float  # the one-sided lower confidence bound at 1 - alpha
    p_value: float
    blocks: int
    degraded: bool


def left_out_values(metric: str, y: np.ndarray, scores: np.ndarray, block: np.ndarray, count: int) -> np.ndarray:
    """The metric on the rows outside each block, from per-block sums (pair counts for AUC); R² is computed anew."""
    if metric in MEAN_LOSSES:
        sums = block_sums(metric, y, scores, block, count)[:, 0]
        rows = np.bincount(block, minlength=count)
        mean = (sums.sum() - sums) / (len(y) - rows)
        return np.sqrt(mean) if metric == "rmse" else mean
    if metric == "f1":
        sums = block_sums(metric, y, scores, block, count)
        return metric_from_sums(metric, sums.sum(axis=0) - sums, y)
    if metric == "roc_auc":
        return auc_without_blocks(y, scores, block, count)[1]
    return np.array([metric_value(metric, y[block != g], scores[block != g]) for g in range(count)])


def degradation_test(
    metric: str, timestamps: np.ndarray, y: np.ndarray, scores: np.ndarray, kfold_value: float, monitoring: Monitoring,
) -> DegradationTest:
    """One-sided test of "the live error exceeds the k-fold error by at most the margin" over time blocks.

    ``kfold_value`` must have a positive error. Block g's pseudo-value is G·θ − (G−1)·θ₋g, θ being
    log(live error / k-fold error) and θ₋g the same without the block; see ``gate.block_test``.
    """
    y = y.astype("float64")
    block, count = time_blocks(timestamps, monitoring.blocks)
    live_value = metric_value(metric, y, scores)
    promised = math.log(error_of(metric, kfold_value))
    with np.errstate(divide="ignore", invalid="ignore"):  # a perfect or undefined block is dropped below
        observed = float(np.log(error_of(metric, live_value)) - promised)
        left_out = np.log(error_of(metric, left_out_values(metric, y, scores, block, count))) - promised
    pseudo = count * observed - (count - 1) * left_out
    test = BlockTest(observed, pseudo[np.isfinite(pseudo)], count)
    degradation = math.expm1(observed)
    if not math.isfinite(observed) or len(test.pseudo) < 2:
        return DegradationTest(live_value, degradation, math.nan, 1.0, count, False)
    lower = observed - float(stats.t.isf(monitoring.alpha, len(test.pseudo) - 1)) * test.standard_error
    p_value = test.p_value(math.log1p(monitoring.degradation_margin), monitoring.alpha)
    return DegradationTest(live_value, degradation, math.expm1(lower), p_value, count, p_value < monitoring.alpha)


def no_champion(config: Config) -> ModelQuality:
    """The check without a champion: nothing to judge, and nothing to retrain for."""
    monitoring = config.monitoring
    return ModelQuality(primary_metric=config.primary_metric, champion_version=None, judged=False, degraded=False,
                        reason="no champion yet: nothing to judge", margin=monitoring.degradation_margin,
                        alpha=monitoring.alpha)


def check_quality(config: Config, frame: pd.DataFrame, champion: Champion, as_of: date) -> ModelQuality:
    """Score the champion on the rows of ``frame`` (the current window) it never trained on whose labels are in."""
    metric, monitoring, source = config.primary_metric, config.monitoring, config.source
    numbers: dict[str, Any] = {"primary_metric": metric, "margin": monitoring.degradation_margin, "alpha": monitoring.alpha}
    rows = live_rows(config, frame, champion, as_of)
    needed = minimum_live_rows(monitoring, len(frame))
    numbers |= {"rows": int(rows.sum()), "needed_rows": needed, "kfold_value": champion.kfold_value}

    def not_judged(reason: str) -> ModelQuality:
        return ModelQuality(champion_version=champion.version, judged=False, degraded=False, reason=reason, **numbers)

    if champion.kfold_value is None:
        return not_judged(f"no k-fold {metric} of it is on record (registered without one, or under another metric)")
    if not error_of(metric, champion.kfold_value) > 0:
        return not_judged(f"its k-fold {metric} {champion.kfold_value:.4f} promised no error: a rise is not relative")
    if rows.sum() < needed:
        labelled_until = as_of - timedelta(days=monitoring.label_delay_days)
        return not_judged(
            f"only {rows.sum():,} labelled rows lie after its training window (ends {champion.window_end}) up to "
            f"{labelled_until} (label delay {monitoring.label_delay_days} days); need >= {needed:,}"
        )
    stamps = frame[source.timestamp_column][rows]
    numbers |= {"live_start": stamps.min().date(), "live_end": stamps.max().date()}
    # Encoded on the whole window: the live rows alone may hold one class only.
    y = encode_target(config, frame[source.target_column])[rows]
    scores = champion.scores_on(rows, lambda model, chosen: predict_scores(model, frame, config.task, chosen))
    test = degradation_test(metric, stamps.to_numpy(), y, scores, champion.kfold_value, monitoring)
    if math.isnan(test.live_value):
        return not_judged(f"{metric} is undefined on its {rows.sum():,} live rows (e.g. one class only)")
    numbers |= {"live_value": test.live_value}
    reason = (
        f"{metric} {test.live_value:.4f} on {rows.sum():,} labelled rows of {numbers['live_start']}.."
        f"{numbers['live_end']} it never trained on vs its k-fold {champion.kfold_value:.4f}: error "
        f"{test.degradation:+.1%}, >= {test.lower:+.1%} with {1 - monitoring.alpha:.0%} confidence, degraded when "
        f"> {monitoring.degradation_margin:.0%}; sign-flip test over {test.blocks} time blocks, "
        f"p={test.p_value:.4g} (alpha {monitoring.alpha:g})"
    )
    return ModelQuality(
        champion_version=champion.version, judged=True, degraded=test.degraded, reason=reason,
        degradation=test.degradation, degradation_lower=None if math.isnan(test.lower) else test.lower,
        p_value=test.p_value, blocks=test.blocks, **numbers,
    )
