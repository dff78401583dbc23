"""k-fold evaluation: splits, metrics, and the champion scored on exactly the candidate's unseen rows."""

from __future__ import annotations

from datetime import date

import numpy as np
import pytest

from pipeline.config import load_config
from pipeline.errors import PipelineError
from pipeline.evaluate import Champion, evaluate_kfold, fold_indices, unseen_by_champion
from pipeline.train import build_model, encode_target
from tests.conftest import small_frame, write_config


def make_config(tmp_path, split="stratified", k=3):
    sections = {"training": {"family": "logistic_regression", "params": {}}, "evaluation": {"k": k, "split": split}}
    return load_config(write_config(tmp_path, **sections), environ={})


@pytest.mark.parametrize("split", [pytest.param("stratified", id="stratified"), pytest.param("kfold", id="kfold")])
def test_shuffled_splits_cover_every_row_once(tmp_path, split):
    config, frame = make_config(tmp_path, split, k=4), small_frame(400)
    y = encode_target(config, frame["label"])
    tests = [test for _, test in fold_indices(config, frame, y)]
    assert len(tests) == 4
    assert sorted(np.concatenate(tests).tolist()) == list(range(400))
    if split == "stratified":
        rates = [y[t].mean() for t in tests]
        assert max(rates) - min(rates) < 0.03


def test_days_split_keeps_each_day_in_one_fold(tmp_path):
    config, frame = make_config(tmp_path, "days", k=4), small_frame(400, days=10)
    folds = list(fold_indices(config, frame, encode_target(config, frame["label"])))
    days = frame["ts"].dt.normalize().to_numpy()
    assert sorted(np.concatenate([test for _, test in folds]).tolist()) == list(range(400))
    for train, test in folds:
        assert not set(days[train]) & set(days[test])


def test_days_split_needs_k_days(tmp_path):
    config, frame = make_config(tmp_path, "days", k=4), small_frame(100, days=3)
    with pytest.raises(PipelineError, match="needs at least k=4 days of rows, the window has 3"):
        list(fold_indices(config, frame, encode_target(config, frame["label"])))


def test_time_split_tests_on_the_future(tmp_path):
    config, frame = make_config(tmp_path, "time", k=3), small_frame(400).sample(frac=1, random_state=0)
    ts = frame["ts"].to_numpy()
    folds = list(fold_indices(config, frame, encode_target(config, frame["label"])))
    assert len(folds) == 3
    for train, test in folds:
        assert ts[train].max() <= ts[test].min()
    assert [len(train) for train, _ in folds] == sorted(len(train) for train, _ in folds)


def test_champion_is_judged_only_on_rows_outside_its_training_window(tmp_path):
    config = make_config(tmp_path)
    frame = small_frame(900, days=10)
    old = frame[frame["ts"] < "2026-01-04"]
    champion_model = build_model(config, "cpu").fit(old, encode_target(config, old["label"]))
    champion = Champion("1", champion_model, date(2026, 1, 1), date(2026, 1, 3))
    unseen = unseen_by_champion(config, frame, champion)
    assert unseen.sum() == (frame["ts"] >= "2026-01-04").sum()

    result, compared = evaluate_kfold(config, frame, "cpu", champion)
    assert len(compared) == unseen.sum() and set(compared.fold) <= {1, 2, 3}
    assert result.champion_version == "1" and result.champion_window == "2026-01-01..2026-01-03"
    assert sum(f.compare_rows for f in result.folds) == unseen.sum()
    for fold in result.folds:
        assert fold.candidate_compare is not None and fold.champion_compare is not None
        assert 0.5 < fold.champion_compare <= 1 and 0.5 < fold.candidate_compare <= 1
    assert set(result.metric_means) == {"roc_auc", "log_loss", "f1"}
    assert result.primary_mean == pytest.approx(np.mean([f.metrics["roc_auc"] for f in result.folds]))


def test_without_a_champion_nothing_is_compared(tmp_path):
    result, compared = evaluate_kfold(make_config(tmp_path), small_frame(300), "cpu")
    assert compared is None
    assert result.champion_version is None
    assert all(f.compare_rows == 0 and f.champion_compare is None for f in result.folds)


def test_the_previous_champion_and_a_rolled_back_version_are_scored_beside_the_candidate(tmp_path):
    from pipeline import promote
    from pipeline.approval import decide_version, reviewer_decision
    from pipeline.cycle import run_cycle
    from pipeline.record import EARLIER_VERSIONS
    from tests.conftest import label_flip_store

    config = label_flip_store(tmp_path)
    for day in (date(2026, 1, 10), date(2026, 1, 20)):  # v1 before the labels flipped, v2 after
        decide_version(config, run_cycle(config, day).version.version, reviewer_decision(True, "alice", "cli"))

    # Champion v2, previous champion v1; the days between, which neither trained on.
    between = run_cycle(config, date(2026, 1, 15), cycle_id="test_model-between-1")
    after_promotion = between.cycle.read(EARLIER_VERSIONS)
    promote.rollback(config, actor="bob", reason="try it")
    after_rollback = run_cycle(config, date(2026, 1, 15), cycle_id="test_model-between-2").cycle.read(EARLIER_VERSIONS)

    [v1] = [v for v in after_promotion.versions if v.version == "1"]
    # Neither champion v2 nor v1 trained on these days: v1 is judged on every row the gate compared.
    assert (v1.role, v1.rows) == ("previous champion", between.verdict.compare_rows)
    assert v1.version_value < 0.5 < v1.candidate_value  # the flipped labels: v1 is worse than chance on them
    assert "2" not in {v.version for v in after_promotion.versions}  # the champion is the gate's comparison
    # After the rollback v2 is no champion of any kind, and still shows how it did on the same rows.
    [v2] = [v for v in after_rollback.versions if v.version == "2"]
    assert v2.role == "earlier version" and v2.version_value > 0.5 and v2.rows > 0
    assert "1" not in {v.version for v in after_rollback.versions}
    # What the reviewer reads of it.
    from pipeline.record import CycleOutcome
    from pipeline.review import approval_body

    body = approval_body(CycleOutcome.read(between.cycle))
    assert "### Earlier versions beside the candidate, on the compared rows neither trained on" in body
    assert f"| v1 | previous champion | {v1.rows:,} | {v1.version_value:.4f} | {v1.candidate_value:.4f} |" in body
