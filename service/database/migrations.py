"""Schema migrations with yoyo: the plain-SQL steps in `migrations/`, each with a rollback.

This module is the one place yoyo is driven: `python -m service migrate` and the start-up
of `serve` both come here. It adds three things to yoyo (docs/operations.md, issue 17):

**Bounded lock waits.** Every transaction yoyo opens starts with `SET LOCAL lock_timeout`
(MIGRATION_LOCK_TIMEOUT_MS), and a non-transactional step (`-- transactional: false`) runs
with it set on its session: a step that needs a lock held by a long transaction gives up
after that long instead of queueing every request on the table behind it. A step that
gave up (SQLSTATE 55P03) is tried again MIGRATION_RETRIES times, after
MIGRATION_RETRY_BACKOFF_MS, doubled each time; then the run fails with `StepBlocked`,
which names the step and the sessions that blocked it, found with `pg_blocking_pids()` from
a second connection while the step waited.

**A lock that outlives no one.** yoyo's lock row (`yoyo_lock`) stays behind when its
process is killed. Here the row holds a random token of the run and a heartbeat (`ctime`,
refreshed every LOCK_HEARTBEAT_S from a connection of its own); a row silent for longer
than LOCK_STALE_AFTER_S is a holder that is gone, and the next run removes it and goes on.
A heartbeat needs no process id or backend pid, so it holds across hosts and through
PgBouncer (where a backend pid belongs to a pooled connection, not to the run). The way out
by hand stays one command: `python -m service migrate --break-lock`.

**Concurrent index builds that can be retried.** A failed `CREATE INDEX CONCURRENTLY`
leaves an INVALID index of that name behind; before each attempt of a non-transactional
step, the invalid indexes its CONCURRENTLY statements name are dropped
(`DROP INDEX CONCURRENTLY`), so the build starts clean.

yoyo runs on a synchronous driver (psycopg 3). The service's URL becomes yoyo's by naming
the driver: `postgresql+psycopg://…`. Through a transaction pooler too: psycopg prepares a
statement it runs a fifth time on a connection, which PgBouncer 1.18 in transaction mode
cannot keep, so no migration connection ever prepares. yoyo reads one host from a URL: for
a multi-host URL (`a:5432,b:5432/db?target_session_attrs=read-write`) libpq picks the host
first, and yoyo is given that one.
"""

from __future__ import annotations

import logging
import os
import re
import secrets
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from service.base.settings import Settings
from service.database.sql import load_queries, project_folder
from service.database.urls import has_several_hosts, with_host

if TYPE_CHECKING:
    import psycopg

logger = logging.getLogger(__name__)

MIGRATIONS_DIR = project_folder("migrations")
# The lock row's heartbeat: refreshed this often, and taken as a holder gone when silent
# this long. A waiting run gives up after LOCK_WAIT_S with the holder's heartbeat age.
LOCK_HEARTBEAT_S = 2.0
LOCK_STALE_AFTER_S = 10.0
LOCK_WAIT_S = 60.0
# How often a waiting step's blockers are looked up.
BLOCKER_SAMPLE_S = 0.2
APPLICATION_NAME = "posts-service migrate"


class MigrationError(Exception):
    """A migrate run stopped without finishing; the message says why and what to do."""


@dataclass(frozen=True)
class Blocker:
    """A session that held a lock a step waited for."""

    pid: int
    application_name: str
    state: str | None
    since: datetime | None
    query: str

    def __str__(self) -> str:
        since = self.since.isoformat(timespec="seconds") if self.since else "?"
        query = " ".join(self.query.split())[:200]
        return (
            f"pid {self.pid} (application_name {self.application_name!r}, state {self.state}, "
            f"since {since}, query: {query})"
        )


class StepBlocked(MigrationError):
    def __init__(self, step: str, attempts: int, lock_timeout_ms: int, blockers: list[Blocker]):
        self.step, self.attempts, self.blockers = step, attempts, blockers
        who = "; ".join(map(str, blockers)) or "a session that was gone before it was seen"
        super().__init__(
            f"step {step} gave up after {attempts} attempts, each waiting at most "
            f"{lock_timeout_ms} ms for its locks; blocked by {who}"
        )


