"""Stage 6: the evaluation gate, a pure function from evaluation numbers to a verdict with reasons.

A candidate passes only if
  (a) every configured floor holds on its k-fold mean and the fold-to-fold spread is within the limit;
  (b) with a champion: on the held-out rows neither model was trained on, the candidate's error is
      lower than the champion's by more than ``gate.min_improvement``, significantly: the one-sided
      test of "no more improvement than that" gives p < alpha.
With no champion, (a) alone decides.

Improvement is the relative reduction of error, where the error is the metric itself for losses
(RMSE, MAE, log-loss) and 1 - the metric for scores (AUC, F1, R²): 0.1 means a tenth less error in
any unit, so one margin fits every dataset.

The default test (``blocked``) pools the compared rows, so its evidence grows with their number: the
rows are cut, in time order, into ``blocks`` contiguous blocks; each block's delete-one-block
jackknife pseudo-value estimates the log error ratio, and a randomisation test flips their signs
(exact when the two models are equally good, whatever the errors' distribution). Blocks of
neighbouring rows keep the errors' autocorrelation (an hour is like the next) inside a block, where
a per-row test would count it as independent evidence. The confidence bound and the power come
from the pseudo-values' spread. ``corrected_t`` is the corrected resampled t-test over the
k per-fold improvements (Nadeau & Bengio, 2003): its evidence grows with k only.

``gate.min_improvement`` is the null hypothesis's margin: the error must be lower by more than that
share with confidence 1 - alpha (so an equal candidate passes at a rate below alpha), because on a
large window a real but negligible gain is significant too. ``gate.detectable_improvement`` is what
the gate should find: the verdict reports the power to detect it and the compared rows that needs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats

from pipeline.config import Gate
from pipeline.metrics import HIGHER_IS_BETTER, ComparedRows, auc_without_blocks, metric_value
from pipeline.results import EvaluationResult, GateCheck, GateVerdict

TARGET_POWER = 0.8


def error_of(metric: str, value: Any) -> Any:
    """What an improvement reduces: the metric for losses, the distance from a perfect score for scores."""
    return 1.0 - value if HIGHER_IS_BETTER[metric] else value


def relative_improvement(metric: str, candidate: float, champion: float) -> float:
    """The candidate's error reduction as a share of the champion's error."""
    candidate_error, champion_error = error_of(metric, candidate), error_of(metric, champion)
    if champion_error <= 0:
        return 0.0 if candidate_error <= 0 else -math.inf
    return (champion_error - candidate_error) / champion_error


def corrected_resampled_ttest(differences: np.ndarray, test_train_ratio: float) -> tuple[float, float, float]:
    """One-sided test that the mean difference is > 0; returns (t, p, standard error)."""
    k = len(differences)
    mean, variance = float(np.mean(differences)), float(np.var(differences, ddof=1))
    scale = math.sqrt((1.0 / k + test_train_ratio) * variance)
    if scale == 0.0:
        return (math.inf, 0.0, 0.0) if mean > 0 else (-math.inf if mean < 0 else 0.0, 1.0, 0.0)
    t = mean / scale
    return t, float(stats.t.sf(t, df=k - 1)), scale


FLIPS = 1999  # random sign flips of the blocked test at least: p-values resolve to 1/2000 or finer
FLIPS_PER_ALPHA = 20  # and to alpha/20 or finer, so a small alpha can still be reached
MIN_RECENT_ROWS = 100  # a second look at fewer rows than this has too little power to be worth half of alpha


def block_sums(metric: str, y: np.ndarray, scores: np.ndarray, block: np.ndarray, blocks: int) -> np.ndarray:
    """Per block, the sums the metric is built from (see ``metric_from_sums``): shape (blocks, q)."""
    if metric in ("rmse", "r2"):
        parts = [(scores - y) ** 2]
    elif metric == "mae":
        parts = [np.abs(scores - y)]
    elif metric == "log_loss":
        clipped = np.clip(scores, 1e-15, 1 - 1e-15)
        parts = [-(y * np.log(clipped) + (1 - y) * np.log(1 - clipped))]
    elif metric == "f1":
        predicted = scores >= 0.5
        parts = [predicted & (y == 1), predicted & (y == 0), ~predicted & (y == 1)]
    else:
        raise ValueError(f"{metric} is not a sum over rows")
    return np.stack([np.bincount(block, weights=part.astype("float64"), minlength=blocks) for part in parts], axis=1)


def metric_from_sums(metric: str, sums: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The metric from summed block sums, vectorised over leading axes."""
    if metric == "rmse":
        return np.sqrt(sums[..., 0] / len(y))
    if metric in ("mae", "log_loss"):
        return sums[..., 0] / len(y)
    if metric == "r2":
        return 1.0 - sums[..., 0] / float(np.sum((y - y.mean()) ** 2))
    tp, fp, fn = sums[..., 0], sums[..., 1], sums[..., 2]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(2 * tp + fp + fn > 0, 2 * tp / (2 * tp + fp + fn), 0.0)


