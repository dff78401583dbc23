"""Stage 2: validate a window with Great Expectations before anything trains on it.

Two sets of expectations run together: the reviewed suite file (proposed once from a
reference window by ``propose_suite``) and checks derived from the config at run time
(schema, row count, key uniqueness, dtypes, finite numbers, timestamps that parse in one
offset and are not dated in the future), so every config gets them. Each expectation is
``critical`` (a failure stops the cycle) or ``warning`` (reported only).

Validation never raises on bad data: it reports. Only a missing or invalid suite file
(a configuration fault) raises.
"""

from __future__ import annotations

import html
import json
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any, TypeGuard

import numpy as np
import pandas as pd

# Keep GX's INFO chatter out of the pipeline's logs; the level must be set before GX is imported.
logging.getLogger("great_expectations").setLevel(logging.WARNING)

import great_expectations as gx  # noqa: E402
import great_expectations.expectations as gxe  # noqa: E402
from great_expectations.data_context.types.base import ProgressBarsConfig  # noqa: E402
from great_expectations.expectations.expectation_configuration import ExpectationConfiguration  # noqa: E402
from great_expectations.expectations.metadata_types import FailureSeverity  # noqa: E402

from pipeline.config import Config  # noqa: E402
from pipeline.errors import ConfigError, DataSourceError  # noqa: E402
from pipeline.results import CRITICAL, WARNING, ExpectationOutcome, ValidationResult, plural  # noqa: E402

SEVERITIES = (CRITICAL, WARNING)

# Type names GX's in_type_list accepts for a numeric pandas column. Nullable extension
# dtypes must be spelled as their class names ("Int64Dtype"): GX resolves "Int64" via
# getattr(pandas, "Int64"), which does not exist, so such a column would fail. The Python
# names "int" and "float" matter for object columns, which GX checks value by value: only
# the non-numeric values (strings read from SQL) are then reported as unexpected.
NUMERIC_TYPES = [
    *(f"int{bits}" for bits in (8, 16, 32, 64)),
    *(f"uint{bits}" for bits in (8, 16, 32, 64)),
    *(f"float{bits}" for bits in (16, 32, 64)),
    *(f"Int{bits}Dtype" for bits in (8, 16, 32, 64)),
    *(f"UInt{bits}Dtype" for bits in (8, 16, 32, 64)),
    "Float32Dtype",
    "Float64Dtype",
    "int",
    "float",
]

# A proposed range tolerates this share of rows outside it: the range guards against
# systematic breakage (a unit change, a flood of sentinel values), which hits many rows,
# while a single stray outlier should not stop retraining; drift reports distribution shifts.
RANGE_MOSTLY = 0.999

# A range profiled on less than a year has not seen every season (a January profile of temperatures
# would stop the first warm day of spring), so it is proposed as a warning unless the profiled rows
# span this many days or the reviewer asks for critical ranges.
SEASON_CYCLE_DAYS = 365

MAX_SAMPLE_VALUES = 10
# Offending rows a message names by key and timestamp: enough to find them, short enough for one line.
MAX_SAMPLE_ROWS = 3
# A sample string longer than this is cut (its length shown), so one huge value cannot flood a console or a record.
MAX_SAMPLE_CHARS = 80

# The finiteness check's bound: models train on 32-bit floats (XGBoost casts), so a larger number
# becomes inf there and stops the training as surely as inf itself. NaN is a null: the null checks count it.
FLOAT32_MAX = float(np.finfo(np.float32).max)

# Timestamp checks the pipeline computes itself: GX has no expectation for "parses as a timestamp
# in one time-zone offset" nor for "dated no later than today". They report like GX's.
TIMESTAMPS_CHECK = "expect_column_values_to_be_timestamps"
FUTURE_CHECK = "expect_column_values_to_not_be_in_the_future"

# Verbs for "N of M rows (p%) <verb>" per expectation type.
_UNEXPECTED_VERBS = {
    "expect_column_values_to_be_between": "outside",
    "expect_column_values_to_be_in_set": "outside the set",
    "expect_column_values_to_not_be_null": "null",
    "expect_column_values_to_be_in_type_list": "of another type",
    "expect_compound_columns_to_be_unique": "duplicated",
    TIMESTAMPS_CHECK: "not timestamps",
    FUTURE_CHECK: "future-dated",
}
# Offending values that say nothing beyond the count.
_NO_SAMPLES = {"expect_column_values_to_not_be_null"}
# Settings GX keeps among an expectation's kwargs that are not part of the rule.
_RUNTIME_KWARGS = {"batch_id", "catch_exceptions", "result_format"}
# Kwargs naming a column an expectation reads (besides "column_list"); GX raises when one is missing.
_COLUMN_KWARGS = ("column", "column_A", "column_B")


# ---------------------------------------------------------------------------- suite files


