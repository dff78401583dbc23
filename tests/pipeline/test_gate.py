"""The gate: one case per reason, the blocked test against scikit-learn, and its simulated error rates."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn import metrics as skm

from pipeline.config import Gate
from pipeline.gate import (
    block_test,
    corrected_resampled_ttest,
    decide,
    log_error_ratio,
    relative_improvement,
)
from pipeline.metrics import ComparedRows, metric_value
from pipeline.results import EvaluationResult, FoldResult

START = np.datetime64("2026-01-01T00:00")


def compared_rows(n: int, champion_extra: float, seed: int = 0, days: float = 7.0, phi: float = 0.0) -> ComparedRows:
    """Regression rows scored by two models whose errors are independent draws of the same size, the
    champion's with an extra independent part of sd ``champion_extra`` (0: equally good, not identical).

    ``phi`` makes every error an AR(1) series in time, as hourly errors are.
    """
    rng = np.random.default_rng(seed)
    signal = rng.normal(100, 30, n)

    def noise(sd: float) -> np.ndarray:
        shocks = rng.standard_normal(n)
        out = np.empty(n)
        out[0] = shocks[0]
        for i in range(1, n):
            out[i] = phi * out[i - 1] + math.sqrt(1 - phi**2) * shocks[i]
        return sd * out

    y = signal + noise(10.0)
    candidate = signal + noise(5.0)
    champion = signal + noise(5.0) + noise(champion_extra)
    timestamps = START + (np.sort(rng.uniform(0, days * 86400, n))).astype("timedelta64[s]")
    return ComparedRows(timestamps, y, candidate, champion, rng.integers(1, 6, n))


def extra_for(improvement: float) -> float:
    """The champion's extra error sd at which the candidate's RMSE is ``improvement`` lower (rows above)."""
    candidate_mse = 10.0**2 + 5.0**2
    return math.sqrt(candidate_mse / (1 - improvement) ** 2 - candidate_mse)


def evaluation_of(compared: ComparedRows | None, metric: str = "rmse", candidate_mean: float | None = None,
                  k: int = 5, fold_means: list[float] | None = None, window_days: int = 28) -> EvaluationResult:
    """An evaluation whose folds carry ``compared``'s rows (or fixed fold scores without a champion)."""
    folds = []
    for number in range(1, k + 1):
        result = FoldResult(fold=number, train_rows=4000, test_rows=1000,
                            metrics={metric: fold_means[number - 1] if fold_means else 10.0})
        if compared is not None:
            rows = compared.fold == number
            result.compare_rows = int(rows.sum())
            result.candidate_compare = metric_value(metric, compared.y[rows], compared.candidate[rows])
            result.champion_compare = metric_value(metric, compared.y[rows], compared.champion[rows])
        folds.append(result)
    means = [f.metrics[metric] for f in folds]
    return EvaluationResult(
        task="regression" if metric in ("rmse", "mae", "r2") else "classification", primary_metric=metric,
        split="days", k=k, rows=5000, folds=folds,
        metric_means={metric: candidate_mean if candidate_mean is not None else float(np.mean(means))},
        metric_stds={metric: float(np.std(means, ddof=1))},
        champion_version="3" if compared is not None else None,
        champion_window="2025-12-04..2025-12-31" if compared is not None else None, window_days=window_days,
    )


def failed(verdict) -> list[str]:
    return [c.name for c in verdict.checks if not c.passed]


def test_first_cycle_passes_on_floors_alone():
    verdict = decide(evaluation_of(None), Gate(floors={"rmse": 11}), "c1")
    assert verdict.passed
    assert verdict.champion_version is None and verdict.p_value is None
    assert any(c.name == "champion" and "floors alone" in c.detail for c in verdict.checks)


def test_better_candidate_passes_with_every_number_recorded():
    compared = compared_rows(2000, extra_for(0.1), seed=1)
    verdict = decide(evaluation_of(compared), Gate(floors={"rmse": 12}), "c2", compared)
    assert verdict.passed, verdict.reasons
    truth = relative_improvement("rmse", metric_value("rmse", compared.y, compared.candidate),
                                 metric_value("rmse", compared.y, compared.champion))
    assert verdict.improvement == pytest.approx(truth)
    assert 0 < verdict.improvement_lower < verdict.improvement
    assert verdict.p_value < 0.01 and verdict.blocks == 20 and verdict.compare_rows == 2000
    assert verdict.power > 0.8 and verdict.rows_for_power < 2000
    assert verdict.champion_compare > verdict.candidate_compare
    assert verdict.to_dict() == type(verdict).from_dict(verdict.to_dict()).to_dict()


def test_a_small_alpha_can_still_be_reached():
    """The sign flips grow with 1/alpha: a fixed 2,000 could never give p below 1/2000."""
    compared = compared_rows(2000, extra_for(0.3), seed=4)
    verdict = decide(evaluation_of(compared), Gate(alpha=0.0002), "c", compared)
    assert verdict.passed, verdict.reasons
    assert verdict.p_value < 0.0001


