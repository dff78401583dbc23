"""Drift: the pipeline's verdict (significant and past a floor) on small frames, and Evidently's report of it."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline.config import Config, load_config
from pipeline.drift import detect_drift, judge_feature
from pipeline.results import DriftResult, FeatureDrift
from tests.conftest import small_frame, write_config

ROWS = 3000
ALPHA = 0.01 / 9  # the default alpha over nine features


def make_config(tmp_path: Path, source: dict | None = None, windows: dict | None = None, **drift) -> Config:
    sections: dict = {"drift": drift}
    if source is not None:
        sections["source"] = source
    if windows is not None:
        sections["windows"] = windows
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
    assert [f.feature for f in result.features] == ["x_num", "y_num", "color"]
    assert [f.method for f in result.features] == ["wasserstein", "wasserstein", "jensenshannon"]
    assert [f.threshold for f in result.features] == [0.1, 0.1, 0.05]
    assert all(f.alpha == pytest.approx(0.01 / 3) for f in result.features)
    assert result.dataset_drift == bool(expected_drifted)  # the default rule: any drifted feature


@pytest.mark.parametrize(
    ("rule", "share", "expected"),
    [pytest.param("any", 0.3, True, id="any-feature"), pytest.param("share", 0.3, True, id="one-third-reaches-0.3"),
     pytest.param("share", 0.5, False, id="one-third-below-0.5")],
)
def test_dataset_verdict_follows_the_rule(tmp_path, reference, current, rule, share, expected):
    shift_x(current)
    config = make_config(tmp_path, dataset_rule=rule, dataset_drift_share=share)
    result = detect_drift(config, reference, current, tmp_path / "drift.html")
    assert result.drifted_share == pytest.approx(1 / 3)
    assert (result.rule, result.dataset_drift) == (rule, expected)


def test_a_significant_shift_below_the_floor_never_drifts_however_large_the_window():
    rng = np.random.default_rng(0)
    reference, current = pd.Series(rng.normal(size=200_000)), pd.Series(rng.normal(0.05, 1, 200_000))
    small = judge_feature("x", "numeric", reference, current, 0.1, ALPHA, seed=0)
    assert small.p_value < 1e-10 and small.score == pytest.approx(0.05, abs=0.01)
    assert (small.drifted, small.status) == (False, "stable")
    assert judge_feature("x", "numeric", reference, current, 0.02, ALPHA, seed=0).drifted


def test_a_large_distance_on_few_rows_is_not_significant():
    rng = np.random.default_rng(1)
    reference, current = pd.Series(rng.normal(size=30)), pd.Series(rng.normal(size=30))
    feature = judge_feature("x", "numeric", reference, current, 0.1, ALPHA, seed=0)
    assert feature.score > 0.1 and feature.p_value > ALPHA and not feature.drifted


def test_per_feature_floor_overrides_the_kinds(tmp_path, reference, current):
    current["y_num"] += 0.6  # y_num has sd 2: 0.3 sd
    config = make_config(tmp_path, per_feature={"y_num": {"floor": 0.5}})
    x_num, y_num, _ = detect_drift(config, reference, current, tmp_path / "drift.html").features
    assert (x_num.threshold, y_num.threshold) == (0.1, 0.5)
    assert 0.25 < y_num.score < 0.5 and y_num.status == "stable"


@pytest.mark.parametrize(
    ("kind", "reference", "current", "status", "note"),
    [
        pytest.param("numeric", [1.0] * 500, [2.0] * 500, "drifted", "", id="numeric-constants-that-differ"),
        pytest.param("categorical", ["fall"] * 500, ["winter"] * 500, "drifted", "", id="categorical-replaced"),
        pytest.param("numeric", [1.0] * 500, list(np.linspace(0, 2, 500)), "drifted", "", id="constant-in-one-window"),
        pytest.param("numeric", list(np.linspace(0, 1, 500)), [None] * 500, "drifted",
                     "all values null in the current window only", id="numeric-emptied"),
        pytest.param("categorical", ["a", "b"] * 250, [None] * 500, "drifted",
                     "all values null in the current window only", id="categorical-emptied"),
        pytest.param("numeric", [None] * 500, [None] * 500, "degenerate", "all values null in both windows",
                     id="null-in-both"),
        pytest.param("numeric", [3.0] * 500, [3.0] * 500, "stable", "constant in both windows (value 3)",
                     id="one-constant"),
        pytest.param("categorical", ["red"] * 500, ["red"] * 500, "stable", "constant in both windows (value 'red')",
                     id="one-category"),
    ],
)
def test_degenerate_columns(kind, reference, current, status, note):
    feature = judge_feature("c", kind, pd.Series(reference, dtype=object if kind == "categorical" else "float64"),
                            pd.Series(current, dtype=object if kind == "categorical" else "float64"), 0.05, ALPHA, 0)
    assert (feature.status, feature.note) == (status, note)
    assert feature.drifted is (status == "drifted")


def test_a_complete_category_replacement_is_the_largest_distance():
    feature = judge_feature("season", "categorical", pd.Series(["fall"] * 400), pd.Series(["winter"] * 400), 0.05,
                            ALPHA, 0)
    assert feature.score == pytest.approx(1.0) and feature.severity == pytest.approx(20.0)


def categories(rng: np.random.Generator, rows: int, shares: dict[str, float]) -> pd.Series:
    return pd.Series(rng.choice(list(shares), rows, p=list(shares.values())))


@pytest.mark.parametrize(
    "change",
    [
        pytest.param(lambda v: v + 0.2, id="numeric-0.2-sd"),
        pytest.param({"a": 0.6, "b": 0.3, "c": 0.1}, id="category-plus-10-points"),
        pytest.param({"a": 0.495, "b": 0.396, "c": 0.099, "new": 0.01}, id="new-category-1-percent"),
    ],
)
def test_the_changes_that_matter_are_detected_at_10k_rows(change):
    rng = np.random.default_rng(2)
    found = 0
    for _ in range(20):
        if callable(change):
            reference = pd.Series(rng.normal(size=10_000))
            current = pd.Series(change(rng.normal(size=10_000)))
            found += judge_feature("x", "numeric", reference, current, 0.1, ALPHA, 0).drifted
        else:
            reference = categories(rng, 10_000, {"a": 0.5, "b": 0.4, "c": 0.1})
            found += judge_feature("c", "categorical", reference, categories(rng, 10_000, change), 0.05, ALPHA, 0).drifted
    assert found == 20


def test_same_distribution_windows_raise_a_dataset_alarm_at_most_at_rate_alpha():
    """Nine features of mixed shapes, 200 rows a window, 150 simulated pairs."""
    rng = np.random.default_rng(3)
    draws = {
        "normal": lambda n: rng.normal(size=n), "skewed": lambda n: rng.exponential(size=n) ** 3,
        "hour": lambda n: rng.integers(0, 24, n).astype(float), "flag": lambda n: (rng.random(n) < 0.1) * 1.0,
        "uniform": lambda n: rng.random(n), "counts": lambda n: rng.poisson(2, n).astype(float),
    }
    shares = {"a": 0.4, "b": 0.2, "c": 0.1, "d": 0.1, "e": 0.1, "f": 0.05, "g": 0.03, "h": 0.02}
    alarms = 0
    for _ in range(150):
        numeric = [judge_feature(n, "numeric", pd.Series(d(200)), pd.Series(d(200)), 0.1, ALPHA, 0)
                   for n, d in draws.items()]
        categorical = [judge_feature(f"c{i}", "categorical", categories(rng, 200, shares), categories(rng, 200, shares),
                                     0.05, ALPHA, 0) for i in range(3)]
        alarms += any(f.drifted for f in numeric + categorical)
    assert alarms <= 3  # 1 % of 150 is 1.5; the Bonferroni bound makes it rarer still


def test_a_reference_window_below_min_rows_is_not_judged(tmp_path, reference, current):
    config = make_config(tmp_path, windows={"min_rows": 100})
    shift_x(current)
    result = detect_drift(config, reference.head(92), current, tmp_path / "drift.html")
    assert not result.dataset_drift and result.drifted_features == []
    assert result.notes == ["the reference window has 92 rows, below windows.min_rows 100: drift is not judged on it"]
    assert "note: the reference window has 92 rows" in result.summary()
    assert "no feature could be compared" in (tmp_path / "drift.html").read_text()


def test_mixed_type_categories_are_compared_as_text(config, reference, current, tmp_path):
    reference["color"] = reference["color"].astype(object)
    current["color"] = current["color"].astype(object)
    reference.loc[:999, "color"], current.loc[:999, "color"] = "7", 7
    color = detect_drift(config, reference, current, tmp_path / "drift.html").features[2]
    assert color.status == "stable" and color.score < 0.05


def test_the_verdict_uses_every_row_and_the_report_a_sample(tmp_path, reference, current):
    shift_x(current)
    full = detect_drift(make_config(tmp_path, sample_rows=None), reference, current, tmp_path / "a.html")
    sampled = detect_drift(make_config(tmp_path, sample_rows=500), reference, current, tmp_path / "b.html")
    assert [f.score for f in full.features] == [f.score for f in sampled.features]
    assert (sampled.sampled_reference_rows, sampled.reference_rows) == (500, ROWS)
    assert sampled.seconds is not None and sampled.seconds < 5


def test_the_report_opens_with_the_pipelines_verdict_and_is_self_contained(config, reference, current, tmp_path):
    report = tmp_path / "drift.html"
    detect_drift(config, reference, reference, report)
    shift_x(current)
    result = detect_drift(config, reference, current, report)

    stored = DriftResult.from_dict(json.loads(json.dumps(result.to_dict(), allow_nan=False)))
    assert stored == result and stored.drifted_features == ["x_num"]
    page = report.read_text()
    verdict = page.index("Pipeline verdict: dataset drift DETECTED")
    assert page.index("<body") < verdict < page.index("<script", verdict) and page.count("Pipeline verdict") == 1
    assert "the dataset drifts when any feature drifts" in page
    assert not re.search(r"<script[^>]*\bsrc=", page)
    assert not re.search(r"<link[^>]*\bhref=[\"']?(https?:)?//", page)


def feature(name: str, score: float | None, floor: float, drifted: bool = True) -> FeatureDrift:
    return FeatureDrift(name, "numeric", "wasserstein", score, floor, drifted, "drifted" if drifted else "stable",
                        "" if score is not None else "all values null in the current window only",
                        p_value=1e-6, alpha=0.001)


def test_top_drifted_puts_the_largest_drift_relative_to_its_floor_first():
    result = DriftResult([feature("mild", 0.2, 0.1), feature("stable", 0.05, 0.1, drifted=False),
                          feature("emptied", None, 0.1), feature("strong", 0.9, 0.1), feature("wide_floor", 0.9, 0.5)],
                         0.8, True, 0.3, 10, 10, 10, 10, rule="any", alpha=0.01)
    assert [f.feature for f in result.top_drifted()] == ["emptied", "strong", "mild", "wide_floor"]
    assert [f.feature for f in result.top_drifted(2)] == ["emptied", "strong"]


def test_summary_names_the_rule_the_numbers_and_what_was_not_compared():
    empty = FeatureDrift("empty", "categorical", "jensenshannon", None, 0.05, False, "degenerate",
                         "all values null in both windows")
    result = DriftResult([feature("x", 0.9, 0.1), feature("z", 0.3, 0.1), empty], 1.0, True, 0.3, 10, 10, 10, 10,
                         rule="any", alpha=0.01)
    text = result.summary(top=1)
    assert text.startswith("Dataset drift DETECTED: 2 of 2 compared features drifted (share 100%; the dataset "
                           "drifts when any feature drifts)")
    assert "x: wasserstein 0.9 >= floor 0.1, p=1e-06, significant at 0.001" in text and "... and 1 more" in text
    assert "empty: all values null in both windows" in text


def test_one_materially_drifted_feature_of_nine_sets_off_the_dataset_verdict(tmp_path):
    """At 10k rows a complete replacement of one category of nine features: 11 % of the features."""
    rng = np.random.default_rng(4)
    numeric, categorical = [f"n{i}" for i in range(6)], ["c0", "c1", "season"]

    def window(season: str) -> pd.DataFrame:
        frame = pd.DataFrame({name: rng.normal(size=10_000) for name in numeric})
        for name in categorical[:2]:
            frame[name] = rng.choice(["a", "b", "c"], 10_000)
        frame["season"] = season
        return frame

    config = make_config(tmp_path, source={"features": {"numeric": numeric, "categorical": categorical}})
    result = detect_drift(config, window("fall"), window("winter"), tmp_path / "drift.html")
    assert result.drifted_features == ["season"] and result.dataset_drift
    assert result.top_drifted()[0].score == pytest.approx(1.0)
