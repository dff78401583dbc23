"""Stage 8: promotion, rejection and rollback, each appended to the promotion log.

MLflow aliases are last-writer-wins and keep no history, so the promotion log is
both the audit trail and the arbiter: every action takes the next sequence number
for its model under a unique constraint, and the alias moves inside the same
transaction. Of two processes acting at once, exactly one gets the number; the
other is refused.

A move of the champion alias is made only after the version's files in the artifact store are
checked against the manifest recorded at registration; its row keeps that manifest.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import sqlalchemy as sa

from pipeline import artifacts, registry
from pipeline.config import Config, redact_url
from pipeline.errors import DataSourceError, PromotionRefused
from pipeline.record import LogEntry, VersionTags, default_actor

metadata = sa.MetaData()
promotion_log = sa.Table(
    "promotion_log",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("model_name", sa.String(200), nullable=False),
    sa.Column("seq", sa.Integer, nullable=False),
    sa.Column("at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("actor", sa.String(200), nullable=False),
    sa.Column("action", sa.String(20), nullable=False),
    sa.Column("from_version", sa.String(20)),
    sa.Column("to_version", sa.String(20)),
    sa.Column("verdict_id", sa.String(200)),
    sa.Column("reason", sa.Text),
    # The files the champion alias moved to (promote, override, rollback): the manifest's digest and the manifest.
    sa.Column("artifact_sha256", sa.String(64)),
    sa.Column("artifact_manifest", sa.Text),
    sa.UniqueConstraint("model_name", "seq", name="uq_promotion_log_model_seq"),
)


def _engine(config: Config) -> sa.Engine:
    url = config.promotion.database_url
    try:
        engine = sa.create_engine(url)
        if engine.dialect.name == "sqlite":
            serialize_sqlite_writers(engine)
        metadata.create_all(engine)
        _add_missing_columns(engine)
    except sa.exc.SQLAlchemyError as exc:
        raise DataSourceError(f"cannot open the promotion log at {redact_url(url)}: {exc}") from None
    return engine


def _add_missing_columns(engine: sa.Engine) -> None:
    """A log created by an earlier release lacks the columns added since: ``create_all`` adds tables, not columns."""
    present = {column["name"] for column in sa.inspect(engine).get_columns(promotion_log.name)}
    if all(column.name in present for column in promotion_log.columns):
        return
    with engine.begin() as conn:
        # Looked at again inside the transaction: another process may have added them meanwhile.
        present = {column["name"] for column in sa.inspect(conn).get_columns(promotion_log.name)}
        for column in promotion_log.columns:
            if column.name not in present:
                conn.exec_driver_sql(
                    f"ALTER TABLE {promotion_log.name} ADD COLUMN {column.name} {column.type.compile(engine.dialect)}"
                )


def serialize_sqlite_writers(engine: sa.Engine) -> None:
    """SQLite: take the write lock when the transaction begins, so concurrent actions queue instead of deadlocking."""

    @sa.event.listens_for(engine, "connect")
    def _autocommit_driver(dbapi_connection, _record):
        dbapi_connection.isolation_level = None
        dbapi_connection.execute("PRAGMA busy_timeout = 30000")

    @sa.event.listens_for(engine, "begin")
    def _begin_immediate(connection):
        connection.exec_driver_sql("BEGIN IMMEDIATE")


def history(config: Config, limit: int | None = None) -> list[LogEntry]:
    """The model's log, newest first."""
    engine = _engine(config)
    query = (
        sa.select(promotion_log).where(promotion_log.c.model_name == config.model_name)
        .order_by(promotion_log.c.seq.desc()).limit(limit)
    )
    with engine.connect() as conn:
        rows = conn.execute(query).mappings().all()
    engine.dispose()
    entries = [LogEntry(**{k: row[k] for k in LogEntry.__dataclass_fields__}) for row in rows]
    # SQLite drops the time zone on the way back; every time we store is UTC.
    return [e if e.at.tzinfo else replace(e, at=e.at.replace(tzinfo=UTC)) for e in entries]