def load_suite(path: Path) -> gx.ExpectationSuite:
    """Read a suite JSON file; each expectation's severity is resolved into GX's native field.

    GX 1.24 expectations carry a native ``severity`` (default critical); ``meta.severity`` is
    the fallback for hand-written suites. When both are given they must agree, since a
    reviewer who edits one of them must not be silently overruled by the other.
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(
            f"expectation suite not found: {path} (propose one with `pipeline propose-suite`)"
        ) from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}: expectation suite is not valid JSON: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("expectations", []), list):
        raise ConfigError(f"{path}: expected a suite object with an 'expectations' list")
    expectations = []
    # Built one by one: given the whole list, GX logs and drops an expectation it cannot build.
    for position, raw in enumerate(data.get("expectations", []), start=1):
        where = f"{path}: expectation #{position}"
        if not isinstance(raw, dict):
            raise ConfigError(f"{where} is not an object")
        severity = _resolve_severity(raw, where)
        try:
            expectations.append(ExpectationConfiguration(**{**raw, "severity": severity}).to_domain_obj())
        except Exception as exc:  # GX raises several unrelated types for a malformed expectation
            raise ConfigError(f"{where} ({raw.get('type')}) is not valid: {' '.join(str(exc).split())}") from None
    try:
        return gx.ExpectationSuite(**{**data, "expectations": expectations})
    except Exception as exc:
        raise ConfigError(f"{path}: not a valid expectation suite: {' '.join(str(exc).split())}") from None


def _resolve_severity(expectation: dict, where: str) -> str:
    native = expectation.get("severity")
    meta = (expectation.get("meta") or {}).get("severity")
    if native is not None and meta is not None and native != meta:
        raise ConfigError(
            f"{where} ({expectation.get('type')}) has severity {native!r} but meta.severity {meta!r}; make them agree"
        )
    severity = native or meta or CRITICAL
    if severity not in SEVERITIES:
        raise ConfigError(f"{where} ({expectation.get('type')}): severity {severity!r} is not one of {SEVERITIES}")
    return severity


def write_suite(suite: dict, path: Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(suite, indent=2, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8")


def propose_suite(
    config: Config, frame: pd.DataFrame, *, range_margin: float = 0.1, null_margin: float = 0.05,
    critical_ranges: bool | None = None,
) -> dict:
    """Profile a reference window into a suite JSON dict for a person to review.

    Numeric features get a dtype check, a null-rate ceiling and a widened observed range
    (whole numbers for a column of whole numbers); categorical features a null ceiling and
    their observed values (a warning: new categories are normal business evolution, drift
    reports them); the target must not be null and, for classification, stay within the
    observed classes; the row count may move between half and twice the reference's (a warning).
    Ranges are critical or warnings as ``critical_ranges`` says; None decides from the profiled
    span (see ``range_severity``).
    """
    source = config.source
    missing = [c for c in source.schema_columns if c not in frame.columns]
    if missing:
        raise DataSourceError(f"cannot propose a suite: the reference window lacks columns {missing}")
    if frame.empty:
        raise DataSourceError("cannot propose a suite: the reference window is empty")
    rows = len(frame)
    range_level, range_reason = range_severity(config, frame, critical_ranges)
    expectations = [
        _expectation(gxe.ExpectTableRowCountToBeBetween, WARNING, min_value=rows // 2, max_value=rows * 2)
    ]
    for column in source.features.numeric:
        series = frame[column]
        if not _is_numeric(series):
            raise DataSourceError(
                f"cannot propose a suite: numeric feature {column!r} has dtype {series.dtype} in the reference window"
            )
        expectations += [
            _expectation(gxe.ExpectColumnValuesToBeInTypeList, CRITICAL, column=column, type_list=NUMERIC_TYPES),
            _null_ceiling(series, null_margin),
        ]
        if series.notna().any():
            low, high = _proposed_range(series, range_margin)
            expectations.append(
                _expectation(
                    gxe.ExpectColumnValuesToBeBetween, range_level, column=column,
                    min_value=low, max_value=high, mostly=RANGE_MOSTLY,
                    notes=(
                        f"reference window: min {float(series.min()):g}, max {float(series.max()):g} "
                        f"over {rows:,} rows; {range_level}: {range_reason}"
                    ),
                    severity_reason=range_reason,
                )
            )
    for column in source.features.categorical:
        expectations += [
            _null_ceiling(frame[column], null_margin),
            _expectation(gxe.ExpectColumnValuesToBeInSet, WARNING, column=column, value_set=_observed_values(frame[column])),
        ]
    target = source.target_column
    expectations.append(_expectation(gxe.ExpectColumnValuesToNotBeNull, CRITICAL, column=target))
    if config.task == "classification":
        expectations.append(
            _expectation(gxe.ExpectColumnValuesToBeInSet, CRITICAL, column=target, value_set=_observed_values(frame[target]))
        )
    suite = gx.ExpectationSuite(
        name=f"{config.model_name}_suite",
        expectations=expectations,
        notes=(
            f"Proposed from a reference window of {rows:,} rows (range margin {range_margin:g}, "
            f"null margin {null_margin:g}); range severity {range_level}: {range_reason}. "
            "Review before committing; severity is 'critical' or 'warning'."
        ),
    )
    return suite.to_json_dict()


def range_severity(config: Config, frame: pd.DataFrame, critical_ranges: bool | None = None) -> tuple[str, str]:
    """The severity of the range rules proposed from ``frame``, and why.

    ``critical_ranges`` decides when given; None makes ranges critical only when the profiled
    rows span SEASON_CYCLE_DAYS. The span counts calendar days from the first row's day to the
    last row's, both included, so a year profiled as ``--days 365`` covers a year.
    """
    stamps = pd.to_datetime(frame[config.source.timestamp_column]).dropna()
    days = (stamps.max().normalize() - stamps.min().normalize()).days + 1 if len(stamps) else 0
    covers_a_year = days >= SEASON_CYCLE_DAYS
    span = f"the profiled rows span {plural(days, 'day')}, {'a full year' if covers_a_year else 'less than a year'}"
    if critical_ranges is not None:
        return (CRITICAL if critical_ranges else WARNING), f"asked for ({span})"
    return (CRITICAL if covers_a_year else WARNING), span


def _proposed_range(series: pd.Series, range_margin: float) -> tuple[float, float] | tuple[int, int]:
    """The observed range widened by ``range_margin`` of its width on each side.

    A column never negative in the reference (counts, amounts, ages) gets no negative lower
    bound; a column of whole numbers gets whole bounds (floor and ceiling), since a bound of
    12.7 on a count reads as a mistake to its reviewer.
    """
    low, high = float(series.min()), float(series.max())
    margin = range_margin * (high - low)
    floor = max(low - margin, 0.0) if low >= 0 else low - margin
    ceiling = high + margin
    if _is_whole(series):
        return math.floor(floor), math.ceil(ceiling)
    return floor, ceiling


def _is_whole(series: pd.Series) -> bool:
    """Whether every value is a whole number: an integer dtype, or floats without a fraction (integers read with nulls)."""
    if pd.api.types.is_integer_dtype(series):
        return True
    values = series.dropna().astype(float)
    return bool(np.isfinite(values).all() and (values % 1 == 0).all())


def _expectation(
    expectation_class: type[gxe.Expectation], severity: str, severity_reason: str | None = None, **kwargs
) -> gxe.Expectation:
    """An expectation with its severity in GX's native field and in meta (for readers of the JSON)."""
    meta = {"severity": severity} if severity_reason is None else {"severity": severity, "severity_reason": severity_reason}
    return expectation_class(**kwargs, severity=FailureSeverity(severity), meta=meta)


