"""The dask engine, run for real on a LocalCluster of 2 thread workers, against the local engine on the same data."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import date
from pathlib import Path

import joblib
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from sklearn.model_selection import train_test_split

from pipeline import distributed
from pipeline.config import load_config
from pipeline.errors import ConfigError
from pipeline.record import CANDIDATE, EARLIER_VERSIONS, EVIDENCE, IMPORTANCE
from tests.conftest import label_flip_store, small_frame, write_config
from tests.pipeline.test_data import database_url, mixed_frame  # noqa: F401 (fixtures)

DASK = {"engine": "dask", "dask": {"n_workers": 2, "threads_per_worker": 1, "processes": False}}
# xgboost.dask sketches quantiles per worker, so its splits differ a little from one process's.
KFOLD_TOLERANCE = 0.03


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """One LocalCluster for the module: every session inside it shares its client."""
    config = load_config(write_config(tmp_path_factory.mktemp("cluster"), compute=DASK), environ={})
    with distributed.session(config) as client:
        yield client


def test_dask_engine_needs_the_xgboost_family(tmp_path):
    path = write_config(tmp_path, compute={"engine": "dask"}, training={"family": "random_forest", "params": {}})
    with pytest.raises(ConfigError, match="compute.engine 'dask' trains with xgboost.dask"):
        load_config(path, environ={})


def test_the_dask_engine_refuses_a_fold_ensemble(tmp_path):
    path = write_config(tmp_path, compute={"engine": "dask"}, training={"final_model": "fold_ensemble"})
    with pytest.raises(ConfigError, match="compute.engine 'dask' registers a refit on the whole window"):
        load_config(path, environ={})


def test_scheduler_address_comes_from_the_environment(tmp_path):
    config = load_config(write_config(tmp_path, compute={"engine": "dask"}),
                         environ={"PIPELINE_DASK_SCHEDULER_ADDRESS": "tcp://dask-scheduler:8786"})
    assert config.compute.dask.scheduler_address == "tcp://dask-scheduler:8786"
    assert load_config(write_config(tmp_path), environ={}).compute.engine == "local"


@pytest.mark.parametrize("split", [pytest.param(s, id=s) for s in ("stratified", "days", "time")])
def test_fit_roles_pick_the_local_paths_folds_and_early_stopping_rows(tmp_path, split):
    from pipeline.evaluate import fold_indices

    config = load_config(write_config(tmp_path, evaluation={"k": 3, "split": split}), environ={})
    frame = small_frame(600)
    y = frame["label"].to_numpy()
    folds, roles = distributed.fit_roles(config, frame[["ts", "label"]], y)
    for number, (train, test) in enumerate(fold_indices(config, frame, y), start=1):
        assert set(np.flatnonzero(folds == number)) == set(test)
        # What fit_model carves from the fold's rows for early stopping.
        _, validation = train_test_split(frame.iloc[train], test_size=config.training.validation_fraction,
                                         random_state=config.training.seed, stratify=y[train])
        assert set(np.flatnonzero(roles[:, number] == distributed.VALIDATION)) == set(validation.index)
        assert set(np.flatnonzero(roles[:, number] != distributed.NOT_IN_FIT)) == set(train)
    assert (roles[:, 0] != distributed.NOT_IN_FIT).all()


def test_merged_moments_give_the_windows_standard_deviation():
    values = np.random.default_rng(1).normal(1e6, 3.0, size=1000)
    merged = distributed.Moments.of(values[:10])
    for part in np.array_split(values[10:], 7):
        merged = merged.merge(distributed.Moments.of(part))
    assert merged.count == 1000 and merged.low == values.min() and merged.high == values.max()
    assert merged.std == pytest.approx(np.std(values), rel=1e-10)


@pytest.mark.parametrize("null_column", [pytest.param(False, id="per-day"), pytest.param(True, id="null-column-read-whole")])
@pytest.mark.parametrize("reader", [pytest.param("auto", id="arrow"), pytest.param("sqlalchemy", id="sqlalchemy")])
def test_the_workers_snapshot_gives_the_local_snapshot_and_sha256(cluster, tmp_path, database_url, reader, null_column):  # noqa: F811
    import sqlalchemy as sa

    from pipeline.data import WindowSpec, snapshot_window

    engine = sa.create_engine(database_url)
    mixed_frame(null_column).to_sql("events", engine, index=False)  # one day's integers have nulls: float64 there
    engine.dispose()
    config = load_config(write_config(tmp_path, source={"url": database_url, "reader": reader, "read_chunk_rows": 50},
                                      compute=DASK), environ={})
    window = WindowSpec("current", date(2026, 1, 1), date(2026, 1, 6))  # its last day has no rows
    local = snapshot_window(config.source, window, tmp_path / "local.parquet")
    parts = tmp_path / "current.days"
    on_cluster = distributed.snapshot_on_cluster(config, window, tmp_path / "dask.parquet", str(parts))

    assert on_cluster == local
    assert not parts.exists()
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "dask.parquet"), pd.read_parquet(tmp_path / "local.parquet"))
    if reader == "auto" and not null_column:
        assert pq.ParquetFile(tmp_path / "dask.parquet").metadata.num_row_groups == 5  # a row group per day


def _snapshot(frame: pd.DataFrame, path: Path) -> tuple[str, date, date]:
    frame.to_parquet(path, index=False)
    return str(path), frame["ts"].min().date(), frame["ts"].max().date()


def test_drift_on_the_cluster_gives_the_local_scores_and_verdict(cluster, tmp_path):
    from pipeline.drift import _sample, detect_drift

    config = load_config(write_config(tmp_path, drift={"sample_rows": 500}), environ={})
    reference = small_frame(3000, seed=1, start="2026-01-01")
    current = small_frame(3000, seed=2, start="2026-01-11")
    current["y_num"] += 1.0  # half a standard deviation
    current.loc[current.index % 7 == 0, "color"] = None
    current.loc[current.index % 5 == 0, "x_num"] = np.nan
    snapshots = {"reference": _snapshot(reference, tmp_path / "reference.parquet"),
                 "current": _snapshot(current, tmp_path / "current.parquet")}

    local = detect_drift(config, reference, current, tmp_path / "local.html")
    on_cluster = distributed.detect_drift_on_cluster(config, snapshots, tmp_path / "dask.html")

    assert on_cluster.dataset_drift == local.dataset_drift is True
    assert (on_cluster.reference_rows, on_cluster.current_rows) == (local.reference_rows, local.current_rows)
    for theirs, ours in zip(local.features, on_cluster.features, strict=True):
        assert (ours.feature, ours.status, ours.drifted) == (theirs.feature, theirs.status, theirs.drifted)
        assert ours.score == pytest.approx(theirs.score, abs=1e-9)
        assert ours.p_value == pytest.approx(theirs.p_value, rel=1e-6, abs=1e-12)
    assert [f.feature for f in on_cluster.features if f.drifted] == ["y_num", "color"]
    assert "Pipeline verdict: dataset drift DETECTED" in (tmp_path / "dask.html").read_text(encoding="utf-8")
    # Evidently is shown the very rows the local path samples.
    summary = distributed._summarise(cluster, distributed.Partitions.of(*snapshots["current"][:1], "ts",
                                                                           *snapshots["current"][1:]).frame(),
                                     ["x_num", "y_num"], ["color"])
    sampled = distributed._report_sample(cluster, summary, ["x_num", "y_num", "color"], 500, config.training.seed)
    pd.testing.assert_frame_equal(sampled, _sample(current, ["x_num", "y_num", "color"], 500, config.training.seed))


def _two_cycles(root: Path, compute: dict | None = None):
    """A champion trained as of 01-10 and approved, then a cycle as of 01-20 after the labels flipped."""
    from pipeline.approval import decide_version, reviewer_decision
    from pipeline.config import Compute, Training
    from pipeline.cycle import run_cycle

    # The store's family is a linear model; the dask engine is xgboost's.
    config = label_flip_store(root).model_copy(update={
        "training": Training(family="xgboost", params={"n_estimators": 30, "max_depth": 3}),
        "compute": Compute.model_validate(compute or {})})
    first = run_cycle(config, date(2026, 1, 10))
    decide_version(config, first.version.version, reviewer_decision(True, "alice", "cli"))
    return config, run_cycle(config, date(2026, 1, 20))


@pytest.fixture(scope="module")
def engines(cluster, tmp_path_factory):
    return {"local": _two_cycles(tmp_path_factory.mktemp("local")),
            "dask": _two_cycles(tmp_path_factory.mktemp("dask"), compute=DASK)}


def test_the_dask_cycle_reaches_the_local_cycles_verdicts(engines):
    (_, local), (_, on_cluster) = engines["local"], engines["dask"]
    assert on_cluster.status == local.status
    assert on_cluster.drift.dataset_drift == local.drift.dataset_drift
    assert [f.score for f in on_cluster.drift.features] == pytest.approx([f.score for f in local.drift.features])
    assert on_cluster.verdict.passed is local.verdict.passed is True
    assert on_cluster.verdict.compare_rows == local.verdict.compare_rows
    ours, theirs = on_cluster.evaluation, local.evaluation
    assert (ours.rows, ours.k, [f.test_rows for f in ours.folds]) == (theirs.rows, theirs.k, [f.test_rows for f in theirs.folds])
    for metric in ("roc_auc", "f1"):
        assert ours.metric_means[metric] == pytest.approx(theirs.metric_means[metric], abs=KFOLD_TOLERANCE)
    assert ours.metric_means["log_loss"] == pytest.approx(theirs.metric_means["log_loss"], rel=0.1)
    assert on_cluster.verdict.improvement == pytest.approx(local.verdict.improvement, abs=0.1)


def test_the_registered_dask_model_loads_and_predicts_without_dask(engines, tmp_path):
    config, outcome = engines["dask"]
    frame = small_frame(50, seed=5)
    frame.to_parquet(tmp_path / "rows.parquet")
    script = f"""