CHAMPION_MOVES = ("promote", "override", "rollback")


def _append(
    config: Config, action: str, actor: str, from_version: str | None, to_version: str | None,
    verdict_id: str | None, reason: str | None, move_aliases, check_champion: bool = True,
    manifest: artifacts.Manifest | None = None,
) -> LogEntry:
    """Append one action and move the aliases in the same transaction.

    Refused when, by the log, the champion is no longer ``from_version`` (another action got there
    first), or when a concurrent writer took the same sequence number.
    """
    engine = _engine(config)
    model = promotion_log.c.model_name == config.model_name
    try:
        with engine.begin() as conn:
            last = conn.execute(sa.select(sa.func.max(promotion_log.c.seq)).where(model)).scalar()
            logged_champion = conn.execute(
                sa.select(promotion_log.c.to_version).where(model, promotion_log.c.action.in_(CHAMPION_MOVES))
                .order_by(promotion_log.c.seq.desc()).limit(1)
            ).scalar()
            if action == "reject" and logged_champion == to_version:
                # MLflow said "not the champion" a moment ago, but a promotion committed since: the log decides.
                raise PromotionRefused(
                    f"version {to_version} of {config.model_name!r} became the champion meanwhile; nothing changed — "
                    "use `pipeline rollback` to replace it"
                )
            if check_champion and logged_champion != from_version:
                raise PromotionRefused(
                    f"the champion of {config.model_name!r} changed meanwhile: the promotion log says "
                    f"v{logged_champion or '-'}, this {action} expected v{from_version or '-'}; nothing changed — "
                    "check `pipeline status` (if MLflow's aliases were moved outside the pipeline, use --override)"
                )
            entry = LogEntry(
                seq=(last or 0) + 1, at=datetime.now(UTC), actor=actor, action=action,
                from_version=from_version, to_version=to_version, verdict_id=verdict_id, reason=reason,
            )
            recorded_files = {} if manifest is None else {
                "artifact_sha256": manifest.digest, "artifact_manifest": manifest.to_json()}
            conn.execute(promotion_log.insert().values(model_name=config.model_name, **entry.__dict__, **recorded_files))
            move_aliases()
    except sa.exc.IntegrityError:
        raise PromotionRefused(
            f"another action on {config.model_name!r} was recorded at the same moment; nothing changed here — "
            "check `pipeline status` and retry if still wanted"
        ) from None
    finally:
        engine.dispose()
    return entry


def _current_champion(config: Config) -> str | None:
    info = registry.alias_version(config, registry.CHAMPION)
    return info.version if info else None


def _logged_champion(config: Config) -> str | None:
    return next((e.to_version for e in history(config) if e.action in CHAMPION_MOVES), None)


def champion_mismatch(config: Config) -> str | None:
    """What to say loudly when MLflow's champion alias is not the one the promotion log last recorded.

    The log is the truth: an alias moved past it (by hand in the MLflow UI, by anyone who can reach the
    tracking server) skipped the gate and the approval. Promotions and rollbacks are refused (their
    check of the log's champion fails) until a person records one with ``pipeline promote --override``.
    """
    alias, logged = _current_champion(config), _logged_champion(config)
    if alias == logged:
        return None
    return (
        f"MLflow's champion alias of {config.model_name!r} is v{alias or '-'} but the promotion log's last champion "
        f"move is v{logged or '-'}: the alias was moved outside the pipeline (or a promotion stopped half-way); "
        "promotions and rollbacks are refused until `pipeline promote --override --reason` records the champion"
    )


