"""Bad input, one case per failure mode: each stops where it should, says what is wrong and touches no model.

Every cycle case runs through the CLI against its own SQLite warehouse and the shared registry of a
store whose champion v1 was trained once per module; a stopped cycle must keep its failing batch,
leave the champion alias where it was and create no model version.
"""

from __future__ import annotations

import json
import sqlite3
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from pipeline import registry
from pipeline.cli import main
from pipeline.config import Config, load_config, redact_url
from pipeline.data import latest_day, rows_after
from pipeline.validate import propose_suite, validate_window, write_suite
from tests.conftest import cli_champion_store, config_dict, small_frame, write_config, write_warehouse

AS_OF = "2026-01-10"
CURRENT_START = "2026-01-06"  # the current window of 5 days ending on AS_OF
LONG_VALUE = "a" * 200_000


@pytest.fixture(scope="module")
def established(tmp_path_factory) -> tuple[Path, pd.DataFrame, dict]:
    return cli_champion_store(tmp_path_factory.mktemp("bad-input"), AS_OF)


def case_config(established, case: Path, extra: dict | None = None, suite_extra: list[dict] | None = None) -> Path:
    """A config reading ``case``'s warehouse and writing ``case``'s runs, with the established registry and suite."""
    root, _, sections = established
    raw = config_dict(root, **sections)
    raw["source"]["url"] = f"sqlite:///{case / 'warehouse.db'}"
    raw["storage"]["root"] = str(case / "runs")
    for section, values in (extra or {}).items():
        raw[section] = {**raw.get(section, {}), **values}
    if suite_extra:
        suite = json.loads((root / "suite.json").read_text())
        suite["expectations"] += suite_extra
        (case / "suite.json").write_text(json.dumps(suite))
        raw["validation"]["suite"] = str(case / "suite.json")
    path = case / "config.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def run_cli(capsys, *argv: str) -> tuple[int, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out + out.err


def assert_models_untouched(config_path: Path) -> None:
    config = load_config(config_path, environ={})
    assert registry.aliases(config) == {"champion": "1"}
    assert [v.version for v in registry.list_versions(config)] == ["1"]


def in_current(frame: pd.DataFrame, rows: int) -> pd.Index:
    """The first ``rows`` rows of the current window."""
    return frame.index[frame["ts"] >= CURRENT_START][:rows]


def infinite(column: str, value: float, rows: int = 1):
    def mutate(frame: pd.DataFrame) -> pd.DataFrame:
        frame[column] = frame[column].astype(float)
        frame.loc[in_current(frame, rows), column] = value
        return frame
    return mutate


def one_inf_in_3000_rows(_: pd.DataFrame) -> pd.DataFrame:
    """One row in about 3,000 (0.033%): within every range's tolerance, so only the finiteness rule can catch it."""
    frame = small_frame(6000, seed=1, days=10)
    frame.loc[in_current(frame, 1), "x_num"] = np.inf
    return frame


def timestamps_as_text(frame: pd.DataFrame, offset: str = "") -> pd.DataFrame:
    return frame.assign(ts=frame["ts"].dt.strftime("%Y-%m-%d %H:%M:%S") + offset)


def unparsable_timestamp(frame: pd.DataFrame) -> pd.DataFrame:
    frame = timestamps_as_text(frame)
    frame.loc[in_current(frame, 1), "ts"] = "2026-01-10 not-a-time"
    return frame


def mixed_offsets(frame: pd.DataFrame) -> pd.DataFrame:
    frame = timestamps_as_text(frame, "+01:00")
    frame.loc[in_current(frame, 4), "ts"] = frame.loc[in_current(frame, 4), "ts"].str.replace("+01:00", "+02:00")
    return frame


