"""Validation with real Great Expectations: a suite proposed from a clean frame, then one broken frame per rule."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd
import pytest

from pipeline.config import Config, load_config
from pipeline.errors import ConfigError
from pipeline.results import ValidationResult
from pipeline.validate import (
    NUMERIC_TYPES,
    load_suite,
    propose_suite,
    render_html,
    tell_apart,
    validate_window,
    write_suite,
)
from tests.conftest import small_frame, write_config


@pytest.fixture
def suite(config: Config, frame: pd.DataFrame) -> dict:
    """The suite proposed from the clean frame, its ranges critical, written where the config expects it."""
    proposed = propose_suite(config, frame, critical_ranges=True)
    write_suite(proposed, config.validation.suite)
    return proposed


def strings_in_x_num(frame: pd.DataFrame) -> pd.DataFrame:
    """What a numeric SQL column holding a few strings arrives as: object dtype."""
    frame = frame.astype({"x_num": object})
    frame.loc[:3, "x_num"] = "abc"
    return frame


def nulls_in_y_num(frame: pd.DataFrame) -> pd.DataFrame:
    frame = frame.copy()
    frame.loc[: len(frame) * 3 // 10 - 1, "y_num"] = None
    return frame


def x_num_out_of_range(frame: pd.DataFrame) -> pd.DataFrame:
    frame = frame.copy()
    frame.loc[:4, "x_num"] = 1e6
    return frame


def purple_color(frame: pd.DataFrame) -> pd.DataFrame:
    frame = frame.copy()
    frame.loc[:2, "color"] = "purple"
    return frame


def duplicate_key(frame: pd.DataFrame) -> pd.DataFrame:
    frame = frame.copy()
    frame.loc[1, "id"] = frame.loc[0, "id"]
    frame.loc[1, "ts"] = frame.loc[0, "ts"]
    return frame


def categories_critical(suite: dict) -> None:
    for expectation in suite["expectations"]:
        if expectation["kwargs"].get("column") == "color" and expectation["type"] == "expect_column_values_to_be_in_set":
            expectation["severity"] = expectation["meta"]["severity"] = "critical"


def ranges_critical(suite: dict) -> None:
    """What a reviewer does to a range proposed as a warning once it is checked against the seasons."""
    for expectation in suite["expectations"]:
        if expectation["type"] == "expect_column_values_to_be_between":
            expectation["severity"] = expectation["meta"]["severity"] = "critical"


FAILURES = [
    # (frame change, config sections, suite edit, passed, failed expectation, its severity, message parts, a sample value)
    pytest.param(
        lambda f: f.drop(columns=["y_num"]), {}, None, False,
        "expect_column_to_exist", "critical", ["column 'y_num'", "missing"], None,
        id="missing-column",
    ),
    pytest.param(
        lambda f: pd.DataFrame(), {}, None, False,
        "expect_column_to_exist", "critical", ["column 'id'", "missing from the data"], None,
        id="no-columns-at-all",
    ),
    pytest.param(
        lambda f: f.assign(extra=1), {}, None, True,
        "expect_table_columns_to_match_set", "warning", ["unexpected extra columns ['extra']"], "extra",
        id="extra-column-warning",
    ),
    pytest.param(
        lambda f: f.assign(extra=1), {"source": {"unexpected_columns": "critical"}}, None, False,
        "expect_table_columns_to_match_set", "critical", ["unexpected extra columns ['extra']"], "extra",
        id="extra-column-critical",
    ),
    pytest.param(
        strings_in_x_num, {}, None, False,
        "expect_column_values_to_be_in_type_list", "critical", ["column 'x_num'", "numeric", "4 of 400", "dtype object"],
        "abc",
        id="strings-in-numeric",
    ),
    pytest.param(
        nulls_in_y_num, {}, None, False,
        "expect_column_values_to_not_be_null", "critical", ["column 'y_num'", "at most 5.0% of values may be null", "30.0%"],
        None,
        id="nulls-above-ceiling",
    ),
    pytest.param(
        x_num_out_of_range, {}, None, True,
        "expect_column_values_to_be_between", "warning", ["column 'x_num'", "between", "5 of 400", "outside"], 1e6,
        id="out-of-range-warning-under-a-year",
    ),
    pytest.param(
        x_num_out_of_range, {}, ranges_critical, False,
        "expect_column_values_to_be_between", "critical", ["column 'x_num'", "between", "5 of 400", "outside"], 1e6,
        id="out-of-range-critical",
    ),
    pytest.param(
        purple_color, {}, None, True,
        "expect_column_values_to_be_in_set", "warning", ["column 'color'", "one of ['blue', 'green', 'red']"], "purple",
        id="unseen-category-warning",
    ),
    pytest.param(
        purple_color, {}, categories_critical, False,
        "expect_column_values_to_be_in_set", "critical", ["column 'color'", "3 of 400"], "purple",
        id="unseen-category-critical",
    ),
    pytest.param(
        lambda f: f.iloc[:0], {}, None, False,
        "expect_table_row_count_to_be_between", "critical", ["at least 10", "empty (0 rows)"], None,
        id="empty-frame",
    ),
    pytest.param(
        lambda f: f.iloc[:5], {}, None, False,
        "expect_table_row_count_to_be_between", "critical", ["at least 10", "5 rows"], None,
        id="fewer-rows-than-min-rows",
    ),
    pytest.param(
        duplicate_key, {}, None, False,
        "expect_compound_columns_to_be_unique", "critical", ["columns ('id', 'ts')", "2 of 400 rows", "duplicated"],
        "first-row-key",
        id="duplicate-id-ts",
    ),
    pytest.param(
        lambda f: f.assign(label=0), {}, None, False,
        "expect_column_unique_value_count_to_be_between", "critical", ["target 'label'", "at least 2", "found 1: [0]"], 0,
        id="target-one-class",
    ),
]


@pytest.mark.parametrize(
    ("change", "sections", "edit_suite", "passed", "expectation", "severity", "message_parts", "sample"), FAILURES
)
def test_each_rule_reports_its_failure(
    tmp_path: Path, frame, change, sections, edit_suite, passed, expectation, severity, message_parts, sample
):
    config = load_config(write_config(tmp_path, **sections), environ={})
    suite = propose_suite(config, frame)
    if edit_suite:
        edit_suite(suite)
    write_suite(suite, config.validation.suite)
    broken = change(frame)

    result = validate_window(config, broken)

    assert result.passed is passed
    failed = [o for o in result.outcomes if not o.success and o.expectation == expectation and o.severity == severity]
    assert failed, result.summary()
    outcome = failed[0]
    for part in message_parts:
        assert part in outcome.message
    if sample == "first-row-key":
        sample = {"id": int(frame.loc[0, "id"]), "ts": frame.loc[0, "ts"].isoformat()}
    if sample is not None:
        assert sample in outcome.sample_values
        assert repr(sample) in outcome.message
    assert outcome.message in result.summary()
    assert f"[{severity}] " in result.summary()
    assert ("PASSED" if passed else "STOPPED") in result.summary().splitlines()[0]


def test_clean_frame_passes(config, frame, suite, tmp_path):
    result = validate_window(config, frame)

    assert result.passed
    assert not result.critical_failures and not result.warnings
    assert all(o.success for o in result.outcomes)
    assert result.rows == len(frame)


def test_outcomes_list_failed_critical_then_warnings_then_passed(config, frame, suite, tmp_path):
    broken = x_num_out_of_range(purple_color(frame)).assign(extra=1)

    outcomes = validate_window(config, broken).outcomes

    groups = [(o.success, o.severity) for o in outcomes]
    first_warning = groups.index((False, "warning"))
    first_passed = next(i for i, (success, _) in enumerate(groups) if success)
    assert set(groups[:first_warning]) == {(False, "critical")}
    assert set(groups[first_warning:first_passed]) == {(False, "warning")}
    assert all(success for success, _ in groups[first_passed:])


def test_report_is_self_contained_escaped_and_lists_failed_first(config, frame, suite, tmp_path):
    broken = x_num_out_of_range(frame)
    broken.loc[10, "color"] = "<script>alert(1)</script>"

    result = validate_window(config, broken)

    page = render_html(result, config.model_name, "2026-01-01..2026-01-10")
    assert not re.search(r"(src|href)\s*=\s*[\"']?\s*(https?:)?//", page, re.IGNORECASE)
    assert "http://" not in page and "https://" not in page
    assert "<script" not in page and "&lt;script&gt;" in page
    assert "test_model" in page and "2026-01-01..2026-01-10" in page and "STOPPED" in page
    rows = re.findall(r'<tr class="([a-z-]+)"', page)
    assert rows[:2] == ["failed-critical", "failed-warning"]
    assert set(rows[2:]) == {"passed"}


def test_result_json_round_trips(config, frame, suite, tmp_path):
    first = validate_window(config, frame.assign(label=0))
    result = validate_window(config, purple_color(frame))

    saved = json.loads(json.dumps(result.to_dict(), ensure_ascii=False))
    assert saved == result.to_dict() != first.to_dict()
    assert ValidationResult.from_dict(saved) == result
    assert [o.message for o in ValidationResult.from_dict(saved).warnings] == [o.message for o in result.warnings]


def test_proposed_suite_round_trips_and_holds_the_profile(config, frame, tmp_path):
    proposed = propose_suite(config, frame)
    path = tmp_path / "suite" / "proposed.json"
    write_suite(proposed, path)

    text = path.read_text(encoding="utf-8")
    assert text.endswith("}\n") and text == json.dumps(proposed, indent=2, sort_keys=True) + "\n"
    loaded = load_suite(path)
    assert loaded.name == "test_model_suite"
    assert json.loads(json.dumps(loaded.to_json_dict())) == json.loads(text)

    by_rule = {(e["type"], e["kwargs"].get("column")): e for e in proposed["expectations"]}
    assert set(by_rule) == {
        ("expect_table_row_count_to_be_between", None),
        *((kind, column) for column in ("x_num", "y_num") for kind in (
            "expect_column_values_to_be_in_type_list",
            "expect_column_values_to_not_be_null",
            "expect_column_values_to_be_between",
        )),
        ("expect_column_values_to_not_be_null", "color"),
        ("expect_column_values_to_be_in_set", "color"),
        ("expect_column_values_to_not_be_null", "label"),
        ("expect_column_values_to_be_in_set", "label"),
    }
    for expectation in proposed["expectations"]:
        assert expectation["severity"] == expectation["meta"]["severity"]
    warnings = {rule for rule, e in by_rule.items() if e["severity"] == "warning"}
    assert warnings == {
        ("expect_table_row_count_to_be_between", None),
        ("expect_column_values_to_be_in_set", "color"),
        ("expect_column_values_to_be_between", "x_num"),  # ten days of rows do not cover a year
        ("expect_column_values_to_be_between", "y_num"),
    }

    x_min, x_max = frame["x_num"].min(), frame["x_num"].max()
    x_range = by_rule[("expect_column_values_to_be_between", "x_num")]["kwargs"]
    assert x_range["min_value"] == pytest.approx(x_min - 0.1 * (x_max - x_min))
    assert x_range["max_value"] == pytest.approx(x_max + 0.1 * (x_max - x_min))
    assert type(x_range["min_value"]) is float
    assert by_rule[("expect_column_values_to_not_be_null", "x_num")]["kwargs"]["mostly"] == 0.95
    assert by_rule[("expect_column_values_to_be_in_set", "color")]["kwargs"]["value_set"] == ["blue", "green", "red"]
    assert by_rule[("expect_column_values_to_be_in_set", "label")]["kwargs"]["value_set"] == [0, 1]
    assert by_rule[("expect_column_values_to_be_in_type_list", "x_num")]["kwargs"]["type_list"] == NUMERIC_TYPES
    assert by_rule[("expect_table_row_count_to_be_between", None)]["kwargs"] == {"min_value": 200, "max_value": 800}


def test_proposed_range_of_a_never_negative_column_stays_non_negative(config, frame):
    frame = frame.assign(y_num=frame["y_num"].abs() + 0.01)
    ranges = {
        e["kwargs"]["column"]: e["kwargs"]
        for e in propose_suite(config, frame)["expectations"]
        if e["type"] == "expect_column_values_to_be_between"
    }
    assert ranges["y_num"]["min_value"] == 0.0
    assert ranges["x_num"]["min_value"] < frame["x_num"].min()


@pytest.mark.parametrize(
    ("values", "low", "high"),
    [
        pytest.param(pd.Series([3, 7, 12] * 133 + [7]), 2, 13, id="integer-dtype"),
        pytest.param(pd.Series([3.0, 7.0, None, 12.0] * 100), 2, 13, id="whole-floats-with-nulls"),
        pytest.param(pd.Series([3, 7, None, 12] * 100, dtype="Int64"), 2, 13, id="nullable-integers"),
        pytest.param(pd.Series([-3, 0, 4] * 133 + [0]), -4, 5, id="negative-integers"),
        pytest.param(pd.Series([0, 4, 7] * 133 + [4]), 0, 8, id="never-negative-integers-stay-non-negative"),
    ],
)
def test_proposed_range_of_whole_numbers_has_whole_bounds(config, frame, values, low, high):
    ranges = {
        e["kwargs"]["column"]: e["kwargs"]
        for e in propose_suite(config, frame.assign(y_num=values))["expectations"]
        if e["type"] == "expect_column_values_to_be_between"
    }

    assert (ranges["y_num"]["min_value"], ranges["y_num"]["max_value"]) == (low, high)  # GX keeps them as floats
    assert not float(ranges["x_num"]["min_value"]).is_integer()  # a column with fractions keeps exact bounds


def test_proposed_range_of_a_column_with_fractions_keeps_its_fractions(config, frame):
    values = pd.Series([3.0, 7.5, 12.0] * 133 + [7.5])

    y_range = next(
        e["kwargs"] for e in propose_suite(config, frame.assign(y_num=values))["expectations"]
        if e["type"] == "expect_column_values_to_be_between" and e["kwargs"]["column"] == "y_num"
    )

    assert (y_range["min_value"], y_range["max_value"]) == (pytest.approx(2.1), pytest.approx(12.9))


def _spread(frame: pd.DataFrame, first: str, last: str) -> pd.DataFrame:
    """The frame with its rows spread evenly from ``first`` to ``last``."""
    return frame.assign(ts=pd.date_range(first, last, periods=len(frame)))


@pytest.mark.parametrize(
    ("spread", "critical_ranges", "severity", "reason"),
    [
        pytest.param(None, None, "warning", "the profiled rows span 10 days, less than a year", id="ten-days"),
        pytest.param(("2025-01-02", "2025-12-31 23:00"), None, "warning",
                     "the profiled rows span 364 days, less than a year", id="a-day-short-of-a-year"),
        pytest.param(("2025-01-01", "2025-12-31 23:00"), None, "critical",
                     "the profiled rows span 365 days, a full year", id="a-calendar-year"),
        pytest.param(("2024-01-01", "2025-06-30"), None, "critical",
                     "the profiled rows span 547 days, a full year", id="more-than-a-year"),
        pytest.param(None, True, "critical", "asked for (the profiled rows span 10 days, less than a year)",
                     id="critical-asked-for-on-ten-days"),
        pytest.param(("2025-01-01", "2025-12-31"), False, "warning",
                     "asked for (the profiled rows span 365 days, a full year)", id="warning-asked-for-on-a-year"),
    ],
)
def test_ranges_are_critical_only_over_a_full_year_unless_asked(config, frame, spread, critical_ranges, severity, reason):
    reference = _spread(frame, *spread) if spread else frame

    proposed = propose_suite(config, reference, critical_ranges=critical_ranges)

    ranges = [e for e in proposed["expectations"] if e["type"] == "expect_column_values_to_be_between"]
    assert [e["kwargs"]["column"] for e in ranges] == ["x_num", "y_num"]
    for expectation in ranges:
        assert expectation["severity"] == expectation["meta"]["severity"] == severity
        assert expectation["meta"]["severity_reason"] == reason
        assert f"{severity}: {reason}" in expectation["notes"]
    assert f"range severity {severity}: {reason}" in proposed["notes"]
    dtype_checks = [e for e in proposed["expectations"] if e["type"] == "expect_column_values_to_be_in_type_list"]
    assert {e["severity"] for e in dtype_checks} == {"critical"}


def test_null_ceiling_follows_the_observed_null_share(config, frame):
    reference = frame.copy()
    reference.loc[:39, "y_num"] = None  # 10 % null

    proposed = propose_suite(config, reference, null_margin=0.02)

    ceiling = next(
        e for e in proposed["expectations"]
        if e["type"] == "expect_column_values_to_not_be_null" and e["kwargs"]["column"] == "y_num"
    )
    assert ceiling["kwargs"]["mostly"] == pytest.approx(0.88)


def test_nullable_integer_feature_counts_as_numeric(config, frame, tmp_path):
    nullable = frame.astype({"x_num": "Float64"}).assign(y_num=frame["y_num"].round().astype("Int64"))
    write_suite(propose_suite(config, nullable), config.validation.suite)

    result = validate_window(config, nullable)

    assert result.passed, result.summary()


def test_meta_severity_is_the_fallback_for_a_hand_written_suite(config, frame, tmp_path):
    path = tmp_path / "hand.json"
    path.write_text(json.dumps({
        "name": "hand",
        "expectations": [
            {"type": "expect_column_values_to_be_in_set", "kwargs": {"column": "color", "value_set": ["red"]},
             "meta": {"severity": "warning"}},
            {"type": "expect_column_values_to_be_between", "kwargs": {"column": "y_num", "min_value": 100}},
        ],
    }))
    config.validation.suite = path

    result = validate_window(config, frame)

    assert [o.kwargs.get("column") for o in result.critical_failures] == ["y_num"]
    assert [o.kwargs.get("column") for o in result.warnings] == ["color"]


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        pytest.param(None, "not found", id="missing-file"),
        pytest.param("{not json", "not valid JSON", id="invalid-json"),
        pytest.param('{"name": "s", "expectations": [{"type": "expect_nothing", "kwargs": {}}]}',
                     r"#1 \(expect_nothing\) is not valid", id="unknown-expectation"),
        pytest.param('{"name": "s", "expectations": [{"type": "expect_column_to_exist", "kwargs": {"colum": "a"}}]}',
                     r"#1 \(expect_column_to_exist\) is not valid: .*colum", id="misspelled-kwarg"),
        pytest.param('{"name": "s", "expectations": [{"type": "expect_column_to_exist", "kwargs": {"column": "a"},'
                     ' "severity": "critical", "meta": {"severity": "warning"}}]}',
                     "make them agree", id="conflicting-severity"),
        pytest.param('{"name": "s", "expectations": [{"type": "expect_column_to_exist", "kwargs": {"column": "a"},'
                     ' "severity": "info"}]}',
                     "is not one of", id="unsupported-severity"),
    ],
)
def test_load_suite_rejects_bad_files_clearly(tmp_path, content, problem):
    path = tmp_path / "suite.json"
    if content is not None:
        path.write_text(content)

    with pytest.raises(ConfigError, match=problem):
        load_suite(path)


def test_regression_config_skips_class_checks(tmp_path):
    config = load_config(write_config(tmp_path, task="regression"), environ={})
    frame = small_frame().assign(label=lambda f: f["x_num"] * 2.0)
    proposed = propose_suite(config, frame)
    write_suite(proposed, config.validation.suite)

    result = validate_window(config, frame)

    assert result.passed
    assert not any(e["type"] == "expect_column_values_to_be_in_set" and e["kwargs"]["column"] == "label"
                   for e in proposed["expectations"])
    assert "expect_column_unique_value_count_to_be_between" not in {o.expectation for o in result.outcomes}


@pytest.mark.parametrize(
    ("first", "second", "percent", "shown"),
    [
        # Each pair used to print as equal, or in the wrong order, in a failure's message.
        pytest.param(5.004, 5.0, True, ("5.004", "5.000"), id="null-share-above-a-5%-ceiling"),
        pytest.param(0.2006018, 0.2, True, ("0.201", "0.2"), id="outside-share-above-the-0.2%-allowed"),
        pytest.param(99.7994, 99.8, True, ("99.799", "99.800"), id="in-share-below-mostly"),
        pytest.param(0.999, 1.0, True, ("0.999", "1.00"), id="shares-either-side-of-1%"),
        pytest.param(100.00001, 100.0, False, ("100.00001", "100"), id="value-above-max-100"),
        pytest.param(3.81549, 3.8154892, False, ("3.81549", "3.815489"), id="value-above-a-7-digit-max"),
        pytest.param(1_234_568, 1_234_567.0, False, ("1,234,568", "1234567"), id="row-count-above-a-float-max"),
    ],
)
def test_tell_apart_shows_a_failed_comparison_as_failed(first, second, percent, shown):
    assert tell_apart(first, second, percent=percent) == shown
    first_shown, second_shown = (float(text.replace(",", "")) for text in shown)
    assert (first_shown > second_shown) == (first > second) and first_shown != second_shown
    assert tell_apart(second, first, percent=percent) == shown[::-1]


def test_tell_apart_keeps_the_usual_digits_when_they_suffice():
    assert tell_apart(30.0, 5.0, percent=True) == ("30.0", "5.0")
    assert tell_apart(0.1, 0.1, percent=True) == ("0.1", "0.1")
    assert tell_apart(12.7, 3.25) == ("12.7", "3.25")


def y_num_a_hair_more_null(frame: pd.DataFrame) -> pd.DataFrame:
    frame = frame.copy()
    frame.loc[:20, "y_num"] = None  # 21 of 400 rows: 5.25 %
    return frame


def x_num_out_of_range_among_nulls(frame: pd.DataFrame) -> pd.DataFrame:
    frame = frame.copy()
    frame.loc[:2, "x_num"] = None
    frame.loc[3:4, "x_num"] = 1e6  # 2 of the 997 non-null rows: 0.2006 %, over the 0.2 % allowed
    return frame


def x_num_just_above_its_max(frame: pd.DataFrame) -> pd.DataFrame:
    frame = frame.assign(x_num=frame["x_num"].clip(-3, 3))
    frame.loc[:4, "x_num"] = 3.81549
    return frame


@pytest.mark.parametrize(
    ("rows", "change", "expectation", "message_parts"),
    [
        # Each message used to read as a pass: "at most 5.2% … (5.2%) null", "in at least 99.8% … (0.2%) outside"
        # (the share of all rows, not of the non-null rows GX compared), "between -10 and 3.81549 … e.g. [3.81549]".
        pytest.param(
            400, y_num_a_hair_more_null,
            {"type": "expect_column_values_to_not_be_null", "kwargs": {"column": "y_num", "mostly": 0.9476}},
            ["at most 5.24% of values may be null", "21 of 400 rows (5.25%) null"],
            id="null-share-a-hair-above-its-ceiling",
        ),
        pytest.param(
            1000, x_num_out_of_range_among_nulls,
            {"type": "expect_column_values_to_be_between",
             "kwargs": {"column": "x_num", "min_value": -10, "max_value": 10, "mostly": 0.998}},
            ["in at least 99.800% of rows", "2 of 997 non-null rows (0.201%) outside"],
            id="outside-share-of-the-non-null-rows",
        ),
        pytest.param(
            400, x_num_just_above_its_max,
            {"type": "expect_column_values_to_be_between",
             "kwargs": {"column": "x_num", "min_value": -10, "max_value": 3.8154892}},
            ["between -10 and 3.815489", "e.g. [3.81549]"],
            id="value-above-a-bound-with-more-digits-than-shown",
        ),
    ],
)
def test_a_failure_never_reads_as_a_pass(config, tmp_path, rows, change, expectation, message_parts):
    path = tmp_path / "hand.json"
    path.write_text(json.dumps({"name": "hand", "expectations": [expectation]}))
    config.validation.suite = path

    result = validate_window(config, change(small_frame(rows)))

    failed = [o for o in result.outcomes if not o.success and o.expectation == expectation["type"]]
    assert len(failed) == 1, result.summary()
    for part in message_parts:
        assert part in failed[0].message, failed[0].message