def promote(
    config: Config, version: str, actor: str | None = None, reason: str | None = None, override: bool = False
) -> LogEntry:
    """Make ``version`` the champion. Needs a passing gate verdict unless overridden with a reason."""
    version = str(version)
    actor = actor or default_actor()
    info = registry.get_version(config, version)
    tags = VersionTags.of(info)
    champion = _current_champion(config)
    if champion == version:
        done = [e for e in history(config) if e.to_version == version and e.action in ("promote", "override")]
        if done and done[0].actor == actor:
            return done[0]  # the same decider again (a retried task, or one killed before its record): done
        if done:
            raise PromotionRefused(
                f"version {version} is already the champion ({done[0].describe()}); nothing changed"
            )
        # MLflow moved the alias but the log holds no row: a promotion killed before its transaction committed.
        # Finish it from where the log stands.
        champion = _logged_champion(config)
        if champion == version:
            raise PromotionRefused(f"version {version} is already the champion")
    if override:
        if not reason:
            raise PromotionRefused("--override needs --reason: an override without a recorded reason is refused")
    else:
        if tags.approval == "rejected":
            raise PromotionRefused(f"version {version} was rejected; use --override --reason to promote it anyway")
        if not tags.gate_passed:
            raise PromotionRefused(
                f"version {version} has no passing gate verdict (gate.passed={info.tags.get('gate.passed', 'absent')}); "
                "use --override --reason to promote it anyway"
            )
        if tags.compared_champion != champion:
            raise PromotionRefused(
                f"the gate compared version {version} against champion {tags.compared_champion or 'none'}, but the "
                f"champion is now {champion or 'none'}; run a new cycle so the gate compares against the current champion"
            )

    def move() -> None:
        registry.set_alias(config, registry.CHAMPION, version)
        registry.set_alias(config, registry.PREVIOUS, champion)
        if registry.CHALLENGER in info.aliases:
            registry.set_alias(config, registry.CHALLENGER, None)
        registry.set_version_tags(config, version, VersionTags.of_decision(True, actor))

    manifest = registry.verify_version(config, version)
    action = "override" if override else "promote"
    return _append(
        config, action, actor, champion, version, tags.verdict_id, reason, move, check_champion=not override,
        manifest=manifest,
    )


def reject(config: Config, version: str, actor: str | None = None, reason: str | None = None) -> LogEntry:
    """Record that a person rejected ``version``; the champion is not touched."""
    version = str(version)
    actor = actor or default_actor()
    info = registry.get_version(config, version)
    if registry.CHAMPION in info.aliases:
        raise PromotionRefused(f"version {version} is the champion; use `pipeline rollback` to replace it")
    if VersionTags.of(info).approval == "rejected":
        done = [e for e in history(config) if e.to_version == version and e.action == "reject"]
        if done:
            return done[0]  # the same rejection again (a re-run task): already recorded

    def move() -> None:
        if registry.CHALLENGER in info.aliases:
            registry.set_alias(config, registry.CHALLENGER, None)
        registry.set_version_tags(config, version, VersionTags.of_decision(False, actor))

    champion = _current_champion(config)
    return _append(
        config, "reject", actor, champion, version, VersionTags.of(info).verdict_id, reason, move, check_champion=False
    )


def rollback(config: Config, actor: str | None = None, reason: str | None = None, to_version: str | None = None) -> LogEntry:
    """Move ``champion`` back to ``previous-champion`` (or to ``to_version``)."""
    actor = actor or default_actor()
    champion = _current_champion(config)
    if to_version is None:
        previous = registry.alias_version(config, registry.PREVIOUS)
        if previous is None:
            raise PromotionRefused(f"model {config.model_name!r} has no previous champion to roll back to")
        to_version = previous.version
    to_version = str(to_version)
    registry.get_version(config, to_version)
    if to_version == champion:
        raise PromotionRefused(f"version {to_version} is already the champion")
    # After the rollback, previous-champion is whatever preceded the restored version, so a second
    # rollback keeps walking back through the history instead of flipping between two versions.
    before_target = next(
        (e.from_version for e in history(config) if e.to_version == to_version and e.action in ("promote", "override")),
        None,
    )

    def move() -> None:
        registry.set_alias(config, registry.CHAMPION, to_version)
        registry.set_alias(config, registry.PREVIOUS, before_target)

    manifest = registry.verify_version(config, to_version)
    return _append(config, "rollback", actor, champion, to_version, None, reason, move, manifest=manifest)
