"""Which server runs a statement: the one place that decides.

- A request that may write (any method but GET and HEAD) runs every statement on the
  primary, on one connection, so that a transaction can span them and its reads see its
  writes.
- A read request runs on a replica when one is configured (`DATABASE_READ_URL`), answers
  its checks and is within `DB_MAX_REPLICA_LAG_MS` of the primary; replicas take turns.
  With a `Consistency-Token`, the chosen replica must show that write (one more statement
  on the replica), or the primary answers. A replica that fails to give a connection, or
  fails under a statement, is marked down and the primary runs the statement instead (a
  read repeated changes nothing), so a replica going away costs no request.
- Everything else, and every read when no replica is usable, runs on the primary.

Connections are taken lazily, at a request's first statement, and waited for at most
`DB_ACQUIRE_TIMEOUT` in all (a replica gets half of it, the primary what is left). A read
keeps its connection to the end; a write gives it back after each statement outside a
transaction.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import AsyncIterator, Awaitable
from contextlib import AbstractAsyncContextManager, asynccontextmanager, nullcontext
from typing import Any

import asyncpg

from service.base.background import every
from service.base.metrics import READ_FALLBACKS, READS
from service.base.settings import Settings
from service.database.pool import Connection, ServerPool, connection_lost
from service.database.replication import (
    REPLICA_CHECK_SECONDS,
    REPLICA_CHECK_TIMEOUT_SECONDS,
    SQL,
    Replica,
    WalHistory,
    shows_transaction,
)
from service.database.urls import server_label, split_hosts

logger = logging.getLogger(__name__)

_REPLICA_SHARE_OF_ACQUIRE = 0.5
POOL_SAMPLE_SECONDS = 1.0

# Errors of a replica under a read after which the primary answers instead: the server or
# connection went away, or the statement was cancelled by a conflict with replay.
_REPLICA_FAILED = (asyncpg.SerializationError,)


class Database:
    """The primary's pool, the replicas' pools, and the monitor that keeps their state."""

    def __init__(self, settings: Settings, primary_url: str) -> None:
        self.settings = settings
        self.primary = ServerPool("primary", primary_url, settings)
        read_urls = split_hosts(settings.database_read_url) if settings.database_read_url else []
        replica_wait = settings.db_acquire_timeout * _REPLICA_SHARE_OF_ACQUIRE
        self.replicas = [
            Replica(
                ServerPool(
                    f"replica {server_label(url)}", url, settings, connect_timeout=replica_wait
                )
            )
            for url in read_urls
        ]
        self.max_lag_seconds = settings.db_max_replica_lag_ms / 1000
        self.history = WalHistory()
        self._turns = itertools.cycle(range(len(self.replicas) or 1))
        self.read_reasons = {
            reason: READ_FALLBACKS.labels(reason)
            for reason in ("down", "lagging", "busy", "behind_token", "error")
        }
        self.reads = {served_by: READS.labels(served_by) for served_by in ("replica", "primary")}

    @property
    def servers(self) -> list[ServerPool]:
        return [self.primary, *(replica.server for replica in self.replicas)]

    async def open(self) -> None:
        await asyncio.gather(*(server.open() for server in self.servers))

    async def close(self) -> None:
        await asyncio.gather(*(server.close() for server in self.servers))

    def session(self, *, read_only: bool, token: int | None = None) -> Session:
        return Session(self, read_only=read_only, token=token)

    def sample(self) -> None:
        for server in self.servers:
            server.sample()

    def replica_for_read(self) -> tuple[Replica | None, str | None]:
        """The replica whose turn it is among the usable ones, or why there is none."""
        if not self.replicas:
            return None, None
        for _ in range(len(self.replicas)):
            replica = self.replicas[next(self._turns) % len(self.replicas)]
            if replica.usable(self.max_lag_seconds):
                return replica, None
        lagging = any(replica.up for replica in self.replicas)
        return None, "lagging" if lagging else "down"

    async def check_replicas(self) -> None:
        """One round of the monitor: the primary's position, then every replica's."""
        try:
            async with self.primary.connection(REPLICA_CHECK_TIMEOUT_SECONDS) as connection:
                position = await connection.fetchval(
                    SQL["primary_position"], timeout=REPLICA_CHECK_TIMEOUT_SECONDS
                )
            self.history.record(position, time.monotonic())
        except Exception as error:  # the primary is away: replicas keep their last measure
            logger.debug("primary position not read: %s", type(error).__name__)
        await asyncio.gather(
            *(replica.check(self.history, self.max_lag_seconds) for replica in self.replicas)
        )

    def monitor(self) -> AbstractAsyncContextManager[None]:
        """Check the replicas every REPLICA_CHECK_SECONDS while the app runs."""
        if not self.replicas:
            return nullcontext()
        return every(REPLICA_CHECK_SECONDS, self.check_replicas)

    def sampler(self) -> AbstractAsyncContextManager[None]:
        """Sample every pool into its gauges every second while the app runs.

        Sampled rather than computed at scrape time, so that with several workers each
        one's figures land in the shared multiprocess files.
        """

        async def sample() -> None:
            self.sample()

        return every(POOL_SAMPLE_SECONDS, sample)


class Session:
    """The statements of one request, on the server that the request calls for."""

    __slots__ = (
        "_connection",
        "_lost",
        "_release_each",
        "_server",
        "database",
        "read_only",
        "token",
    )

    def __init__(self, database: Database, *, read_only: bool, token: int | None) -> None:
        self.database = database
        self.read_only = read_only
        self.token = token
        self._connection: Connection | None = None
        self._server: ServerPool | None = None
        self._lost = False
        # A write gives its connection back after each statement outside a transaction,
        # not when its answer has gone: under a saturated pool, a connection held while the
        # answer is encoded and sent is one the next write waits for. A read keeps its
        # connection, so that its statements see one server (the replica it was given,
        # checked once against its Consistency-Token).
        self._release_each = not read_only

    # Not coroutines of their own: each hands back `_run`'s, one frame fewer on every
    # statement and on every resume of it.
    def fetch(self, query: str, *args: Any) -> Awaitable[list[asyncpg.Record]]:
        return self._run("fetch", query, args)

    def fetchrow(self, query: str, *args: Any) -> Awaitable[asyncpg.Record | None]:
        return self._run("fetchrow", query, args)

    def fetchval(self, query: str, *args: Any) -> Awaitable[Any]:
        return self._run("fetchval", query, args)

    def execute(self, query: str, *args: Any) -> Awaitable[str]:
        return self._run("execute", query, args)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[None]:
        """A transaction on the primary around the statements of the block."""
        assert not self.read_only, "a read-only request has no transaction to open"
        connection = self._connection or await self._connect()
        self._release_each = False
        try:
            async with connection.transaction():
                yield
        except BaseException as error:
            assert self._server is not None
            self._lost = self._lost or self._server.lost_by(error)
            raise
        finally:
            self._release_each = True

    async def to_primary(self) -> None:
        """Run this read's next statements on the primary: a read that ends with a statement
        only the primary can run (the feed's confirmation). A replica's connection goes
        back first; the primary's is kept."""
        if self._server is not self.database.primary:
            await self.close()
        self.read_only = False

    async def close(self) -> None:
        if self._connection is not None and self._server is not None:
            connection, self._connection = self._connection, None
            await self._server.release(connection, lost=self._lost)

    async def _run(self, method: str, query: str, args: tuple[Any, ...]) -> Any:
        connection = self._connection or await self._connect()
        try:
            result = await getattr(connection, method)(query, *args)
        except BaseException as error:
            if self._server is self.database.primary or not self._replica_failed(error):
                assert self._server is not None
                self._lost = self._lost or self._server.lost_by(error)
                raise
        else:
            if self._release_each:
                await self.close()
            return result
        # A replica failed under this read: mark it down, and let the primary answer.
        await self._leave_replica("error", lost=True)
        connection = await self._use(self.database.primary, self._budget())
        return await getattr(connection, method)(query, *args)

    @staticmethod
    def _replica_failed(error: BaseException) -> bool:
        return connection_lost(error) or isinstance(error, _REPLICA_FAILED)

    def _budget(self) -> float:
        return self.database.settings.db_acquire_timeout

    async def _use(self, server: ServerPool, wait: float) -> Connection:
        self._connection = await server.acquire(wait)
        self._server = server
        return self._connection

    async def _connect(self) -> Connection:
        database = self.database
        if not self.read_only or not database.replicas:
            return await self._use(database.primary, self._budget())
        started = time.monotonic()
        replica, reason = database.replica_for_read()
        if replica is not None:
            reason = await self._try_replica(replica)
            if reason is None:
                database.reads["replica"].inc()
                assert self._connection is not None
                return self._connection
        if reason is not None:
            database.read_reasons[reason].inc()
        database.reads["primary"].inc()
        remaining = self._budget() - (time.monotonic() - started)
        return await self._use(database.primary, max(remaining, 0.001))

    async def _try_replica(self, replica: Replica) -> str | None:
        """Take a connection on `replica` for this read; None, or why the primary must."""
        budget = self._budget() * _REPLICA_SHARE_OF_ACQUIRE
        try:
            connection = await self._use(replica.server, budget)
        except TimeoutError:
            return "busy"  # every connection busy or the host silent: spill to the primary
        except Exception as error:
            replica.mark_down(type(error).__name__)
            return "down"
        if self.token is None:
            return None
        try:
            if await shows_transaction(connection, self.token):
                return None
            reason, lost = "behind_token", False
        except Exception as error:
            replica.mark_down(type(error).__name__)
            reason, lost = "error", connection_lost(error)
        await self._leave_replica(None, lost=lost)
        return reason

    async def _leave_replica(self, reason: str | None, *, lost: bool) -> None:
        server = self._server
        for replica in self.database.replicas:
            if replica.server is server and reason is not None:
                replica.mark_down(reason)
                self.database.read_reasons[reason].inc()
        if self._connection is not None and server is not None:
            connection, self._connection = self._connection, None
            await server.release(connection, lost=lost)


async def open_database(settings: Settings, primary_url: str) -> Database:
    database = Database(settings, primary_url)
    await database.open()
    return database


@asynccontextmanager
async def running(settings: Settings, primary_url: str) -> AsyncIterator[Database]:
    """The database layer while the app runs: pools open, replicas watched."""
    database = await open_database(settings, primary_url)
    try:
        async with database.monitor(), database.sampler():
            yield database
    finally:
        await database.close()
