"""One process at a time per cycle: a lock held for as long as a process works on a cycle.

The lock lives beside the promotion log (``promotion.database_url``), which every worker that
runs a stage can reach, and it dies with its holder, so a process killed with SIGKILL never
leaves a cycle locked:

- PostgreSQL: a session-level advisory lock on a connection held open; the server releases it
  when the connection closes.
- SQLite: ``flock`` on a file beside the database file; the kernel releases it when the process exits.

Within one process the lock is re-entrant: ``pipeline run`` holds it for the whole cycle while
each stage (and the promotion inside it) takes it again.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import socket
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, suppress
from datetime import UTC, datetime
from pathlib import Path

from pipeline.config import Config, redact_url
from pipeline.errors import ConfigError, CycleBusy

_POLL_S = 0.2
_held: dict[str, int] = {}


def _key(config: Config, cycle_id: str) -> str:
    return f"{config.model_name}/{cycle_id}"


@contextmanager
def cycle_lock(config: Config, cycle_id: str, wait_s: float = 0.0) -> Iterator[None]:
    """Hold the cycle's lock; CycleBusy when another process holds it for longer than ``wait_s``."""
    key = _key(config, cycle_id)
    if key in _held:
        _held[key] += 1
        try:
            yield
        finally:
            _held[key] -= 1
        return
    with ExitStack() as stack:
        holder = _acquire(config, key, wait_s, stack)
        if holder is not None:
            raise CycleBusy(
                f"cycle {cycle_id} of {config.model_name!r} is already running ({holder}); nothing was changed — "
                "wait until it ends, then re-run it if it did not finish"
            )
        _held[key] = 1
        try:
            yield
        finally:
            del _held[key]


def is_running(config: Config, cycle_id: str) -> bool:
    """Whether some process (this one included) holds the cycle's lock right now."""
    key = _key(config, cycle_id)
    if key in _held:
        return True
    with ExitStack() as stack:
        return _acquire(config, key, 0.0, stack) is not None


def _acquire(config: Config, key: str, wait_s: float, stack: ExitStack) -> str | None:
    """Take the lock, to be released when ``stack`` closes; who holds it when it could not be taken in time."""
    url = config.promotion.database_url
    dialect = url.split(":", 1)[0].split("+", 1)[0]
    take = {"sqlite": _file_lock, "postgresql": _advisory_lock}.get(dialect)
    if take is None:
        raise ConfigError(
            f"cycle locks need promotion.database_url on PostgreSQL or SQLite, got {redact_url(url)}"
        )
    deadline = time.monotonic() + wait_s
    while True:
        holder = take(url, key, stack)
        if holder is None or time.monotonic() >= deadline:
            return holder
        time.sleep(_POLL_S)


def _file_lock(url: str, key: str, stack: ExitStack) -> str | None:
    from sqlalchemy.engine import make_url

    database = make_url(url).database
    base = Path(database) if database and database != ":memory:" else Path(tempfile.gettempdir()) / "pipeline"
    directory = base.with_name(f"{base.name}.locks")
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{hashlib.sha256(key.encode()).hexdigest()[:32]}.lock"
    handle = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        with os.fdopen(handle) as held:
            return held.read().strip() or "held by another process"
    stack.callback(os.close, handle)
    os.ftruncate(handle, 0)
    os.write(handle, f"pid {os.getpid()} on {socket.gethostname()} since {datetime.now(UTC):%H:%M:%S} UTC".encode())
    return None


def _advisory_lock(url: str, key: str, stack: ExitStack) -> str | None:
    import sqlalchemy as sa

    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    connection = engine.connect()
    taken = connection.execute(sa.text("SELECT pg_try_advisory_lock(hashtextextended(:key, 0))"), {"key": key}).scalar()
    if not taken:
        connection.close()
        engine.dispose()
        return "held by another process"

    def release() -> None:
        with suppress(sa.exc.SQLAlchemyError):
            connection.execute(sa.text("SELECT pg_advisory_unlock(hashtextextended(:key, 0))"), {"key": key})
        connection.close()
        engine.dispose()

    stack.callback(release)
    return None