def _null_ceiling(series: pd.Series, null_margin: float) -> gxe.Expectation:
    null_share = float(series.isna().mean())
    mostly = round(max(0.0, 1.0 - null_share - null_margin), 4)
    return _expectation(
        gxe.ExpectColumnValuesToNotBeNull, CRITICAL, column=series.name, mostly=mostly,
        notes=f"reference window: {null_share:.2%} null",
    )


def _is_numeric(series: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series)


def _observed_values(series: pd.Series) -> list:
    values = {_jsonable(v) for v in series.dropna().unique()}
    return sorted(values, key=lambda v: (type(v).__name__, v))


# ---------------------------------------------------------------------------- validation


def validate_window(config: Config, frame: pd.DataFrame, today: date | None = None) -> ValidationResult:
    """Run the suite file plus the config-derived checks on ``frame``; ``today`` (default: the clock's) dates the future."""
    expectations = _merge_duplicates(
        [*_config_expectations(config, frame), *load_suite(config.validation.suite).expectations]
    )
    present = set(frame.columns)
    builder = _OutcomeBuilder(frame=frame, target=config.source.target_column, key=config.source.key_column,
                              timestamp=config.source.timestamp_column)
    runnable, outcomes = [], []
    for expectation in expectations:
        missing = [c for c in _domain_columns(expectation) if c not in present]
        if missing:  # GX would raise on these; the existence checks report the missing columns
            outcomes.append(builder.not_checked(expectation, missing))
        else:
            runnable.append(expectation)
    outcomes = [builder.from_result(r) for r in _run_gx(runnable, frame)] + outcomes
    outcomes += _timestamp_outcomes(config, frame, today or date.today())
    # Failed critical first, then failed warnings, then passed (a stable sort keeps each group's order).
    outcomes.sort(key=lambda o: (o.success, o.severity != CRITICAL))
    return ValidationResult(
        passed=not any(not o.success and o.severity == CRITICAL for o in outcomes), rows=len(frame), outcomes=outcomes,
    )


def _config_expectations(config: Config, frame: pd.DataFrame) -> list[gxe.Expectation]:
    """Checks every config gets, whatever its suite says; ``frame`` tells which columns are numbers to check as such."""
    source, critical = config.source, FailureSeverity.CRITICAL
    schema = source.schema_columns
    expectations: list[gxe.Expectation] = [gxe.ExpectColumnToExist(column=c, severity=critical) for c in schema]
    expectations += [
        gxe.ExpectTableColumnsToMatchSet(column_set=schema, exact_match=True,
                                         severity=FailureSeverity(source.unexpected_columns)),
        gxe.ExpectTableRowCountToBeBetween(min_value=config.windows.min_rows, severity=critical),
    ]
    if source.key_column:
        expectations.append(
            gxe.ExpectCompoundColumnsToBeUnique(column_list=[source.key_column, source.timestamp_column], severity=critical)
        )
    if config.task == "classification":
        expectations.append(
            gxe.ExpectColumnUniqueValueCountToBeBetween(column=source.target_column, min_value=2, severity=critical)
        )
    expectations += [
        gxe.ExpectColumnValuesToBeInTypeList(column=c, type_list=NUMERIC_TYPES, severity=critical)
        for c in source.features.numeric
    ]
    # ±inf passes the dtype check and most ranges' tolerance, then stops the training with a raw error.
    # Columns of another dtype fail the dtype check (a feature) or are classes (a target): not numbers to bound.
    expectations += [
        gxe.ExpectColumnValuesToBeBetween(column=c, min_value=-FLOAT32_MAX, max_value=FLOAT32_MAX,
                                          severity=FailureSeverity(config.validation.non_finite))
        for c in [*source.features.numeric, source.target_column] if c in frame.columns and _is_numeric(frame[c])
    ]
    return expectations


