"""Stage 1: read a date window from the SQL source and snapshot it to Parquet.

A window is always a fixed date range, never "whatever is latest", so a cycle
re-run for a past date reads the same rows. Each snapshot carries a sha256 over
its full content: MLflow's dataset digest hashes only the first 10,000 rows and
cannot serve as a lineage key.
"""

from __future__ import annotations

import hashlib
import re
import warnings
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import sqlalchemy as sa

from pipeline.config import Config, Source, redact_url
from pipeline.errors import DataSourceError
from pipeline.results import WindowSnapshot


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
    params = {"start": window.start, "end_exclusive": window.end + timedelta(days=1)}
    try:
        with engine.connect() as conn:
            chunks = list(
                pd.read_sql(_window_query(source, engine), conn, params=params, chunksize=source.read_chunk_rows)
            )
    except sa.exc.DBAPIError as exc:
        raise DataSourceError(_explain(source, exc)) from None
    finally:
        engine.dispose()
    frame = pd.concat(chunks, ignore_index=True) if chunks else pd.DataFrame()
    if frame.empty and not len(frame.columns):
        frame = _empty_frame(source, engine)
    duplicated = sorted({str(c) for c in frame.columns[frame.columns.duplicated()]})
    if duplicated:
        # Which of two same-named columns is meant cannot be guessed, and a snapshot cannot hold both.
        where = f"table {source.table!r}" if source.table else "the configured query"
        raise DataSourceError(f"{where} returns the columns {duplicated} more than once; give each column one name")
    if source.timestamp_column in frame.columns:
        frame[source.timestamp_column] = parse_timestamps(frame[source.timestamp_column])
    return frame


def parse_timestamps(values: pd.Series) -> pd.Series:
    """The timestamp column as datetimes where every value is one, in one time-zone offset.

    Otherwise the values stay as read (text as text), so the snapshot keeps them and validation
    names the ones that are not timestamps. Numbers are never parsed: pandas would read them as
    nanoseconds since 1970 and every row would silently fall on the first day of 1970.
    """
    if pd.api.types.is_datetime64_any_dtype(values) or pd.api.types.is_numeric_dtype(values):
        return values
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # mixed offsets: checked below, by the dtype
            parsed = pd.to_datetime(values)
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
    message = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
    where = f"table {source.table!r}" if source.table else "the configured query"
    if re.search(r"no such table|does not exist|doesn't exist|undefined table", message, re.IGNORECASE):
        return f"{where} not found in {redact_url(source.url)}: {message}"
    return f"cannot read {where} from {redact_url(source.url)}: {message}"


def content_sha256(frame: pd.DataFrame) -> str:
    """sha256 over every value of every row, independent of row order.

    Each row is hashed over all its columns, the row hashes are sorted (SQL gives no
    order among equal timestamps) and digested together with the column names and dtypes.
    """
    digest = hashlib.sha256()
    digest.update(repr([(str(c), str(t)) for c, t in frame.dtypes.items()]).encode())
    if len(frame):
        row_hashes = pd.util.hash_pandas_object(frame, index=False).to_numpy(dtype=np.uint64)
        digest.update(np.sort(row_hashes).tobytes())
    return digest.hexdigest()


def snapshot_window(source: Source, window: WindowSpec, path: Path) -> WindowSnapshot:
    """Read a window and write it to ``path`` as Parquet."""
    frame = read_window(source, window)
    frame.to_parquet(path, index=False)
    stamps = frame[source.timestamp_column]
    # Timestamps that did not parse have no first day; validation reports them.
    first = stamps.min() if len(frame) and pd.api.types.is_datetime64_any_dtype(stamps) else None
    return WindowSnapshot(
        name=window.name, start=window.start, end=window.end, rows=len(frame), sha256=content_sha256(frame),
        first_day=None if first is None or pd.isna(first) else pd.Timestamp(first).date(),
    )


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
