"""The long-poll watcher: one per worker, shared by every follower waiting in it.

A thousand idle followers are one poller, not a thousand: while at least one follower
waits, the watcher reads the newest deliverable event's position (`sql/events/head.sql`,
one index probe on the primary) every `EVENTS_POLL_MS`, and wakes every waiter when it
moves; with nobody waiting it reads nothing. A plain statement, so it works through
PgBouncer in transaction mode, where LISTEN does not, and also notices a transaction that
held the horizon back without writing an event (no NOTIFY would come for it). Waiters hold
no database connection while they wait.

Every few seconds it also samples the feed's gauges (events written, and how long the
oldest committed event has been held back by an open transaction).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from service.base.metrics import (
    FEED_EVENTS_WRITTEN,
    FEED_UNDELIVERED_AGE_SECONDS,
    FEED_WAITING,
)
from service.database.pool import ServerPool
from service.feed.reader import SQL, START
from service.http.pagination import FeedPosition

logger = logging.getLogger(__name__)

SAMPLE_SECONDS = 5.0


class Watcher:
    def __init__(self, primary: ServerPool, poll_seconds: float) -> None:
        self.primary = primary
        self.poll_seconds = poll_seconds
        self.head = START
        """The newest deliverable event's position, as last read."""
        self.waiting = 0
        self._moved = asyncio.Event()
        self._someone_waits = asyncio.Event()
        self._sampled_at = 0.0

    async def wait_beyond(self, position: FeedPosition, seconds: float) -> None:
        """Return once an event after `position` may be deliverable, or after `seconds`.

        When the head already stands after `position`, the follower's last read came from
        a server that is behind (a replica): it waits one poll and reads again.
        """
        self.waiting += 1
        FEED_WAITING.inc()
        self._someone_waits.set()
        try:
            if self.head > position:
                await asyncio.sleep(min(self.poll_seconds, seconds))
                return
            deadline = time.monotonic() + seconds
            while self.head <= position and (remaining := deadline - time.monotonic()) > 0:
                if not await _set_within(self._moved, remaining):
                    return
        finally:
            self.waiting -= 1
            FEED_WAITING.dec()

    async def run(self) -> None:
        """Poll while anyone waits; sample the gauges now and then. Runs until cancelled."""
        while True:
            if self.waiting == 0:
                self._someone_waits.clear()
                await _set_within(self._someone_waits, SAMPLE_SECONDS)
            try:
                await self._look()
            except Exception as error:  # the database is away: the waiters time out
                logger.debug("feed watcher: %s", type(error).__name__)
            await asyncio.sleep(self.poll_seconds)

    async def _look(self) -> None:
        async with self.primary.connection() as connection:
            if self.waiting:
                row = await connection.fetchrow(SQL["head"])
                head = START if row is None else FeedPosition(row[0], row[1])
                if head != self.head:
                    self.head = head
                    self._moved.set()
                    self._moved = asyncio.Event()
            if time.monotonic() - self._sampled_at >= SAMPLE_SECONDS:
                # One row always (two aggregates).
                newest_seq, held_since = await connection.fetchrow(SQL["held_back"]) or (0, None)
                FEED_EVENTS_WRITTEN.set(newest_seq or 0)
                age = 0.0 if held_since is None else time.time() - held_since.timestamp()
                FEED_UNDELIVERED_AGE_SECONDS.set(max(age, 0.0))
                self._sampled_at = time.monotonic()


async def _set_within(event: asyncio.Event, seconds: float) -> bool:
    """Whether `event` is set within `seconds`."""
    try:
        async with asyncio.timeout(seconds):
            await event.wait()
    except TimeoutError:
        return False
    return True


@asynccontextmanager
async def watching(primary: ServerPool, poll_seconds: float) -> AsyncIterator[Watcher]:
    """A watcher running while the app runs."""
    watcher = Watcher(primary, poll_seconds)
    task = asyncio.create_task(watcher.run())
    try:
        yield watcher
    finally:
        task.cancel()
