"""The cycle index: every recorded cycle's summary in the pipeline's own database, for lists that page and filter.

MLflow stays the record (``RunSummary.of`` reads a cycle's run); the index keeps a copy of each
summary, refreshed whenever the cycle logs to its run or changes status, in a table beside the
promotion log. MLflow's run search has neither a count nor range filters on tags (an as-of date
is a tag), and listing 2,000 runs takes seconds; the index answers a filtered page and its total
with two indexed queries. Cycles recorded before the index existed are copied in from MLflow the
first time a model's index is read.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, date, datetime
from functools import lru_cache

import sqlalchemy as sa

from pipeline import registry
from pipeline.config import Config, redact_url
from pipeline.errors import DataSourceError
from pipeline.record import RunSummary

metadata = sa.MetaData()
cycles = sa.Table(
    "cycle_index",
    metadata,
    sa.Column("model_name", sa.String(200), primary_key=True),
    sa.Column("cycle_id", sa.String(200), primary_key=True),
    sa.Column("kind", sa.String(20), nullable=False),
    sa.Column("as_of", sa.Date, nullable=False),
    sa.Column("started", sa.DateTime(timezone=True), nullable=False),
    sa.Column("status", sa.String(40), nullable=False),
    # What the search box matches: the cycle id, its trigger and its drifted features, lower-cased.
    sa.Column("search_text", sa.Text, nullable=False),
    sa.Column("summary", sa.Text, nullable=False),
    sa.Index("ix_cycle_index_listing", "model_name", "as_of", "started"),
)
# A model whose index holds every cycle MLflow had when the index was first read.
filled = sa.Table(
    "cycle_index_filled",
    metadata,
    sa.Column("model_name", sa.String(200), primary_key=True),
    sa.Column("at", sa.DateTime(timezone=True), nullable=False),
)


@lru_cache(maxsize=8)
def _engine(url: str) -> sa.Engine:
    from pipeline.promote import serialize_sqlite_writers

    try:
        engine = sa.create_engine(url)
        if engine.dialect.name == "sqlite":  # the promotion log's file: its writers queue, as the log's do
            serialize_sqlite_writers(engine)
        metadata.create_all(engine)
    except sa.exc.SQLAlchemyError as exc:
        raise DataSourceError(f"cannot open the cycle index at {redact_url(url)}: {exc}") from None
    return engine


def _row(config: Config, summary: RunSummary) -> dict:
    search = " ".join([summary.cycle_id, summary.trigger, *summary.drifted_features]).lower()
    return {"model_name": config.model_name, "cycle_id": summary.cycle_id, "kind": summary.kind, "as_of": summary.as_of,
            "started": summary.started, "status": summary.status, "search_text": search,
            "summary": json.dumps(summary.to_dict())}


def _replace(conn: sa.Connection, config: Config, summaries: list[RunSummary]) -> None:
    """Delete and insert in one transaction: every SQL dialect does it, unlike an upsert."""
    if not summaries:
        return
    conn.execute(cycles.delete().where(cycles.c.model_name == config.model_name,
                                       cycles.c.cycle_id.in_([s.cycle_id for s in summaries])))
    conn.execute(cycles.insert(), [_row(config, s) for s in summaries])


def refresh(config: Config, run_id: str, kind: registry.CycleKind) -> None:
    """Copy the cycle's run, as it is now, into the index."""
    summary = RunSummary.of(registry.client(config).get_run(run_id), kind)
    with _engine(config.promotion.database_url).begin() as conn:
        _replace(conn, config, [summary])


def _is_filled(conn: sa.Connection, config: Config) -> bool:
    return conn.execute(sa.select(filled.c.model_name).where(filled.c.model_name == config.model_name)).first() is not None


def _fill_from_mlflow(config: Config) -> None:
    """Once per model: the cycles recorded before the index existed. The ones indexed since are newer than MLflow's
    copy read here, so they are kept."""
    engine = _engine(config.promotion.database_url)
    with engine.connect() as conn:
        if _is_filled(conn, config):
            return
    recorded = [RunSummary.of(run, kind) for kind in ("retrain", "monitor")
                for run in registry.all_runs(config, kind)]
    try:
        with engine.begin() as conn:
            if _is_filled(conn, config):  # another process filled it meanwhile
                return
            indexed = set(conn.execute(sa.select(cycles.c.cycle_id).where(cycles.c.model_name == config.model_name))
                          .scalars())
            _replace(conn, config, [s for s in recorded if s.cycle_id not in indexed])
            conn.execute(filled.insert(), {"model_name": config.model_name, "at": datetime.now(UTC)})
    except sa.exc.IntegrityError:  # the same, on a database whose transactions do not queue
        return


@dataclass(frozen=True)
class CycleFilter:
    kind: str | None = None
    status: str | None = None
    since: date | None = None  # as-of dates, both ends included
    until: date | None = None
    search: str | None = None  # a part of the cycle id, the trigger or a drifted feature's name


@dataclass(frozen=True)
class CyclePage:
    cycles: list[RunSummary]  # newest as-of first
    number: int
    size: int
    total: int  # cycles that match the filter, on every page

    @property
    def pages(self) -> int:
        return max(1, -(-self.total // self.size))


def page(config: Config, where: CycleFilter = CycleFilter(), number: int = 1, size: int = 50) -> CyclePage:
    """One page of the model's cycles that match ``where``, newest as-of first, and how many match in all."""
    _fill_from_mlflow(config)
    conditions = [cycles.c.model_name == config.model_name]
    if where.kind:
        conditions.append(cycles.c.kind == where.kind)
    if where.status:
        conditions.append(cycles.c.status == where.status)
    if where.since:
        conditions.append(cycles.c.as_of >= where.since)
    if where.until:
        conditions.append(cycles.c.as_of <= where.until)
    if where.search:
        # LIKE's wildcards in the search are matched as themselves.
        escaped = where.search.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        conditions.append(cycles.c.search_text.like(f"%{escaped}%", escape="\\"))
    number = max(1, number)
    with _engine(config.promotion.database_url).connect() as conn:
        total = conn.execute(sa.select(sa.func.count()).select_from(cycles).where(*conditions)).scalar_one()
        rows = conn.execute(sa.select(cycles.c.summary).where(*conditions)
                            .order_by(cycles.c.as_of.desc(), cycles.c.started.desc())
                            .limit(size).offset((number - 1) * size)).scalars()
        found = [RunSummary.from_dict(json.loads(row)) for row in rows]
    return CyclePage(found, number, size, total)


def summaries(config: Config, cycle_ids: list[str]) -> dict[str, RunSummary]:
    """The indexed summaries of these cycles, by id (the ones not indexed are left out)."""
    _fill_from_mlflow(config)
    with _engine(config.promotion.database_url).connect() as conn:
        rows = conn.execute(sa.select(cycles.c.summary).where(
            cycles.c.model_name == config.model_name, cycles.c.cycle_id.in_(cycle_ids))).scalars()
        found = [RunSummary.from_dict(json.loads(row)) for row in rows]
    return {s.cycle_id: s for s in found}