def log_error_ratio(metric: str, candidate: Any, champion: Any) -> Any:
    """log(champion's error / candidate's error): > 0 when the candidate is better, negated by swapping the two."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.log(error_of(metric, champion)) - np.log(error_of(metric, candidate))


def time_blocks(timestamps: np.ndarray, blocks: int) -> tuple[np.ndarray, int]:
    """Each row's block: ``blocks`` contiguous runs of rows in time order (fewer when there are fewer rows), and their count."""
    order = np.argsort(timestamps, kind="stable")
    count = min(blocks, len(order))
    block = np.empty(len(order), dtype="int64")
    for number, rows in enumerate(np.array_split(order, count)):
        block[rows] = number
    return block, count


@dataclass(frozen=True)
class BlockTest:
    """The blocked test's numbers, all as log error ratios (> 0: the candidate's error is lower)."""

    observed: float
    pseudo: np.ndarray  # each block's jackknife pseudo-value: its own estimate of the statistic
    blocks: int

    @property
    def standard_error(self) -> float:
        return float(np.std(self.pseudo, ddof=1) / math.sqrt(len(self.pseudo))) if len(self.pseudo) > 1 else math.nan

    def p_value(self, margin: float, alpha: float, seed: int = 0) -> float:
        """One-sided p of "the statistic is at most ``margin``", by random sign flips of the blocks' excess."""
        excess = self.pseudo - margin
        flips = max(FLIPS, math.ceil(FLIPS_PER_ALPHA / alpha) - 1)
        signs = np.where(np.random.default_rng(seed).random((flips, len(excess))) < 0.5, -1.0, 1.0)
        flipped = (signs * excess).mean(axis=1)
        return (1 + int(np.sum(flipped >= excess.mean()))) / (flips + 1)


def block_test(metric: str, compared: ComparedRows, blocks: int) -> BlockTest:
    """The log error ratio on all compared rows, and each time block's jackknife pseudo-value.

    Block g's pseudo-value is G·θ − (G−1)·θ₋g, θ₋g being the statistic without the block: the
    blocks' pseudo-values average to (nearly) θ and vary as independent estimates of it would. If
    the candidate is no better than the champion, which model made a block's predictions is
    exchangeable, so each pseudo-value's excess over the margin is as likely negative as positive:
    flipping their signs at random draws the null distribution of their mean. Blocks are contiguous
    in time, so errors that run together (an hour is like the next) stay together.
    """
    block, count = time_blocks(compared.timestamps, blocks)
    y = compared.y.astype("float64")
    if metric == "roc_auc":  # not a sum over rows: from pairs counted per pair of blocks
        mine_all, mine = auc_without_blocks(y, compared.candidate, block, count)
        theirs_all, theirs = auc_without_blocks(y, compared.champion, block, count)
        everything = float(log_error_ratio(metric, mine_all, theirs_all))
        left_out = log_error_ratio(metric, mine, theirs)
    else:
        mine = block_sums(metric, y, compared.candidate, block, count)
        theirs = block_sums(metric, y, compared.champion, block, count)
        everything = float(log_error_ratio(metric, metric_from_sums(metric, mine.sum(0), y),
                                           metric_from_sums(metric, theirs.sum(0), y)))
        # Row counts and R²'s total sum of squares cancel in the ratio, so the remaining blocks' sums suffice.
        left_out = log_error_ratio(metric, metric_from_sums(metric, mine.sum(0) - mine, y),
                                   metric_from_sums(metric, theirs.sum(0) - theirs, y))
    pseudo = count * everything - (count - 1) * left_out
    return BlockTest(float(everything), pseudo[np.isfinite(pseudo)], count)


