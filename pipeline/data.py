"""Stage 1: read a date window from the SQL source and snapshot it to Parquet.

A window is always a fixed date range, never "whatever is latest", so a cycle
re-run for a past date reads the same rows. Each snapshot carries a sha256 over
its full content: MLflow's dataset digest hashes only the first 10,000 rows and
cannot serve as a lineage key.

Windows are read through Arrow (ADBC) where the URL's dialect has a driver (SQLite, PostgreSQL) and
through SQLAlchemy otherwise (``source.reader``). Both give the same frame and the same sha256;
``auto`` falls back to SQLAlchemy whenever Arrow cannot promise that (see ``ArrowFallback``).
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import sqlalchemy as sa
from pandas.tseries.api import guess_datetime_format

from pipeline.config import Config, Source, redact_url
from pipeline.errors import DataSourceError
from pipeline.results import WindowSnapshot

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WindowSpec:
    """An inclusive date range of the source's timestamp column."""

    name: str
    start: date
    end: date

    def label(self) -> str:
        return f"{self.start.isoformat()}..{self.end.isoformat()}"


def current_window(config: Config, as_of: date) -> WindowSpec:
    return trailing_window("current", as_of, config.windows.current_days)


def trailing_window(name: str, as_of: date, days: int) -> WindowSpec:
    """The ``days`` days up to and including ``as_of``."""
    return WindowSpec(name, as_of - timedelta(days=days - 1), as_of)


def initial_reference_window(config: Config, current: WindowSpec) -> WindowSpec:
    end = current.start - timedelta(days=1)
    start = config.windows.initial_reference_start or end - timedelta(days=config.windows.initial_reference_days - 1)
    if start > end:
        raise DataSourceError(
            f"windows.initial_reference_start {start} is after the day before the current window ({end})"
        )
    return WindowSpec("reference", start, end)


# 52 weeks: last year's window starts on the same weekday, so weekly patterns line up.
YEAR = timedelta(weeks=52)


def reference_window(config: Config, current: WindowSpec, champion_window: tuple[date, date] | None) -> WindowSpec:
    """The window drift compares the current one with, as ``drift.reference`` says."""
    choice = config.drift.reference
    if choice == "previous_window":
        return trailing_window("reference", current.start - timedelta(days=1), config.windows.current_days)
    if choice == "same_period_last_year":
        return WindowSpec("reference", current.start - YEAR, current.end - YEAR)
    return champion_reference(config, current, champion_window)


def reference_falls_back(config: Config, reference_rows: int) -> bool:
    """``same_period_last_year`` with too little history behind it: the champion's window stands in."""
    return config.drift.reference == "same_period_last_year" and reference_rows < config.windows.min_rows


def champion_reference(config: Config, current: WindowSpec, champion_window: tuple[date, date] | None) -> WindowSpec:
    """The champion's training window; before the first champion, the initial reference window."""
    if champion_window is not None:
        return WindowSpec("reference", *champion_window)
    return initial_reference_window(config, current)


def create_engine(url: str) -> sa.Engine:
    try:
        return sa.create_engine(url)
    except Exception as exc:
        raise DataSourceError(f"cannot use database URL {redact_url(url)}: {exc}") from None


def _relation(source: Source, engine: sa.Engine) -> str:
    """The table, quoted, or the configured SELECT as a subquery."""
    return engine.dialect.identifier_preparer.quote(source.table) if source.table else f"({source.query}) AS source_query"


def _window_query(source: Source, engine: sa.Engine) -> sa.TextClause:
    ts = engine.dialect.identifier_preparer.quote(source.timestamp_column)
    return sa.text(
        f"SELECT * FROM {_relation(source, engine)} WHERE {ts} >= :start AND {ts} < :end_exclusive ORDER BY {ts}"
    )


def read_window(source: Source, window: WindowSpec) -> pd.DataFrame:
    """Read the rows of one window; raises DataSourceError with a readable cause."""
    engine = create_engine(source.url)
    try:
        if _reads_arrow(source, engine):
            try:
                return _read_window_arrow(source, engine, window)
            except ArrowFallback as exc:
                _fall_back(source, exc)
        return _read_window_sqlalchemy(source, engine, window)
    finally:
        engine.dispose()


