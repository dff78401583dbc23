"""The benchmark's options: what it measures is set the way a config sets it."""

from __future__ import annotations

import pytest

from pipeline import bench
from pipeline.config import Config


@pytest.mark.parametrize("value", [pytest.param("0", id="zero"), pytest.param("two", id="a-word"),
                                   pytest.param("-1", id="negative")])
def test_threads_take_auto_or_a_positive_number(value, capsys):
    with pytest.raises(SystemExit):
        bench.main(["--threads", value])
    assert "--threads takes auto or a number >= 1" in capsys.readouterr().err


def test_the_options_reach_the_config_of_the_cycle(tmp_path):
    config = Config.model_validate(bench.bench_config(tmp_path / "data", tmp_path / "store", "fold_ensemble", 3, 20))
    assert (config.training.final_model, config.training.threads) == ("fold_ensemble", 3)
    assert config.training.params["n_estimators"] == 20
    assert config.source.url == f"sqlite:///{tmp_path / 'data' / 'warehouse.db'}"
    assert config.storage.root == str(tmp_path / "store" / "runs")


def test_the_current_window_drifts_in_the_features_it_changes_and_beats_no_champion(tmp_path):
    """What the benchmark's cycle meets: drift in DRIFTED only, and a label relation the champion did not learn."""
    from sklearn.metrics import roc_auc_score

    from pipeline.drift import judge_drift
    from pipeline.train import build_model, encode_target

    config = Config.model_validate(bench.bench_config(tmp_path, tmp_path))
    config = config.model_copy(update={"training": config.training.model_copy(update={"params": {"n_estimators": 30}})})
    champion_window = bench.synthetic_frame(20_000, seed=1, as_of=bench.CHAMPION_AS_OF)
    current = bench.current_frame(20_000)
    assert current["ts"].min() > champion_window["ts"].max()

    result = judge_drift(config, champion_window, current)
    assert sorted(f.feature for f in result.features if f.drifted) == sorted(bench.DRIFTED)
    assert not any(f.drifted for f in judge_drift(config, champion_window, bench.synthetic_frame(20_000, seed=2)).features)

    y = encode_target(config, champion_window["target"])
    champion = build_model(config, "cpu").fit(champion_window, y)
    fresh = build_model(config, "cpu").fit(current.iloc[:10_000], current["target"].iloc[:10_000])
    held_out = current.iloc[10_000:]
    assert (roc_auc_score(held_out["target"], fresh.predict_proba(held_out)[:, 1])
            > roc_auc_score(held_out["target"], champion.predict_proba(held_out)[:, 1]) + 0.02)


def test_a_window_in_memory_counts_a_shared_string_once():
    frame = bench.synthetic_frame(10_000)
    pointers = frame.memory_usage(index=True, deep=False).sum()

    held = bench.in_memory_mb(frame) * 2**20

    assert pointers < held < pointers + 10_000  # 6 columns of 3-13 distinct values, not 60,000 strings
    assert held < frame.memory_usage(index=True, deep=True).sum() * 0.7


def test_the_search_option_reaches_the_cycles_config(tmp_path):
    config = Config.model_validate(bench.bench_config(tmp_path / "data", tmp_path / "store", search=7))
    assert config.training.search.trials == 7


def test_the_demo_search_measures_the_train_stage_tuned_against_untuned(capsys):
    from pipeline import bench_search

    result = bench_search.measure("regression", 3)

    assert (result["trials"], result["k"]) == (3, 5)
    assert 3 <= result["folds_fitted"] <= 15
    assert result["tuned_train_s"] > result["search_s"] > 0
    assert result["ratio"] == pytest.approx(result["tuned_train_s"] / (sum(result["untuned_train_s_each"]) / 2))
    # The trials were scored on the champion's three weeks; the gate compared on the newest week.
    assert result["selection_rows"] > 0 and result["compare_rows"] > 0
    bench_search.print_table([result])
    printed = capsys.readouterr().out
    assert "Search on the demos: 3 trials" in printed and "tuned / untuned" in printed