@dataclass(frozen=True)
class TestOutcome:
    """What either test finds: the improvement, its lower confidence bound, p, and the power to detect
    ``gate.detectable_improvement`` with the compared rows that power needs."""

    improvement: float
    lower: float
    p_value: float
    power: float | None
    rows_for_power: int | None
    t_statistic: float | None = None
    blocks: int | None = None


def corrected_t_outcome(differences: np.ndarray, test_train_ratio: float, gate: Gate, rows: int) -> TestOutcome:
    t, p, standard_error = corrected_resampled_ttest(differences - gate.min_improvement, test_train_ratio)
    df, mean = len(differences) - 1, float(differences.mean())
    critical = stats.t.isf(gate.alpha, df)
    power = rows_needed = None
    if standard_error > 0:
        shift = (gate.detectable_improvement - gate.min_improvement) / standard_error
        power = float(stats.nct.sf(critical, df, shift)) if shift > 0 else 0.0
        rows_needed = _rows_for(rows, (critical + stats.t.isf(1 - TARGET_POWER, df)) * standard_error,
                                gate.detectable_improvement - gate.min_improvement)
    return TestOutcome(mean, mean - critical * standard_error, p, power, rows_needed, t_statistic=t)


def recent_rows(compared: ComparedRows, share: float | None, window_days: int | None) -> np.ndarray | None:
    """Which compared rows lie in the window's newest ``share`` of days; None when that is all of them or too few."""
    if share is None or window_days is None or not len(compared):
        return None
    days = compared.timestamps.astype("datetime64[D]")
    recent = days > days.max() - np.timedelta64(max(round(share * window_days), 1), "D")
    return recent if MIN_RECENT_ROWS <= recent.sum() < len(compared) else None


def blocked_outcome(metric: str, compared: ComparedRows, gate: Gate, alpha: float | None = None) -> TestOutcome:
    """The sign-flip test over the blocks decides; their spread gives the confidence bound and the power."""
    alpha = gate.alpha if alpha is None else alpha
    test = block_test(metric, compared, gate.blocks)
    if not math.isfinite(test.observed) or len(test.pseudo) < 2:
        return TestOutcome(_improvement(test.observed), math.nan, 1.0, None, None, blocks=test.blocks)
    margin, detectable = _log_ratio(gate.min_improvement), _log_ratio(gate.detectable_improvement)
    df, standard_error = len(test.pseudo) - 1, test.standard_error
    critical = float(stats.t.isf(alpha, df))
    lower, power, rows_needed = math.nan, None, None
    if standard_error > 0:
        lower = _improvement(test.observed - critical * standard_error)
        power = float(stats.t.sf(critical - (detectable - margin) / standard_error, df))
        rows_needed = _rows_for(len(compared), (critical + stats.t.isf(1 - TARGET_POWER, df)) * standard_error,
                                detectable - margin)
    p_value = test.p_value(margin, alpha)
    return TestOutcome(_improvement(test.observed), lower, p_value, power, rows_needed, blocks=test.blocks)