def _read_window_sqlalchemy(source: Source, engine: sa.Engine, window: WindowSpec) -> pd.DataFrame:
    params = {"start": window.start, "end_exclusive": window.end + timedelta(days=1)}
    try:
        with engine.connect() as conn:
            chunks = list(
                pd.read_sql(_window_query(source, engine), conn, params=params, chunksize=source.read_chunk_rows)
            )
    except sa.exc.DBAPIError as exc:
        raise DataSourceError(_explain(source, exc)) from None
    frame = pd.concat(chunks, ignore_index=True) if chunks else pd.DataFrame()
    if frame.empty and not len(frame.columns):
        frame = _empty_frame(source, engine)
    _refuse_duplicate_columns(source, list(frame.columns))
    if source.timestamp_column in frame.columns:
        frame[source.timestamp_column] = parse_timestamps(frame[source.timestamp_column])
    return frame


def _refuse_duplicate_columns(source: Source, columns: list) -> None:
    duplicated = sorted({str(c) for c in pd.Index(columns)[pd.Index(columns).duplicated()]})
    if duplicated:
        # Which of two same-named columns is meant cannot be guessed, and a snapshot cannot hold both.
        where = f"table {source.table!r}" if source.table else "the configured query"
        raise DataSourceError(f"{where} returns the columns {duplicated} more than once; give each column one name")


def parse_timestamps(values: pd.Series, format: str | None = None) -> pd.Series:
    """The timestamp column as datetimes where every value is one, in one time-zone offset.

    Otherwise the values stay as read (text as text), so the snapshot keeps them and validation
    names the ones that are not timestamps. Numbers are never parsed: pandas would read them as
    nanoseconds since 1970 and every row would silently fall on the first day of 1970.
    Without ``format`` pandas takes it from the first value, as it would for the whole column.
    """
    if pd.api.types.is_datetime64_any_dtype(values) or pd.api.types.is_numeric_dtype(values):
        return values
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # mixed offsets: checked below, by the dtype
            parsed = pd.to_datetime(values, format=format)
    except (ValueError, TypeError, OverflowError):
        parsed = None
    if parsed is not None and pd.api.types.is_datetime64_any_dtype(parsed):
        return parsed
    # SQLite keeps each value's own type: text for the snapshot, whatever was read.
    return values.map(lambda value: value if pd.isna(value) else str(value))


def _empty_frame(source: Source, engine: sa.Engine) -> pd.DataFrame:
    """An empty window still has the source's columns, so validation can name what is wrong."""
    with engine.connect() as conn:
        result = conn.execute(sa.text(f"SELECT * FROM {_relation(source, engine)} WHERE 1 = 0"))
        return pd.DataFrame(columns=list(result.keys()))


def _explain(source: Source, exc: sa.exc.DBAPIError) -> str:
    return _explain_message(source, str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc))


def _explain_message(source: Source, message: str) -> str:
    where = f"table {source.table!r}" if source.table else "the configured query"
    if re.search(r"no such table|does not exist|doesn't exist|undefined table", message, re.IGNORECASE):
        return f"{where} not found in {redact_url(source.url)}: {message}"
    return f"cannot read {where} from {redact_url(source.url)}: {message}"


def content_sha256(frame: pd.DataFrame) -> str:
    """sha256 over every value of every row, independent of row order.

    Each row is hashed over all its columns, the row hashes are sorted (SQL gives no
    order among equal timestamps) and digested together with the column names and dtypes.
    """
    row_hashes = pd.util.hash_pandas_object(frame, index=False).to_numpy(dtype=np.uint64) if len(frame) else None
    return _digest(frame.dtypes, row_hashes)


def _digest(dtypes: pd.Series, row_hashes: np.ndarray | None) -> str:
    digest = hashlib.sha256()
    digest.update(repr([(str(c), str(t)) for c, t in dtypes.items()]).encode())
    if row_hashes is not None and len(row_hashes):
        digest.update(np.sort(row_hashes).tobytes())
    return digest.hexdigest()


def snapshot_window(source: Source, window: WindowSpec, path: Path) -> WindowSnapshot:
    """Read a window and write it to ``path`` as Parquet.

    Through Arrow the window streams batch by batch from the database into the file, so memory
    follows one batch (``source.read_chunk_rows``), not the window.
    """
    engine = create_engine(source.url)
    try:
        if _reads_arrow(source, engine):
            try:
                return _stream_snapshot(source, engine, window, path)
            except NotStreamable:
                pass  # the whole window at once, by the same rules as the SQLAlchemy path
            except ArrowFallback as exc:
                _fall_back(source, exc)
                return _snapshot_frame(source, window, _read_window_sqlalchemy(source, engine, window), path)
        return _snapshot_frame(source, window, read_window(source, window), path)
    finally:
        engine.dispose()