import sys
for name in ("dask", "distributed"):
    sys.modules[name] = None  # an import of either fails
import json, mlflow, pandas as pd
mlflow.set_tracking_uri({config.registry.tracking_uri!r})
model = mlflow.sklearn.load_model("models:/{config.model_name}/{outcome.version.version}")
print(type(model[-1]).__name__, json.dumps(model.predict_proba(pd.read_parquet({str(tmp_path / 'rows.parquet')!r}))[:, 1].tolist()))
"""
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    name, scores = run.stdout.strip().splitlines()[-1].split(" ", 1)
    assert name == "XGBClassifier"
    candidate = joblib.load(outcome.cycle.local_path(CANDIDATE))
    assert json.loads(scores) == pytest.approx(candidate.predict_proba(frame)[:, 1].tolist(), abs=1e-6)


def test_feature_importance_on_the_cluster_matches_the_local_engines(engines):
    (_, local), (_, on_cluster) = engines["local"], engines["dask"]
    theirs, ours = (outcome.cycle.read(IMPORTANCE) for outcome in (local, on_cluster))
    # The same probe rows (the same folds, the same seed), the same shuffles; fold models within xgboost.dask's sketch.
    assert ours.rows == theirs.rows == min(local.verdict.compare_rows, local.cycle.config.evaluation.importance_rows)
    assert [f.feature for f in ours.features] == [f.feature for f in theirs.features]
    for mine, other in zip(ours.features, theirs.features, strict=True):
        assert mine.candidate == pytest.approx(other.candidate, abs=KFOLD_TOLERANCE)
        assert mine.champion == pytest.approx(other.champion, abs=KFOLD_TOLERANCE)
    assert on_cluster.cycle.read(EVIDENCE).importance == ours


def test_earlier_versions_are_scored_on_the_cluster(engines):
    """Runs last: it promotes the dask store's v2, so that v1 becomes its previous champion."""
    from pipeline.approval import decide_version, reviewer_decision
    from pipeline.cycle import run_cycle

    config, second = engines["dask"]
    decide_version(config, second.version.version, reviewer_decision(True, "alice", "cli"))
    between = run_cycle(config, date(2026, 1, 15), cycle_id="test_model-between")
    [v1] = between.cycle.read(EARLIER_VERSIONS).versions
    assert (v1.version, v1.role, v1.rows) == ("1", "previous champion", between.verdict.compare_rows)
    assert v1.version_value < 0.5 < v1.candidate_value  # v1 learnt the labels before they flipped
