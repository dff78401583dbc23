"""The metrics: values on small hand-checked inputs, NaN where a metric is undefined."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.metrics import metric_value


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