class LockHeld(MigrationError):
    pass


@dataclass(frozen=True)
class Bounds:
    """How long a step may wait for a lock, and how often it is tried again."""

    lock_timeout_ms: int = 2000
    retries: int = 3
    backoff_ms: int = 500
    # How long a run waits for another run's migration lock (not a setting).
    lock_wait_s: float = LOCK_WAIT_S

    @classmethod
    def of(cls, settings: Settings) -> Bounds:
        return cls(
            settings.migration_lock_timeout_ms,
            settings.migration_retries,
            settings.migration_retry_backoff_ms,
        )


@cache
def _queries() -> dict[str, str]:
    """sql/migrations/ without its comment lines, `$n` turned into psycopg's `%s` (each
    parameter used once, in order)."""
    return {
        name: re.sub(r"\$\d+", "%s", re.sub(r"(?m)^\s*--.*\n", "", text))
        for name, text in load_queries("migrations").items()
    }


def single_host(database_url: str) -> str:
    """`database_url` with the one host libpq connects to, when it names several."""
    if not has_several_hosts(database_url):
        return database_url
    import psycopg

    with psycopg.connect(database_url, connect_timeout=10) as connection:
        return with_host(database_url, connection.info.host, connection.info.port)


def yoyo_url(database_url: str) -> str:
    scheme, rest = single_host(database_url).split("://", 1)
    return f"postgresql+psycopg://{rest}" if scheme in ("postgresql", "postgres") else database_url


@cache
def migration_ids(folder: Path = MIGRATIONS_DIR) -> frozenset[str]:
    """Ids of every migration in `folder` (read once: the readiness probe asks on every
    call)."""
    return frozenset(
        path.name.removesuffix(".sql")
        for path in folder.glob("*.sql")
        if not path.name.endswith(".rollback.sql")
    )


def _side_connection(database_url: str, role: str) -> psycopg.Connection[Any]:
    """A connection of the run's own beside yoyo's, for the heartbeat or the blockers."""
    import psycopg

    connection = psycopg.connect(
        single_host(database_url),
        autocommit=True,
        connect_timeout=10,
        application_name=f"{APPLICATION_NAME} {role}",
    )
    connection.prepare_threshold = None
    return connection


class _Heartbeat(threading.Thread):
    """Refreshes the lock row's `ctime` while the run holds it; notices a lock broken."""

    def __init__(self, database_url: str, token: int) -> None:
        super().__init__(name="migration-lock-heartbeat", daemon=True)
        self.connection = _side_connection(database_url, "heartbeat")
        self.token = token
        self.stopping = threading.Event()
        self.lost = False

    def run(self) -> None:
        with self.connection:
            while not self.stopping.wait(LOCK_HEARTBEAT_S):
                try:
                    alive = self.connection.execute(_queries()["heartbeat"], (self.token,))
                    if alive.fetchone() is None:
                        self.lost = True
                        logger.error("the migration lock was taken from this run")
                        return
                except Exception:
                    logger.exception("migration lock heartbeat failed")

    def stop(self) -> None:
        self.stopping.set()
        self.join()


class _BlockerWatch(threading.Thread):
    """Looks up, while a step runs, who blocks it; keeps the last sessions seen."""

    def __init__(self, database_url: str, application_name: str) -> None:
        super().__init__(name="migration-blockers", daemon=True)
        self.connection = _side_connection(database_url, "watch")
        self.application_name = application_name
        self.stopping = threading.Event()
        self.blockers: list[Blocker] = []

    def run(self) -> None:
        with self.connection:
            while not self.stopping.wait(BLOCKER_SAMPLE_S):
                try:
                    rows = self.connection.execute(
                        _queries()["blockers"], (self.application_name,)
                    ).fetchall()
                except Exception:
                    logger.exception("looking up a migration step's blockers failed")
                    return
                if rows:
                    self.blockers = [Blocker(*row) for row in rows]

    def stop(self) -> None:
        self.stopping.set()
        self.join()


