"""Reading fixed date windows from SQL, snapshots and their content hash."""

from __future__ import annotations

import uuid
from datetime import date

import pandas as pd
import pytest
import sqlalchemy as sa

from pipeline import data
from pipeline.config import load_config
from pipeline.errors import DataSourceError
from pipeline.results import WindowSnapshot
from tests.conftest import small_frame, write_config


@pytest.fixture
def warehouse(tmp_path):
    frame = small_frame(500, days=10)
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'warehouse.db'}")
    frame.to_sql("events", engine, index=False)
    engine.dispose()
    return frame


def source_of(tmp_path, **overrides):
    return load_config(write_config(tmp_path, source=overrides), environ={}).source


def test_window_includes_both_boundary_days_and_nothing_after(tmp_path, warehouse):
    window = data.WindowSpec("current", date(2026, 1, 3), date(2026, 1, 5))
    frame = data.read_window(source_of(tmp_path), window)
    days = warehouse["ts"].dt.date
    expected = warehouse[(days >= window.start) & (days <= window.end)]
    assert len(frame) == len(expected) > 0
    assert frame["ts"].dt.date.min() == date(2026, 1, 3) and frame["ts"].dt.date.max() == date(2026, 1, 5)
    assert pd.api.types.is_datetime64_any_dtype(frame["ts"])


def test_a_select_works_as_a_source(tmp_path, warehouse):
    source = source_of(tmp_path, table=None, query="SELECT * FROM events WHERE color <> 'red'")
    frame = data.read_window(source, data.WindowSpec("current", date(2026, 1, 1), date(2026, 1, 10)))
    assert len(frame) == (warehouse["color"] != "red").sum()


def test_empty_window_keeps_the_columns(tmp_path, warehouse):
    frame = data.read_window(source_of(tmp_path), data.WindowSpec("current", date(2027, 1, 1), date(2027, 1, 5)))
    assert frame.empty and list(frame.columns) == list(warehouse.columns)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        pytest.param({"table": "no_such_table"}, r"table 'no_such_table' not found in sqlite:///", id="missing-table"),
        pytest.param({"url": "sqlite:////nonexistent/dir/db.sqlite"}, r"cannot read table 'events' from sqlite:////nonexistent", id="unreachable-sqlite"),
        pytest.param({"url": "postgresql://reader:s3cret@127.0.0.1:1/warehouse"}, r"cannot read table 'events' from postgresql://reader:\*\*\*@127\.0\.0\.1:1", id="unreachable-server-password-hidden"),
        pytest.param({"url": "nosuchdialect://x"}, r"cannot use database URL nosuchdialect://x", id="unknown-dialect"),
    ],
)
def test_unreadable_sources_raise_a_clear_error(tmp_path, warehouse, overrides, message):
    with pytest.raises(DataSourceError, match=message) as caught:
        data.read_window(source_of(tmp_path, **overrides), data.WindowSpec("current", date(2026, 1, 1), date(2026, 1, 2)))
    assert "s3cret" not in str(caught.value)


def test_snapshot_is_written_and_hashed(tmp_path, warehouse):
    path = tmp_path / "current.parquet"
    snap = data.snapshot_window(source_of(tmp_path), data.WindowSpec("current", date(2026, 1, 1), date(2026, 1, 10)), path)
    assert snap.rows == len(warehouse)
    assert data.content_sha256(pd.read_parquet(path)) == snap.sha256
    assert WindowSnapshot.from_dict(snap.to_dict()) == snap


def test_content_hash_covers_every_row_and_ignores_row_order():
    frame = small_frame(30_000)
    digest = data.content_sha256(frame)
    assert data.content_sha256(frame.sample(frac=1, random_state=3)) == digest
    changed = frame.copy()
    changed.loc[25_000, "y_num"] += 1e-9  # far past the 10,000 rows MLflow's own digest looks at
    assert data.content_sha256(changed) != digest
    assert data.content_sha256(frame.rename(columns={"y_num": "z_num"})) != digest


def test_latest_day(tmp_path, warehouse):
    assert data.latest_day(source_of(tmp_path)) == warehouse["ts"].max().date()


def test_windows_before_the_as_of_date(config):
    current = data.current_window(config, date(2026, 3, 10))
    assert (current.start, current.end) == (date(2026, 3, 6), date(2026, 3, 10))
    reference = data.initial_reference_window(config, current)
    assert (reference.start, reference.end) == (date(2026, 3, 1), date(2026, 3, 5))


@pytest.mark.parametrize(
    ("choice", "champion_window", "expected"),
    [
        pytest.param("champion_window", (date(2026, 1, 1), date(2026, 1, 28)), (date(2026, 1, 1), date(2026, 1, 28)),
                     id="the-champions"),
        pytest.param("champion_window", None, (date(2026, 3, 1), date(2026, 3, 5)), id="initial-before-a-champion"),
        pytest.param("previous_window", (date(2026, 1, 1), date(2026, 1, 28)), (date(2026, 3, 1), date(2026, 3, 5)),
                     id="previous"),
        pytest.param("same_period_last_year", None, (date(2025, 3, 7), date(2025, 3, 11)), id="52-weeks-back"),
    ],
)
def test_the_reference_window_follows_drift_reference(tmp_path, choice, champion_window, expected):
    config = load_config(write_config(tmp_path, drift={"reference": choice}), environ={})
    current = data.current_window(config, date(2026, 3, 10))
    reference = data.reference_window(config, current, champion_window)
    assert (reference.start, reference.end) == expected
    if choice == "same_period_last_year":
        assert reference.start.weekday() == current.start.weekday()



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


def test_postgresql_source_reads_the_same_window_and_digest(tmp_path, warehouse, postgres_url):
    engine = sa.create_engine(postgres_url)
    warehouse.to_sql("events", engine, index=False)
    engine.dispose()
    window = data.WindowSpec("current", date(2026, 1, 3), date(2026, 1, 5))
    from_postgres = data.read_window(source_of(tmp_path, url=postgres_url), window)
    from_sqlite = data.read_window(source_of(tmp_path), window)
    assert len(from_postgres) == len(from_sqlite) > 0
    assert data.content_sha256(from_postgres) == data.content_sha256(from_sqlite)
    assert data.latest_day(source_of(tmp_path, url=postgres_url)) == warehouse["ts"].max().date()