EQUAL = compared_rows(400, 0.0, seed=2)
SMALL_GAIN = compared_rows(20_000, extra_for(0.02), seed=7)


def test_a_real_gain_below_the_margin_is_significant_without_it():
    assert decide(evaluation_of(SMALL_GAIN), Gate(min_improvement=0.0), "c", SMALL_GAIN).passed


@pytest.mark.parametrize(
    ("evaluation", "compared", "gate", "reason"),
    [
        pytest.param(evaluation_of(None, candidate_mean=13.0), None, Gate(floors={"rmse": 12}), "floor rmse",
                     id="above-error-floor"),
        pytest.param(evaluation_of(None, metric="roc_auc", fold_means=[0.7] * 5), None,
                     Gate(floors={"roc_auc": 0.8}), "floor roc_auc", id="below-score-floor"),
        pytest.param(evaluation_of(None, fold_means=[6.0, 14.0, 8.0, 13.0, 9.0]), None, Gate(), "fold spread",
                     id="fold-spread-relative"),
        pytest.param(evaluation_of(None, fold_means=[9.0, 11.0, 10.0, 10.5, 9.5]), None,
                     Gate(max_fold_std=0.5, max_fold_spread=None), "fold spread", id="fold-std-absolute"),
        pytest.param(evaluation_of(EQUAL), EQUAL, Gate(), "improvement", id="equal-models"),
        pytest.param(evaluation_of(SMALL_GAIN), SMALL_GAIN, Gate(min_improvement=0.05), "improvement",
                     id="real-gain-below-the-margin"),
        pytest.param(evaluation_of(compared_rows(400, 0.0, seed=3)),
                     ComparedRows(EQUAL.timestamps, EQUAL.y, EQUAL.champion + 3.0, EQUAL.candidate, EQUAL.fold),
                     Gate(), "improvement", id="worse-than-champion"),
        pytest.param(evaluation_of(EQUAL), EQUAL, Gate(min_compare_rows=500), "comparable rows",
                     id="too-few-rows-absolute"),
        pytest.param(evaluation_of(EQUAL), EQUAL, Gate(min_compare_share=0.5), "comparable rows",
                     id="too-few-rows-relative"),
    ],
)
def test_each_failing_reason_rejects(evaluation, compared, gate, reason):
    verdict = decide(evaluation, gate, "c", compared)
    assert not verdict.passed
    assert reason in failed(verdict)
    assert any(r.startswith(f"FAIL {reason}") for r in verdict.reasons)


def test_corrected_t_test_judges_the_folds():
    compared = compared_rows(5000, extra_for(0.2), seed=4)
    verdict = decide(evaluation_of(compared), Gate(test="corrected_t"), "c", compared)
    assert verdict.passed, verdict.reasons
    assert len(verdict.fold_improvement) == 5 and verdict.t_statistic > 0 and verdict.blocks is None
    assert verdict.improvement == pytest.approx(np.mean(verdict.fold_improvement))


def test_unscorable_fold_rejects_the_fold_test():
    compared = compared_rows(2000, extra_for(0.2), seed=5)
    evaluation = evaluation_of(compared)
    evaluation.folds[2].champion_compare = math.nan
    assert "comparable rows" in failed(decide(evaluation, Gate(test="corrected_t"), "c", compared))


@pytest.mark.parametrize(
    ("differences", "ratio", "expected_t"),
    [
        pytest.param([0.01, 0.02, 0.015, 0.012, 0.018], 0.25, None, id="typical"),
        pytest.param([0.01] * 5, 0.25, math.inf, id="zero-variance-positive"),
        pytest.param([-0.01] * 5, 0.25, -math.inf, id="zero-variance-negative"),
    ],
)
def test_corrected_ttest(differences, ratio, expected_t):
    t, p, _ = corrected_resampled_ttest(np.array(differences), ratio)
    if expected_t is None:
        d = np.array(differences)
        assert t == pytest.approx(d.mean() / math.sqrt((1 / 5 + ratio) * d.var(ddof=1)))
        assert 0 < p < 0.05
        assert t < d.mean() / math.sqrt(d.var(ddof=1) / 5)  # more conservative than a plain paired t-test
    else:
        assert t == expected_t
        assert p == (0.0 if expected_t > 0 else 1.0)


def _classification_rows(n: int, seed: int) -> ComparedRows:
    rng = np.random.default_rng(seed)
    logit = rng.normal(0, 2, n)
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype("int64")
    candidate = 1 / (1 + np.exp(-(logit + rng.normal(0, 1, n))))
    champion = 1 / (1 + np.exp(-(logit + rng.normal(0, 2, n))))
    timestamps = START + np.arange(n).astype("timedelta64[m]")
    return ComparedRows(timestamps, y, candidate, champion, np.ones(n, dtype="int64"))


