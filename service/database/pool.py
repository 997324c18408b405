"""The asyncpg pool and how handlers get a connection.

The pool opens in the app's lifespan and lives on `app.state.pool`; handlers receive one
connection per request through `provide_connection`, acquired with a bounded wait so a
dead or exhausted database answers 503 instead of hanging.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncGenerator
from typing import TYPE_CHECKING, TypeAlias

import asyncpg
from asyncpg.pool import PoolConnectionProxy
from litestar.datastructures import State

from service.observability import POOL_ACQUIRE_SECONDS
from service.settings import Settings

logger = logging.getLogger(__name__)

if TYPE_CHECKING:
    Connection: TypeAlias = PoolConnectionProxy[asyncpg.Record]
    Pool: TypeAlias = asyncpg.Pool[asyncpg.Record]
else:
    Connection = PoolConnectionProxy
    Pool = asyncpg.Pool


async def _keep_session(connection: asyncpg.Connection) -> None:
    """Release a connection to the pool without asyncpg's reset query.

    The default reset (`pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL`) is a
    round trip on every release, for session state this service never creates: no
    advisory locks, cursors, LISTEN or SET. asyncpg still rolls back a transaction left
    open (and the pool closes a broken connection) before calling this.
    """


async def open_pool(settings: Settings, dsn: str) -> Pool:
    """Open the pool; when the database is down, open it empty and let it connect later."""

    async def create(min_size: int) -> Pool:
        return await asyncpg.create_pool(
            dsn,
            min_size=min_size,
            max_size=settings.db_pool_max,
            reset=_keep_session,
            server_settings={
                "application_name": "posts-service",
                "statement_timeout": str(settings.db_statement_timeout_ms),
            },
        )

    try:
        return await create(settings.db_pool_min)
    except (OSError, asyncpg.PostgresError) as error:
        logger.warning("database not reachable at start (%s); serving 503 until it is", error)
        return await create(0)


# The connection itself failed: the server went away, restarted or cannot be reached.
CONNECTION_LOST = (OSError, asyncpg.ConnectionDoesNotExistError, asyncpg.PostgresConnectionError)


async def provide_connection(state: State) -> AsyncGenerator[Connection, None]:
    """One pooled connection for the request, waited for at most `DB_ACQUIRE_TIMEOUT`."""
    pool: Pool = state.pool
    started = time.perf_counter()
    # asyncio.timeout rather than acquire(timeout=…), which starts a task per request.
    async with asyncio.timeout(state.settings.db_acquire_timeout):
        connection = await pool.acquire()
    POOL_ACQUIRE_SECONDS.observe(time.perf_counter() - started)
    try:
        yield connection
    except CONNECTION_LOST:
        # Its idle siblings are likely dead too (server restart): replace them all on
        # their next use, so that recovery costs one failed request, not one per slot.
        await pool.expire_connections()
        raise
    finally:
        await pool.release(connection)
