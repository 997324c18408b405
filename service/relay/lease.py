"""The relay's row in `relay_state`: the stored position and the lease, one plain statement
each (`sql/relay/`), so that they work through PgBouncer in transaction mode.

One relay publishes at a time: the holder of an unexpired lease. Expiry is decided by the
database's clock only (`now()` in the statements); the holder also keeps a local, safe
estimate (measured from before it sent the renewal) to know, before each batch, that the
lease outlasts the batch's publish timeout, and renews it first when it might not. The
position is stored in the same statement that checks the lease, so a holder that stalled
past its expiry cannot move it: its store finds no row, and it stops publishing.
"""

from __future__ import annotations

import time

from service.database.pool import ServerPool
from service.database.sql import load_queries
from service.http.pagination import FeedPosition

SQL = load_queries("relay")


class Lease:
    def __init__(self, primary: ServerPool, stream: str, holder: str, seconds: float) -> None:
        self.primary = primary
        self.stream = stream
        self.holder = holder
        self.seconds = seconds
        self._valid_until = 0.0
        """Local monotonic time before which the lease surely holds; 0 when not held."""

    @property
    def held(self) -> bool:
        return self.remaining() > 0

    def remaining(self) -> float:
        """Seconds the lease surely holds still (0 when not held)."""
        return max(0.0, self._valid_until - time.monotonic())

    async def register(self) -> None:
        async with self.primary.connection() as connection:
            await connection.execute(SQL["register"], self.stream)

    async def take(self) -> FeedPosition | None:
        """Take (or renew) the lease; the stored position, or None if another holds it."""
        sent = time.monotonic()
        async with self.primary.connection() as connection:
            row = await connection.fetchrow(
                SQL["take_lease"], self.stream, self.holder, self.seconds
            )
        if row is None:
            self._valid_until = 0.0
            return None
        self._valid_until = sent + self.seconds
        return FeedPosition(row[0], row[1])

    async def store(self, position: FeedPosition) -> bool:
        """Store `position` and renew the lease, only while it holds; whether it did."""
        sent = time.monotonic()
        async with self.primary.connection() as connection:
            row = await connection.fetchrow(
                SQL["store_position"],
                self.stream,
                self.holder,
                self.seconds,
                position.xid,
                position.seq,
            )
        if row is None:
            self._valid_until = 0.0
            return False
        self._valid_until = sent + self.seconds
        return True

    async def release(self) -> None:
        self._valid_until = 0.0
        async with self.primary.connection() as connection:
            await connection.execute(SQL["release_lease"], self.stream, self.holder)

    def lost(self) -> None:
        """Forget the lease locally (its renewal failed, or the database went away)."""
        self._valid_until = 0.0