def _timestamp_outcomes(config: Config, frame: pd.DataFrame, today: date) -> list[ExpectationOutcome]:
    """The timestamp column's values are timestamps in one offset, and none is dated after today (plus the tolerance).

    A column that is missing is reported by the existence check; the future is only checked on parsed timestamps.
    """
    column = config.source.timestamp_column
    if column not in frame.columns:
        return []
    values = frame[column]
    outcomes = [_timestamps_outcome(column, values)]
    if pd.api.types.is_datetime64_any_dtype(values):
        outcomes.append(_future_outcome(config, column, values, today))
    return outcomes


def _timestamps_outcome(column: str, values: pd.Series) -> ExpectationOutcome:
    rows, kwargs = len(values), {"column": column}
    present = values.dropna()
    if pd.api.types.is_datetime64_any_dtype(values):
        bad, observed = present.iloc[:0], f"dtype {values.dtype}"
    elif pd.api.types.is_numeric_dtype(values):
        bad, observed = present, f"dtype {values.dtype}: numbers, not timestamps"
    else:
        bad, observed = _unparsable_or_other_offset(present)
    outcome = ExpectationOutcome(
        expectation=TIMESTAMPS_CHECK, column=column, kwargs=kwargs, severity=CRITICAL, success=bad.empty,
        unexpected_count=len(bad), unexpected_percent=100 * len(bad) / rows if rows else 0.0,
        observed_value=observed, sample_values=_distinct(bad.drop_duplicates().head(MAX_SAMPLE_VALUES).tolist()),
        message="",
    )
    outcome.message = f"column {column!r}: {rule_text(TIMESTAMPS_CHECK, kwargs)} — {_evidence(outcome, rows, {})}"
    return outcome


def _unparsable_or_other_offset(values: pd.Series) -> tuple[pd.Series, str]:
    """The text values that are no timestamp; if all are, those in another offset than the most common one."""
    texts = values.astype(str)
    parsed = {text: _parse(text) for text in texts.unique()}  # each distinct text once: a window repeats them
    unparsable = texts.map(parsed).isna()
    if unparsable.any():
        return values[unparsable.to_numpy()], "text, not all timestamps"
    offsets = texts.map({text: _offset(stamp) for text, stamp in parsed.items() if stamp is not None})
    usual = offsets.mode().iloc[0]
    return values[(offsets != usual).to_numpy()], f"mixed time-zone offsets (most rows {usual})"


def _offset(stamp: pd.Timestamp) -> str:
    """A timestamp's offset from UTC as written in ISO 8601 (+01:00), or "no offset"."""
    offset = stamp.utcoffset()
    if offset is None:
        return "no offset"
    minutes = int(offset.total_seconds()) // 60
    return f"{'-' if minutes < 0 else '+'}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"


def _parse(text: str) -> pd.Timestamp | None:
    try:
        stamp = pd.Timestamp(text)
    except (ValueError, TypeError, OverflowError):
        return None
    return None if pd.isna(stamp) else stamp


def _future_outcome(config: Config, column: str, stamps: pd.Series, today: date) -> ExpectationOutcome:
    tolerance = config.windows.future_tolerance_days
    latest = today + timedelta(days=tolerance)
    kwargs = {"column": column, "max_value": latest.isoformat(), "today": today.isoformat(),
              "future_tolerance_days": tolerance}
    # Compared by the days as written: a row's local day is the one its window counts it in.
    local = stamps.dt.tz_localize(None) if stamps.dt.tz is not None else stamps
    future = stamps[(local >= pd.Timestamp(latest + timedelta(days=1))).to_numpy()]
    rows = len(stamps)
    outcome = ExpectationOutcome(
        expectation=FUTURE_CHECK, column=column, kwargs=kwargs, severity=config.validation.future_rows,
        success=future.empty, unexpected_count=len(future), unexpected_percent=100 * len(future) / rows if rows else 0.0,
        observed_value=None, sample_values=_distinct(future.drop_duplicates().head(MAX_SAMPLE_VALUES).tolist()),
        message="",
    )
    outcome.message = f"column {column!r}: {rule_text(FUTURE_CHECK, kwargs)} — {_evidence(outcome, rows, {})}"
    return outcome


def _role(column: str, target: str) -> str:
    return "target" if column == target else "column"


def _merge_duplicates(expectations: list[gxe.Expectation]) -> list[gxe.Expectation]:
    """Drop exact repeats (same type and kwargs), e.g. a suite's dtype check that the config also derives.

    The copy kept is critical if any copy was: a config-derived check cannot be weakened by the suite.
    """
    kept: dict[str, gxe.Expectation] = {}
    for expectation in expectations:
        config = expectation.configuration
        key = json.dumps([config.type, _jsonable(config.kwargs)], sort_keys=True)
        if key not in kept:
            kept[key] = expectation
        elif _severity(expectation) == CRITICAL:
            kept[key].severity = FailureSeverity.CRITICAL
    return list(kept.values())


def _domain_columns(expectation: gxe.Expectation) -> list[str]:
    """The columns an expectation reads rows of; none for table-level ones (existence is a table-level check)."""
    if expectation.expectation_type == "expect_column_to_exist":
        return []
    kwargs = expectation.configuration.kwargs
    named = [kwargs[k] for k in _COLUMN_KWARGS if kwargs.get(k) is not None]
    return named + list(kwargs.get("column_list") or [])