def _snapshot_frame(source: Source, window: WindowSpec, frame: pd.DataFrame, path: Path) -> WindowSnapshot:
    frame.to_parquet(path, index=False)
    stamps = frame[source.timestamp_column]
    # Timestamps that did not parse have no first day; validation reports them.
    first = stamps.min() if len(frame) and pd.api.types.is_datetime64_any_dtype(stamps) else None
    return WindowSnapshot(
        name=window.name, start=window.start, end=window.end, rows=len(frame), sha256=content_sha256(frame),
        first_day=None if first is None or pd.isna(first) else pd.Timestamp(first).date(),
    )


# --------------------------------------------------------------------------------------------- Arrow reads

# Arrow types whose pandas conversion (after ``_normalize``) equals what SQLAlchemy's drivers give.
_CONVERTIBLE = (pa.types.is_integer, pa.types.is_floating, pa.types.is_boolean, pa.types.is_string,
                pa.types.is_large_string, pa.types.is_timestamp, pa.types.is_date32, pa.types.is_null)


class ArrowFallback(Exception):
    """Arrow cannot read this window as the SQLAlchemy path would: a driver error, a value SQLite stores
    with another type than the column's first rows (ADBC types a column by them), text that is not UTF-8,
    or a column type converted differently. ``auto`` then reads through SQLAlchemy, which gives today's frame
    or today's error message; ``arrow`` reports it."""


class NotStreamable(Exception):
    """The window is read whole: a column that is null throughout, no rows, or timestamps that are only
    known to parse (or not) once every value has been seen."""


def arrow_dialect(url: str) -> str | None:
    """The ADBC driver for this SQLAlchemy URL (``sqlite`` or ``postgresql``), or None where there is none."""
    try:
        parsed = sa.engine.make_url(url)
    except sa.exc.ArgumentError:
        return None
    backend = parsed.get_backend_name()
    # A SQLite URL's query options (uri=true, mode=ro, ...) are pysqlite's; ADBC would not read them alike.
    if backend == "sqlite" and parsed.database and not parsed.query:
        return "sqlite"
    return "postgresql" if backend == "postgresql" else None


def _reads_arrow(source: Source, engine: sa.Engine) -> bool:
    if source.reader == "sqlalchemy":
        return False
    if arrow_dialect(source.url) is not None:
        return True
    if source.reader == "arrow":
        raise DataSourceError(
            f"source.reader is 'arrow' but {engine.dialect.name} has no Arrow driver here (ADBC: SQLite, PostgreSQL); "
            "use source.reader: auto or sqlalchemy"
        )
    return False


def _fall_back(source: Source, exc: ArrowFallback) -> None:
    if source.reader == "arrow":
        raise DataSourceError(_explain_message(source, str(exc))) from None
    log.info("reading through SQLAlchemy: the Arrow reader cannot (%s)", exc)


def _adbc_connect(source: Source):
    url = sa.engine.make_url(source.url)
    if arrow_dialect(source.url) == "sqlite":
        import adbc_driver_sqlite.dbapi

        return adbc_driver_sqlite.dbapi.connect(url.database)
    import adbc_driver_postgresql.dbapi

    # libpq reads the same URL as psycopg, less SQLAlchemy's driver name.
    return adbc_driver_postgresql.dbapi.connect(url.set(drivername="postgresql").render_as_string(hide_password=False))


def _window_sql(source: Source, engine: sa.Engine, window: WindowSpec) -> str:
    """The window's query with its two dates as literals: ADBC binds parameters by Arrow type, and a
    text parameter would not compare with PostgreSQL's timestamp; an ISO date literal compares alike everywhere."""
    ts = engine.dialect.identifier_preparer.quote(source.timestamp_column)
    start, end_exclusive = window.start.isoformat(), (window.end + timedelta(days=1)).isoformat()
    return f"SELECT * FROM {_relation(source, engine)} WHERE {ts} >= '{start}' AND {ts} < '{end_exclusive}' ORDER BY {ts}"


