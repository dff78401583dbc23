"""Model families, targets and device selection."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline import train
from pipeline.config import load_config
from pipeline.errors import ConfigError, PipelineError
from pipeline.families import FAMILIES
from pipeline.metrics import metric_value
from tests.conftest import small_frame, write_config


def make_config(tmp_path, task="classification", family="xgboost", params=None, **training):
    sections = {"task": task, "training": {"family": family, "params": params or {}, **training}}
    if task == "regression":
        sections["evaluation"] = {"k": 3, "split": "kfold"}
    return load_config(write_config(tmp_path, **sections), environ={})


def regression_frame(rows=400):
    frame = small_frame(rows)
    frame["label"] = 3 * frame["x_num"] + frame["y_num"] + np.where(frame["color"] == "red", 2.0, 0.0)
    return frame


@pytest.mark.parametrize(
    ("task", "family"),
    # Every family of the table, for every task it declares: a new entry is tested without touching this file.
    [pytest.param(task, name, id=f"{name}-{task}") for name, entry in FAMILIES.items() for task in entry.tasks],
)
def test_every_family_learns_and_handles_unseen_categories(tmp_path, task, family):
    config = make_config(tmp_path, task=task, family=family)
    frame = small_frame(600) if task == "classification" else regression_frame(600)
    frame.loc[frame.sample(30, random_state=1).index, ["x_num", "color"]] = [np.nan, None]
    train_part, test_part = frame.iloc[:450], frame.iloc[450:].copy()
    model, info = train.fit_model(config, train_part, train.encode_target(config, train_part["label"]), "cpu")
    test_part.loc[test_part.index[:10], "color"] = "never-seen"
    scores = train.predict_scores(model, test_part, task)
    y = train.encode_target(config, test_part["label"])
    assert info.seconds > 0
    if task == "classification":
        assert metric_value("roc_auc", y, scores) > 0.7
    else:
        assert metric_value("r2", y, scores) > 0.6


def test_xgboost_early_stops_on_an_inner_split(tmp_path):
    config = make_config(
        tmp_path, early_stopping_rounds=5, params={"n_estimators": 500, "learning_rate": 0.3}
    )
    frame = small_frame(600)
    model, info = train.fit_model(config, frame, train.encode_target(config, frame["label"]), "cpu")
    assert info.best_iteration is not None and info.best_iteration < 499


def test_target_must_have_two_classes(tmp_path):
    config = make_config(tmp_path)
    with pytest.raises(PipelineError, match="exactly two classes.*found 3"):
        train.encode_target(config, small_frame()["color"])


def test_params_that_do_not_fit_the_family_are_a_config_error(tmp_path):
    config = make_config(tmp_path, family="random_forest", params={"no_such_param": 3})
    with pytest.raises(ConfigError, match="random_forest.*no_such_param"):
        train.build_model(config, "cpu")


# A GPU cannot exist on this machine: these tests replace gpu_visible() to exercise the decision logic.
@pytest.mark.parametrize(
    ("requested", "family", "visible", "expected"),
    [
        pytest.param("auto", "xgboost", True, "cuda", id="auto-with-gpu"),
        pytest.param("auto", "xgboost", False, "cpu", id="auto-without-gpu"),
        pytest.param("auto", "random_forest", True, "cpu", id="auto-sklearn-family-stays-on-cpu"),
        pytest.param("cpu", "xgboost", True, "cpu", id="cpu-forced"),
        pytest.param("cuda", "xgboost", True, "cuda", id="cuda-with-gpu"),
    ],
)
def test_device_resolution(tmp_path, monkeypatch, requested, family, visible, expected):
    monkeypatch.setattr(train, "gpu_visible", lambda: visible)
    assert train.resolve_device(make_config(tmp_path, family=family, device=requested)) == expected


def test_cuda_without_a_gpu_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setattr(train, "gpu_visible", lambda: False)
    with pytest.raises(PipelineError, match="no NVIDIA GPU is visible"):
        train.resolve_device(make_config(tmp_path, device="cuda"))


def test_cuda_needs_xgboost(tmp_path):
    with pytest.raises(ConfigError, match="needs training.family 'xgboost'"):
        train.resolve_device(make_config(tmp_path, family="random_forest", device="cuda"))


def test_hidden_gpus_are_not_visible(monkeypatch):
    # The real probe, unmocked: CUDA_VISIBLE_DEVICES=-1 hides every GPU, on any machine.
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "-1")
    assert train.gpu_visible() is False
