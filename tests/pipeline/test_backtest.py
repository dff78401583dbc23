"""The backtest on a warehouse whose label relation flips on 01-11: isolated, resumable, one training per step."""

from __future__ import annotations

import hashlib
import json
from datetime import date

import pytest

from pipeline import backtest, evaluate
from pipeline.backtest import FIRST, IDLE, PROMOTED, policies_for, run_backtest
from pipeline.cli import main
from pipeline.errors import ConfigError, PipelineError
from tests.conftest import label_flip_store


@pytest.fixture
def store(tmp_path):
    return label_flip_store(tmp_path)


@pytest.fixture
def fits(monkeypatch):
    """Counts the candidate's k-fold fits (the real function runs)."""
    calls = []
    real = evaluate.fit_folds

    def counting(*args, **kwargs):
        calls.append(args[1]["ts"].max())
        return real(*args, **kwargs)

    monkeypatch.setattr(evaluate, "fit_folds", counting)
    return calls


def _digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_replay_scores_each_policy_one_step_ahead_and_touches_no_real_store(store, tmp_path, fits, capsys):
    registry_before = _digest(tmp_path / "mlflow.db")
    out = tmp_path / "backtest"
    code = main(["backtest", "--config", str(tmp_path / "config.yaml"), "--start", "2026-01-05", "--end", "2026-01-20",
                 "--step-days", "5", "--gate", "alpha=0.2", "--out", str(out), "--quiet"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "gate[alpha=0.2]" in printed and "3 steps" in printed

    result = json.loads((out / "backtest.json").read_text())
    summaries = {s["policy"]: s for s in result["summaries"]}
    assert set(summaries) == {"never", "always", "gate", "drift", "degradation", "drift_or_degradation", "gate[alpha=0.2]"}
    steps = result["steps"]
    assert [s["as_of"] for s in steps] == ["2026-01-05", "2026-01-10", "2026-01-15"]
    assert all(s["next_rows"] > 0 for s in steps)
    # One k-fold training per step, shared by every policy that wanted one.
    assert len(fits) == 3 and all(s["trained"] for s in steps)
    assert summaries["always"]["trainings"] == 3 and summaries["never"]["trainings"] == 1
    assert summaries["never"]["promotions"] == 1 and summaries["always"]["promotions"] == 3
    assert all(s["policies"][name]["decision"] == FIRST for s in steps[:1] for name in summaries)
    # After the flip the gate replaces the stale champion; the never-retrain policy pays for it.
    assert steps[2]["policies"]["gate"]["decision"] == PROMOTED
    assert summaries["gate"]["error"] > summaries["never"]["error"]  # roc_auc: higher is better
    gate_step = steps[2]["policies"]["gate"]
    assert gate_step["compare_rows"] > 0 and gate_step["p_value"] < store.gate.alpha
    assert gate_step["replaced_next_error"] < gate_step["next_error"] and not gate_step["harmful"]
    # A rejection is "missed" when the rejected candidate did better on the next rows than the model kept.
    rejections = [(step, p) for step in steps for p in step["policies"].values() if p["decision"] == "rejected"]
    assert rejections
    for step, rejected in rejections:
        assert rejected["missed"] == (step["candidate_next_error"] > rejected["next_error"])
    for name, summary in summaries.items():
        assert summary["missed"] == sum(step["policies"][name]["missed"] for step in steps)
    for plot in ("backtest.png", "backtest.svg"):
        assert (out / plot).stat().st_size > 1000
    assert (out / "drift").is_dir() and list((out / "drift").glob("*.html"))

    # Isolated: the config's registry, promotion log and run directories are untouched.
    assert _digest(tmp_path / "mlflow.db") == registry_before
    assert not (tmp_path / "pipeline.db").exists() and not (tmp_path / "runs").exists()
    assert not (tmp_path / "artifacts").exists()


def test_the_degradation_policy_trains_only_when_its_champion_degraded(store, tmp_path, fits):
    out = tmp_path / "backtest"
    result = run_backtest(store, date(2026, 1, 5), date(2026, 1, 15), 5, policies_for(store, ["degradation"]), out,
                          progress=lambda _: None)
    mine = [step.policies["degradation"] for step in result.steps]
    assert [p.decision for p in mine] == [FIRST, IDLE, PROMOTED]
    # 01-10: the first champion on the rows after its window, as good as its k-fold promised; 01-15: the labels turned.
    assert [p.degraded for p in mine] == [None, False, True]  # the first step has no champion to check
    assert mine[1].reason.startswith("not degraded: nothing trained (Quality champion v2026-01-05 healthy: roc_auc ")
    assert [step.trained for step in result.steps] == [True, False, True] and len(fits) == 2
    assert result.steps[0].candidate_kfold > 0.7  # the k-fold estimate the next steps' checks compare with


def test_quality_policies_share_the_steps_one_training(store, tmp_path, fits):
    out = tmp_path / "backtest"
    code = main(["backtest", "--config", str(tmp_path / "config.yaml"), "--start", "2026-01-05", "--end", "2026-01-20",
                 "--step-days", "5", "--policies", "never,gate,degradation,drift_or_degradation", "--out", str(out),
                 "--quiet"])
    assert code == 0
    result = json.loads((out / "backtest.json").read_text())
    summaries = {s["policy"]: s for s in result["summaries"]}
    assert len(fits) == 3  # the gate trains at every step; the quality policies take its candidate when they want one
    assert summaries["gate"]["trainings"] == 3 and summaries["never"]["trainings"] == 1
    for step in result["steps"][1:]:  # each with a champion to check
        only, either = step["policies"]["degradation"], step["policies"]["drift_or_degradation"]
        assert step["trained"] and (only["decision"] != IDLE) == only["degraded"]
        assert (either["decision"] != IDLE) == (either["drifted"] or either["degraded"])
    assert [step["policies"]["degradation"]["degraded"] for step in result["steps"]] == [None, False, True]
    assert summaries["degradation"]["trainings"] == 2
    assert list((out / "drift_or_degradation" / "drift").glob("*.html"))  # its own drift check, against its champion


def test_a_rerun_skips_finished_steps(store, tmp_path, fits):
    policies = policies_for(store, ["never", "always", "gate"])
    out = tmp_path / "backtest"
    first = run_backtest(store, date(2026, 1, 5), date(2026, 1, 15), 5, policies, out, progress=lambda _: None)
    assert len(fits) == 3
    (out / "steps" / "2026-01-15.json").unlink()
    lines = []
    again = run_backtest(store, date(2026, 1, 5), date(2026, 1, 15), 5, policies, out, progress=lines.append)
    assert len(fits) == 4  # only the step whose record was gone
    assert sum("done before" in line for line in lines) == 2
    assert again.table() == first.table()


def test_an_output_directory_holds_one_plan(store, tmp_path):
    out = tmp_path / "backtest"
    run_backtest(store, date(2026, 1, 5), date(2026, 1, 5), 5, policies_for(store, ["never"]), out,
                 progress=lambda _: None)
    with pytest.raises(PipelineError, match="holds a backtest of another config or other policies"):
        run_backtest(store, date(2026, 1, 5), date(2026, 1, 5), 5, policies_for(store, ["always"]), out)


@pytest.mark.parametrize(
    ("kinds", "variants", "message"),
    [
        pytest.param(["sometimes"], [], "unknown policies", id="unknown-policy"),
        pytest.param(["gate"], ["alpha"], "expected key=value", id="variant-without-value"),
        pytest.param(["gate"], ["alpha=2"], "alpha", id="variant-out-of-range"),
        pytest.param(["gate"], ["nonsense=1"], "nonsense", id="variant-unknown-setting"),
    ],
)
def test_bad_policies_are_refused(store, kinds, variants, message):
    with pytest.raises(ConfigError, match=message):
        policies_for(store, kinds, variants)


def test_steps_cover_the_range():
    assert backtest.step_dates(date(2026, 1, 1), date(2026, 1, 15), 7) == [
        date(2026, 1, 1), date(2026, 1, 8), date(2026, 1, 15)]
    with pytest.raises(ConfigError, match="before --start"):
        backtest.step_dates(date(2026, 1, 2), date(2026, 1, 1), 7)