def _batch_columns(expectation: gxe.Expectation) -> tuple[str, ...]:
    """The frame columns an expectation's batch needs; () for the whole frame."""
    if expectation.configuration.kwargs.get("row_condition"):
        return ()  # a row condition may read any column
    return tuple(_domain_columns(expectation))


def _run_gx(expectations: list[gxe.Expectation], frame: pd.DataFrame) -> list:
    """Validate ``frame`` with GX; returns the GX results in the order of ``expectations``.

    Expectations run grouped by the columns they read, each group on a frame of just those
    columns: GX's pandas engine copies the whole frame (every column) to filter rows for each
    column expectation, which made 1M rows x 30 columns take over a minute instead of seconds.
    Table-level expectations, and those with a row condition, see the whole frame.
    """
    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    batch = context.data_sources.add_pandas("window").add_dataframe_asset("frame").add_batch_definition_whole_dataframe("all")
    groups: dict[tuple[str, ...], list[gxe.Expectation]] = {}
    for expectation in expectations:
        expectation.id = None  # GX refuses expectations that carry an id (from a suite file) into a new suite
        expectation.catch_exceptions = True  # a data problem must become a failed result, never a crash
        groups.setdefault(_batch_columns(expectation), []).append(expectation)
    results: dict[str | None, Any] = {}
    for number, (columns, group) in enumerate(groups.items()):
        suite = context.suites.add(gx.ExpectationSuite(name=f"group-{number}", expectations=group))
        definition = context.validation_definitions.add(
            gx.ValidationDefinition(name=f"group-{number}", data=batch, suite=suite)
        )
        data = frame[list(columns)] if columns else frame
        # SUMMARY gives counts and a partial list of offending values without COMPLETE's full index lists.
        run = definition.run(batch_parameters={"dataframe": data}, result_format="SUMMARY")
        results.update((result.expectation_config.id, result) for result in run.results if result.expectation_config)
    # Adding a suite gives each expectation the id its result carries.
    return [results[expectation.id] for expectation in expectations]


# ---------------------------------------------------------------------------- outcomes and messages


@dataclass
class _OutcomeBuilder:
    """What turning GX results into outcomes needs beyond the result itself."""

    frame: pd.DataFrame
    target: str
    key: str | None = None
    timestamp: str | None = None

    @property
    def rows(self) -> int:
        return len(self.frame)

    def from_result(self, result) -> ExpectationOutcome:
        config = result.expectation_config
        kind, kwargs = config.type, _public_kwargs(config.kwargs)
        details = result.result or {}
        error = _exception_message(result.exception_info)
        count = details.get("unexpected_count")
        percent = details.get("unexpected_percent_total", details.get("unexpected_percent"))
        outcome = ExpectationOutcome(
            expectation=kind,
            column=_column_label(kwargs),
            kwargs=kwargs,
            severity=_severity(config),
            success=bool(result.success) and error is None,
            unexpected_count=None if count is None else int(count),
            unexpected_percent=None if percent is None else float(percent),
            observed_value=_jsonable(self._observed_value(kind, kwargs, details)),
            sample_values=self._sample_values(kind, kwargs, details),
            message="",
        )
        evidence = f"could not be checked: {error}" if error else _evidence(outcome, self.rows, details)
        # The rule's numbers are shown against what GX compared them with: the unexpected share it held
        # against ``mostly`` (of the non-null rows for value checks) and the observed values.
        rule = rule_text(kind, kwargs, unexpected_percent=details.get("unexpected_percent"),
                         observed=[outcome.observed_value, *outcome.sample_values])
        outcome.message = f"{self._subject(kwargs)}: {rule} — {evidence}"
        return outcome

    def not_checked(self, expectation: gxe.Expectation, missing: list[str]) -> ExpectationOutcome:
        config = expectation.configuration
        kwargs = _public_kwargs(config.kwargs)
        rule = rule_text(config.type, kwargs)
        return ExpectationOutcome(
            expectation=config.type, column=_column_label(kwargs), kwargs=kwargs, severity=_severity(expectation),
            success=False, unexpected_count=None, unexpected_percent=None, observed_value=None, sample_values=[],
            message=f"{self._subject(kwargs)}: {rule} — not checked: missing column(s) {missing}",
        )

    def _subject(self, kwargs: dict) -> str:
        if "column" in kwargs:
            return f"{_role(kwargs['column'], self.target)} {kwargs['column']!r}"
        if "column_list" in kwargs:
            return f"columns ({', '.join(map(repr, kwargs['column_list']))})"
        return "table"

    def _observed_value(self, kind: str, kwargs: dict, details: dict) -> object:
        # GX reports a nullable Int64 column's type as "int64" and none for object columns: use the real dtype.
        if kind == "expect_column_values_to_be_in_type_list":
            return str(self.frame[kwargs["column"]].dtype)
        return details.get("observed_value")

    def _sample_values(self, kind: str, kwargs: dict, details: dict) -> list:
        if kind in _NO_SAMPLES:
            return []
        if kind == "expect_column_unique_value_count_to_be_between":
            values = self.frame[kwargs["column"]].dropna().drop_duplicates().head(MAX_SAMPLE_VALUES)
            return _distinct(values.tolist())
        if kind == "expect_table_columns_to_match_set":
            return _distinct(details.get("details", {}).get("mismatched", {}).get("unexpected", []))
        if _is_finiteness_check(kind, kwargs):
            return self._sample_rows(kwargs["column"], details.get("partial_unexpected_index_list") or [])
        if kind == "expect_column_values_to_be_in_type_list":
            # A text column from SQL holds numbers as strings too: show the values that are not numbers at all.
            values = self.frame[kwargs["column"]].dropna()
            not_numbers = values[pd.to_numeric(values, errors="coerce").isna()]
            shown = not_numbers if len(not_numbers) else values
            return _distinct(shown.drop_duplicates().head(MAX_SAMPLE_VALUES).tolist())
        return _distinct(details.get("partial_unexpected_list") or [])

    def _sample_rows(self, column: str, index: list) -> list:
        """The first offending rows, by key (when the config has one) and timestamp, with the offending value."""
        named = [c for c in (self.key, self.timestamp) if c and c in self.frame.columns]
        rows = self.frame.loc[index[:MAX_SAMPLE_ROWS], [*named, column]]
        return [_jsonable(row) for row in rows.to_dict(orient="records")]