def _backend_class() -> type[Any]:
    from yoyo.backends.core.postgresql import PostgresqlPsycopgBackend

    class Backend(PostgresqlPsycopgBackend):  # type: ignore[misc]
        """yoyo's psycopg backend with a lock timeout on every transaction and step, the
        run's application_name on its connections, and a heartbeat lock."""

        bounds = Bounds()
        database_url = ""
        heartbeat: _Heartbeat | None = None
        _is_locked = False

        def init_connection(self, connection: Any) -> None:
            connection.prepare_threshold = None  # never prepare: see the module's docstring
            super().init_connection(connection)

        def copy(self) -> Any:
            twin = super().copy()
            twin.bounds, twin.database_url = self.bounds, self.database_url
            return twin

        def _set_lock_timeout(self, local: bool) -> None:
            self.connection.execute(
                "SELECT set_config('lock_timeout', %s, %s)",
                (f"{self.bounds.lock_timeout_ms}ms", local),
            )

        def begin(self) -> None:
            super().begin()
            self._set_lock_timeout(local=True)

        @contextmanager
        def disable_transactions(self) -> Iterator[None]:
            with super().disable_transactions():
                self._set_lock_timeout(local=False)
                try:
                    yield
                finally:
                    # Through a transaction pooler the session is shared: put it back.
                    self.connection.execute("RESET lock_timeout")

        @contextmanager
        def lock(self, timeout: float | None = None) -> Iterator[None]:
            if self._is_locked:
                yield
                return
            token = _take_lock(self.connection, self.bounds.lock_wait_s)
            self.heartbeat = _Heartbeat(self.database_url, token)
            self.heartbeat.start()
            try:
                self._is_locked = True
                yield
                self._is_locked = False
            finally:
                self.heartbeat.stop()
                self.connection.execute(_queries()["release_lock"], (token,))

    return Backend


def _take_lock(connection: psycopg.Connection[Any], timeout: float) -> int:
    """Take the lock row, removing it first when its holder's heartbeat has stopped."""
    token = secrets.randbelow(2**31 - 1) + 1
    deadline = time.monotonic() + timeout
    while True:
        if connection.execute(_queries()["take_lock"], (token,)).fetchone():
            logger.info(
                "migration lock taken: token %s, %s pid %s",
                token,
                socket.gethostname(),
                os.getpid(),
            )
            return token
        broken = connection.execute(
            _queries()["break_stale_lock"], (LOCK_STALE_AFTER_S,)
        ).fetchone()
        if broken:
            logger.warning("removed the migration lock of run %s: no heartbeat for %.1f s", *broken)
            continue
        if time.monotonic() > deadline:
            holder = connection.execute(_queries()["lock_holder"]).fetchone()
            silent = f"last heartbeat {holder[1]:.1f} s ago" if holder else "just released"
            raise LockHeld(
                f"another migrate run holds the lock (token {holder[0] if holder else '?'}, "
                f"{silent}); it is removed by itself once silent for {LOCK_STALE_AFTER_S:.0f} s, "
                "or by hand: python -m service migrate --break-lock"
            )
        time.sleep(0.5)


@contextmanager
def _backend(
    database_url: str, bounds: Bounds = Bounds(), application_name: str = APPLICATION_NAME
) -> Iterator[Any]:
    from yoyo.connections import parse_uri

    uri = parse_uri(yoyo_url(database_url))
    uri = uri._replace(args={**uri.args, "application_name": application_name})
    backend = _backend_class()(uri, "_yoyo_migration")
    backend.bounds, backend.database_url = bounds, database_url
    try:
        backend.init_database()
        yield backend
    finally:
        backend.connection.close()


def _read(folder: Path) -> Any:
    from yoyo import read_migrations

    return read_migrations(str(folder))


_CONCURRENT_INDEX = re.compile(
    r"\bCREATE\s+(?:UNIQUE\s+)?INDEX\s+CONCURRENTLY\s+(?:IF\s+NOT\s+EXISTS\s+)?\"?([\w$]+)\"?",
    re.IGNORECASE,
)


