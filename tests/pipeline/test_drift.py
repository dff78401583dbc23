"""Drift detection against real Evidently runs on small frames."""

from __future__ import annotations

import json
import re
import typing
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline.config import Config, DriftMethod, load_config
from pipeline.drift import METHODS_BY_KIND, _feature_drift, detect_drift
from pipeline.errors import ConfigError
from pipeline.results import P_VALUE_METHODS, DriftResult, FeatureDrift
from tests.conftest import small_frame, write_config

ROWS = 3000


def make_config(tmp_path: Path, source: dict | None = None, **drift) -> Config:
    sections = {"drift": drift} if source is None else {"drift": drift, "source": source}
    return load_config(write_config(tmp_path, **sections), environ={})


@pytest.fixture
def reference() -> pd.DataFrame:
    return small_frame(ROWS, seed=1)


@pytest.fixture
def current() -> pd.DataFrame:
    return small_frame(ROWS, seed=2)


def shift_x(frame: pd.DataFrame) -> None:
    frame["x_num"] += 1.5  # x_num has sd 1


def new_color(frame: pd.DataFrame) -> None:
    frame.loc[: len(frame) // 2, "color"] = "purple"


def unchanged(frame: pd.DataFrame) -> None:
    pass


@pytest.mark.parametrize(
    ("change", "expected_drifted"),
    [
        pytest.param(unchanged, [], id="same-distribution"),
        pytest.param(shift_x, ["x_num"], id="shifted-numeric"),
        pytest.param(new_color, ["color"], id="new-category"),
    ],
)
def test_only_the_changed_feature_drifts(config, reference, current, tmp_path, change, expected_drifted):
    change(current)
    result = detect_drift(config, reference, current, tmp_path / "drift.html")
    assert result.drifted_features == expected_drifted
    assert {f.feature: f.status for f in result.features} == {
        name: "drifted" if name in expected_drifted else "stable" for name in ("x_num", "y_num", "color")
    }
    assert [f.feature for f in result.features] == ["x_num", "y_num", "color"]
    assert [f.method for f in result.features] == ["wasserstein", "wasserstein", "jensenshannon"]
    assert all(isinstance(f.score, float) for f in result.features)
    assert result.dataset_drift == bool(expected_drifted)  # 1 of 3 features > the 0.3 default share


@pytest.mark.parametrize(
    ("share", "expected"),
    [pytest.param(0.3, True, id="one-third-reaches-0.3"), pytest.param(0.5, False, id="one-third-below-0.5")],
)
def test_dataset_verdict_uses_the_configured_share(tmp_path, reference, current, share, expected):
    shift_x(current)
    result = detect_drift(make_config(tmp_path, dataset_drift_share=share), reference, current, tmp_path / "drift.html")
    assert result.drifted_share == pytest.approx(1 / 3)
    assert result.share_threshold == share
    assert result.dataset_drift is expected


def test_per_feature_override_sets_method_and_threshold(tmp_path, reference, current):
    current["y_num"] += 0.3  # y_num has sd 2: a small shift, so the verdict depends on the threshold

    def y_num_with_threshold(threshold: float) -> FeatureDrift:
        config = make_config(tmp_path, per_feature={"y_num": {"method": "psi", "threshold": threshold}})
        return detect_drift(config, reference, current, tmp_path / "drift.html").features[1]

    measured = y_num_with_threshold(0.5)
    assert (measured.feature, measured.method, measured.threshold) == ("y_num", "psi", 0.5)
    assert 0 < measured.score < 0.5 and measured.status == "stable"
    flipped = y_num_with_threshold(measured.score / 2)
    assert flipped.score == pytest.approx(measured.score) and flipped.status == "drifted"


def test_override_without_threshold_uses_the_kinds_default(tmp_path, reference, current):
    config = make_config(tmp_path, num_threshold=0.2, per_feature={"x_num": {"method": "ks"}})
    x_num = detect_drift(config, reference, current, tmp_path / "drift.html").features[0]
    assert (x_num.method, x_num.threshold) == ("ks", 0.2)


@pytest.mark.parametrize(
    ("change", "drifted"),
    [pytest.param(unchanged, False, id="same-large-p"), pytest.param(shift_x, True, id="shifted-small-p")],
)
def test_p_value_method_drifts_below_its_threshold(tmp_path, reference, current, change, drifted):
    change(current)
    config = make_config(tmp_path, per_feature={"x_num": {"method": "ks", "threshold": 0.05}})
    x_num = detect_drift(config, reference, current, tmp_path / "drift.html").features[0]
    assert x_num.drifted is drifted
    assert (x_num.score < 0.05) is drifted


@pytest.mark.filterwarnings("ignore::UserWarning")  # scipy's anderson_ksamp caps its p-values and says so
def test_method_directions_agree_with_evidentlys_verdicts(tmp_path):
    """For every configurable method, on a column that drifts and one that cannot."""
    rng = np.random.default_rng(0)
    rows = 1000
    reference, current, per_feature = {}, {}, {}
    features: dict[str, list[str]] = {"numeric": [], "categorical": []}
    for kind, methods in METHODS_BY_KIND.items():
        for method in sorted(methods):
            if kind == "numeric":
                values = rng.normal(size=rows)
                shifted = values + 1.0
            else:
                values = rng.choice(["a", "b", "c"], p=[0.6, 0.3, 0.1], size=rows)
                shifted = np.where(values == "a", "c", values)
            for case, changed in (("same", rng.permutation(values)), ("shifted", shifted)):
                name = f"{kind}_{method}_{case}"
                reference[name], current[name] = values, changed
                features[kind].append(name)
                per_feature[name] = {"method": method}
    config = make_config(tmp_path, source={"features": features}, per_feature=per_feature)

    result = detect_drift(config, pd.DataFrame(reference), pd.DataFrame(current), tmp_path / "drift.html")

    assert set(typing.get_args(DriftMethod)) == set().union(*METHODS_BY_KIND.values())
    for feature in result.features:
        assert feature.drifted is feature.feature.endswith("_shifted"), feature
        below = feature.score < feature.threshold
        assert feature.drifted is (below if feature.method in P_VALUE_METHODS else not below), feature


def test_method_that_does_not_fit_the_kind_is_a_config_error(tmp_path, reference, current):
    config = make_config(tmp_path, per_feature={"x_num": {"method": "chisquare"}})
    with pytest.raises(ConfigError, match="'chisquare' does not apply to numeric feature 'x_num'"):
        detect_drift(config, reference, current, tmp_path / "drift.html")


def test_all_null_column_is_degenerate_and_the_rest_is_compared(config, reference, current, tmp_path):
    shift_x(current)
    current["color"] = None
    result = detect_drift(config, reference, current, tmp_path / "drift.html")
    color = result.features[2]
    assert (color.status, color.method, color.score, color.drifted) == ("degenerate", None, None, False)
    assert color.note == "all values null in current window"
    assert result.drifted_features == ["x_num"]
    assert result.drifted_share == pytest.approx(1 / 2)  # degenerate features are not in the share
    assert (tmp_path / "drift.html").stat().st_size > 0


@pytest.mark.parametrize(
    ("column", "reference_value", "current_value", "note"),
    [
        pytest.param("color", "red", "red", "constant in both windows (value 'red')", id="categorical"),
        pytest.param("x_num", 0.0, 0.0, "constant in both windows (value '0.0')", id="numeric"),
        pytest.param(
            "color", "red", "blue", "constant in both windows (reference 'red', current 'blue')", id="different-values"
        ),
    ],
)
def test_constant_in_both_windows_is_degenerate(
    config, reference, current, tmp_path, column, reference_value, current_value, note
):
    reference[column], current[column] = reference_value, current_value
    result = detect_drift(config, reference, current, tmp_path / "drift.html")
    (degenerate,) = result.degenerate_features
    assert (degenerate.feature, degenerate.note) == (column, note)
    assert all(f.status == "stable" for f in result.features if f.feature != column)


def test_nan_score_from_evidently_is_degenerate():
    # No input found here makes Evidently 0.7.23 return NaN once constant columns are left out, so feed one in.
    nan = _feature_drift("color", "categorical", "chisquare", 0.05, "", (float("nan"), False))
    assert (nan.status, nan.score) == ("degenerate", None)
    assert nan.note == "Evidently returned no score (NaN) for method chisquare"


def test_no_comparable_feature_still_writes_a_report(config, reference, current, tmp_path):
    current[["x_num", "y_num", "color"]] = None
    result = detect_drift(config, reference, current, tmp_path / "drift.html")
    assert [f.status for f in result.features] == ["degenerate"] * 3
    assert (result.drifted_share, result.dataset_drift) == (0.0, False)
    page = (tmp_path / "drift.html").read_text()
    assert "no feature could be compared" in page and "all values null in current window" in page
    assert DriftResult.from_dict(json.loads(json.dumps(result.to_dict(), allow_nan=False))) == result


def test_mixed_type_categories_are_compared_as_text(config, reference, current, tmp_path):
    current["color"] = current["color"].astype(object)
    current.loc[:100, "color"] = 7
    current.loc[101:200, "color"] = np.nan
    color = detect_drift(config, reference, current, tmp_path / "drift.html").features[2]
    assert color.status in {"stable", "drifted"} and isinstance(color.score, float)


@pytest.mark.parametrize(
    ("sample_rows", "expected_rows"),
    [pytest.param(1000, 1000, id="capped"), pytest.param(None, ROWS, id="unlimited"),
     pytest.param(5000, ROWS, id="smaller-window-untouched")],
)
def test_sampling_caps_the_compared_rows(tmp_path, reference, current, sample_rows, expected_rows):
    config = make_config(tmp_path, sample_rows=sample_rows)
    result = detect_drift(config, reference, current, tmp_path / "drift.html")
    assert (result.reference_rows, result.current_rows) == (ROWS, ROWS)
    assert (result.sampled_reference_rows, result.sampled_current_rows) == (expected_rows, expected_rows)


def test_sampling_is_reproducible(tmp_path, reference, current):
    config = make_config(tmp_path, sample_rows=500)
    first, second = (detect_drift(config, reference, current, tmp_path / f"{name}.html") for name in ("a", "b"))
    assert [f.score for f in first.features] == [f.score for f in second.features]


def test_the_report_is_self_contained_and_overwritten(config, reference, current, tmp_path):
    report = tmp_path / "drift.html"
    detect_drift(config, reference, reference, report)
    shift_x(current)
    result = detect_drift(config, reference, current, report)

    stored = DriftResult.from_dict(json.loads(json.dumps(result.to_dict(), allow_nan=False)))
    assert stored == result and stored.drifted_features == ["x_num"]
    page = report.read_text()
    assert "x_num" in page
    assert not re.search(r"<script[^>]*\bsrc=", page)
    assert not re.search(r"<link[^>]*\bhref=[\"']?(https?:)?//", page)


def feature(name: str, method: str, score: float, threshold: float, drifted: bool = True) -> FeatureDrift:
    return FeatureDrift(name, "numeric", method, score, threshold, drifted, "drifted" if drifted else "stable", "")


def result_of(*features: FeatureDrift) -> DriftResult:
    compared = [f for f in features if f.status != "degenerate"]
    share = sum(f.drifted for f in compared) / len(compared)
    return DriftResult(list(features), share, share >= 0.3, 0.3, 10, 10, 10, 10)


def test_top_drifted_puts_the_largest_drift_first():
    result = result_of(
        feature("mild_distance", "wasserstein", 0.2, 0.1),
        feature("stable", "wasserstein", 0.05, 0.1, drifted=False),
        feature("strong_p_value", "ks", 0.0001, 0.05),
        feature("strong_distance", "wasserstein", 0.9, 0.1),
        feature("mild_p_value", "ks", 0.04, 0.05),
    )
    ranked = [f.feature for f in result.top_drifted()]
    assert ranked == ["strong_p_value", "strong_distance", "mild_distance", "mild_p_value"]
    assert [f.feature for f in result.top_drifted(2)] == ranked[:2]
    assert result.drifted_features == ["mild_distance", "strong_p_value", "strong_distance", "mild_p_value"]


def test_summary_names_verdict_top_features_and_degenerate_ones():
    note = "all values null in current window"
    empty = FeatureDrift("empty", "categorical", None, None, None, False, "degenerate", note)
    result = result_of(feature("x", "wasserstein", 0.9, 0.1), feature("p", "ks", 0.001, 0.05), empty)
    text = result.summary(top=1)
    assert text.startswith("Dataset drift DETECTED: 2 of 2 compared features drifted (share 100%, dataset drifts at 30%)")
    assert "p: ks 0.001 < threshold 0.05" in text and "... and 1 more" in text
    assert "empty: all values null in current window" in text
    assert "x: wasserstein 0.9 >= threshold 0.1" in result.summary()
