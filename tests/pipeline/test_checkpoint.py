"""Checkpointed fits: a fit stopped part-way resumes from its last checkpoint and ends with the uninterrupted model.

The last test kills a real `pipeline train` process with SIGKILL in the middle of its final fit.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import joblib
import numpy as np
import pandas as pd
import pytest

from pipeline import checkpoint, train
from pipeline.config import load_config
from pipeline.storage import RunStorage
from tests.conftest import small_frame, write_config
from tests.pipeline.test_cycle_reruns import AS_OF, CYCLE_ID, make_store, pipeline_command, run


class Interrupted(Exception):
    """Stands in for the process dying: raised by a checkpoint save, after the file is written."""


def long_config(tmp_path: Path, **params):
    """XGBoost with a slow learning rate and patient early stopping: hundreds of rounds to stop part-way through."""
    return load_config(write_config(tmp_path, training={
        "family": "xgboost", "params": {"n_estimators": 400, "max_depth": 4, "learning_rate": 0.03, **params},
        "early_stopping_rounds": 60}), environ={})


def scores_of(model, frame: pd.DataFrame) -> np.ndarray:
    return train.predict_scores(model, frame, "classification")


def fit_interrupted(config, frame, y, saved: checkpoint.FitCheckpoint, after_saves: int, monkeypatch) -> None:
    save, count = checkpoint.FitCheckpoint.save, {"saves": 0}

    def save_then_die(self, booster, finished, early_stopping):
        save(self, booster, finished, early_stopping)
        count["saves"] += 1
        if count["saves"] == after_saves:
            raise Interrupted

    with monkeypatch.context() as patched:
        patched.setattr(checkpoint.FitCheckpoint, "save", save_then_die)
        with pytest.raises(Interrupted):
            train.fit_model(config, frame, y, "cpu", saved)


@pytest.fixture
def window():
    frame = small_frame(3000, days=10)
    return frame, frame["label"].to_numpy()


def checkpoints(tmp_path: Path, every_s: float = 0.0) -> checkpoint.Checkpoints:
    return checkpoint.Checkpoints(RunStorage(str(tmp_path / "runs"), "test_model", "cycle"), every_s, {"window": "w"})


def test_a_fit_stopped_part_way_resumes_to_the_uninterrupted_model(tmp_path, window, monkeypatch):
    frame, y = window
    config = long_config(tmp_path)
    uninterrupted, info = train.fit_model(config, frame, y, "cpu")
    saved = checkpoints(tmp_path).of("final")
    fit_interrupted(config, frame, y, saved, after_saves=40, monkeypatch=monkeypatch)
    assert saved.load().rounds == 40 and not saved.load().finished

    resumed, resumed_info = train.fit_model(config, frame, y, "cpu", saved)

    assert resumed_info.resumed_rounds == 40
    assert resumed_info.best_iteration == info.best_iteration
    assert np.array_equal(scores_of(resumed, frame), scores_of(uninterrupted, frame))
    # The fitted estimator keeps its settings, not the fit's callbacks.
    assert resumed[-1].get_params()["callbacks"] is None and resumed[-1].get_params()["n_estimators"] == 400


def test_a_finished_fit_is_loaded_not_fitted_again(tmp_path, window):
    frame, y = window
    config = long_config(tmp_path)
    saved = checkpoints(tmp_path, every_s=3600).of("final")
    first, _ = train.fit_model(config, frame, y, "cpu", saved)
    again, info = train.fit_model(config, frame, y, "cpu", saved)
    assert info.resumed_rounds == first[-1].get_booster().num_boosted_rounds()
    assert np.array_equal(scores_of(again, frame), scores_of(first, frame))


@pytest.mark.parametrize("params", [
    pytest.param({"subsample": 0.7}, id="row-sampling"),
    pytest.param({"colsample_bytree": 0.7}, id="column-sampling"),
])
def test_a_fit_that_samples_starts_over_rather_than_resume_to_another_model(tmp_path, window, monkeypatch, params):
    """XGBoost keeps no random state in a checkpoint: resumed, a sampling fit would draw other rows or columns."""
    frame, y = window
    config = long_config(tmp_path, **params)
    uninterrupted, _ = train.fit_model(config, frame, y, "cpu")
    saved = checkpoints(tmp_path).of("final")
    fit_interrupted(config, frame, y, saved, after_saves=40, monkeypatch=monkeypatch)

    again, info = train.fit_model(config, frame, y, "cpu", saved)

    assert info.resumed_rounds == 0
    assert np.array_equal(scores_of(again, frame), scores_of(uninterrupted, frame))


def test_a_checkpoint_of_other_settings_is_never_resumed(tmp_path, window, monkeypatch):
    frame, y = window
    config = long_config(tmp_path)
    fit_interrupted(config, frame, y, checkpoints(tmp_path).of("final"), after_saves=40, monkeypatch=monkeypatch)
    other = checkpoint.Checkpoints(RunStorage(str(tmp_path / "runs"), "test_model", "cycle"), 0.0, {"window": "other"})
    _, info = train.fit_model(config, frame, y, "cpu", other.of("final"))
    assert info.resumed_rounds == 0


def test_a_train_task_killed_in_its_final_fit_resumes_it_and_ends_with_the_same_model(tmp_path):
    """A real `pipeline train` is SIGKILLed once its final fit has checkpointed; run again, the same cycle resumes the
    fit (and loads the finished folds) and registers what an uninterrupted fit makes."""
    # Two folds of the same long fits before the final one: the folds' finished checkpoints are loaded on the re-run.
    config_path = make_store(tmp_path, training={
        "params": {"n_estimators": 1500, "max_depth": 5, "learning_rate": 0.01}, "early_stopping_rounds": 400,
        "checkpoint_every_s": 0.05}, evaluation={"k": 2})
    config = load_config(config_path, environ={})
    run_dir = Path(config.storage.root) / config.model_name / CYCLE_ID
    process = subprocess.Popen(pipeline_command(config_path, "train", "--as-of", AS_OF), stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    for line in process.stderr:
        if "[train] final fit" in line:
            break
    saved = run_dir / "checkpoint-final.json"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        recorded = json.loads(saved.read_text()) if saved.exists() else {"rounds": 0, "finished": False}
        assert not recorded["finished"], "the final fit ended before it could be killed"
        if recorded["rounds"] >= 100:
            break
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=60)
    assert process.returncode == -signal.SIGKILL
    killed_at = json.loads(saved.read_text())["rounds"]
    assert not json.loads(saved.read_text())["finished"]

    again = run(config_path, "train", "--as-of", AS_OF)

    assert again.returncode == 0, again.stderr
    assert f"final fit resumed from its checkpoint at round {killed_at}" in again.stderr
    assert "fold 2: resumed from its checkpoint" in again.stderr
    frame = pd.read_parquet(run_dir / "current.parquet")
    y = train.encode_target(config, frame["label"])
    uninterrupted, _ = train.fit_model(config, frame, y, "cpu")
    candidate = joblib.load(run_dir / "candidate.joblib")
    assert np.array_equal(scores_of(candidate, frame), scores_of(uninterrupted, frame))
