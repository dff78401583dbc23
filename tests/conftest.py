"""Shared fixtures: small frames and a config pointing every store into a temporary folder."""

from __future__ import annotations

import atexit
import shutil
import tempfile
import uuid
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
import yaml

from pipeline.config import Config, load_config

FEATURES_NUMERIC = ["x_num", "y_num"]
FEATURES_CATEGORICAL = ["color"]


def small_frame(rows: int = 400, seed: int = 0, start: str = "2026-01-01", days: int = 10) -> pd.DataFrame:
    """A tiny classification frame whose label depends on the features (so models learn something)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=rows)
    y = rng.normal(loc=5, scale=2, size=rows)
    color = rng.choice(["red", "green", "blue"], size=rows)
    logit = 1.5 * x - 0.4 * (y - 5) + np.where(color == "red", 0.8, 0.0)
    label = (rng.random(rows) < 1 / (1 + np.exp(-logit))).astype(int)
    ts = pd.Timestamp(start) + pd.to_timedelta(rng.integers(0, days * 86400, size=rows), unit="s")
    return pd.DataFrame(
        {"id": np.arange(rows), "ts": ts, "x_num": x, "y_num": y, "color": color, "label": label}
    ).sort_values("ts", ignore_index=True)


def config_dict(tmp_path: Path, suite: Path | None = None, **sections) -> dict:
    """A valid config as a dict; ``sections`` replace or extend top-level sections."""
    raw = {
        "model_name": "test_model",
        "task": "classification",
        "source": {
            "url": f"sqlite:///{tmp_path / 'warehouse.db'}",
            "table": "events",
            "timestamp_column": "ts",
            "target_column": "label",
            "key_column": "id",
            "features": {"numeric": list(FEATURES_NUMERIC), "categorical": list(FEATURES_CATEGORICAL)},
        },
        "windows": {"current_days": 5, "initial_reference_days": 5, "min_rows": 10},
        "validation": {"suite": str(suite or tmp_path / "suite.json")},
        "training": {"params": {"n_estimators": 30, "max_depth": 3}},
        "evaluation": {"k": 3},
        "registry": {"tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}", "artifact_root": str(tmp_path / "artifacts")},
        "promotion": {"approval": "manual", "database_url": f"sqlite:///{tmp_path / 'pipeline.db'}"},
        "storage": {"root": str(tmp_path / "runs")},
    }
    for section, value in sections.items():
        if isinstance(value, dict) and isinstance(raw.get(section), dict):
            raw[section] = {**raw[section], **value}
        else:
            raw[section] = value
    return raw


_TEMPLATE_DIR = Path(tempfile.mkdtemp(prefix="mlflow-template-"))
atexit.register(shutil.rmtree, _TEMPLATE_DIR, ignore_errors=True)


def migrated_mlflow_store(target: Path) -> None:
    """Copy an already migrated MLflow SQLite store: migrating a fresh one costs seconds per test."""
    template = _TEMPLATE_DIR / "mlflow.db"
    if not template.exists():
        from mlflow import MlflowClient

        MlflowClient(tracking_uri=f"sqlite:///{template}").search_experiments()
    shutil.copyfile(template, target)


def write_config(tmp_path: Path, **sections) -> Path:
    if not (tmp_path / "mlflow.db").exists():
        migrated_mlflow_store(tmp_path / "mlflow.db")
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config_dict(tmp_path, **sections)))
    return path


def label_flip_store(root: Path, **sections) -> Config:
    """A warehouse of 20 days whose label relation flips on 01-11, a fast config and its suite.

    A cycle as of 01-20 then beats a champion from 01-10 on the rows it has not seen.
    """
    import sqlalchemy as sa

    from pipeline.validate import propose_suite, write_suite

    frame = small_frame(3000, days=20)
    flipped = frame["ts"] >= "2026-01-11"
    frame.loc[flipped, "label"] = 1 - frame.loc[flipped, "label"]
    engine = sa.create_engine(f"sqlite:///{root / 'warehouse.db'}")
    frame.to_sql("events", engine, index=False)
    engine.dispose()
    training = {"family": "logistic_regression", "params": {}, **sections.pop("training", {})}
    config = load_config(write_config(root, training=training, gate={"min_compare_rows": 50}, **sections), environ={})
    write_suite(propose_suite(config, frame), config.validation.suite)
    return config


@pytest.fixture
def frame() -> pd.DataFrame:
    return small_frame()


@pytest.fixture
def config(tmp_path: Path) -> Config:
    return load_config(write_config(tmp_path), environ={})


@pytest.fixture(scope="session")
def warehouse(tmp_path_factory) -> str:
    """The demo warehouse (dated covariate shift, new category and concept drift), seeded once per session."""
    from pipeline import demo

    url = f"sqlite:///{tmp_path_factory.mktemp('warehouse') / 'warehouse.db'}"
    demo.seed_demo(url)
    return url


def write_warehouse(path: Path, frame: pd.DataFrame) -> str:
    """``frame`` as the table ``events`` of a SQLite file (replacing it); its URL."""
    import sqlalchemy as sa

    url = f"sqlite:///{path}"
    engine = sa.create_engine(url)
    frame.to_sql("events", engine, index=False, if_exists="replace")
    engine.dispose()
    return url


def cli_champion_store(root: Path, as_of: str) -> tuple[Path, pd.DataFrame, dict]:
    """A store with champion v1, trained by a clean cycle through the CLI and promoted by a person.

    Returns the root, the warehouse's frame and the config sections used, for tests that change one of them.
    """
    from pipeline import registry
    from pipeline.cli import main
    from pipeline.validate import propose_suite, write_suite

    frame = small_frame(1500, days=10)
    write_warehouse(root / "warehouse.db", frame)
    sections = {"training": {"family": "logistic_regression", "params": {}}, "gate": {"floors": {"roc_auc": 0.6}}}
    config_path = write_config(root, **sections)
    config = load_config(config_path, environ={})
    # Ten days of rows would propose the ranges as warnings; the out-of-range cases need them to stop the cycle.
    write_suite(propose_suite(config, frame, critical_ranges=True), config.validation.suite)
    assert main(["run", "--config", str(config_path), "--as-of", as_of]) == 0
    assert main(["promote", "--config", str(config_path), "--version", "1", "--actor", "alice"]) == 0
    assert registry.aliases(config) == {"champion": "1"}
    return root, frame, sections


@pytest.fixture
def postgres_url():
    """A throwaway database on the machine's PostgreSQL (127.0.0.1:5432, trust auth); dropped afterwards."""
    name = f"pipeline_test_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine("postgresql://postgres@127.0.0.1:5432/postgres", isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    yield f"postgresql://postgres@127.0.0.1:5432/{name}"
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE "{name}" WITH (FORCE)'))
    admin.dispose()
