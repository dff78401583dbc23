"""The metrics: values on small hand-checked inputs, NaN where a metric is undefined."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.metrics import auc_without_blocks, metric_value


@pytest.mark.parametrize(
    ("name", "y", "scores", "expected"),
    [
        pytest.param("roc_auc", [0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8], 0.75, id="auc"),
        pytest.param("roc_auc", [1, 1, 1], [0.2, 0.5, 0.9], float("nan"), id="auc-undefined-on-one-class"),
        pytest.param("f1", [0, 1, 1, 0], [0.2, 0.7, 0.4, 0.6], 0.5, id="f1-at-0.5"),
        pytest.param("rmse", [1.0, 2.0], [1.0, 4.0], np.sqrt(2.0), id="rmse"),
        pytest.param("mae", [1.0, 2.0], [1.0, 4.0], 1.0, id="mae"),
    ],
)
def test_metric_values(name, y, scores, expected):
    value = metric_value(name, np.array(y), np.array(scores))
    assert (np.isnan(value) and np.isnan(expected)) or value == pytest.approx(expected)


@pytest.mark.parametrize("labels", [pytest.param((0, 1), id="zero-one"), pytest.param((3, 7), id="other-labels")])
@pytest.mark.parametrize("rounding", [pytest.param(None, id="distinct-scores"), pytest.param(1, id="tied-scores")])
def test_auc_equals_scikit_learns(labels, rounding):
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(3)
    y = np.where(rng.random(5_000) < 0.3, labels[1], labels[0])
    scores = rng.normal(size=5_000) + (y == labels[1])
    scores = scores if rounding is None else np.round(scores, rounding)

    assert metric_value("roc_auc", y, scores) == pytest.approx(roc_auc_score(y, scores), abs=1e-12)


def test_auc_of_scores_with_nan_is_scikit_learns_error():
    with pytest.raises(ValueError, match="NaN"):
        metric_value("roc_auc", np.array([0, 1, 1]), np.array([0.2, np.nan, 0.9]))


@pytest.mark.parametrize(
    "rounding",
    [pytest.param(None, id="distinct-scores"), pytest.param(1, id="tied-scores")],
)
def test_auc_without_each_block_equals_the_auc_computed_anew(rounding):
    rng = np.random.default_rng(3)
    y = (rng.random(2_000) < 0.3).astype(float)
    scores = rng.random(2_000) + 0.4 * y
    if rounding is not None:
        scores = np.round(scores, rounding)
    block = rng.integers(0, 7, size=2_000)
    overall, left_out = auc_without_blocks(y, scores, block, 7)
    assert overall == pytest.approx(metric_value("roc_auc", y, scores), abs=1e-12)
    expected = [metric_value("roc_auc", y[block != g], scores[block != g]) for g in range(7)]
    np.testing.assert_allclose(left_out, expected, atol=1e-12)


def test_auc_without_a_block_that_holds_a_whole_class_is_undefined():
    y = np.array([1.0, 1.0, 0.0, 0.0, 0.0])
    block = np.array([0, 0, 1, 1, 2])
    _, left_out = auc_without_blocks(y, np.array([0.9, 0.2, 0.5, 0.1, 0.3]), block, 3)
    assert np.isnan(left_out[0])
    assert left_out[1] == pytest.approx(metric_value("roc_auc", y[block != 1], np.array([0.9, 0.2, 0.3])))
