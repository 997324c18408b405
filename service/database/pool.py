"""One asyncpg pool per PostgreSQL server, opened the way the pooler in front of it needs.

`DB_POOLER=none` (PostgreSQL itself, or a session pooler): statements are prepared once per
connection (asyncpg's statement cache) and PostgreSQL's own `statement_timeout` is sent as
a startup parameter.

`DB_POOLER=transaction` (PgBouncer with `pool_mode = transaction`): two transactions of one
client connection may run on two server connections, so nothing may outlive a transaction.
Statements are unnamed (`statement_cache_size=0`), each sent with its own Parse in the one
exchange that PgBouncer keeps on one server connection (`DescribedOnce`), and no startup
parameter is sent that PgBouncer does not forward (it closes the connection on
`statement_timeout`). The service creates no other session state in either mode: no
session `SET`, advisory lock, cursor, `LISTEN` or temporary table.

The statement timeout is also the client's, in both modes: asyncpg's `command_timeout`
cancels a statement that has not answered in time with a CancelRequest, which PgBouncer
passes on to the server connection running it. Behind a transaction pooler that is the
only timeout; on a direct connection it also bounds what `statement_timeout` cannot: a
COMMIT waiting for a synchronous standby that does not answer (the server turns its
statement timer off before the commit).

Several hosts (`a:5432,b:5432,c:5432/db?target_session_attrs=read-write`, a primary and its
failover candidates): each new connection tries the hosts in turn, as asyncpg would, but
passes over a primary whose commits cannot complete because the synchronous standby it
waits for is not connected (`sql/routing/commits_stalled.sql`), when another host is a
usable primary. That is what an orphan looks like: a primary whose Patroni died keeps
running read-write after a standby was promoted in its place, and every commit on it waits
forever; asyncpg alone keeps choosing it, since it is read-write and first in the list
(FACTS.md, "Patroni"). And on such a pool a statement cut off by the client's timeout (a
COMMIT waiting for a standby that does not answer: nothing else outlives the server's own
statement_timeout) counts as a lost connection: the pool's connections are replaced on
their next use, so they look again for the primary. When every primary is stalled, the
first one is used as before (commits time out: 503).

Detection: in mode `none`, a server that refuses the startup parameters with SQLSTATE
08P01 (protocol violation; PostgreSQL accepts them) is a pooler: the service logs a
warning and runs in transaction mode, which is correct behind any pooler.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from typing import TYPE_CHECKING, Any, TypeAlias

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from service.base.deadlines import Deadlines
from service.base.metrics import (
    POOL_ACQUIRE_SECONDS,
    POOL_IDLE,
    POOL_IN_USE,
    POOL_MAX,
    POOL_SIZE,
    HistogramTally,
)
from service.base.settings import Settings
from service.database.sql import load_queries
from service.database.urls import has_several_hosts, server_label, split_hosts

logger = logging.getLogger(__name__)

if TYPE_CHECKING:
    Connection: TypeAlias = PoolConnectionProxy[asyncpg.Record]
    Pool: TypeAlias = asyncpg.Pool[asyncpg.Record]
else:
    Connection = PoolConnectionProxy
    Pool = asyncpg.Pool

APPLICATION_NAME = "posts-service"
# The client's timeout fires a little after the server's, so that on a direct connection
# PostgreSQL's own statement_timeout (a clean 57014) normally wins.
CLIENT_TIMEOUT_MARGIN_SECONDS = 0.5

# The connection itself failed: the server went away, restarted, is shutting down or
# starting, or cannot be reached. Its idle siblings are likely dead too.
CONNECTION_LOST: tuple[type[BaseException], ...] = (
    OSError,
    asyncpg.ConnectionDoesNotExistError,
    asyncpg.PostgresConnectionError,
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
    asyncpg.CannotConnectNowError,
    # The client's own state machine broke: seen behind PgBouncer when the server restarts
    # under a statement (an error arrives between parse and execute). Also covers
    # TargetServerAttributeNotMatched: no host of a multi-host URL accepts writes.
    asyncpg.InternalClientError,
)


SQL = load_queries("routing")


def connection_lost(error: BaseException) -> bool:
    """Whether `error` means the connection (or its server) is gone. Not a timeout: a
    statement cut off by the client's timeout leaves a healthy connection (TimeoutError is
    an OSError in Python 3.11)."""
    return isinstance(error, CONNECTION_LOST) and not isinstance(error, TimeoutError)


async def _keep_session(connection: asyncpg.Connection) -> None:
    """Release a connection to the pool without asyncpg's reset query.

    The default reset (`pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL`) is a
    round trip on every release, for session state this service never creates. asyncpg
    still rolls back a transaction left open (and the pool closes a broken connection)
    before calling this.
    """


# asyncpg's defaults for its own statement cache (the service has fewer statements): a
# migration that changes a column's type is seen within this time without a restart.
_DESCRIBED_MAX = 100
_DESCRIBED_SECONDS = 300.0


class DescribedOnce(asyncpg.Connection):
    """A connection for behind a transaction pooler that describes each statement once.

    With `statement_cache_size=0` asyncpg sends every statement twice: Parse and Describe
    in one exchange, to learn its parameter and column types, then Parse, Bind and Execute
    in a second (the unnamed statement of the first may have gone with the server
    connection PgBouncer lent for it). The types do not change from one run to the next,
    so this connection keeps what a Describe taught, per query, for as long as asyncpg
    keeps its own prepared statements by default, and later runs send only the second
    exchange: one round trip and one parse on the server a statement, where there were
    two and two. What it keeps stays marked unprepared, so every run carries its own
    Parse. asyncpg's `reload_schema_state()` and its pool-wide statement cache drops clear
    it too.
    """

    __slots__ = ("_described",)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._described: dict[tuple[Any, ...], tuple[Any, float]] = {}

    async def _get_statement(
        self,
        query: str,
        timeout: float | None,  # noqa: ASYNC109 (asyncpg's signature)
        *,
        named: str | bool | None = False,
        use_cache: bool = True,
        ignore_custom_codec: bool = False,
        record_class: type | None = None,
    ) -> Any:
        if named or not use_cache:  # an explicit prepare(): asyncpg's own way
            return await super()._get_statement(  # type: ignore[misc]
                query,
                timeout,
                named=named,
                use_cache=use_cache,
                ignore_custom_codec=ignore_custom_codec,
                record_class=record_class,
            )
        key = (query, record_class, ignore_custom_codec)
        now = time.monotonic()
        if (kept := self._described.get(key)) is not None and kept[1] > now:
            return kept[0]
        statement = await super()._get_statement(  # type: ignore[misc]
            query, timeout, ignore_custom_codec=ignore_custom_codec, record_class=record_class
        )
        if len(self._described) >= _DESCRIBED_MAX:
            del self._described[next(iter(self._described))]  # the oldest
        self._described[key] = (statement, now + _DESCRIBED_SECONDS)
        return statement

    def _drop_local_statement_cache(self) -> None:
        super()._drop_local_statement_cache()  # type: ignore[misc]
        self._described.clear()


class FairGate:
    """Permits handed out first come, first served; a waiter gives up at its deadline.

    `asyncio.Semaphore` is fair too, but it scans all its waiters on every acquire while
    any wait, and a deadline on top (`asyncio.timeout`) arms and disarms a timer scope per
    waiting request: together a tenth more instructions a request at 32 callers on 16
    connections. Here a request with a free permit pays two integer operations; one that
    waits pays one future. The waiters' deadlines share one timer (`Deadlines`, as the body
    deadlines of `service.edge.limits` do): a timer per wait, armed and cancelled, was most
    of the gate's instructions on a get at 32 callers on 10 connections
    (docs/performance.md).
    """

    def __init__(self, permits: int) -> None:
        self._free = permits
        self._waiters: deque[tuple[asyncio.Future[None], float]] = deque()
        # Made at the first wait, with the loop looked up once: asyncio checks the process
        # id (a system call) on every lookup.
        self._deadlines: Deadlines | None = None

    async def enter(self, wait: float) -> bool:
        """Take a permit, waiting at most `wait` seconds (then TimeoutError); whether it
        had to wait."""
        # A free permit means nobody is waiting: `leave` hands permits to waiters first.
        if self._free:
            self._free -= 1
            return False
        deadlines = self._deadlines
        if deadlines is None:
            deadlines = self._deadlines = Deadlines(asyncio.get_running_loop(), self._give_up)
        turn: asyncio.Future[None] = deadlines.loop.create_future()
        deadline = deadlines.loop.time() + wait
        self._waiters.append((turn, deadline))
        deadlines.include(deadline)
        try:
            await turn
        except asyncio.CancelledError:
            if turn.done() and not turn.cancelled() and turn.exception() is None:
                self.leave()  # handed a permit just as we were cancelled: pass it on
            raise
        return True

    def leave(self) -> None:
        """Give a permit back: to the oldest waiter still waiting, else to the pool."""
        while self._waiters:
            turn, _ = self._waiters.popleft()
            if not turn.done():
                turn.set_result(None)
                return
        self._free += 1

    def _give_up(self, now: float) -> float | None:
        """The timer's: every waiter past its deadline fails with TimeoutError and leaves
        the queue; the earliest deadline left."""
        waiting: deque[tuple[asyncio.Future[None], float]] = deque()
        for turn, deadline in self._waiters:
            if turn.done():
                continue
            if deadline <= now:
                turn.set_exception(TimeoutError())
            else:
                waiting.append((turn, deadline))
        self._waiters = waiting
        return min((deadline for _, deadline in waiting), default=None)


class ServerPool:
    """The pool of one server (or of one multi-host URL, such as a primary with its
    failover candidates), with the bounded, first-come-first-served acquire that every
    request goes through.

    Fairness: asyncpg's pool hands out connections through an `asyncio.Queue`, whose `get`
    lets a newcomer take a just-released connection before the waiter it was meant for
    wakes up; the waiter then queues again at the back, and under load some requests wait
    many turns (a long tail at 32 callers on 10 connections). A `FairGate` with one
    permit per connection stands in front: it hands a released permit straight to the
    oldest waiter, and the pool's queue never has waiters of its own.

    `connect_timeout` bounds what a free permit can still cost (opening a connection to a
    host that does not answer); a wait for a permit is bounded by the caller's `wait`.
    """

    def __init__(
        self, name: str, dsn: str, settings: Settings, *, connect_timeout: float | None = None
    ) -> None:
        self.name = name
        self.dsn = dsn
        self.settings = settings
        self.connect_timeout = connect_timeout or settings.db_acquire_timeout
        self.transaction_pooler = settings.db_pooler == "transaction"
        # One URL per host when `dsn` names several: tried in turn by `_connect`.
        self.hosts = split_hosts(dsn) if has_several_hosts(dsn) else []
        self._pool: Pool | None = None
        self._turns = FairGate(settings.db_pool_max)
        self._acquire_seconds = HistogramTally(POOL_ACQUIRE_SECONDS.labels(name))
        self._gauges = tuple(gauge.labels(name) for gauge in (POOL_SIZE, POOL_IDLE, POOL_IN_USE))
        self._max_gauge = POOL_MAX.labels(name)

    @property
    def pool(self) -> Pool:
        assert self._pool is not None, "the pool is opened in the app's lifespan"
        return self._pool

    def _connect_options(self) -> dict[str, Any]:
        statement_timeout_ms = self.settings.db_statement_timeout_ms
        server_settings = {"application_name": APPLICATION_NAME}
        if self.transaction_pooler:
            # asyncpg's own startup packet says client_encoding `'utf-8'` (quotes and all);
            # the server reports `UTF8`, and PgBouncer, seeing the two differ, sends `SET
            # client_encoding` before every transaction: a second statement per request.
            # Sent again in the server's own spelling, this later value wins on both.
            server_settings["client_encoding"] = "UTF8"
        else:
            server_settings["statement_timeout"] = str(statement_timeout_ms)
        margin = 0 if self.transaction_pooler else CLIENT_TIMEOUT_MARGIN_SECONDS
        return {
            "server_settings": server_settings,
            "statement_cache_size": 0 if self.transaction_pooler else 100,
            "connection_class": DescribedOnce if self.transaction_pooler else asyncpg.Connection,
            "command_timeout": statement_timeout_ms / 1000 + margin,
            # A host that does not answer must not hold a request past its acquire timeout.
            "timeout": self.connect_timeout,
        }

    def lost_by(self, error: BaseException) -> bool:
        """Whether `error` calls for new connections: the connection is gone, its server
        refused a write as read-only (it is a standby now: a demoted primary that a router
        still sends connections to), or, with several hosts, a statement the server never
        answered (a commit stalled on an orphan) was cut off by the client's timeout."""
        if connection_lost(error) or isinstance(error, asyncpg.ReadOnlySQLTransactionError):
            return True
        return bool(self.hosts) and isinstance(error, TimeoutError)

    async def _connect(self, *args: Any, **kwargs: Any) -> asyncpg.Connection:
        """A new connection of the pool: to the one server, or with several hosts to the
        first whose commits can complete (see the module's docstring)."""
        if not self.hosts:
            return await self._connect_to(*args, **kwargs)
        stalled: asyncpg.Connection | None = None
        error: BaseException | None = None
        for url in self.hosts:
            try:
                connection = await self._connect_to(url, **kwargs)
            except CONNECTION_LOST as failure:
                error = failure
                continue
            try:
                commits_stalled = await connection.fetchval(SQL["commits_stalled"])
            except CONNECTION_LOST as failure:
                connection.terminate()
                error = failure
                continue
            if not commits_stalled:
                if stalled is not None:
                    stalled.terminate()
                return connection
            logger.warning(
                "%s: %s is a primary whose commits wait for a missing synchronous standby;"
                " trying the next host",
                self.name,
                server_label(url),
            )
            if stalled is None:
                stalled = connection
            else:
                connection.terminate()
        if stalled is not None:
            return stalled
        assert error is not None
        raise error

    async def _connect_to(self, *args: Any, **kwargs: Any) -> asyncpg.Connection:
        """asyncpg's connect, with the options of the current mode and pooler detection."""
        try:
            return await asyncpg.connect(*args, **kwargs | self._connect_options())
        except asyncpg.ProtocolViolationError:
            if self.transaction_pooler:
                raise
            logger.warning(
                "%s refused the startup parameter statement_timeout (SQLSTATE 08P01): a "
                "connection pooler such as PgBouncer; running as DB_POOLER=transaction",
                self.name,
            )
            self.transaction_pooler = True
            return await asyncpg.connect(*args, **kwargs | self._connect_options())

    async def open(self) -> None:
        """Open the pool; when the server is down, open it empty and connect later."""

        async def create(min_size: int) -> Pool:
            return await asyncpg.create_pool(
                self.dsn,
                min_size=min_size,
                max_size=self.settings.db_pool_max,
                reset=_keep_session,
                connect=self._connect,
                # Connections stay open: closing idle ones after a while (asyncpg's default,
                # 300 s) arms and disarms a timer on every release, and the next burst
                # would pay for opening them again.
                max_inactive_connection_lifetime=0,
            )

        try:
            self._pool = await create(self.settings.db_pool_min)
        except CONNECTION_LOST as error:
            logger.warning(
                "%s not reachable at start (%s); serving 503 until it is",
                self.name,
                type(error).__name__,
            )
            self._pool = await create(0)

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()

    async def acquire(self, wait: float) -> Connection:
        """A connection, waited for at most `wait` seconds (then TimeoutError)."""
        started = time.perf_counter()
        waited = await self._turns.enter(wait)
        try:
            # With a permit there is a free connection in the pool: this waits only for
            # a connection to be opened, which connect_timeout bounds.
            connection = await self.pool.acquire()
        except BaseException:
            self._turns.leave()
            raise
        if waited:  # the histogram is of waits: a request that found a free one adds none
            self._acquire_seconds.observe(time.perf_counter() - started)
        return connection

    async def release(self, connection: Connection, *, lost: bool = False) -> None:
        """Give the connection back; never raises, since the request's answer is decided.

        A connection that cannot be given back cleanly (its cancelled statement does not
        drain, the server went away while it closed) is terminated instead: the pool opens
        a new one when it needs it.
        """
        try:
            if lost:
                # After a restart or failover every idle connection is dead too: replace
                # them all on their next use, so recovery costs one failed request, not one
                # per pooled connection.
                await self.pool.expire_connections()
            await self.pool.release(connection)
        except Exception as error:
            logger.info("%s: a connection was terminated at release (%s)", self.name, error)
            with suppress(Exception):  # already detached from the pool, or already closed
                connection.terminate()
        finally:
            self._turns.leave()

    @asynccontextmanager
    async def connection(self, wait: float | None = None) -> AsyncIterator[Connection]:
        """A connection for a block of statements (background work, health checks)."""
        connection = await self.acquire(wait or self.settings.db_acquire_timeout)
        lost = False
        try:
            yield connection
        except BaseException as error:
            lost = self.lost_by(error)
            raise
        finally:
            await self.release(connection, lost=lost)

    def sample(self) -> None:
        """The pool's gauges, now, and the waits for a connection tallied since the last
        time into their histogram."""
        self._acquire_seconds.publish()
        if self._pool is None:
            return
        size, idle = self._pool.get_size(), self._pool.get_idle_size()
        size_gauge, idle_gauge, in_use_gauge = self._gauges
        size_gauge.set(size)
        idle_gauge.set(idle)
        in_use_gauge.set(size - idle)
        self._max_gauge.set(self._pool.get_max_size())


async def open_pool(settings: Settings, dsn: str) -> Pool:
    """A bare asyncpg pool as the service opens its own (load-test baselines use it)."""
    server = ServerPool("primary", dsn, settings)
    await server.open()
    return server.pool
