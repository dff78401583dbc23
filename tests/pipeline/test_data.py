"""Reading fixed date windows from SQL, snapshots and their content hash."""

from __future__ import annotations

import sqlite3
from datetime import date

import pandas as pd
import pyarrow.parquet as pq
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


# ---------------------------------------------------------------------------- Arrow and SQLAlchemy readers

def mixed_frame(null_column: bool) -> pd.DataFrame:
    """Five days of rows: NaN floats, an integer with nulls in some batches only, text with nulls and,
    with ``null_column``, a column null throughout (which the Arrow snapshot reads whole)."""
    frame = small_frame(600, days=5)
    frame.loc[frame.index[::7], "x_num"] = float("nan")
    frame["count"] = pd.array(range(len(frame)), dtype="Int64")
    frame.loc[frame.index[450:460], "count"] = pd.NA
    frame.loc[frame.index[::11], "color"] = None
    if null_column:
        frame["note"] = None
    return frame


@pytest.fixture(params=[pytest.param("sqlite", id="sqlite"), pytest.param("postgresql", id="postgresql")])
def database_url(request, tmp_path):
    return f"sqlite:///{tmp_path / 'mixed.db'}" if request.param == "sqlite" else request.getfixturevalue("postgres_url")


@pytest.mark.parametrize("null_column", [pytest.param(False, id="streamed"), pytest.param(True, id="null-column-read-whole")])
@pytest.mark.parametrize(
    "window",
    [
        pytest.param(data.WindowSpec("current", date(2026, 1, 1), date(2026, 1, 5)), id="many-batches"),
        pytest.param(data.WindowSpec("current", date(2026, 1, 2), date(2026, 1, 2)), id="one-day-no-null-count"),
        pytest.param(data.WindowSpec("current", date(2027, 1, 1), date(2027, 1, 5)), id="empty"),
    ],
)
def test_arrow_and_sqlalchemy_read_the_same_frame_and_digest(tmp_path, database_url, window, null_column):
    engine = sa.create_engine(database_url)
    mixed_frame(null_column).to_sql("events", engine, index=False)
    engine.dispose()
    frames, digests = {}, {}
    for reader in ("arrow", "sqlalchemy"):
        source = source_of(tmp_path, url=database_url, reader=reader, read_chunk_rows=50)
        frames[reader] = data.read_window(source, window)
        digests[reader] = data.snapshot_window(source, window, tmp_path / f"{reader}.parquet").sha256
        assert digests[reader] == data.content_sha256(frames[reader])
    pd.testing.assert_frame_equal(frames["arrow"], frames["sqlalchemy"])
    assert digests["arrow"] == digests["sqlalchemy"]
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "arrow.parquet"), pd.read_parquet(tmp_path / "sqlalchemy.parquet"))
    if len(frames["arrow"]):
        assert str(frames["arrow"]["ts"].dtype) == "datetime64[ns]"
        assert frames["arrow"]["x_num"].isna().any() and frames["arrow"]["color"].isna().any()
    if window.start < window.end < date(2027, 1, 1) and not null_column and database_url.startswith("sqlite"):
        # Written batch by batch as read: SQLite's batches hold read_chunk_rows rows (PostgreSQL's are sized in bytes).
        assert pq.ParquetFile(tmp_path / "arrow.parquet").num_row_groups > 1


@pytest.mark.parametrize(
    ("url", "dialect"),
    [
        pytest.param("sqlite:////data/warehouse.db", "sqlite", id="sqlite-file"),
        pytest.param("sqlite:///warehouse.db?timeout=5", None, id="sqlite-with-pysqlite-options"),
        pytest.param("sqlite://", None, id="sqlite-in-memory"),
        pytest.param("postgresql+psycopg://reader@db/warehouse", "postgresql", id="postgresql-psycopg"),
        pytest.param("postgresql://reader@db/warehouse?sslmode=require", "postgresql", id="postgresql-libpq-options"),
        pytest.param("mysql+pymysql://root@127.0.0.1:3306/warehouse", None, id="mysql-no-arrow-driver"),
        pytest.param("mssql+pyodbc://reader@dsn", None, id="mssql-no-arrow-driver"),
    ],
)
def test_auto_reads_through_arrow_where_the_dialect_has_a_driver(url, dialect):
    assert data.arrow_dialect(url) == dialect


def test_arrow_forced_on_a_url_without_an_arrow_driver_says_so(tmp_path, warehouse):
    source = source_of(tmp_path, url=f"sqlite:///{tmp_path / 'warehouse.db'}?timeout=5", reader="arrow")
    with pytest.raises(DataSourceError, match=r"source.reader is 'arrow' but sqlite has no Arrow driver"):
        data.read_window(source, data.WindowSpec("current", date(2026, 1, 1), date(2026, 1, 2)))
    frame = data.read_window(source.model_copy(update={"reader": "auto"}), data.WindowSpec("current", date(2026, 1, 1), date(2026, 1, 2)))
    assert len(frame) > 0


