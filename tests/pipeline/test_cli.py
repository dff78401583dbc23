"""The command line on bad input: a clear message, a distinct exit code, the champion untouched, nothing deleted."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from pipeline import registry
from pipeline.cli import main
from pipeline.config import load_config
from pipeline.validate import propose_suite, write_suite
from tests.conftest import cli_champion_store, config_dict, small_frame, write_config, write_warehouse

AS_OF = "2026-01-10"


@pytest.fixture(scope="module")
def established(tmp_path_factory) -> tuple[Path, pd.DataFrame, dict]:
    return cli_champion_store(tmp_path_factory.mktemp("cli"), AS_OF)


def _case_config(root: Path, case: Path, sections: dict, extra: dict, suite_severity: dict | None = None) -> Path:
    raw = config_dict(root, **sections)
    raw["source"]["url"] = f"sqlite:///{case / 'warehouse.db'}"
    raw["storage"]["root"] = str(case / "runs")
    for section, values in extra.items():
        raw[section] = {**raw.get(section, {}), **values}
    if suite_severity:
        suite = json.loads((root / "suite.json").read_text())
        for expectation in suite["expectations"]:
            if expectation["type"] in suite_severity:
                expectation["meta"] = {"severity": suite_severity[expectation["type"]]}
                expectation.pop("severity", None)
        (case / "suite.json").write_text(json.dumps(suite))
        raw["validation"]["suite"] = str(case / "suite.json")
    path = case / "config.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _last_day(frame):
    return frame["ts"].dt.date.astype(str) == AS_OF


def with_strings(frame):
    frame = frame.astype({"x_num": object})
    frame.loc[frame.index[_last_day(frame)][:5], "x_num"] = "n/a"
    return frame


def with_nulls(frame):
    frame.loc[frame.sample(frac=0.6, random_state=1).index, "y_num"] = np.nan
    return frame


def with_out_of_range(frame):
    frame.loc[frame.index[_last_day(frame)][:20], "x_num"] = 1e6
    return frame


def with_unseen_category(frame):
    frame.loc[frame.index[_last_day(frame)][:20], "color"] = "purple"
    return frame


def with_duplicates(frame):
    return frame.iloc[list(range(len(frame))) + list(range(len(frame) - 5, len(frame)))]


VALIDATION_CASES = [
    pytest.param(lambda f: f.drop(columns=["y_num"]), {}, None, ["y_num", "exist"], id="missing-column"),
    pytest.param(lambda f: f.assign(debug_flag=1), {"source": {"unexpected_columns": "critical"}}, None,
                 ["debug_flag"], id="unexpected-column-critical"),
    pytest.param(with_strings, {}, None, ["x_num", "n/a"], id="wrong-dtype"),
    pytest.param(with_nulls, {}, None, ["y_num", "null"], id="nulls-above-ceiling"),
    pytest.param(with_out_of_range, {}, None, ["x_num", "between", "1000000"], id="values-out-of-range"),
    pytest.param(with_unseen_category, {}, {"expect_column_values_to_be_in_set": "critical"}, ["color", "purple"],
                 id="unseen-category-critical"),
    pytest.param(lambda f: f, {"windows": {"min_rows": 100_000}}, None, ["row count", "100,000", "757 rows"], id="fewer-rows-than-minimum"),
    pytest.param(with_duplicates, {}, None, ["id", "ts", "unique"], id="duplicate-keys"),
    pytest.param(lambda f: f.assign(label=0), {}, None, ["label", "distinct values must be at least 2", "found 1: [0]"], id="target-all-one-class"),
]


@pytest.mark.parametrize(("mutate", "extra", "suite_severity", "expected"), VALIDATION_CASES)
def test_bad_input_stops_the_cycle(established, tmp_path, capsys, mutate, extra, suite_severity, expected):
    root, frame, sections = established
    write_warehouse(tmp_path / "warehouse.db", mutate(frame.copy()))
    config_path = _case_config(root, tmp_path, sections, extra, suite_severity)
    code = main(["run", "--config", str(config_path), "--as-of", AS_OF, "--cycle-id", tmp_path.name])
    out = capsys.readouterr()
    text = (out.out + out.err).lower()
    assert code == 3, text
    assert "stopped" in text and "critical" in text
    for word in expected:
        assert word.lower() in text, f"{word!r} missing from:\n{text}"
    run_dir = tmp_path / "runs" / "test_model" / tmp_path.name
    assert (run_dir / "failed_batch.parquet").exists() and (run_dir / "current.parquet").exists()
    assert (run_dir / "validation.html").exists()
    config = load_config(config_path, environ={})
    assert registry.aliases(config) == {"champion": "1"}
    assert [v.version for v in registry.list_versions(config)] == ["1"]


def test_empty_window_stops_the_cycle(established, tmp_path, capsys):
    root, frame, sections = established
    shutil.copyfile(root / "warehouse.db", tmp_path / "warehouse.db")
    config_path = _case_config(root, tmp_path, sections, {})
    code = main(["run", "--config", str(config_path), "--as-of", "2027-01-01"])
    text = capsys.readouterr().out.lower()
    assert code == 3 and "row" in text and "0 " in text
    assert registry.aliases(load_config(config_path, environ={})) == {"champion": "1"}


@pytest.mark.parametrize(
    ("extra", "code", "expected"),
    [
        pytest.param({"source": {"table": "nope"}}, 1, "table 'nope' not found", id="missing-table"),
        pytest.param({"source": {"url": "sqlite:////nonexistent/dir/w.db"}}, 1, "cannot read table 'events'", id="unreachable-database"),
        pytest.param({"training": {"family": "deep_forest"}}, 2, "training.family", id="unknown-model-family"),
    ],
)
def test_faults_exit_with_a_clear_error(established, tmp_path, capsys, extra, code, expected):
    root, frame, sections = established
    shutil.copyfile(root / "warehouse.db", tmp_path / "warehouse.db")
    config_path = _case_config(root, tmp_path, sections, extra)
    assert main(["run", "--config", str(config_path), "--as-of", AS_OF, "--cycle-id", tmp_path.name]) == code
    assert expected in capsys.readouterr().err
    assert registry.aliases(load_config(_case_config(root, tmp_path, sections, {}), environ={})) == {"champion": "1"}


def test_malformed_config_exits_2(tmp_path, capsys):
    path = tmp_path / "config.yaml"
    path.write_text("model_name: x\nsource: [unclosed\n")
    assert main(["status", "--config", str(path)]) == 2
    assert "not valid YAML" in capsys.readouterr().err


def test_gate_rejection_exits_4_and_leaves_the_champion(established, tmp_path, capsys):
    root, frame, sections = established
    shutil.copyfile(root / "warehouse.db", tmp_path / "warehouse.db")
    config_path = _case_config(root, tmp_path, sections, {"gate": {"floors": {"roc_auc": 0.99}}})
    assert main(["run", "--config", str(config_path), "--as-of", AS_OF, "--cycle-id", tmp_path.name]) == 4
    assert "FAIL floor roc_auc" in capsys.readouterr().out
    assert registry.aliases(load_config(config_path, environ={})) == {"champion": "1"}


def test_status_shows_champion_and_log(established, capsys):
    root, _, _ = established
    assert main(["status", "--config", str(root / "config.yaml")]) == 0
    out = capsys.readouterr().out
    assert "champion           v1" in out and "alice: promoted v1 (first champion)" in out
    assert "Champion v1 live quality (roc_auc " in out and "k-fold when trained; newest first)" in out


def test_manual_approval_flow_reject_refuse_override_rollback(tmp_path, capsys):
    """A person drives the registry through the CLI; every refusal exits 5 and changes nothing."""
    frame = small_frame(1500, days=10)
    write_warehouse(tmp_path / "warehouse.db", frame)
    config_path = write_config(tmp_path, training={"family": "logistic_regression", "params": {}})
    config = load_config(config_path, environ={})
    write_suite(propose_suite(config, frame), config.validation.suite)
    cli = lambda *args: main([*args, "--config", str(config_path)])  # noqa: E731

    assert cli("run", "--as-of", "2026-01-05") == 0
    assert "waiting for a person: pipeline promote --version 1" in capsys.readouterr().out
    assert cli("reject", "--version", "1", "--reason", "spot check failed", "--actor", "carol") == 0
    assert cli("promote", "--version", "1", "--actor", "bob") == 5
    assert "was rejected" in capsys.readouterr().err
    assert registry.aliases(config) == {}
    assert cli("promote", "--version", "1", "--override", "--reason", "checked by hand", "--actor", "bob") == 0
    assert cli("run", "--as-of", "2026-01-10") in (0, 4)
    assert cli("rollback", "--reason", "nothing earlier", "--actor", "ops") == 5
    assert "no previous champion" in capsys.readouterr().err
    assert cli("status") == 0
    out = capsys.readouterr().out
    assert "carol: rejected v1 (no champion) (spot check failed)" in out
    assert "bob: promoted v1 over its rejection (first champion) (checked by hand)" in out
    assert registry.aliases(config)["champion"] == "1"


def test_show_prints_a_recorded_cycle(established, capsys):
    root, _, _ = established
    config_path = root / "config.yaml"
    assert main(["show", "--config", str(config_path), "--cycle-id", f"test_model-{AS_OF}"]) == 0
    out = capsys.readouterr().out
    # `pipeline promote` closed the cycle that waited for it.
    assert out.startswith(f"Cycle test_model-{AS_OF} (model test_model, as of {AS_OF}): PROMOTED")
    assert "Registry    test_model v1 (champion)" in out and "alice: promoted v1 (first champion)" in out
    assert main(["show", "--config", str(config_path), "--cycle-id", "no-such-cycle"]) == 1
    assert "no retrain cycle no-such-cycle of 'test_model' is recorded" in capsys.readouterr().err


@pytest.fixture
def profiled(tmp_path):
    """A warehouse of ten days (2026-01-01..2026-01-10), its config and where propose-suite writes to."""
    frame = small_frame(400, days=10)
    write_warehouse(tmp_path / "warehouse.db", frame)
    config_path = write_config(tmp_path)
    return frame, config_path, tmp_path / "proposed.json"


def _propose(config_path: Path, output: Path, *args: str) -> int:
    return main(["propose-suite", "--config", str(config_path), "--output", str(output), *args])


def _kwargs(suite_path: Path, kind: str, column: str | None = None) -> dict:
    suite = json.loads(suite_path.read_text())
    return next(e for e in suite["expectations"] if e["type"] == kind and e["kwargs"].get("column") == column)


@pytest.mark.parametrize(
    ("args", "first", "last"),
    [
        pytest.param([], "2026-01-06", "2026-01-10", id="default-the-current-window-ending-on-the-latest-day"),
        pytest.param(["--days", "3", "--as-of", "2026-01-08"], "2026-01-06", "2026-01-08", id="days-ending-on-as-of"),
        pytest.param(["--days", "8"], "2026-01-03", "2026-01-10", id="days-ending-on-the-latest-day"),
        pytest.param(["--from", "2026-01-02", "--to", "2026-01-04"], "2026-01-02", "2026-01-04", id="from-to"),
        pytest.param(["--from", "2026-01-04", "--to", "2026-01-04"], "2026-01-04", "2026-01-04", id="from-to-one-day"),
    ],
)
def test_propose_suite_profiles_the_days_asked_for(profiled, capsys, args, first, last):
    frame, config_path, output = profiled
    days = frame["ts"].dt.date.astype(str)
    rows = int(((days >= first) & (days <= last)).sum())

    assert _propose(config_path, output, *args) == 0

    assert f"profiled on {rows:,} rows of {first}..{last}" in capsys.readouterr().out
    assert _kwargs(output, "expect_table_row_count_to_be_between")["kwargs"] == {"min_value": rows // 2,
                                                                                 "max_value": rows * 2}


@pytest.mark.parametrize("margin", [pytest.param("0", id="no-margin"), pytest.param("0.5", id="half-the-range")])
def test_propose_suite_margin_widens_the_observed_range(profiled, margin):
    frame, config_path, output = profiled
    window = frame[frame["ts"] >= "2026-01-06"]
    low, high = window["x_num"].min(), window["x_num"].max()

    assert _propose(config_path, output, "--margin", margin) == 0

    proposed = _kwargs(output, "expect_column_values_to_be_between", "x_num")["kwargs"]
    widening = float(margin) * (high - low)
    assert (proposed["min_value"], proposed["max_value"]) == (pytest.approx(low - widening), pytest.approx(high + widening))


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        pytest.param(["--days", "0"], 2, "--days must be at least 1, got 0", id="no-days"),
        pytest.param(["--days", "3", "--from", "2026-01-01", "--to", "2026-01-03"], 2,
                     "--days and --from/--to both choose the days to profile", id="days-and-from-to"),
        pytest.param(["--from", "2026-01-01"], 2, "--from and --to go together", id="from-without-to"),
        pytest.param(["--to", "2026-01-01"], 2, "--from and --to go together", id="to-without-from"),
        pytest.param(["--from", "2026-01-05", "--to", "2026-01-01"], 2, "--from 2026-01-05 is after --to 2026-01-01",
                     id="from-after-to"),
        pytest.param(["--from", "05/01/2026", "--to", "2026-01-10"], 2, "--from must be YYYY-MM-DD, got '05/01/2026'",
                     id="from-not-a-date"),
        pytest.param(["--as-of", "2026-01-05", "--from", "2026-01-01", "--to", "2026-01-03"], 2,
                     "--as-of does not apply to --from/--to", id="as-of-and-from-to"),
        pytest.param(["--margin", "-0.1"], 2, "--margin is a share of the observed range, 0 or more", id="negative-margin"),
        pytest.param(["--margin", "nan"], 2, "--margin is a share of the observed range", id="margin-not-a-number"),
        pytest.param(["--from", "2027-01-01", "--to", "2027-01-31"], 1,
                     "no rows to profile in 2027-01-01..2027-01-31: the source's rows run from 2026-01-01 to 2026-01-10",
                     id="range-without-rows"),
        pytest.param(["--days", "5", "--as-of", "2025-06-01"], 1, "no rows to profile in 2025-05-28..2025-06-01",
                     id="days-without-rows"),
    ],
)
def test_propose_suite_rejects_bad_arguments_clearly(profiled, capsys, args, code, message):
    _, config_path, output = profiled

    assert _propose(config_path, output, *args) == code

    assert message in capsys.readouterr().err
    assert not output.exists()


def _spread_over_2025(frame):
    return frame.assign(ts=pd.date_range("2025-01-01", "2025-12-31 12:00", periods=len(frame)))


@pytest.mark.parametrize(
    ("spread", "args", "severity", "printed"),
    [
        pytest.param(None, [], "warning",
                     "ranges proposed as warnings: the profiled rows span 5 days, less than a year; "
                     "pass --critical-ranges or profile a year (--days 365)", id="five-days-warn"),
        pytest.param(None, ["--critical-ranges"], "critical",
                     "ranges proposed as critical: asked for (the profiled rows span 5 days, less than a year)",
                     id="critical-ranges-asked-for"),
        pytest.param(_spread_over_2025, ["--days", "365", "--as-of", "2025-12-31"], "critical",
                     "ranges proposed as critical: the profiled rows span 365 days, a full year", id="a-year-is-critical"),
        pytest.param(_spread_over_2025, ["--from", "2025-01-01", "--to", "2025-12-30"], "warning",
                     "ranges proposed as warnings: the profiled rows span 364 days, less than a year", id="364-days-warn"),
    ],
)
def test_propose_suite_ranges_are_warnings_unless_a_year_or_asked(profiled, capsys, spread, args, severity, printed):
    frame, config_path, output = profiled
    if spread:
        write_warehouse(config_path.parent / "warehouse.db", spread(frame))

    assert _propose(config_path, output, *args) == 0

    assert printed in capsys.readouterr().out
    for column in ("x_num", "y_num"):
        expectation = _kwargs(output, "expect_column_values_to_be_between", column)
        assert expectation["severity"] == expectation["meta"]["severity"] == severity