def _rows_for(rows: int, spread: float, effect: float) -> int | None:
    """Rows at which ``spread`` (shrinking as 1/sqrt(rows)) fits inside ``effect``: where the power reaches the target."""
    if effect <= 0:
        return None
    return max(math.ceil(rows * (spread / effect) ** 2), 1)


def _log_ratio(improvement: float) -> float:
    """A relative error reduction as a log error ratio."""
    return -math.log1p(-improvement)


def _improvement(log_ratio: float) -> float:
    """A log error ratio as a relative error reduction."""
    return -math.expm1(-log_ratio)


def _floor_checks(evaluation: EvaluationResult, gate: Gate) -> list[GateCheck]:
    checks = []
    for metric, floor in gate.floors.items():
        mean = evaluation.metric_means[metric]
        higher = HIGHER_IS_BETTER[metric]
        ok = not math.isnan(mean) and (mean >= floor if higher else mean <= floor)
        relation = ">=" if higher else "<="
        checks.append(GateCheck(f"floor {metric}", ok, f"k-fold mean {mean:.4f} must be {relation} {floor:g}"))
    metric, std = evaluation.primary_metric, evaluation.primary_std
    if gate.max_fold_std is not None:
        ok = not math.isnan(std) and std <= gate.max_fold_std
        checks.append(GateCheck(
            "fold spread", ok, f"std of {metric} across folds {std:.4f} must be <= {gate.max_fold_std:g}",
        ))
    if gate.max_fold_spread is not None:
        error = error_of(metric, evaluation.primary_mean)
        spread = std / error if error > 0 else (0.0 if std == 0 else math.inf)
        ok = not math.isnan(spread) and spread <= gate.max_fold_spread
        checks.append(GateCheck(
            "fold spread", ok,
            f"std of {metric} across folds {std:.4g} is {spread:.1%} of the error {error:.4g}; "
            f"must be <= {gate.max_fold_spread:.0%}",
        ))
    return checks


def decide(
    evaluation: EvaluationResult, gate: Gate, verdict_id: str, compared: ComparedRows | None = None
) -> GateVerdict:
    """The verdict on a candidate, with every number behind it; ``compared`` are the rows the blocked test uses."""
    verdict = GateVerdict(
        verdict_id=verdict_id, passed=False, checks=_floor_checks(evaluation, gate),
        primary_metric=evaluation.primary_metric, candidate_mean=evaluation.primary_mean,
        candidate_std=evaluation.primary_std, champion_version=evaluation.champion_version,
        margin=gate.min_improvement, detectable=gate.detectable_improvement, alpha=gate.alpha, test=gate.test,
    )
    if evaluation.champion_version is None:
        verdict.checks.append(GateCheck("champion", True, "no champion yet: the floors alone decide"))
    else:
        _compare_with_champion(verdict, evaluation, gate, compared)
    verdict.passed = all(c.passed for c in verdict.checks)
    return verdict


def minimum_compare_rows(gate: Gate, window_rows: int) -> int:
    """Fewest compared rows the gate judges on: the configured count, or share of the current window."""
    share = math.ceil(gate.min_compare_share * window_rows)
    return max(gate.min_compare_rows or 0, share, 2)


