"""Permutation importance: each model's reliance on a feature, on the same rows neither trained on."""

from __future__ import annotations

from datetime import date

import numpy as np
import pandas as pd
import pytest

from pipeline.config import load_config
from pipeline.evaluate import Champion, compared_rows, fit_folds, review_scores
from pipeline.importance import draw_donors, probe_rows, shuffled_frame
from pipeline.train import build_model, encode_target
from tests.conftest import write_config


def make_config(tmp_path, importance_rows=5000):
    sections = {"training": {"family": "logistic_regression", "params": {}},
                "evaluation": {"k": 3, "importance_rows": importance_rows}}
    return load_config(write_config(tmp_path, **sections), environ={})


def label_on(frame: pd.DataFrame, weights: dict[str, float], seed: int) -> pd.DataFrame:
    """The label made to depend on the weighted features only."""
    rng = np.random.default_rng(seed)
    logit = sum(weight * (frame[name] - frame[name].mean()) / frame[name].std() for name, weight in weights.items())
    return frame.assign(label=(rng.random(len(frame)) < 1 / (1 + np.exp(-logit))).astype(int))


def window(rows: int, start: str, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    ts = pd.Timestamp(start) + pd.to_timedelta(rng.integers(0, 5 * 86400, size=rows), unit="s")
    return pd.DataFrame({"id": np.arange(rows), "ts": ts, "x_num": rng.normal(size=rows),
                         "y_num": rng.normal(5, 2, size=rows), "color": rng.choice(["red", "green", "blue"], rows),
                         "label": 0}).sort_values("ts", ignore_index=True)


def test_the_feature_each_model_relies_on_is_the_one_shuffling_hurts(tmp_path):
    config = make_config(tmp_path)
    old = label_on(window(1500, "2026-01-01", 1), {"y_num": 3}, 1)  # the champion learnt y_num only
    current = label_on(window(1500, "2026-01-08", 2), {"x_num": 3, "y_num": 1.5}, 2)  # x_num now matters most
    champion = Champion("1", build_model(config, "cpu").fit(old, encode_target(config, old["label"])),
                        date(2026, 1, 1), date(2026, 1, 5))

    candidate = fit_folds(config, current, "cpu")
    importance = review_scores(config, current, candidate, champion, "cycle").importance

    assert importance is not None and importance.metric == "roc_auc"
    assert importance.rows == compared_rows(config, current, candidate, champion).sum() == 1500
    by_name = {f.feature: f for f in importance.features}
    assert by_name["x_num"].candidate > 0.15 and abs(by_name["x_num"].champion) < 0.02
    assert by_name["y_num"].champion > 0.05 and by_name["y_num"].candidate > 0.05
    assert abs(by_name["color"].candidate) < 0.02 and abs(by_name["color"].champion) < 0.02
    assert importance.top_changes(1)[0].feature == "x_num"
    assert importance.rank("x_num", "candidate") == 1 and importance.rank("y_num", "champion") == 1
    assert "shuffled" in importance.method and "roc_auc" in importance.method


def test_the_probe_is_a_seeded_sample_of_held_out_rows_shuffled_within_each_fold(tmp_path):
    config = make_config(tmp_path, importance_rows=40)
    fold_of_row = np.repeat([0, 1, 2, 3], 30)  # the first 30 rows held out by no fold (a time split's first block)
    rows = probe_rows(config, fold_of_row)
    assert len(rows) == 40 and (fold_of_row[rows] > 0).all()
    assert np.array_equal(rows, probe_rows(config, fold_of_row))
    assert np.array_equal(np.unique(probe_rows(make_config(tmp_path, importance_rows=500), fold_of_row)),
                          np.arange(30, 120))

    fold = fold_of_row[rows]
    donors = draw_donors(config, fold)
    assert donors.shape == (3, 40)
    for feature in donors:
        assert sorted(feature.tolist()) == list(range(40))
        assert (fold[feature] == fold).all()


def test_a_shuffled_column_keeps_its_values_and_its_dtype(tmp_path):
    config = make_config(tmp_path)
    frame = window(20, "2026-01-01", 3).astype({"color": "category"})
    donors = draw_donors(config, np.ones(20, dtype=int))
    members = np.arange(5, 15)
    shuffled = shuffled_frame(config, frame, donors, members)
    assert len(shuffled) == 3 * len(members)
    assert shuffled["color"].dtype == "category"
    for feature, name in enumerate(config.source.features.all):
        block = shuffled.iloc[feature * len(members):(feature + 1) * len(members)]
        assert block[name].tolist() == frame[name].iloc[donors[feature, members]].tolist()
        others = [n for n in config.source.features.all if n != name]
        assert block[others].reset_index(drop=True).equals(frame[others].iloc[members].reset_index(drop=True))


@pytest.mark.parametrize("importance_rows", [pytest.param(0, id="turned-off"), pytest.param(5000, id="no-champion")])
def test_no_importance_without_a_champion_or_probe(tmp_path, importance_rows):
    config = make_config(tmp_path, importance_rows)
    current = label_on(window(600, "2026-01-08", 2), {"x_num": 3}, 2)
    candidate = fit_folds(config, current, "cpu")
    champion = None if importance_rows else Champion(
        "1", build_model(config, "cpu").fit(current, encode_target(config, current["label"])),
        date(2026, 1, 1), date(2026, 1, 5))
    assert review_scores(config, current, candidate, champion, "cycle").importance is None
