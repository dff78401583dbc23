"""Configuration: validation errors name the key and the file; the environment overrides URIs."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from pipeline.config import load_config
from pipeline.errors import ConfigError
from tests.conftest import config_dict

ROOT = Path(__file__).parents[2]
DEMO_CONFIGS = sorted([*(ROOT / "pipeline" / "configs").glob("*.yaml"), *(ROOT / "examples").glob("*/config.yaml")])


@pytest.mark.parametrize("path", [pytest.param(p, id=p.name) for p in DEMO_CONFIGS])
def test_shipped_configs_are_valid(path):
    config = load_config(path, environ={})
    assert config.validation.suite.exists(), f"{path.name} names a suite that is not in the repo"


def _write(tmp_path, raw) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(raw if isinstance(raw, str) else yaml.safe_dump(raw))
    return path


def _with(tmp_path, section, key, value):
    raw = config_dict(tmp_path)
    raw.setdefault(section, {})[key] = value
    return raw


def _search(tmp_path, **search):
    return _with(tmp_path, "training", "search", {"trials": 5, **search})


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        pytest.param(lambda t: _with(t, "training", "familly", "xgboost"), r"training\.familly: Extra inputs", id="unknown-key"),
        pytest.param(lambda t: _with(t, "training", "family", "deep_forest"), r"training\.family: .*'deep_forest' is not one of xgboost, ", id="unknown-family"),
        pytest.param(lambda t: _with(t, "training", "family", "ridge"), r"training\.family 'ridge' does not fit a classification task", id="family-of-other-task"),
        pytest.param(lambda t: _with(t, "training", "threads", 0), r"training\.threads\.constrained-int: Input should be greater than or equal to 1", id="zero-threads"),
        pytest.param(lambda t: _with(t, "training", "threads", "all"), r"training\.threads\.literal\['auto'\]: Input should be 'auto'", id="threads-neither-auto-nor-a-number"),
        pytest.param(lambda t: _with(t, "training", "params", {"n_jobs": 2}), r"training\.params: .*'n_jobs' sets a thread count: use training\.threads", id="n-jobs-in-params"),
        pytest.param(lambda t: _with(t, "training", "params", {"nthread": 2}), r"training\.params: .*'nthread' sets a thread count: use training\.threads", id="nthread-in-params"),
        pytest.param(lambda t: _with(t, "training", "n_jobs", 2), r"training\.n_jobs was renamed training\.threads", id="renamed-n-jobs"),
        pytest.param(lambda t: _with(t, "training", "final_model", "average"), r"training\.final_model: Input should be 'refit' or 'fold_ensemble'", id="unknown-final-model"),
        pytest.param(lambda t: {**_with(t, "training", "final_model", "fold_ensemble"), "evaluation": {"split": "time"}},
                     r"'fold_ensemble' needs an evaluation\.split other than 'time'", id="fold-ensemble-of-time-split"),
        pytest.param(lambda t: _search(t, spaces={"xgboost": {"max_depth": {"type": "int", "low": 8, "high": 3}}}), r"training\.search\.spaces\.xgboost\.max_depth: Value error, low 8 must be below high 3", id="search-range-reversed"),
        pytest.param(lambda t: _search(t, spaces={"xgboost": {"learning_rate": {"type": "float", "low": 0, "high": 0.3, "log": True}}}), r"spaces\.xgboost\.learning_rate: Value error, a log-scaled range must start above 0", id="search-log-range-from-zero"),
        pytest.param(lambda t: _search(t, spaces={"xgboost": {"max_depth": {"type": "int", "low": 2.5, "high": 6}}}), r"max_depth: Value error, an int parameter needs whole low, high and step \(got 2\.5, 6, 1\)", id="search-int-range-not-whole"),
        pytest.param(lambda t: _search(t, spaces={"xgboost": {"max_depth": {"type": "int", "low": 2, "high": 6, "step": 0.5}}}), r"an int parameter needs whole low, high and step \(got 2, 6, 0\.5\)", id="search-int-step-not-whole"),
        pytest.param(lambda t: _search(t, spaces={"xgboost": {}}), r"spaces\.xgboost is empty: name at least one parameter", id="search-empty-space"),
        pytest.param(lambda t: _search(t, spaces={"xgboost": {"grow_policy": {"type": "categorical"}}}), r"grow_policy: Value error, a categorical parameter needs a non-empty `choices` list", id="search-choices-missing"),
        pytest.param(lambda t: _search(t, spaces={"xgboost": {"max_depth": {"type": "int", "choices": [3, 4]}}}), r"max_depth: Value error, an int parameter takes low and high, not `choices`", id="search-choices-on-a-range"),
        pytest.param(lambda t: _search(t, spaces={"xgboost": {"max_leaf_nodes": {"type": "int", "low": 8, "high": 64}}}), r"training\.search\.spaces: Value error, spaces\.xgboost names \['max_leaf_nodes'\], which xgboost cannot tune; its tunable parameters: n_estimators, ", id="search-param-of-another-family"),
        pytest.param(lambda t: _search(t, spaces={"catboost": {"depth": {"type": "int", "low": 2, "high": 8}}}), r"spaces names 'catboost', which is not one of xgboost, ", id="search-unknown-family"),
        pytest.param(lambda t: _search(t, spaces={"xgboost": {"n_jobs": {"type": "int", "low": 1, "high": 4}}}), r"spaces\.xgboost names \['n_jobs'\], which xgboost cannot tune", id="search-thread-count"),
        pytest.param(lambda t: _search(t, trials=-1), r"training\.search\.trials: Input should be greater than or equal to 0", id="search-negative-trials"),
        pytest.param(lambda t: _search(t, parallel=0), r"training\.search\.parallel\.constrained-int: Input should be greater than or equal to 1", id="search-no-parallel-trials"),
        pytest.param(lambda t: _search(t, pruner="hyperband"), r"training\.search\.pruner: Input should be 'halving', 'median' or 'none'", id="search-unknown-pruner"),
        pytest.param(lambda t: {**_search(t), "compute": {"engine": "dask"}}, r"training\.search runs its trials in this process: use compute\.engine 'local'", id="search-on-dask"),
        pytest.param(lambda t: _with(t, "training", "checkpoint_every_s", 0), r"training\.checkpoint_every_s: Input should be greater than 0", id="checkpoint-interval-zero"),
        pytest.param(lambda t: {**config_dict(t), "model_name": ".."}, r"model_name: String should match pattern", id="model-name-a-path"),
        pytest.param(lambda t: _with(t, "evaluation", "k", "five"), r"evaluation\.k: Input should be a valid integer", id="wrong-type"),
        pytest.param(lambda t: _with(t, "evaluation", "primary_metric", "rmse"), r"primary_metric 'rmse' is not one of", id="metric-of-other-task"),
        pytest.param(lambda t: _with(t, "gate", "floors", {"r2": 0.5}), r"gate\.floors names metrics \['r2'\]", id="floor-of-other-task"),
        pytest.param(lambda t: _with(t, "source", "query", "SELECT 1"), r"exactly one of `table` or `query`", id="table-and-query"),
        pytest.param(lambda t: _with(t, "drift", "per_feature", {"nope": {"floor": 0.2}}), r"not features: \['nope'\]", id="drift-override-of-unknown-feature"),
        pytest.param(lambda t: _with(t, "notifications", "events", ["drift_detected", "lunch"]), r"notifications\.events\.1: Input should be", id="unknown-notification-event"),
        pytest.param(lambda t: _with(t, "orchestration", "approval_timeout_hours", 0), r"orchestration\.approval_timeout_hours: Input should be greater than 0", id="approval-timeout-zero"),
        pytest.param(lambda t: _with(t, "orchestration", "scheduled_as_of", "tomorrow"), r"orchestration\.scheduled_as_of: Input should be", id="unknown-as-of-rule"),
        pytest.param(lambda t: _with(t, "orchestration", "retrain_on", "sometimes"), r"orchestration\.retrain_on: Input should be", id="unknown-retrain-rule"),
        pytest.param(lambda t: _with(t, "monitoring", "label_delay", 2), r"monitoring\.label_delay: Extra inputs", id="unknown-monitoring-key"),
        pytest.param(lambda t: _with(t, "monitoring", "degradation_margin", 0), r"monitoring\.degradation_margin: Input should be greater than 0", id="degradation-margin-zero"),
        pytest.param(lambda t: "model_name: [unclosed", r"not valid YAML", id="malformed-yaml"),
        pytest.param(lambda t: "- a\n- b\n", r"expected a mapping", id="not-a-mapping"),
    ],
)
def test_invalid_configs_name_the_key_and_the_file(tmp_path, mutate, message):
    path = _write(tmp_path, mutate(tmp_path))
    with pytest.raises(ConfigError, match=message) as caught:
        load_config(path, environ={})
    assert str(path) in str(caught.value)


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml", environ={})


def test_environment_overrides_uris(tmp_path):
    path = _write(tmp_path, config_dict(tmp_path))
    config = load_config(
        path,
        environ={
            "PIPELINE_SOURCE_URL": "postgresql://reader@db/warehouse",
            "PIPELINE_TRACKING_URI": "http://127.0.0.1:5000",
            "PIPELINE_DATABASE_URL": "sqlite:///elsewhere.db",
            "PIPELINE_STORAGE_ROOT": "s3://bucket/runs",
            "PIPELINE_MLFLOW_UI_URL": "https://mlflow.example",
        },
    )
    assert config.source.url == "postgresql://reader@db/warehouse"
    assert config.registry.tracking_uri == "http://127.0.0.1:5000"
    assert config.promotion.database_url == "sqlite:///elsewhere.db"
    assert config.storage.root == "s3://bucket/runs"
    assert config.registry.ui_url == "https://mlflow.example"


def test_orchestration_defaults_are_safe_for_real_configs(tmp_path):
    config = load_config(_write(tmp_path, config_dict(tmp_path)), environ={})
    assert config.promotion.approval == "manual"
    assert config.orchestration.approval_timeout_hours == 24 and config.orchestration.retries == 2
    assert config.orchestration.scheduled_as_of == "previous_day" and config.orchestration.retrain_on == "always"
    assert config.notifications.email_to == [] and config.notifications.webhook_conn_id is None  # off


def test_monitoring_defaults_are_relative(tmp_path):
    monitoring = load_config(_write(tmp_path, config_dict(tmp_path)), environ={}).monitoring
    assert (monitoring.label_delay_days, monitoring.degradation_margin, monitoring.alpha) == (0, 0.1, 0.01)
    assert (monitoring.blocks, monitoring.min_live_share) == (20, 0.01)


def test_regression_defaults(tmp_path):
    raw = config_dict(tmp_path, task="regression", training={"family": "ridge"})
    config = load_config(_write(tmp_path, raw), environ={})
    assert config.primary_metric == "rmse" and config.evaluation.split == "kfold"


def test_mlflow_tracking_uri_does_not_override_the_config(tmp_path):
    # mlflow.set_tracking_uri() sets MLFLOW_TRACKING_URI for the whole process: it must not leak into the next config.
    config = load_config(_write(tmp_path, config_dict(tmp_path)), environ={"MLFLOW_TRACKING_URI": "sqlite:///other.db"})
    assert config.registry.tracking_uri == f"sqlite:///{tmp_path / 'mlflow.db'}"


def test_training_queue_defaults_to_the_default_queue_and_takes_a_name(tmp_path):
    # A queue no worker listens on would leave `train` queued forever: only a config that names one routes it.
    assert load_config(_write(tmp_path, config_dict(tmp_path)), environ={}).training.queue is None
    routed = load_config(_write(tmp_path, _with(tmp_path, "training", "queue", "gpu")), environ={})
    assert routed.training.queue == "gpu"


def test_training_defaults_to_a_refit_on_every_cpu_and_takes_a_thread_count(tmp_path):
    training = load_config(_write(tmp_path, config_dict(tmp_path)), environ={}).training
    assert (training.final_model, training.threads) == ("refit", "auto")
    assert load_config(_write(tmp_path, _with(tmp_path, "training", "threads", 3)), environ={}).training.threads == 3


@pytest.mark.parametrize(
    ("sections", "message"),
    [
        pytest.param({"gate": {"floors": {"roc_auc": 1.2}}}, "cannot be met by any model", id="impossible-floor"),
        pytest.param({"gate": {"min_compare_rows": 500}, "windows": {"min_rows": 100}},
                     "no champion can ever be compared", id="absolute-rows-above-the-window"),
        pytest.param({"gate": {"min_compare_share": 0.5}, "orchestration": {"retrain_schedule": "0 2 * * 1"},
                      "windows": {"current_days": 28}}, "needs a champion 2 cycles old at a cadence of 7 days",
                     id="share-needs-an-older-champion"),
        pytest.param({"gate": {"min_improvement": 0.3}}, "would pass it at most at rate alpha",
                     id="detectable-below-the-margin"),
        pytest.param({"gate": {"blocks": 6}}, "smallest p is 2^-6", id="too-few-blocks-for-alpha"),
    ],
)
def test_a_gate_that_cannot_pass_at_its_cadence_is_a_warning_at_load_time(tmp_path, caplog, sections, message):
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config_dict(tmp_path, **sections)))
    with caplog.at_level("WARNING", logger="pipeline.config"):
        config = load_config(path, environ={})
    assert any(message in record.getMessage() and str(path) in record.getMessage() for record in caplog.records)
    assert config.gate_warnings()


def test_the_shipped_configs_gates_can_pass_at_their_cadence():
    for path in DEMO_CONFIGS:
        assert load_config(path, environ={}).gate_warnings() == [], path


@pytest.mark.parametrize(
    ("monitoring", "message"),
    [
        pytest.param({"label_delay_days": 5}, "no row of the current window is ever labelled", id="delay-covers-the-window"),
        pytest.param({"blocks": 6}, "no champion is ever called degraded", id="too-few-blocks-for-alpha"),
    ],
)
def test_a_quality_check_that_cannot_find_degradation_is_a_warning_at_load_time(tmp_path, caplog, monitoring, message):
    path = _write(tmp_path, config_dict(tmp_path, monitoring=monitoring))  # a 5-day window
    with caplog.at_level("WARNING", logger="pipeline.config"):
        config = load_config(path, environ={})
    assert any(message in record.getMessage() and str(path) in record.getMessage() for record in caplog.records)
    assert config.monitoring_warnings()


def test_the_shipped_configs_quality_checks_can_find_degradation():
    for path in DEMO_CONFIGS:
        assert load_config(path, environ={}).monitoring_warnings() == [], path


def test_a_search_space_in_the_config_replaces_the_familys_default(tmp_path):
    raw = _with(tmp_path, "training", "search", {"trials": 5, "spaces": {
        "xgboost": {"grow_policy": {"type": "categorical", "choices": ["depthwise", "lossguide"]}}}})
    search = load_config(_write(tmp_path, raw), environ={}).training.search
    assert list(search.space("xgboost")) == ["grow_policy"]
    assert "max_depth" in search.space("random_forest")  # a family the config does not name: its default space