def sqlite_with(tmp_path, statement: str) -> None:
    with sqlite3.connect(tmp_path / "warehouse.db") as conn:
        conn.execute(statement)


@pytest.mark.parametrize(
    ("statement", "arrow_error"),
    [
        pytest.param("UPDATE events SET id = 2.5 WHERE ts = (SELECT MAX(ts) FROM events)",
                     r"cannot read table 'events' from sqlite:///.*Type mismatch", id="a-float-in-an-integer-column-after-the-first-batch"),
        pytest.param("UPDATE events SET color = CAST(X'FF6F6F' AS TEXT) WHERE ts >= '2026-01-02'",
                     r"cannot read table 'events' from sqlite:///.*column 'color' holds text that is not valid UTF-8", id="not-utf8"),
    ],
)
def test_auto_reads_through_sqlalchemy_what_arrow_cannot(tmp_path, warehouse, statement, arrow_error):
    """ADBC types a SQLite column by its first batch of rows and refuses other text encodings; SQLAlchemy's
    path then gives what it always gave: the frame as read, or its own message."""
    sqlite_with(tmp_path, statement)
    window = data.WindowSpec("current", date(2026, 1, 1), date(2026, 1, 10))
    with pytest.raises(DataSourceError, match=arrow_error):
        data.snapshot_window(source_of(tmp_path, reader="arrow", read_chunk_rows=50), window, tmp_path / "arrow.parquet")
    assert not (tmp_path / "arrow.parquet").exists() and not list(tmp_path.glob("*.partial"))
    outcomes = {}
    for reader in ("auto", "sqlalchemy"):
        try:
            snapshot = data.snapshot_window(source_of(tmp_path, reader=reader, read_chunk_rows=50), window, tmp_path / f"{reader}.parquet")
            outcomes[reader] = snapshot.sha256
        except DataSourceError as exc:
            outcomes[reader] = str(exc)
    assert outcomes["auto"] == outcomes["sqlalchemy"]


@pytest.mark.parametrize(
    ("values", "expected_dtype"),
    [
        pytest.param(["2026-01-01 10:00:00+01:00"] * 50 + ["2026-01-01 10:00:00+02:00"] * 70, "object",
                     id="offset-changes-between-batches"),
        pytest.param(["2026-01-01 10:00:00"] * 50 + ["2026-01-01T10:00:00.5"] * 70, "object", id="format-changes-between-batches"),
        pytest.param(["2026-01-01 10:00:00+01:00"] * 120, "datetime64[ns, UTC+01:00]", id="one-offset"),
        pytest.param(["2026-01-01 10:00:00"] * 50 + ["2026-01-01 at noon"] * 70, "object", id="text-in-a-later-batch"),
    ],
)
def test_timestamps_parse_as_one_column_whatever_the_batches(tmp_path, values, expected_dtype):
    """pandas takes the format from the first value of the whole column; a second batch (rows 51 on) that parses
    alone in a format or offset of its own leaves the whole column as text, as it would read whole."""
    frame = small_frame(len(values), days=1).assign(ts=values)
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'warehouse.db'}")
    frame.to_sql("events", engine, index=False)
    engine.dispose()
    window = data.WindowSpec("current", date(2026, 1, 1), date(2026, 1, 1))
    digests = {}
    for reader in ("arrow", "sqlalchemy"):
        source = source_of(tmp_path, reader=reader, read_chunk_rows=50)
        read = data.read_window(source, window)
        assert str(read["ts"].dtype) == expected_dtype
        digests[reader] = data.snapshot_window(source, window, tmp_path / f"{reader}.parquet").sha256
        assert digests[reader] == data.content_sha256(read)
    assert digests["arrow"] == digests["sqlalchemy"]


@pytest.mark.parametrize("reader", ["arrow", "sqlalchemy"])
def test_postgresql_columns_of_one_name_stop_the_read(tmp_path, warehouse, postgres_url, reader):
    engine = sa.create_engine(postgres_url)
    warehouse.to_sql("events", engine, index=False)
    engine.dispose()
    source = source_of(tmp_path, url=postgres_url, table=None, query="SELECT *, color FROM events", reader=reader)
    with pytest.raises(DataSourceError, match=r"the configured query returns the columns \['color'\] more than once"):
        data.snapshot_window(source, data.WindowSpec("current", date(2026, 1, 1), date(2026, 1, 2)), tmp_path / "s.parquet")
