"""The champion's quality check: which rows it scores, one case per reason it does not judge, and its simulated rates."""

from __future__ import annotations

import math
from datetime import date

import numpy as np
import pytest
from scipy.signal import lfilter
from sklearn import metrics as skm

from pipeline.config import Monitoring, load_config
from pipeline.evaluate import Champion, evaluate_kfold
from pipeline.gate import error_of
from pipeline.metrics import metric_value
from pipeline.monitor import check_quality, degradation_test, left_out_values, no_champion, retrain_reasons
from pipeline.train import encode_target, fit_model
from tests.conftest import small_frame, write_config

AS_OF = date(2026, 1, 10)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Ten days of rows and a champion fitted, and k-fold evaluated, on the first five."""
    config = load_config(write_config(tmp_path_factory.mktemp("monitor"),
                                      training={"family": "logistic_regression", "params": {}}), environ={})
    frame = small_frame(2000, days=10)
    window = frame[frame["ts"] < "2026-01-06"]
    model, _ = fit_model(config, window, encode_target(config, window["label"]), "cpu")
    evaluation, _ = evaluate_kfold(config, window, "cpu")
    return config, frame, Champion("1", model, date(2026, 1, 1), date(2026, 1, 5), evaluation.primary_mean)


def test_a_champion_as_good_as_promised_is_healthy(trained):
    config, frame, champion = trained
    quality = check_quality(config, frame, champion, AS_OF)
    live = frame[frame["ts"] >= "2026-01-06"]
    assert (quality.judged, quality.degraded, quality.verdict) == (True, False, "healthy")
    assert quality.rows == len(live) and (quality.live_start, quality.live_end) == (date(2026, 1, 6), AS_OF)
    assert quality.live_value == pytest.approx(skm.roc_auc_score(live["label"], champion.model.predict_proba(live)[:, 1]))
    assert quality.kfold_value == champion.kfold_value and quality.p_value >= config.monitoring.alpha
    assert quality.blocks == 20 and quality.degradation_lower < config.monitoring.degradation_margin
    assert quality.summary().startswith("Quality champion v1 healthy: roc_auc ")


def test_a_champion_whose_labels_turned_is_degraded(trained):
    config, frame, champion = trained
    turned = frame.copy()
    after = turned["ts"] >= "2026-01-06"
    turned.loc[after, "label"] = 1 - turned.loc[after, "label"]
    quality = check_quality(config, turned, champion, AS_OF)
    assert quality.degraded and quality.verdict == "degraded"
    assert quality.degradation_lower > config.monitoring.degradation_margin and quality.p_value < config.monitoring.alpha
    assert quality.live_value < 0.5 < champion.kfold_value
    assert "DEGRADED" in quality.summary() and "sign-flip test over 20 time blocks" in quality.summary()


def test_rows_whose_labels_have_not_arrived_are_not_scored(trained):
    config, frame, champion = trained
    delayed = config.model_copy(update={"monitoring": Monitoring(label_delay_days=2)})
    unlabelled = frame.copy()
    unlabelled.loc[unlabelled.index[-1200:-1150], "label"] = np.nan  # a gap in the labels
    quality = check_quality(delayed, unlabelled, champion, AS_OF)
    days = unlabelled["ts"].dt.date
    expected = (days > date(2026, 1, 5)) & (days <= date(2026, 1, 8)) & unlabelled["label"].notna()
    assert quality.judged and quality.rows == expected.sum() and quality.live_end == date(2026, 1, 8)


def _one_class_after_the_window(frame):
    frame = frame.copy()
    frame.loc[frame["ts"] >= "2026-01-06", "label"] = 0
    return frame


@pytest.mark.parametrize(
    ("champion_of", "frame_of", "as_of", "reason"),
    [
        pytest.param(lambda c: Champion(c.version, c.model, c.window_start, c.window_end), lambda f: f, AS_OF,
                     "no k-fold roc_auc of it is on record", id="no-k-fold-estimate"),
        pytest.param(lambda c: Champion(c.version, c.model, c.window_start, c.window_end, 1.0), lambda f: f, AS_OF,
                     "promised no error", id="k-fold-estimate-without-error"),
        pytest.param(lambda c: c, lambda f: f, date(2026, 1, 5), "only 0 labelled rows lie after its training window",
                     id="no-rows-after-its-window"),
        pytest.param(lambda c: c, _one_class_after_the_window, AS_OF, "roc_auc is undefined", id="metric-undefined"),
    ],
)
def test_a_check_it_cannot_make_is_not_judged(trained, champion_of, frame_of, as_of, reason):
    config, frame, champion = trained
    quality = check_quality(config, frame_of(frame), champion_of(champion), as_of)
    assert not quality.judged and not quality.degraded and reason in quality.reason and quality.verdict == "not_judged"


def test_without_a_champion_there_is_nothing_to_judge(trained):
    config, _, _ = trained
    quality = no_champion(config)
    assert (quality.verdict, quality.judged, quality.degraded) == ("no_champion", False, False)
    assert quality.summary() == "Quality no champion yet: nothing to judge"


def test_too_few_rows_for_the_share_of_the_window_are_not_judged(trained):
    config, frame, champion = trained
    strict = config.model_copy(update={"monitoring": Monitoring(min_live_share=0.6)})  # the live days hold about half
    quality = check_quality(strict, frame, champion, AS_OF)
    assert not quality.judged and quality.needed_rows == math.ceil(0.6 * len(frame)) and "need >= 1,200" in quality.reason


@pytest.mark.parametrize(
    ("retrain_on", "drift", "degraded", "reasons"),
    [
        pytest.param("always", True, True, ["drift"], id="always-starts-early-on-drift-only"),
        pytest.param("drift", False, True, [], id="drift-ignores-degradation"),
        pytest.param("degradation", True, False, [], id="degradation-ignores-drift"),
        pytest.param("degradation", False, True, ["degradation"], id="degradation"),
        pytest.param("drift_or_degradation", True, True, ["drift", "degradation"], id="either-both"),
        pytest.param("drift_or_degradation", False, False, [], id="either-neither"),
    ],
)
def test_retrain_on_picks_what_it_retrains_for(retrain_on, drift, degraded, reasons):
    assert retrain_reasons(retrain_on, drift, degraded) == reasons


@pytest.mark.parametrize("metric", ["roc_auc", "f1", "log_loss", "rmse", "mae", "r2"])
def test_the_metric_without_each_block_equals_it_computed_anew(metric):
    rng = np.random.default_rng(5)
    y = (rng.random(600) < 0.4).astype(float)
    scores = np.clip(rng.random(600) * 0.8 + 0.2 * y, 0.01, 0.99)
    block = np.repeat(np.arange(6), 100)
    expected = [metric_value(metric, y[block != g], scores[block != g]) for g in range(6)]
    np.testing.assert_allclose(left_out_values(metric, y, scores, block, 6), expected, rtol=1e-12)


# The simulation: ≥ 200 monitoring cycles of ~700 live rows (a week of hourly rows, say) whose errors
# run together in time: regression residuals are AR(1), 0.6 from one row to the next; classification
# labels follow a logit shifted by an AR(1) series the model does not know. The k-fold estimate is
# the population error of the same process, or that error divided by 1.3 (the champion has become
# 30 % worse than it promised).
CYCLES = 300
LIVE_ROWS = 700
TIMESTAMPS = np.datetime64("2026-01-01T00:00") + np.arange(LIVE_ROWS).astype("timedelta64[h]")


def _autocorrelated(rng: np.random.Generator, rows: int, phi: float = 0.6) -> np.ndarray:
    """A stationary unit-variance AR(1) series."""
    shocks = rng.standard_normal(rows)
    shocks[0] /= math.sqrt(1 - phi**2)
    return lfilter([math.sqrt(1 - phi**2)], [1, -phi], shocks)


def _regression(rng: np.random.Generator, rows: int) -> tuple[np.ndarray, np.ndarray]:
    y = rng.normal(size=rows)
    return y, y + _autocorrelated(rng, rows)


def _classification(rng: np.random.Generator, rows: int) -> tuple[np.ndarray, np.ndarray]:
    logit = rng.normal(scale=1.5, size=rows)
    y = (rng.random(rows) < 1 / (1 + np.exp(-(logit + 0.5 * _autocorrelated(rng, rows))))).astype("int64")
    return y, 1 / (1 + np.exp(-logit))


SIMULATED = {"rmse": _regression, "log_loss": _classification}


def degraded_share(metric: str, rise: float) -> float:
    """The share of simulated cycles called degraded when the live error is ``rise`` times the k-fold estimate."""
    simulate, monitoring = SIMULATED[metric], Monitoring()
    rng = np.random.default_rng(0)
    population = error_of(metric, metric_value(metric, *simulate(rng, 400_000)))
    kfold_value = error_of(metric, population / rise)
    degraded = sum(degradation_test(metric, TIMESTAMPS, *simulate(rng, LIVE_ROWS), kfold_value, monitoring).degraded
                   for _ in range(CYCLES))
    return degraded / CYCLES


@pytest.mark.parametrize("metric", sorted(SIMULATED))
def test_a_champion_as_good_as_promised_is_called_degraded_at_most_at_rate_alpha(metric):
    assert degraded_share(metric, 1.0) <= Monitoring().alpha


@pytest.mark.parametrize("metric", sorted(SIMULATED))
def test_a_champion_30_percent_worse_is_found_with_power_80_percent(metric):
    assert degraded_share(metric, 1.3) >= 0.8