def _drop_invalid_indexes(backend: Any, migration: Any) -> None:
    """Drop the INVALID indexes (left by a failed concurrent build) that this
    non-transactional step builds CONCURRENTLY, so that its build starts clean."""
    from psycopg import sql

    migration.load()
    names = sorted(set(_CONCURRENT_INDEX.findall(migration.source)))
    if not names:
        return
    invalid = [
        row[0] for row in backend.connection.execute(_queries()["invalid_indexes"], (names,))
    ]
    with backend.disable_transactions():
        for name in invalid:
            logger.warning("dropping the invalid index %s left by a failed build", name)
            backend.connection.execute(
                sql.SQL("DROP INDEX CONCURRENTLY IF EXISTS {}").format(sql.Identifier(name))
            )


def _apply_one(backend: Any, migration: Any, bounds: Bounds, application_name: str) -> None:
    """Apply one step, tried again with backoff while it gives up waiting for a lock."""
    from psycopg.errors import LockNotAvailable

    attempts = bounds.retries + 1
    for attempt in range(1, attempts + 1):
        watch = _BlockerWatch(backend.database_url, application_name)
        watch.start()
        try:
            migration.load()
            if not migration.use_transactions:
                _drop_invalid_indexes(backend, migration)
            backend.apply_one(migration)
            return
        except LockNotAvailable:
            if attempt == attempts:
                raise StepBlocked(
                    migration.id, attempts, bounds.lock_timeout_ms, watch.blockers
                ) from None
            pause = bounds.backoff_ms * 2 ** (attempt - 1) / 1000
            logger.warning(
                "step %s waited %d ms for a lock held by %s; again in %.1f s (attempt %d of %d)",
                migration.id,
                bounds.lock_timeout_ms,
                "; ".join(map(str, watch.blockers)) or "?",
                pause,
                attempt + 1,
                attempts,
            )
            time.sleep(pause)
        finally:
            watch.stop()


def apply(database_url: str, bounds: Bounds = Bounds(), folder: Path = MIGRATIONS_DIR) -> list[str]:
    """Apply every pending migration in `folder`; return the ids applied."""
    # The run's connections share a name that no other run has: the blocker lookup finds
    # the waiting one by it, and so can an operator in pg_stat_activity.
    application_name = f"{APPLICATION_NAME} {secrets.token_hex(4)}"
    applied: list[str] = []
    with _backend(database_url, bounds, application_name) as backend, backend.lock():
        for migration in backend.to_apply(_read(folder)):
            if backend.heartbeat.lost:
                raise LockHeld("this run's migration lock was removed by another run: stopped")
            _apply_one(backend, migration, bounds, application_name)
            applied.append(migration.id)
    return applied


def rollback(
    database_url: str,
    steps: int | None = 1,
    bounds: Bounds = Bounds(),
    folder: Path = MIGRATIONS_DIR,
) -> list[str]:
    """Roll back the last `steps` applied migrations (all when None); return their ids."""
    with _backend(database_url, bounds) as backend, backend.lock():
        applied = backend.to_rollback(_read(folder))
        chosen = applied if steps is None else applied[:steps]
        backend.rollback_migrations(chosen)
    return [migration.id for migration in chosen]


def status(database_url: str, folder: Path = MIGRATIONS_DIR) -> list[tuple[str, bool]]:
    """Every migration id in order, with whether it is applied."""
    migrations = _read(folder)
    with _backend(database_url) as backend:
        pending = {migration.id for migration in backend.to_apply(migrations)}
    return [(migration.id, migration.id not in pending) for migration in migrations]


def break_lock(database_url: str) -> str:
    """Remove the lock row whoever holds it (the documented way out by hand)."""
    with _backend(database_url) as backend:
        row = backend.connection.execute(_queries()["break_lock"]).fetchone()
    if row is None:
        return "no migration lock was held"
    return f"removed the migration lock of run {row[0]} (last heartbeat {row[1]:.1f} s ago)"