def _evidence(outcome: ExpectationOutcome, rows: int, details: dict) -> str:
    """The second half of a message: what was found."""
    kind, success, observed, samples = (
        outcome.expectation, outcome.success, outcome.observed_value, outcome.sample_values
    )
    if kind == "expect_table_columns_to_match_set" and not success:
        mismatched = details.get("details", {}).get("mismatched", {})
        parts = [f"unexpected extra columns {mismatched['unexpected']}"] if mismatched.get("unexpected") else []
        parts += [f"missing columns {mismatched['missing']}"] if mismatched.get("missing") else []
        return "; ".join(parts) or f"observed columns {observed}"
    if outcome.unexpected_count is not None:
        if not outcome.unexpected_count:
            return "passed" if success else "failed"
        mostly = outcome.kwargs.get("mostly", 1)
        counted, percent = f"{rows:,}", outcome.unexpected_percent
        if mostly < 1 and details.get("missing_count"):
            # With a tolerance the share decides, and GX takes it of the non-null rows: a share of all
            # rows would read as within the tolerance when it was not.
            counted = f"{details['element_count'] - details['missing_count']:,} non-null"
            percent = details.get("unexpected_percent")
        verb = "not finite" if _is_finiteness_check(kind, outcome.kwargs) else _UNEXPECTED_VERBS.get(kind, "unexpected")
        found = f"{outcome.unexpected_count:,} of {counted} rows ({_percent(percent, _allowed_percent(mostly))}) {verb}"
        if samples:
            found += f", e.g. {_short_list(samples)}"
        if kind == "expect_column_values_to_be_in_type_list":
            found += f" (dtype {observed})"
        if kind == TIMESTAMPS_CHECK:
            found += f" ({observed})"
        return f"passed, {found} within tolerance" if success else found
    if success:
        return "passed"
    if kind == "expect_column_to_exist":
        return "missing from the data"
    if kind == "expect_table_row_count_to_be_between":
        return "the window is empty (0 rows)" if observed == 0 else f"the window has {_number(observed)} rows"
    if kind == "expect_column_unique_value_count_to_be_between":
        return f"found {observed}: {_short_list(samples)}" if samples else f"found {observed}"
    if kind == "expect_column_values_to_be_in_type_list":
        return f"dtype is {observed}"
    return f"observed {observed}"


def rule_text(
    kind: str, kwargs: dict, *, unexpected_percent: float | None = None, observed: Sequence[object] = ()
) -> str:
    """An expectation's rule in words, e.g. "values must be between 18 and 95".

    Given what a run found (``unexpected_percent``: the share of unexpected rows GX held against
    ``mostly``; ``observed``: values held against the bounds), the rule's numbers get the digits
    that keep them apart from those, so a failure never reads as a pass.
    """
    if kind == "expect_column_to_exist":
        return "must exist"
    if kind == "expect_table_columns_to_match_set":
        relation = "be exactly" if kwargs.get("exact_match", True) else "include"
        return f"columns must {relation} {_short_list(kwargs['column_set'])}"
    if kind == "expect_table_row_count_to_be_between":
        return f"row count must be {_bounds_text(kwargs, observed)}"
    if kind == "expect_compound_columns_to_be_unique":
        return "combination must be unique"
    if kind == "expect_column_unique_value_count_to_be_between":
        return f"number of distinct values must be {_bounds_text(kwargs, observed)}"
    if kind == "expect_column_values_to_be_in_type_list":
        types = kwargs.get("type_list") or []
        return "values must be numeric" if types == NUMERIC_TYPES else f"values must be of type {', '.join(types)}"
    if kind == "expect_column_values_to_not_be_null":
        mostly = kwargs.get("mostly", 1)
        if mostly >= 1:
            return "values must not be null"
        return f"at most {_percent(_allowed_percent(mostly), unexpected_percent)} of values may be null"
    if _is_finiteness_check(kind, kwargs):
        return f"values must be finite (within ±{FLOAT32_MAX:.6g}, the largest 32-bit float)"
    if kind == "expect_column_values_to_be_between":
        return f"values must be {_bounds_text(kwargs, observed)}{_mostly_text(kwargs, unexpected_percent)}"
    if kind == TIMESTAMPS_CHECK:
        return "values must be timestamps in one time-zone offset"
    if kind == FUTURE_CHECK:
        return (f"values must be dated no later than {kwargs['max_value']} (today {kwargs['today']} plus "
                f"windows.future_tolerance_days={kwargs['future_tolerance_days']})")
    if kind == "expect_column_values_to_be_in_set":
        return f"values must be one of {_short_list(kwargs['value_set'])}{_mostly_text(kwargs, unexpected_percent)}"
    described = ", ".join(f"{k}={v!r}" for k, v in kwargs.items() if k not in ("column", "column_list"))
    return kind.removeprefix("expect_").replace("_", " ") + (f" ({described})" if described else "")


