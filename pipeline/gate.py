"""Stage 6: the evaluation gate, a pure function from evaluation numbers to a verdict with reasons.

A candidate passes only if
  (a) every configured floor holds on its k-fold mean and the fold-to-fold spread is within the limit;
  (b) with a champion: on the held-out rows neither model was trained on, the candidate beats the
      champion by at least the configured margin (mean per-fold difference of the primary metric);
  (c) and the improvement is significant: a one-sided corrected resampled t-test (Nadeau & Bengio,
      2003) over the per-fold differences gives p < alpha. The correction widens the variance by
      n_test/n_train because k-fold training sets overlap, which a plain paired t-test ignores.
With no champion, (a) alone decides.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import stats

from pipeline.config import Gate
from pipeline.evaluate import HIGHER_IS_BETTER
from pipeline.results import EvaluationResult, GateCheck, GateVerdict


def corrected_resampled_ttest(differences: np.ndarray, test_train_ratio: float) -> tuple[float, float]:
    """One-sided test that the mean difference is > 0; returns (t, p)."""
    k = len(differences)
    mean, variance = float(np.mean(differences)), float(np.var(differences, ddof=1))
    scale = math.sqrt((1.0 / k + test_train_ratio) * variance)
    if scale == 0.0:
        return (math.inf, 0.0) if mean > 0 else (-math.inf if mean < 0 else 0.0, 1.0)
    t = mean / scale
    return t, float(stats.t.sf(t, df=k - 1))


def _floor_checks(evaluation: EvaluationResult, gate: Gate) -> list[GateCheck]:
    checks = []
    for metric, floor in gate.floors.items():
        mean = evaluation.metric_means[metric]
        higher = HIGHER_IS_BETTER[metric]
        ok = not math.isnan(mean) and (mean >= floor if higher else mean <= floor)
        relation = ">=" if higher else "<="
        checks.append(GateCheck(f"floor {metric}", ok, f"k-fold mean {mean:.4f} must be {relation} {floor:g}"))
    if gate.max_fold_std is not None:
        std = evaluation.primary_std
        ok = not math.isnan(std) and std <= gate.max_fold_std
        checks.append(
            GateCheck(
                "fold spread", ok,
                f"std of {evaluation.primary_metric} across folds {std:.4f} must be <= {gate.max_fold_std:g}",
            )
        )
    return checks


def decide(evaluation: EvaluationResult, gate: Gate, verdict_id: str) -> GateVerdict:
    """The verdict on a candidate, with every number behind it."""
    metric = evaluation.primary_metric
    verdict = GateVerdict(
        verdict_id=verdict_id, passed=False, checks=_floor_checks(evaluation, gate), primary_metric=metric,
        candidate_mean=evaluation.primary_mean, candidate_std=evaluation.primary_std,
        champion_version=evaluation.champion_version, margin=gate.min_improvement, alpha=gate.alpha,
    )
    if evaluation.champion_version is None:
        verdict.checks.append(GateCheck("champion", True, "no champion yet: the floors alone decide"))
    else:
        _compare_with_champion(verdict, evaluation, gate)
    verdict.passed = all(c.passed for c in verdict.checks)
    return verdict


def _compare_with_champion(verdict: GateVerdict, evaluation: EvaluationResult, gate: Gate) -> None:
    folds = evaluation.folds
    verdict.fold_candidate = [f.candidate_compare for f in folds]
    verdict.fold_champion = [f.champion_compare for f in folds]
    verdict.compare_rows = sum(f.compare_rows for f in folds)
    champion = f"champion v{evaluation.champion_version}"
    usable = [
        (f.candidate_compare, f.champion_compare) for f in folds
        if f.candidate_compare is not None and f.champion_compare is not None
        and not math.isnan(f.candidate_compare) and not math.isnan(f.champion_compare)
    ]
    if verdict.compare_rows < gate.min_compare_rows or len(usable) < len(folds):
        verdict.checks.append(
            GateCheck(
                "comparable rows", False,
                f"only {verdict.compare_rows} held-out rows lie outside {champion}'s training window "
                f"{evaluation.champion_window} ({len(usable)}/{len(folds)} folds scorable); need >= {gate.min_compare_rows}",
            )
        )
        return
    sign = 1.0 if HIGHER_IS_BETTER[verdict.primary_metric] else -1.0
    differences = np.array([sign * (candidate - champion_score) for candidate, champion_score in usable])
    verdict.fold_improvement = [float(d) for d in differences]
    verdict.improvement = float(differences.mean())
    ratio = float(np.mean([f.test_rows / f.train_rows for f in folds]))
    verdict.t_statistic, verdict.p_value = corrected_resampled_ttest(differences, ratio)
    verdict.checks.append(
        GateCheck(
            "margin", verdict.improvement >= gate.min_improvement,
            f"on {verdict.compare_rows} unseen rows candidate {verdict.primary_metric} "
            f"{verdict.candidate_compare_mean:.4f} vs {champion} {verdict.champion_compare_mean:.4f}: "
            f"improvement {verdict.improvement:+.4f} must be >= {gate.min_improvement:g}",
        )
    )
    verdict.checks.append(
        GateCheck(
            "significance", verdict.p_value < gate.alpha,
            f"corrected resampled t-test over {len(usable)} folds: t={verdict.t_statistic:.3f}, "
            f"p={verdict.p_value:.4g} must be < alpha {gate.alpha:g}",
        )
    )