def numbers_as_text(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.assign(x_num=frame["x_num"].map(lambda x: f"{x:.3f}"))


def third_class(frame: pd.DataFrame) -> pd.DataFrame:
    frame.loc[in_current(frame, 3), "label"] = 2
    return frame


def null_in_current_window(frame: pd.DataFrame) -> pd.DataFrame:
    frame.loc[frame["ts"] >= CURRENT_START, "y_num"] = np.nan
    return frame


def null_target(frame: pd.DataFrame) -> pd.DataFrame:
    frame["label"] = frame["label"].astype(float)
    frame.loc[in_current(frame, 2), "label"] = np.nan
    return frame


GHOST_EXPECTATION = {"type": "expect_column_values_to_not_be_null", "kwargs": {"column": "ghost"}, "severity": "critical"}

STOPPED_CASES = [
    pytest.param(one_inf_in_3000_rows, [], ["column 'x_num': values must be finite", "1 critical failure",
                                            "1 of 2,997 rows (0.033%) not finite, e.g. [{'id': 2137, 'ts': '2026-01-06T00:02:35', 'x_num': 'inf'}]"], id="inf-in-one-row-in-3000"),
    pytest.param(infinite("y_num", -np.inf, rows=3), [], ["column 'y_num': values must be finite", "3 of", "-inf"],
                 id="minus-inf-in-a-feature"),
    pytest.param(infinite("label", np.inf), [], ["target 'label': values must be finite", "1 of"], id="inf-in-the-target"),
    # XGBoost trains on 32-bit floats: 1e39 turns into inf there.
    pytest.param(infinite("y_num", 1e39, rows=2), [], ["column 'y_num': values must be finite (within ±3.40282e+38, "
                                                        "the largest 32-bit float) — 2 of", "1e+39"],
                 id="number-too-large-for-32-bit-floats"),
    pytest.param(unparsable_timestamp, [], ["column 'ts': values must be timestamps", "1 of", "2026-01-10 not-a-time"],
                 id="unparsable-timestamp"),
    pytest.param(mixed_offsets, [], ["column 'ts': values must be timestamps in one time-zone offset", "4 of",
                                     "+02:00", "mixed time-zone offsets (most rows +01:00)"], id="mixed-time-zone-offsets"),
    pytest.param(numbers_as_text, [], ["column 'x_num': values must be numeric", "of another type", "dtype object"],
                 id="numeric-feature-stored-as-text"),
    pytest.param(third_class, [], ["target 'label'", "outside the set", "[2]"], id="third-class-in-binary-target"),
    pytest.param(null_in_current_window, [], ["column 'y_num'", "of values may be null", "757 of 757 rows (100.0%) null"],
                 id="feature-all-null-in-the-current-window-only"),
    pytest.param(null_target, [], ["target 'label': values must not be null", "2 of"], id="null-target"),
    pytest.param(lambda f: f, [GHOST_EXPECTATION], ["column 'ghost'", "not checked: missing column(s) ['ghost']"],
                 id="suite-names-a-column-not-in-the-data"),
]


@pytest.mark.parametrize(("mutate", "suite_extra", "expected"), STOPPED_CASES)
def test_bad_values_stop_the_cycle_with_the_batch_kept(established, tmp_path, capsys, mutate, suite_extra, expected):
    _, frame, _ = established
    write_warehouse(tmp_path / "warehouse.db", mutate(frame.copy()))
    config_path = case_config(established, tmp_path, suite_extra=suite_extra)
    code, text = run_cli(capsys, "run", "--config", str(config_path), "--as-of", AS_OF, "--cycle-id", "case")
    assert code == 3, text
    for part in expected:
        assert part in text, f"{part!r} missing from:\n{text}"
    run_dir = tmp_path / "runs" / "test_model" / "case"
    assert (run_dir / "failed_batch.parquet").is_file()
    # What the console said is also on record, with the strict JSON a record needs.
    recorded = json.loads((run_dir / "validation.json").read_text(), parse_constant=pytest.fail)
    assert any(expected[0] in outcome["message"] for outcome in recorded["outcomes"])
    assert_models_untouched(config_path)


def epoch_seconds(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.assign(ts=frame["ts"].astype("int64") // 10**9)


@pytest.mark.parametrize("mutate", [
    pytest.param(unparsable_timestamp, id="kept-with-the-unparsable-timestamp"),
    pytest.param(mixed_offsets, id="kept-with-mixed-offsets"),
])
def test_the_failing_batch_keeps_timestamps_as_read(established, tmp_path, capsys, mutate):
    _, frame, _ = established
    written = mutate(frame.copy())
    write_warehouse(tmp_path / "warehouse.db", written)
    config_path = case_config(established, tmp_path)
    code, text = run_cli(capsys, "validate", "--config", str(config_path), "--as-of", AS_OF, "--cycle-id", "case")
    assert code == 3, text
    kept = pd.read_parquet(tmp_path / "runs" / "test_model" / "case" / "failed_batch.parquet")
    assert sorted(kept["ts"]) == sorted(written.loc[written["ts"] >= CURRENT_START, "ts"])


@pytest.mark.parametrize(("mutate", "as_of", "expected"), [
    pytest.param(lambda f: f, "2025-01-01", "the source's rows are dated 2026-01-01 to 2026-01-10",
                 id="as-of-before-the-data-starts"),
    pytest.param(lambda f: f, "2027-01-01", "the source's rows are dated 2026-01-01 to 2026-01-10",
                 id="as-of-after-the-data-ends"),
    # SQLite orders every number before any text date, so epoch seconds fall outside every window.
    pytest.param(epoch_seconds, AS_OF, "the oldest value of 'ts', 1767225693, is a number, not a timestamp",
                 id="timestamps-stored-as-epoch-seconds"),
])
def test_an_empty_window_stops_the_cycle_saying_why(established, tmp_path, capsys, mutate, as_of, expected):
    _, frame, _ = established
    write_warehouse(tmp_path / "warehouse.db", mutate(frame.copy()))
    config_path = case_config(established, tmp_path)
    code, text = run_cli(capsys, "run", "--config", str(config_path), "--as-of", as_of, "--cycle-id", "case")
    assert code == 3, text
    assert "the window is empty (0 rows)" in text and expected in text, text
    assert (tmp_path / "runs" / "test_model" / "case" / "failed_batch.parquet").is_file()
    assert_models_untouched(config_path)


@pytest.mark.parametrize(("mutate", "expected"), [
    pytest.param(epoch_seconds, "the newest value of 'ts', 1768089", id="latest-of-epoch-seconds"),
    pytest.param(lambda f: unparsable_timestamp(f).sort_values("ts"), "the newest value of 'ts', "
                 "'2026-01-10 not-a-time', is not a timestamp", id="latest-of-an-unparsable-timestamp"),
])
def test_as_of_latest_names_a_newest_value_that_is_no_timestamp(established, tmp_path, capsys, mutate, expected):
    _, frame, _ = established
    write_warehouse(tmp_path / "warehouse.db", mutate(frame.copy()))
    config_path = case_config(established, tmp_path)
    code, text = run_cli(capsys, "run", "--config", str(config_path), "--as-of", "latest")
    assert code == 1 and f"error: {expected}" in text, text
    assert_models_untouched(config_path)


def test_infinity_as_a_warning_is_reported_and_does_not_stop_validation(established, tmp_path, capsys):
    _, frame, _ = established
    write_warehouse(tmp_path / "warehouse.db", one_inf_in_3000_rows(frame))
    config_path = case_config(established, tmp_path, extra={"validation": {"non_finite": "warning"}})
    code, text = run_cli(capsys, "validate", "--config", str(config_path), "--as-of", AS_OF, "--cycle-id", "case")
    assert code == 0, text
    assert "[warning] column 'x_num': values must be finite (within ±3.40282e+38, the largest 32-bit float) — 1 of" in text
    assert not (tmp_path / "runs" / "test_model" / "case" / "failed_batch.parquet").exists()


@pytest.mark.parametrize("value", [
    pytest.param(LONG_VALUE, id="200k-character-category"),
    pytest.param("\u202ered\u200b\U0001f600\x00", id="odd-unicode-category"),
])
def test_odd_category_values_are_reported_in_short(established, tmp_path, capsys, value):
    _, frame, _ = established
    frame = frame.copy()
    frame.loc[in_current(frame, 2), "color"] = value
    write_warehouse(tmp_path / "warehouse.db", frame)
    config_path = case_config(established, tmp_path)
    code, text = run_cli(capsys, "validate", "--config", str(config_path), "--as-of", AS_OF, "--cycle-id", "case")
    assert code == 0, text  # a new category is a warning
    assert max(map(len, text.splitlines())) < 1_000
    run_dir = tmp_path / "runs" / "test_model" / "case"
    record = (run_dir / "validation.json").read_text()
    assert len(record) < 50_000 and (run_dir / "validation.html").stat().st_size < 100_000
    [outcome] = [o for o in json.loads(record)["outcomes"]
                 if o["column"] == "color" and o["expectation"] == "expect_column_values_to_be_in_set"]
    if value is LONG_VALUE:
        assert outcome["sample_values"] == ["a" * 80 + "… (200,000 chars)"]
        assert "'" + "a" * 80 + "… (200,000 chars)'" in text
    else:
        assert outcome["sample_values"] == [value]


def test_a_class_rarer_than_the_folds_stops_before_training(established, tmp_path, capsys):
    _, frame, _ = established
    frame = frame.copy()
    current = frame["ts"] >= CURRENT_START
    frame.loc[current, "label"] = 0
    frame.loc[in_current(frame, 3), "label"] = 1
    write_warehouse(tmp_path / "warehouse.db", frame)
    config_path = case_config(established, tmp_path, extra={"evaluation": {"k": 5}})
    code, text = run_cli(capsys, "train", "--config", str(config_path), "--as-of", AS_OF, "--cycle-id", "case")
    assert code == 1, text
    assert "class 1 has 3 rows" in text and "evaluation.k=5" in text
    assert not (tmp_path / "runs" / "test_model" / "case" / "evaluation.json").exists()
    assert_models_untouched(config_path)


def query_config(established, case: Path, query: str, reader: str = "auto") -> Path:
    config_path = case_config(established, case)
    raw = yaml.safe_load(config_path.read_text())
    raw["source"] = {**raw["source"], "table": None, "query": query, "reader": reader}
    config_path.write_text(yaml.safe_dump(raw))
    return config_path


def test_a_column_selected_twice_is_reported_under_the_name_sqlite_gives_it(established, tmp_path, capsys):
    """SQLite renames the second ``color`` of the query's subquery to ``color:1``: an unexpected column."""
    _, frame, _ = established
    write_warehouse(tmp_path / "warehouse.db", frame)
    config_path = query_config(established, tmp_path, "SELECT *, color FROM events")
    code, text = run_cli(capsys, "validate", "--config", str(config_path), "--as-of", AS_OF)
    assert code == 0, text
    assert "[warning] table: columns must be exactly" in text and "unexpected extra columns ['color:1']" in text


def test_duplicate_column_names_from_the_query_stop_the_load(established, tmp_path, capsys, monkeypatch):
    """PostgreSQL, unlike SQLite, returns both columns of ``SELECT *, color`` under one name; a snapshot cannot hold them.

    Here pandas on the SQLAlchemy path is made to name them as PostgreSQL does; tests/pipeline/test_data.py
    reads them from a real PostgreSQL through both readers."""
    _, frame, _ = established
    write_warehouse(tmp_path / "warehouse.db", frame)
    config_path = query_config(established, tmp_path, "SELECT *, color FROM events", reader="sqlalchemy")
    read_sql = pd.read_sql

    def read_as_postgresql_does(*args, **kwargs):
        for chunk in read_sql(*args, **kwargs):
            yield chunk.rename(columns={"color:1": "color"})

    monkeypatch.setattr(pd, "read_sql", read_as_postgresql_does)
    code, text = run_cli(capsys, "run", "--config", str(config_path), "--as-of", AS_OF)
    assert code == 1, text
    assert "error: the configured query returns the columns ['color'] more than once" in text
    assert_models_untouched(config_path)


def test_text_that_is_not_utf8_stops_the_load_naming_the_column(established, tmp_path, capsys):
    _, frame, _ = established
    write_warehouse(tmp_path / "warehouse.db", frame)
    with sqlite3.connect(tmp_path / "warehouse.db") as conn:
        conn.execute("UPDATE events SET color = CAST(X'FF6F6F' AS TEXT) WHERE ts >= ?", (AS_OF,))
    config_path = case_config(established, tmp_path)
    code, text = run_cli(capsys, "run", "--config", str(config_path), "--as-of", AS_OF)
    assert code == 1, text
    assert "cannot read table 'events'" in text and "UTF-8" in text and "color" in text
    assert_models_untouched(config_path)


@pytest.mark.parametrize("table", [
    pytest.param("events; DROP TABLE events; --", id="statement-after-the-name"),
    pytest.param('events" WHERE 1 = 1; DROP TABLE events; --', id="closing-quote"),
    pytest.param("events UNION SELECT * FROM sqlite_master", id="union"),
])
def test_a_table_name_carrying_sql_is_read_as_a_name_and_runs_nothing(established, tmp_path, capsys, table):
    _, frame, _ = established
    write_warehouse(tmp_path / "warehouse.db", frame)
    config_path = case_config(established, tmp_path, extra={"source": {"table": table}})
    code, text = run_cli(capsys, "run", "--config", str(config_path), "--as-of", AS_OF)
    assert code == 1, text
    assert f"error: table {table!r} not found in sqlite:///" in text
    with sqlite3.connect(tmp_path / "warehouse.db") as conn:
        assert conn.execute("SELECT COUNT(*) FROM events").fetchone() == (len(frame),)
    assert_models_untouched(config_path)


# ---------------------------------------------------------------------------- as-of latest and the future

FUTURE = pd.Timestamp("2031-06-01")


def test_as_of_latest_ignores_rows_dated_in_the_future_and_says_so(established, tmp_path, capsys):
    _, frame, _ = established
    future = frame.tail(3).assign(id=[10**6, 10**6 + 1, 10**6 + 2], ts=[FUTURE, FUTURE, FUTURE + pd.Timedelta(days=3)])
    write_warehouse(tmp_path / "warehouse.db", pd.concat([frame, future], ignore_index=True))
    config_path = case_config(established, tmp_path)
    code, text = run_cli(capsys, "validate", "--config", str(config_path), "--cycle-id", "case")
    assert code == 0, text
    assert "--as-of latest ignores 3 future-dated rows" in text and "the newest is dated 2031-06-04" in text
    assert "windows.future_tolerance_days=1" in text
    config = load_config(config_path, environ={})
    assert latest_day(config.source, until=date(2026, 12, 31)) == date.fromisoformat(AS_OF)
    assert rows_after(config.source, date(2026, 12, 31)) == (3, date(2031, 6, 4))


# ---------------------------------------------------------------------------- one window, validated directly


@pytest.fixture
def suite(config: Config, frame: pd.DataFrame) -> None:
    write_suite(propose_suite(config, frame), config.validation.suite)


def failed(result, column: str, expectation: str):
    [outcome] = [o for o in result.outcomes if o.column == column and o.expectation == expectation]
    return outcome


@pytest.mark.parametrize(("values", "count", "samples"), [
    pytest.param(lambda ts: (ts.astype("int64") // 10**9), 400, None, id="timestamps-as-integers"),
    pytest.param(lambda ts: pd.Series(["yesterday"] * 5 + ["2026-01-02"] * (len(ts) - 5)), 5, ["yesterday"],
                 id="timestamps-as-free-text"),
])
def test_a_timestamp_column_of_another_type_fails_naming_its_values(config, frame, suite, values, count, samples):
    result = validate_window(config, frame.assign(ts=values(frame["ts"])))
    outcome = failed(result, "ts", "expect_column_values_to_be_timestamps")
    assert not result.passed and not outcome.success and outcome.severity == "critical"
    assert outcome.unexpected_count == count and f"{count} of 400 rows" in outcome.message
    if samples:
        assert outcome.sample_values == samples


@pytest.mark.parametrize(("severity", "passed"), [
    pytest.param("warning", True, id="future-dated-rows-warn-by-default"),
    pytest.param("critical", False, id="future-dated-rows-critical"),
])
def test_future_dated_rows_are_a_named_rule(tmp_path, frame, severity, passed):
    validation = {"suite": str(tmp_path / "suite.json"), "future_rows": severity}
    config = load_config(write_config(tmp_path, validation=validation), environ={})
    write_suite(propose_suite(config, frame), config.validation.suite)
    frame = frame.copy()
    frame.loc[:2, "ts"] = pd.Timestamp("2026-01-13 08:00")
    result = validate_window(config, frame, today=date(2026, 1, 11))
    outcome = failed(result, "ts", "expect_column_values_to_not_be_in_the_future")
    assert result.passed is passed and not outcome.success and outcome.severity == severity
    assert outcome.message.startswith("column 'ts': values must be dated no later than 2026-01-12 (today 2026-01-11 "
                                      "plus windows.future_tolerance_days=1) — 3 of 400 rows")
    assert outcome.sample_values == ["2026-01-13T08:00:00"]


@pytest.mark.parametrize(("value", "rule"), [
    pytest.param(np.nan, "values must not be null", id="regression-target-nan"),
    pytest.param(-np.inf, "values must be finite", id="regression-target-minus-inf"),
])
def test_a_regression_target_must_be_a_finite_number(tmp_path, frame, value, rule):
    config = load_config(write_config(tmp_path, task="regression", evaluation={"k": 3}), environ={})
    frame = frame.assign(label=frame["label"] + frame["x_num"])
    write_suite(propose_suite(config, frame), config.validation.suite)
    frame.loc[:1, "label"] = value
    result = validate_window(config, frame)
    assert not result.passed
    messages = [o.message for o in result.critical_failures]
    assert any(m.startswith(f"target 'label': {rule}") and " — 2 of 400 rows" in m for m in messages), messages


# ---------------------------------------------------------------------------- redacted URLs

SECRET_PARTS = ("Zq1", "Xv2", "Wk3", "Jm4")


@pytest.mark.parametrize(("url", "shown"), [
    pytest.param("postgresql://alice:Zq1Xv2Wk3Jm4@db.example.com:5432/sales", "postgresql://alice:***@db.example.com:5432/sales",
                 id="postgresql-with-port"),
    pytest.param("postgresql://alice:Zq1Xv2Wk3Jm4@db.example.com/sales", "postgresql://alice:***@db.example.com/sales",
                 id="postgresql-without-port"),
    pytest.param("postgresql+psycopg://alice:Zq1@Xv2@Wk3Jm4@db/sales", "postgresql+psycopg://alice:***@db/sales",
                 id="at-signs-in-the-password"),
    pytest.param("mysql+pymysql://alice:Zq1/Xv2/Wk3Jm4@db:3306/sales", "mysql+pymysql://alice:***@db:3306/sales",
                 id="slashes-in-the-password"),
    pytest.param("mysql://alice:Zq1:Xv2:Wk3Jm4@db/sales", "mysql://alice:***@db/sales", id="colons-in-the-password"),
    pytest.param("postgresql://alice:Zq1@Xv2/Wk3:Jm4@db:5432/sales?sslmode=require",
                 "postgresql://alice:***@db:5432/sales?sslmode=require", id="every-delimiter-and-a-query"),
    pytest.param("postgresql://alice:Zq1?Xv2#Wk3Jm4@db/sales", "postgresql://alice:***@db/sales",
                 id="query-and-fragment-marks-in-the-password"),
    pytest.param("postgresql://alice:Zq1%40Xv2Wk3Jm4@db/sales", "postgresql://alice:***@db/sales",
                 id="percent-encoded-password"),
    pytest.param("postgresql://alice@db/sales?password=Zq1Xv2Wk3Jm4&sslmode=require",
                 "postgresql://alice@db/sales?password=***&sslmode=require", id="password-in-the-query"),
    pytest.param("postgresql://alice:Zq1Xv2@Wk3Jm4@db/sales?options=a@b", None, id="at-sign-in-the-query-too"),
    pytest.param("mssql+pyodbc://alice:Zq1;Xv2=Wk3Jm4@dsn", "mssql+pyodbc://alice:***@dsn", id="odbc-dsn"),
    pytest.param("sqlite:////data/warehouse.db", "sqlite:////data/warehouse.db", id="sqlite-has-no-password"),
    pytest.param("postgresql://alice@db/sales", "postgresql://alice@db/sales", id="user-without-password"),
])
def test_redact_url_never_shows_a_fragment_of_the_password(url, shown):
    redacted = redact_url(url)
    assert not any(part in redacted for part in SECRET_PARTS), redacted
    if shown is not None:
        assert redacted == shown