def _is_finiteness_check(kind: str, kwargs: dict) -> bool:
    return kind == "expect_column_values_to_be_between" and (kwargs.get("min_value"), kwargs.get("max_value")) == (
        -FLOAT32_MAX, FLOAT32_MAX)


def _bounds_text(kwargs: dict, observed: Sequence[object] = ()) -> str:
    low, high = kwargs.get("min_value"), kwargs.get("max_value")
    if low is not None and high is not None:
        return f"between {_number(low, observed)} and {_number(high, observed)}"
    if low is not None:
        return f"at least {_number(low, observed)}"
    if high is not None:
        return f"at most {_number(high, observed)}"
    return "anything"


def _mostly_text(kwargs: dict, unexpected_percent: float | None = None) -> str:
    mostly = kwargs.get("mostly", 1)
    if mostly >= 1:
        return ""
    expected_percent = None if unexpected_percent is None else _noise_free(100 - unexpected_percent)
    return f" in at least {_percent(_noise_free(100 * mostly), expected_percent)} of rows"


def _allowed_percent(mostly: float) -> float:
    """The share of rows (in percent) that ``mostly`` lets fail."""
    return _noise_free(100 * (1 - mostly))


def _noise_free(percent: float) -> float:
    """A percent without the float noise of its arithmetic (1 - 0.999 is 0.0010000000000000009).

    Left in, the noise would count as a difference and spell out 17 digits; a real difference
    this small would take a trillion rows.
    """
    return round(percent, 10)


def _number(value, against: Sequence[object] = ()) -> str:
    """A number as messages show it, with the digits that keep its order to each number in ``against`` visible."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)  # e.g. a suite parameter, which GX reports as a failure of its own
    return _number_at(value, _extra_digits(value, against, _number_at))


def _percent(percent: float | None, against: float | None = None) -> str:
    """A share in percent, with the digits that keep its order to ``against`` (the share it is held against) visible."""
    if percent is None:
        return "n/a"
    return f"{_percent_at(percent) if against is None else tell_apart(percent, against, percent=True)[0]}%"


def tell_apart(first: float, second: float, *, percent: bool = False) -> tuple[str, str]:
    """Two numbers (or percents, without their sign) with just enough digits to compare as shown as they do.

    A failed comparison must not read as equality (a null share of 5.004% against a 5% ceiling
    as "5.0% > 5.0%") nor turn around (1,234,568 rows against at most 1234567.0 as "1.23457e+06").
    """
    form = _percent_at if percent else _number_at
    extra = _extra_digits(first, [second], form)
    return form(first, extra), form(second, extra)


# Beyond a format's own digits, at most this many: 17 significant digits tell any two doubles apart.
_MAX_EXTRA_DIGITS = 16


def _extra_digits(value: float, others: Sequence[object], form: Callable[[float, int], str]) -> int:
    """The fewest extra digits at which ``value`` and each number of ``others``, both shown by ``form``, keep their order.

    Monotone rounding then keeps the order to the exact value too, so a bound shown this way
    also stays on the right side of a sample value printed in full.
    """
    numbers = [o for o in others if _is_finite_number(o)]
    if not math.isfinite(value) or not numbers:
        return 0
    for extra in range(_MAX_EXTRA_DIGITS):
        shown = _read(form(value, extra))
        if all(_order(shown, _read(form(other, extra))) == _order(value, other) for other in numbers):
            return extra
    return _MAX_EXTRA_DIGITS


def _number_at(value: float, extra: int = 0) -> str:
    """Whole numbers in full with thousands separators; others to 6 significant digits, plus ``extra``."""
    return f"{value:,}" if isinstance(value, int) else f"{value:.{6 + extra}g}"


def _percent_at(percent: float, extra: int = 0) -> str:
    """A percent (without its sign) to 2 significant digits below 1%, else to one decimal; plus ``extra``."""
    return f"{percent:.{2 + extra}g}" if percent < 1 else f"{percent:.{1 + extra}f}"


def _read(shown: str) -> float:
    return float(shown.replace(",", ""))


def _order(first, second) -> int:
    return (first > second) - (first < second)


def _is_finite_number(value: object) -> TypeGuard[float]:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _short_list(values: list, limit: int = MAX_SAMPLE_VALUES) -> str:
    if not isinstance(values, list):
        return repr(values)
    shown = ", ".join(repr(v) for v in values[:limit])
    more = f", … (+{len(values) - limit} more)" if len(values) > limit else ""
    return f"[{shown}{more}]"


def _severity(expectation) -> str:
    """Native GX severity of an Expectation or ExpectationConfiguration, as a plain string."""
    severity = expectation.severity
    return getattr(severity, "value", severity)


def _public_kwargs(kwargs: dict) -> dict:
    """The rule's own kwargs, without the run-time settings GX folds into them."""
    return _jsonable({k: v for k, v in kwargs.items() if k not in _RUNTIME_KWARGS})