@contextmanager
def _arrow_batches(
    source: Source, engine: sa.Engine, window: WindowSpec
) -> Iterator[tuple[list[str], Iterator[pa.RecordBatch]]]:
    """The window's column names and record batches, each checked and normalized; driver errors become ArrowFallback."""
    import adbc_driver_manager

    try:
        conn = _adbc_connect(source)
    except adbc_driver_manager.Error as exc:
        raise ArrowFallback(_first_line(exc)) from None
    try:
        with conn.cursor() as cursor:
            if arrow_dialect(source.url) == "sqlite":
                cursor.adbc_statement.set_options(**{"adbc.sqlite.query.batch_rows": str(source.read_chunk_rows)})
            cursor.execute(_window_sql(source, engine, window))
            reader = cursor.fetch_record_batch()
            _refuse_duplicate_columns(source, reader.schema.names)
            unconvertible = [f"{f.name!r} ({f.type})" for f in reader.schema if not any(is_(f.type) for is_ in _CONVERTIBLE)]
            if unconvertible:
                raise ArrowFallback(f"columns of a type read differently through Arrow: {', '.join(unconvertible)}")

            def batches() -> Iterator[pa.RecordBatch]:
                try:
                    for batch in reader:
                        yield _normalize(_checked(batch))
                except (adbc_driver_manager.Error, pa.ArrowException, OSError) as exc:
                    raise ArrowFallback(_first_line(exc)) from None

            yield reader.schema.names, batches()
    except (adbc_driver_manager.Error, pa.ArrowException, OSError) as exc:
        raise ArrowFallback(_first_line(exc)) from None
    finally:
        conn.close()