def _compare_with_champion(
    verdict: GateVerdict, evaluation: EvaluationResult, gate: Gate, compared: ComparedRows | None
) -> None:
    metric, folds = verdict.primary_metric, evaluation.folds
    verdict.fold_candidate = [f.candidate_compare for f in folds]
    verdict.fold_champion = [f.champion_compare for f in folds]
    verdict.compare_rows = sum(f.compare_rows for f in folds)
    champion = f"champion v{evaluation.champion_version}"
    needed = minimum_compare_rows(gate, evaluation.rows)
    scorable = [f for f in folds if _present(f.candidate_compare) and _present(f.champion_compare)]
    usable = len(scorable) == len(folds) if gate.test == "corrected_t" else compared is not None
    if verdict.compare_rows < needed or not usable:
        verdict.checks.append(GateCheck(
            "comparable rows", False,
            f"only {verdict.compare_rows:,} held-out rows lie outside {champion}'s training window "
            f"{evaluation.champion_window} ({len(scorable)}/{len(folds)} folds scorable); need >= {needed:,}",
        ))
        return
    threshold, second_look = gate.alpha, ""
    if gate.test == "corrected_t":
        differences = np.array([relative_improvement(metric, f.candidate_compare, f.champion_compare)  # type: ignore[arg-type]
                                for f in folds])  # every fold is scorable: checked above
        verdict.fold_improvement = [float(d) for d in differences]
        verdict.candidate_compare = _weighted([f.candidate_compare for f in folds], [f.compare_rows for f in folds])
        verdict.champion_compare = _weighted([f.champion_compare for f in folds], [f.compare_rows for f in folds])
        ratio = float(np.mean([f.test_rows / f.train_rows for f in folds]))
        outcome = corrected_t_outcome(differences, ratio, gate, verdict.compare_rows)
        test = f"corrected resampled t-test over {len(folds)} folds: t={outcome.t_statistic:.3f}"
        passed = outcome.p_value < threshold
    else:
        assert compared is not None
        verdict.candidate_compare = metric_value(metric, compared.y, compared.candidate)
        verdict.champion_compare = metric_value(metric, compared.y, compared.champion)
        recent = recent_rows(compared, gate.recent_share, evaluation.window_days)
        threshold = gate.alpha if recent is None else gate.alpha / 2
        outcome = blocked_outcome(metric, compared, gate, threshold)
        test = f"sign-flip test over {outcome.blocks} time blocks"
        passed = outcome.p_value < threshold
        if recent is not None:
            newest = blocked_outcome(metric, compared.subset(recent), gate, threshold)
            verdict.recent_rows, verdict.recent_improvement = int(recent.sum()), newest.improvement
            verdict.recent_p_value = newest.p_value
            passed = passed or newest.p_value < threshold
            second_look = (f"; newest {gate.recent_share:.0%} of the window's days ({verdict.recent_rows:,} rows): "
                           f"error {newest.improvement:+.1%} lower, p={newest.p_value:.4g}; "
                           f"either look passes at alpha/2 = {threshold:g}")
    verdict.improvement, verdict.improvement_lower, verdict.p_value = outcome.improvement, outcome.lower, outcome.p_value
    verdict.power, verdict.rows_for_power = outcome.power, outcome.rows_for_power
    verdict.t_statistic, verdict.blocks = outcome.t_statistic, outcome.blocks
    power = "" if outcome.power is None else (
        f"; power to detect {gate.detectable_improvement:.0%}: {outcome.power:.0%}"
        + (f" ({TARGET_POWER:.0%} from about {outcome.rows_for_power:,} rows)" if outcome.rows_for_power else "")
    )
    verdict.checks.append(GateCheck(
        "improvement", passed,
        f"on {verdict.compare_rows:,} unseen rows candidate {metric} {_format(verdict.candidate_compare)} vs "
        f"{champion} {_format(verdict.champion_compare)}: error {outcome.improvement:+.1%} lower, "
        f">= {outcome.lower:+.1%} with {1 - threshold:.1%} confidence, must be > {gate.min_improvement:.1%}; "
        f"{test}, p={outcome.p_value:.4g} (alpha {threshold:g}){second_look}{power}",
    ))


def _present(value: float | None) -> bool:
    return value is not None and not math.isnan(value)


def _weighted(values: list[float | None], weights: list[int]) -> float | None:
    pairs = [(v, w) for v, w in zip(values, weights, strict=True) if v is not None and _present(v) and w]
    return sum(v * w for v, w in pairs) / sum(w for _, w in pairs) if pairs else None


def _format(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"