def _column_label(kwargs: dict) -> str | None:
    if "column_list" in kwargs:
        return ", ".join(kwargs["column_list"])
    return kwargs.get("column")


def _exception_message(info: dict | None) -> str | None:
    """GX reports a caught exception either flat or keyed by the metric that raised."""
    if not info:
        return None
    if info.get("raised_exception"):
        return info.get("exception_message") or "unknown error"
    nested = [v for v in info.values() if isinstance(v, dict) and v.get("raised_exception")]
    return (nested[0].get("exception_message") or "unknown error") if nested else None


def _distinct(values: list) -> list:
    """Up to MAX_SAMPLE_VALUES distinct JSON-able values, in order of first appearance, long strings cut."""
    seen: dict[str, object] = {}
    for value in map(_shortened, map(_jsonable, values)):
        seen.setdefault(json.dumps(value, sort_keys=True, default=str), value)
        if len(seen) == MAX_SAMPLE_VALUES:
            break
    return list(seen.values())


def _shortened(value):
    """A string cut to MAX_SAMPLE_CHARS with its full length shown, e.g. 'aaaa… (200,000 chars)'; else as given."""
    if isinstance(value, str) and len(value) > MAX_SAMPLE_CHARS:
        return f"{value[:MAX_SAMPLE_CHARS]}… ({len(value):,} chars)"
    return value


def _jsonable(value):
    """Plain Python data for strict JSON: numpy scalars unwrapped, timestamps as ISO text, NaN/NaT as None."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, np.ndarray)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if value is None or value is pd.NaT or value is pd.NA:
        return None
    if isinstance(value, float):
        if math.isnan(value):
            return None
        return value if math.isfinite(value) else str(value)  # JSON has no infinity
    if isinstance(value, (str, int, bool)):
        return value
    if isinstance(value, (datetime, date, pd.Timestamp)):
        return value.isoformat()
    return str(value)


# ---------------------------------------------------------------------------- HTML report

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:2rem;color:#1f2328}
h1{font-size:1.4rem;margin:0 0 .5rem}
.meta{margin:0 0 1rem;color:#57606a}
.verdict{display:inline-block;padding:.2rem .7rem;border-radius:4px;font-weight:700;color:#fff}
.verdict.passed{background:#1a7f37}.verdict.stopped{background:#cf222e}
table{border-collapse:collapse;width:100%;font-size:.9rem}
th,td{border:1px solid #d0d7de;padding:.35rem .5rem;text-align:left;vertical-align:top}
th{background:#f6f8fa}
tr.failed-critical{background:#ffebe9}tr.failed-warning{background:#fff8c5}
code{font-size:.8rem;color:#57606a}
"""
_REPORT_COLUMNS = ("Severity", "Column", "Rule", "Result", "Unexpected", "Observed", "Sample values")


def render_html(result: ValidationResult, model_name: str, window_label: str) -> str:
    """One self-contained page: inline CSS, no scripts, no external URLs (GX Data Docs load from CDNs)."""
    esc = html.escape
    rows = "\n".join(_html_row(o) for o in result.outcomes)
    verdict = result.verdict()
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Validation: {esc(model_name)} ({esc(window_label)})</title>
<style>{_CSS}</style>
</head>
<body>
<h1>Data validation: {esc(model_name)}</h1>
<p class="meta">Window <strong>{esc(window_label)}</strong> · {result.rows:,} rows ·
{esc(plural(len(result.critical_failures), 'critical failure'))} · {esc(plural(len(result.warnings), 'warning'))} ·
<span class="verdict {verdict.lower()}">{verdict}</span></p>
<table>
<thead><tr>{"".join(f"<th>{name}</th>" for name in _REPORT_COLUMNS)}</tr></thead>
<tbody>
{rows}
</tbody>
</table>
</body>
</html>
"""


def _html_row(outcome: ExpectationOutcome) -> str:
    esc = html.escape
    css_class = "passed" if outcome.success else f"failed-{outcome.severity}"
    allowed = _allowed_percent(outcome.kwargs.get("mostly", 1))
    unexpected = (
        "" if outcome.unexpected_count is None
        else f"{outcome.unexpected_count:,} ({_percent(outcome.unexpected_percent, allowed)})"
    )
    observed = "" if outcome.observed_value is None else json.dumps(outcome.observed_value, ensure_ascii=False)
    samples = json.dumps(outcome.sample_values, ensure_ascii=False) if outcome.sample_values else ""
    cells = [
        esc(outcome.severity),
        esc(outcome.column or "(table)"),
        f"{esc(_html_rule(outcome))}<br><code>{esc(outcome.expectation)}</code>",
        "passed" if outcome.success else f"<strong>FAILED</strong><br>{esc(outcome.message)}",
        esc(unexpected),
        esc(observed),
        esc(samples),
    ]
    return f'<tr class="{css_class}">' + "".join(f"<td>{c}</td>" for c in cells) + "</tr>"


def _html_rule(outcome: ExpectationOutcome) -> str:
    """The rule with the digits its outcome needs; the outcome keeps the share of all rows, close enough to pick them."""
    return rule_text(outcome.expectation, outcome.kwargs, unexpected_percent=outcome.unexpected_percent,
                     observed=[outcome.observed_value, *outcome.sample_values])