def _first_line(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def _checked(batch: pa.RecordBatch) -> pa.RecordBatch:
    for name, column in zip(batch.schema.names, batch.columns, strict=True):
        if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
            try:
                column.validate(full=True)
            except pa.ArrowInvalid:
                raise ArrowFallback(f"column {name!r} holds text that is not valid UTF-8") from None
    return batch


def _normalize(batch: pa.RecordBatch) -> pa.RecordBatch:
    """The types SQLAlchemy's drivers give pandas: 64-bit integers and floats (Python's int and float),
    nanosecond timestamps (pandas' own)."""
    columns = []
    for column in batch.columns:
        kind = column.type
        if pa.types.is_integer(kind) and kind != pa.int64():
            column = column.cast(pa.int64())
        elif pa.types.is_floating(kind) and kind != pa.float64():
            column = column.cast(pa.float64())
        elif pa.types.is_timestamp(kind) and kind.unit != "ns":
            column = column.cast(pa.timestamp("ns", kind.tz))
        columns.append(column)
    return pa.RecordBatch.from_arrays(columns, names=batch.schema.names)


def _to_pandas(table: pa.Table) -> pd.DataFrame:
    """As the SQLAlchemy path: a column null throughout is an object column of None, whatever its type."""
    frame = table.to_pandas()
    for name, column in zip(table.column_names, table.columns, strict=True):
        if len(table) and column.null_count == len(table):
            frame[name] = pd.Series([None] * len(table), dtype=object)
    return frame


def _read_window_arrow(source: Source, engine: sa.Engine, window: WindowSpec) -> pd.DataFrame:
    with _arrow_batches(source, engine, window) as (names, batches):
        collected = list(batches)
    if not sum(b.num_rows for b in collected):
        # No rows: the SQLAlchemy path's empty frame (object columns), whose timestamp column parses to datetimes.
        frame = pd.DataFrame({name: pd.Series([], dtype=object) for name in names})
    else:
        frame = _to_pandas(pa.Table.from_batches(collected))
        del collected
    if source.timestamp_column in frame.columns:
        frame[source.timestamp_column] = parse_timestamps(frame[source.timestamp_column])
    return frame


@dataclass
class SnapshotPart:
    """What one streamed read left to know of its rows: enough to digest a window from its parts (days)."""

    rows: int
    batch_dtypes: list[pd.Series]  # each batch's pandas dtypes, as read
    row_hashes: list[np.ndarray]  # each batch's row hashes under its own dtypes
    null_counts: dict[str, int]
    first: pd.Timestamp | None  # the earliest timestamp
    ts_format: str | None  # the format text timestamps were parsed with (None: the driver gave timestamps)
    schema: pa.Schema | None  # the Parquet file's (None: no rows, no file)


def stream_part(source: Source, engine: sa.Engine, window: WindowSpec, partial: Path) -> SnapshotPart:
    """Each batch of the window: its timestamps parsed, its rows hashed, written to the Parquet file ``partial``.

    Raises NotStreamable where the batches alone cannot tell how the whole window would parse.
    """
    ts = source.timestamp_column
    part = SnapshotPart(0, [], [], {}, None, None, None)
    writer: pq.ParquetWriter | None = None
    try:
        with _arrow_batches(source, engine, window) as (_, batches):
            for batch in batches:
                if not batch.num_rows:
                    continue
                frame = batch.to_pandas()
                if ts in frame.columns and not pd.api.types.is_datetime64_any_dtype(frame[ts]):
                    if part.ts_format is None:
                        part.ts_format = _guessed_format(frame[ts])
                    frame[ts] = parse_timestamps(frame[ts], part.ts_format)
                    if not pd.api.types.is_datetime64_any_dtype(frame[ts]):
                        raise NotStreamable
                    batch = batch.set_column(batch.schema.get_field_index(ts), ts, pa.Array.from_pandas(frame[ts]))
                if part.batch_dtypes and ts in frame.columns and frame[ts].dtype != part.batch_dtypes[0][ts]:
                    raise NotStreamable  # a time-zone offset that changes between batches: text, as a whole
                if writer is None:
                    writer = pq.ParquetWriter(partial, batch.schema)
                    part.schema = batch.schema
                writer.write_batch(batch)
                part.row_hashes.append(pd.util.hash_pandas_object(frame, index=False).to_numpy(dtype=np.uint64))
                part.batch_dtypes.append(frame.dtypes)
                for name, column in zip(batch.schema.names, batch.columns, strict=True):
                    part.null_counts[name] = part.null_counts.get(name, 0) + column.null_count
                if ts in frame.columns:
                    low = frame[ts].min()
                    part.first = low if part.first is None or (not pd.isna(low) and low < part.first) else part.first
                part.rows += batch.num_rows
                del frame
    finally:
        if writer is not None:
            writer.close()
    return part


def parts_digest(parts: list[SnapshotPart], rehash: Callable[[int, pd.Series], np.ndarray]) -> str:
    """The sha256 of the window made of these parts, as ``content_sha256`` of the whole window gives it.

    ``rehash(i, dtypes)`` hashes part ``i``'s rows again under the window's dtypes, for a part whose
    batches read some column otherwise (an integer column with nulls in other parts only is float64).
    Raises NotStreamable where the window as a whole would read differently (see ``_unified_dtypes``).
    """
    rows = sum(part.rows for part in parts)
    read = [part for part in parts if part.rows]
    nulls = {name: sum(part.null_counts.get(name, 0) for part in read) for name in read[0].null_counts} if read else {}
    if not rows or any(count == rows for count in nulls.values()):
        raise NotStreamable
    dtypes = _unified_dtypes([d for part in read for d in part.batch_dtypes])
    if dtypes is None:
        raise NotStreamable
    hashes = [rehash(i, dtypes) if any(not d.equals(dtypes) for d in part.batch_dtypes) else np.concatenate(part.row_hashes)
              for i, part in enumerate(parts) if part.rows]
    return _digest(dtypes, np.concatenate(hashes))


def hash_rows(path: Path | str, dtypes: pd.Series, batch_rows: int) -> np.ndarray:
    """The row hashes of a Parquet file's rows read as ``dtypes``."""
    return np.concatenate([
        pd.util.hash_pandas_object(group.to_pandas().astype(dtypes.to_dict()), index=False).to_numpy(dtype=np.uint64)
        for group in pq.ParquetFile(path).iter_batches(batch_size=batch_rows)
    ])


def _stream_snapshot(source: Source, engine: sa.Engine, window: WindowSpec, path: Path) -> WindowSnapshot:
    """The window streamed into a file beside ``path``, which then replaces it."""
    partial = path.with_name(path.name + ".partial")
    try:
        part = stream_part(source, engine, window, partial)
        sha256 = parts_digest([part], lambda _, dtypes: hash_rows(partial, dtypes, source.read_chunk_rows))
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
    return WindowSnapshot(
        name=window.name, start=window.start, end=window.end, rows=part.rows, sha256=sha256,
        first_day=None if part.first is None or pd.isna(part.first) else pd.Timestamp(part.first).date(),
    )


def _guessed_format(values: pd.Series) -> str:
    """The format pandas would take from the column's first value; the window is read whole without one."""
    present = values.dropna()
    guessed = guess_datetime_format(present.iloc[0]) if len(present) and isinstance(present.iloc[0], str) else None
    if guessed is None:
        raise NotStreamable
    return guessed


def _unified_dtypes(batch_dtypes: list[pd.Series]) -> pd.Series | None:
    """The whole window's pandas dtypes from its batches': an integer column with nulls somewhere is float64,
    a boolean one object; None for any other disagreement."""
    unified = batch_dtypes[0].copy()
    for name in unified.index:
        kinds = {str(d[name]) for d in batch_dtypes}
        if len(kinds) == 1:
            continue
        if kinds <= {"int64", "float64"}:
            unified[name] = np.dtype("float64")
        elif kinds <= {"bool", "object"}:
            unified[name] = np.dtype("object")
        else:
            return None
    return unified


def latest_day(source: Source, until: date | None = None) -> date:
    """The day of the newest row in the source, of those dated ``until`` or earlier when given."""
    return _edge_day(source, "MAX", until)


def latest_present_day(config: Config, today: date) -> tuple[date, str | None]:
    """What ``as of latest`` means: the newest day with rows, ignoring rows dated after today plus
    ``windows.future_tolerance_days``; and a note saying which rows that ignored ("ignores 3 ..."), if any.

    A few rows dated years ahead (a typo, a default of 2099) must not move every window into the future.
    """
    tolerance = config.windows.future_tolerance_days
    until = today + timedelta(days=tolerance)
    ignored, newest = rows_after(config.source, until)
    note = None if not ignored else (
        f"ignores {ignored:,} future-dated rows (after {until}: today {today} plus "
        f"windows.future_tolerance_days={tolerance}; the newest is dated {newest})"
    )
    return latest_day(config.source, until), note


def rows_after(source: Source, day: date) -> tuple[int, date | None]:
    """How many rows are dated after ``day``, and the newest one's day."""
    engine = create_engine(source.url)
    ts = engine.dialect.identifier_preparer.quote(source.timestamp_column)
    query = sa.text(f"SELECT COUNT(*), MAX({ts}) FROM {_relation(source, engine)} WHERE {ts} >= :after")
    try:
        with engine.connect() as conn:
            count, newest = conn.execute(query, {"after": day + timedelta(days=1)}).one()
    except sa.exc.DBAPIError as exc:
        raise DataSourceError(_explain(source, exc)) from None
    finally:
        engine.dispose()
    return int(count), None if newest is None else _day_of(source, newest, "newest")


def earliest_day(source: Source) -> date:
    """The day of the oldest row in the source."""
    return _edge_day(source, "MIN")


def empty_window_note(source: Source, window: WindowSpec) -> str:
    """Why a window may have no rows: where the source's rows lie, or that its timestamps are no dates at all."""
    first, last = _edge(source, "MIN"), _edge(source, "MAX")
    if first is None:
        return f"the {window.name} window {window.label()} has no rows: the source has none"
    try:
        span = f"the source's rows are dated {_day_of(source, first, 'oldest')} to {_day_of(source, last, 'newest')}"
    except DataSourceError as exc:
        span = str(exc)
    return f"the {window.name} window {window.label()} has no rows: {span}"


def _edge_day(source: Source, aggregate: str, until: date | None = None) -> date:
    edge = _edge(source, aggregate, until)
    if edge is None:
        dated = f" dated {until} or earlier" if until else ""
        raise DataSourceError(f"{source.table or 'the query'} in {redact_url(source.url)} has no rows{dated}")
    return _day_of(source, edge, "newest" if aggregate == "MAX" else "oldest")


def _day_of(source: Source, edge: object, which: str) -> date:
    """The day of a timestamp as the database returned it; a number or a text that is no timestamp is named."""
    where = f"the {which} value of {source.timestamp_column!r}, {edge!r},"
    if isinstance(edge, (int, float)):
        # SQLite orders numbers before any text, so a date window never holds a row dated by a number.
        raise DataSourceError(f"{where} is a number, not a timestamp")
    try:
        return pd.Timestamp(edge).date()
    except (ValueError, TypeError):
        raise DataSourceError(f"{where} is not a timestamp") from None


def _edge(source: Source, aggregate: str, until: date | None = None):
    """The MIN or MAX of the timestamp column as the database returns it (None without rows)."""
    engine = create_engine(source.url)
    ts = engine.dialect.identifier_preparer.quote(source.timestamp_column)
    where, params = (f" WHERE {ts} < :before", {"before": until + timedelta(days=1)}) if until else ("", {})
    try:
        with engine.connect() as conn:
            edge = conn.execute(sa.text(f"SELECT {aggregate}({ts}) FROM {_relation(source, engine)}{where}"), params).scalar()
    except sa.exc.DBAPIError as exc:
        raise DataSourceError(_explain(source, exc)) from None
    finally:
        engine.dispose()
    return edge