@pytest.mark.parametrize("metric", ["rmse", "mae", "r2", "roc_auc", "log_loss", "f1"])
def test_block_statistic_is_the_metric_computed_by_scikit_learn(metric):
    compared = _classification_rows(600, seed=6) if metric in ("roc_auc", "log_loss", "f1") else compared_rows(600, 4.0)
    reference = {
        "rmse": skm.root_mean_squared_error, "mae": skm.mean_absolute_error, "r2": skm.r2_score,
        "roc_auc": skm.roc_auc_score, "log_loss": skm.log_loss,
        "f1": lambda y, s: skm.f1_score(y, (s >= 0.5).astype(int)),
    }[metric]
    test = block_test(metric, compared, blocks=20)
    expected = log_error_ratio(metric, reference(compared.y, compared.candidate), reference(compared.y, compared.champion))
    assert test.observed == pytest.approx(float(expected), rel=1e-9)
    assert test.blocks == 20 and len(test.pseudo) == 20
    # The jackknife's standard error from leave-one-block-out values that scikit-learn computes.
    order = np.argsort(compared.timestamps, kind="stable")
    left_out = []
    for block in np.array_split(order, 20):
        kept = np.setdiff1d(np.arange(len(order)), block)
        left_out.append(log_error_ratio(metric, reference(compared.y[kept], compared.candidate[kept]),
                                        reference(compared.y[kept], compared.champion[kept])))
    left_out = np.array(left_out)
    assert test.standard_error == pytest.approx(math.sqrt(19 / 20 * np.sum((left_out - left_out.mean()) ** 2)), rel=1e-6)
    swapped = ComparedRows(compared.timestamps, compared.y, compared.champion, compared.candidate, compared.fold)
    assert block_test(metric, swapped, blocks=20).observed == pytest.approx(-test.observed)


# The simulation: ≥ 200 cycles per size. "demo": one day of the demo's ~2,000 rows a day (a daily
# cadence); "weekly": the newest week of a 28-day window of ~700 hourly rows (175 rows), whose errors
# run together in time (AR(1), 0.5 from one row to the next). Both models' errors share the rows'
# noise and add their own, independently.
CYCLES = 300


@pytest.mark.parametrize(("rows", "days", "phi"), [pytest.param(2000, 1.0, 0.0, id="demo-daily-2000-rows"),
                                                   pytest.param(175, 7.0, 0.5, id="weekly-175-hourly-rows")])
def test_equal_models_are_promoted_at_most_at_rate_alpha(rows, days, phi):
    gate = Gate()
    promoted = sum(
        decide(evaluation_of(c := compared_rows(rows, 0.0, seed=seed, days=days, phi=phi)), gate, "sim", c).passed
        for seed in range(CYCLES)
    )
    assert promoted / CYCLES <= gate.alpha, f"{promoted} of {CYCLES} equal candidates promoted"


@pytest.mark.parametrize(("rows", "days", "phi"), [pytest.param(2000, 1.0, 0.0, id="demo-daily-2000-rows"),
                                                   pytest.param(175, 7.0, 0.5, id="weekly-175-hourly-rows")])
def test_the_detectable_improvement_is_promoted_with_power_80_percent(rows, days, phi):
    gate = Gate()
    promoted = sum(
        decide(evaluation_of(c := compared_rows(rows, extra_for(gate.detectable_improvement), seed=seed, days=days, phi=phi)),
               gate, "sim", c).passed
        for seed in range(CYCLES)
    )
    assert promoted / CYCLES >= 0.8, f"only {promoted} of {CYCLES} candidates {gate.detectable_improvement:.0%} better promoted"


def _stale_champion(seed: int, change_days: float = 0.0) -> ComparedRows:
    """A champion older than the 28-day window, so all of it is compared (700 hourly-like rows); from
    ``change_days`` before the end it is worse by the detectable improvement (0: equal throughout)."""
    compared = compared_rows(700, 0.0, seed=seed, days=28.0, phi=0.5)
    if change_days:
        rng = np.random.default_rng(seed + 10_000)
        late = compared.timestamps >= compared.timestamps.max() - np.timedelta64(int(change_days * 86400), "s")
        compared.champion[late] += rng.normal(0, extra_for(0.3), late.sum())
    return compared


def test_two_looks_keep_equal_models_at_rate_alpha():
    gate = Gate()
    verdicts = [decide(evaluation_of(c := _stale_champion(seed)), gate, "sim", c) for seed in range(CYCLES)]
    assert all(v.recent_rows and v.recent_rows < v.compare_rows for v in verdicts)  # both looks were taken
    assert sum(v.passed for v in verdicts) / CYCLES <= gate.alpha


def test_the_newest_days_look_finds_a_change_the_whole_window_dilutes():
    compared = _stale_champion(seed=1, change_days=5)
    whole_window = decide(evaluation_of(compared), Gate(recent_share=None), "c", compared)
    verdict = decide(evaluation_of(compared), Gate(), "c", compared)
    assert not whole_window.passed
    assert verdict.passed, verdict.reasons
    half = Gate().alpha / 2
    assert verdict.recent_p_value < half < verdict.p_value and verdict.recent_improvement > verdict.improvement
    assert f"either look passes at alpha/2 = {half:g}" in verdict.reasons[-1]
