"""Model families, targets and device selection."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.preprocessing import OrdinalEncoder

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


def test_tree_encoding_gives_ordinal_encoders_codes_with_unseen_and_missing_as_nan():
    fit_rows = pd.DataFrame({"x": [1.5, np.nan, 3.0], "color": ["red", "blue", np.nan], "size": ["s", "m", "s"]})
    rows = pd.DataFrame({"x": [2.0, 0.25], "color": ["green", "red"], "size": [np.nan, "m"]})
    encoding = train.OrdinalCodes(["x"], ["color", "size"]).fit(fit_rows)
    ordinal = OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=np.nan, encoded_missing_value=np.nan)
    ordinal.fit(fit_rows[["color", "size"]])

    encoded = encoding.transform(rows)

    assert encoded.dtype == np.float32
    np.testing.assert_array_equal(encoded, [[2.0, np.nan, np.nan], [0.25, 1.0, 0.0]])
    np.testing.assert_array_equal(encoded[:, 1:], ordinal.transform(rows[["color", "size"]]))


@pytest.mark.parametrize(("task", "family", "training"), [
    pytest.param(task, name, training, id=f"{name}-{task}{'-early-stopping' if training else ''}")
    for name, entry in FAMILIES.items() if entry.ordinal_encoding for task in entry.tasks
    for training in ([{}, {"early_stopping_rounds": 5}] if entry.eval_set_early_stopping else [{}])
])
def test_a_fit_on_an_encoded_windows_rows_is_the_fit_on_those_rows(tmp_path, task, family, training):
    config = make_config(tmp_path, task=task, family=family, **training)
    frame = small_frame(600) if task == "classification" else regression_frame(600)
    frame.loc[frame.sample(30, random_state=1).index, ["x_num", "color"]] = [np.nan, None]
    frame.loc[frame.index[-40:], "color"] = "purple"  # a category the fitted rows never have
    rows, others = np.arange(0, 560, 2), np.arange(1, 600, 2)
    y = train.encode_target(config, frame["label"])
    window = train.EncodedWindow(config, frame)

    on_frame, _ = train.fit_model(config, frame.iloc[rows], y[rows], "cpu")
    on_window, _ = train.fit_model(config, window.rows(rows), y[rows], "cpu")

    expected = train.predict_scores(on_frame, frame, task, others)
    # A random forest's threads sum its trees in any order: equal to the last bits, not bit for bit.
    np.testing.assert_allclose(window.rows(others).scores(on_window, task), expected, rtol=1e-12)
    np.testing.assert_allclose(train.predict_scores(on_window, frame, task, others), expected, rtol=1e-12)


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


def test_threads_auto_are_the_cpus_the_process_may_use(tmp_path, monkeypatch):
    # joblib counts the process's affinity and cgroup quota; a container limited to 3 CPUs of 64 reports 3.
    monkeypatch.setattr(train.joblib, "cpu_count", lambda: 3)
    assert train.resolve_threads(make_config(tmp_path)) == 3
    assert train.resolve_threads(make_config(tmp_path, threads=1)) == 1


@pytest.mark.parametrize("family", [pytest.param("xgboost", id="xgboost"), pytest.param("random_forest", id="random_forest")])
def test_threads_reach_the_estimator(tmp_path, family):
    model = train.build_model(make_config(tmp_path, family=family, threads=2), "cpu")
    assert model[-1].n_jobs == 2


def test_fits_run_with_blas_and_openmp_capped_at_the_fit_threads(tmp_path):
    from threadpoolctl import threadpool_info

    with train.fit_threads(make_config(tmp_path, threads=1)) as threads:
        pools = threadpool_info()
    assert threads == 1
    assert pools and all(pool["num_threads"] == 1 for pool in pools)


def ensemble_of_folds(tmp_path, task):
    from pipeline.evaluate import fit_folds

    config = make_config(tmp_path, task=task, final_model="fold_ensemble")
    frame = small_frame(300) if task == "classification" else regression_frame(300)
    folds = fit_folds(config, frame, "cpu")
    ensemble, info = train.final_candidate(config, frame, folds.y, folds.models, "cpu")
    return config, frame, folds.models, ensemble, info


TASKS = [pytest.param("classification", id="classification"), pytest.param("regression", id="regression")]


@pytest.mark.parametrize("task", TASKS)
def test_a_fold_ensemble_predicts_the_mean_of_its_fold_models(tmp_path, task):
    config, frame, fold_models, ensemble, info = ensemble_of_folds(tmp_path, task)
    assert isinstance(ensemble, train.FoldEnsemble) and len(ensemble.models) == config.evaluation.k
    assert info.best_iteration is None and info.seconds == 0.0  # nothing was fitted
    if task == "classification":
        mean = np.mean([model.predict_proba(frame) for model in fold_models], axis=0)
        np.testing.assert_allclose(ensemble.predict_proba(frame), mean)
        np.testing.assert_array_equal(ensemble.predict(frame), (mean[:, 1] > mean[:, 0]).astype(int))
        np.testing.assert_allclose(train.predict_scores(ensemble, frame, task), mean[:, 1])
    else:
        assert not hasattr(ensemble, "predict_proba")  # like the Pipeline of a regressor
        np.testing.assert_allclose(ensemble.predict(frame), np.mean([m.predict(frame) for m in fold_models], axis=0))


@pytest.mark.parametrize("task", TASKS)
def test_a_fold_ensemble_round_trips_through_the_registrys_allow_list(tmp_path, task):
    import skops.io

    from pipeline import artifacts

    config, frame, _, ensemble, _ = ensemble_of_folds(tmp_path, task)
    assert "pipeline.train.FoldEnsemble" in artifacts.untrusted_types(ensemble)  # refused unless all are listed
    (tmp_path / "model").mkdir()
    skops.io.dump(ensemble, tmp_path / "model" / artifacts.MODEL_FILE)
    loaded = artifacts.load_model_file(tmp_path / "model", config.model_name, "1")
    assert isinstance(loaded, train.FoldEnsemble)
    np.testing.assert_array_equal(train.predict_scores(loaded, frame, task), train.predict_scores(ensemble, frame, task))


def test_refit_fits_one_model_on_every_row(tmp_path):
    config = make_config(tmp_path)
    frame = small_frame(300)
    y = train.encode_target(config, frame["label"])
    model, info = train.final_candidate(config, frame, y, [], "cpu")
    on_every_row, _ = train.fit_model(config, frame, y, "cpu")
    assert not isinstance(model, train.FoldEnsemble) and info.seconds > 0
    np.testing.assert_allclose(train.predict_scores(model, frame, "classification"),
                               train.predict_scores(on_every_row, frame, "classification"))


def test_a_fold_ensemble_without_its_fold_models_is_refused(tmp_path):
    config = make_config(tmp_path, final_model="fold_ensemble")
    frame = small_frame(300)
    with pytest.raises(PipelineError, match="needs the 3 fold models, got 0"):
        train.final_candidate(config, frame, train.encode_target(config, frame["label"]), [], "cpu")


@pytest.mark.parametrize(
    "rows",
    [pytest.param(None, id="every-row"), pytest.param("mask", id="a-mask"), pytest.param("positions", id="positions"),
     pytest.param("none-chosen", id="no-row")],
)
def test_scores_in_chunks_equal_the_scores_of_the_rows_at_once(tmp_path, monkeypatch, rows):
    config, frame, _, ensemble, _ = ensemble_of_folds(tmp_path, "classification")
    chosen = {None: None, "mask": np.arange(len(frame)) % 3 == 0, "positions": np.array([5, 2, 250, 17]),
              "none-chosen": np.zeros(len(frame), dtype=bool)}[rows]
    subset = frame if chosen is None else frame.iloc[np.flatnonzero(chosen) if chosen.dtype == bool else chosen]
    expected = ensemble.predict_proba(subset)[:, 1] if len(subset) else np.array([])
    monkeypatch.setattr(train, "SCORED_ROWS_AT_ONCE", 7)
    np.testing.assert_allclose(train.predict_scores(ensemble, frame, "classification", chosen), expected)
