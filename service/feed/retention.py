"""Retention: events older than `EVENTS_RETENTION_HOURS` are deleted in the background every
`EVENTS_PRUNE_SECONDS`, in small batches, oldest first (`sql/events/prune.sql`), and
`feed_state` remembers how far: a cursor before that is a 410 (list again, follow from the
new Events-Cursor).

One process prunes at a time (it holds `feed_state`'s row; the others skip the round). A
batch deletes at most `PRUNE_BATCH` rows and waits at most `PRUNE_LOCK_TIMEOUT` for a lock,
so pruning never holds a lock long nor sits on a pooled connection behind another
transaction.
"""

from __future__ import annotations

import logging
from contextlib import AbstractAsyncContextManager

import asyncpg

from service.base.background import every
from service.base.metrics import FEED_EVENTS_PRUNED
from service.database.pool import ServerPool
from service.feed.reader import SQL

logger = logging.getLogger(__name__)

PRUNE_BATCH = 1000
PRUNE_LOCK_TIMEOUT = "100ms"


async def prune(primary: ServerPool, retention_seconds: float) -> int:
    """Delete the events older than `retention_seconds`, batch by batch; how many."""
    pruned = 0
    while True:
        async with primary.connection() as connection, connection.transaction():
            await connection.execute(f"SET LOCAL lock_timeout = '{PRUNE_LOCK_TIMEOUT}'")
            if await connection.fetchrow(SQL["lock_state"]) is None:
                return pruned  # another process is pruning
            deleted: int = await connection.fetchval(SQL["prune"], retention_seconds, PRUNE_BATCH)
        pruned += deleted
        FEED_EVENTS_PRUNED.inc(deleted)
        if deleted < PRUNE_BATCH:
            return pruned


def pruning(
    primary: ServerPool, retention_hours: float, interval: float
) -> AbstractAsyncContextManager[None]:
    """Prune now and every `interval` seconds while the app runs."""

    async def prune_round() -> None:
        try:
            if pruned := await prune(primary, retention_hours * 3600):
                logger.info("pruned %d events older than the retention", pruned)
        except (OSError, asyncpg.PostgresError) as error:
            logger.warning("feed pruning failed, will retry: %s", type(error).__name__)

    return every(interval, prune_round)
