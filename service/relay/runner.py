"""The relay's loop and process: `python -m service relay`.

Every relay process registers its stream's row and then either publishes (it holds the
lease) or stands by (it retries the lease every `RELAY_LEASE_SECONDS / 4`). The holder,
round after round:

1. makes sure its lease outlasts a batch (renews it first when less than the publish
   timeout and a margin remain);
2. reads up to `RELAY_BATCH` events after its position with the feed's own reader (only
   events below the snapshot horizon: none can later appear behind them);
3. publishes them all and waits for every acknowledgement (`publisher`); when the broker
   fails it connects anew and publishes the same batch again until it is acknowledged,
   renewing its lease meanwhile;
4. stores the position after the batch, in the statement that checks the lease (`lease`):
   no row means another relay may hold it, so it publishes nothing more until it takes
   the lease again, from the position stored then.

A crash between 3 and 4 makes the next holder publish the batch again from the stored
position: JetStream drops what it already holds (same `Nats-Msg-Id` within its duplicate
window), so the stream holds every event once, in the feed's order.

SIGTERM or SIGINT: the round in flight finishes (its batch acknowledged and its position
stored), the lease is released, exit 0. A broker that cannot be reached at start, a
stream that does not fit, a missing `relay_state` table, or a position the feed's
retention has already deleted: one line on stderr, exit 1.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import signal
import socket
import sys
import time

import asyncpg
import nats.errors
from nats.js.errors import APIError

from service.base.metrics import (
    RELAY_DUPLICATES,
    RELAY_EVENTS_PUBLISHED,
    RELAY_LAG_EVENTS,
    RELAY_LAG_SECONDS,
    RELAY_LEASE_HELD,
    RELAY_PUBLISH_ERRORS,
)
from service.base.settings import Settings
from service.database import migrations
from service.database.embedded import database
from service.database.pool import CONNECTION_LOST, ServerPool
from service.feed import reader
from service.feed.models import Event
from service.http.pagination import FeedPosition
from service.relay import health
from service.relay.lease import SQL, Lease
from service.relay.publisher import BrokerGone, Publisher
from service.relay.stream import StreamUnfit, ensure_stream

logger = logging.getLogger("service.relay")

LAG_SAMPLE_SECONDS = 5.0
RETRY_SECONDS = (0.2, 0.5, 1.0, 2.0)
"""Waits between attempts while the broker or the database is away."""


class Fatal(Exception):
    """The relay cannot go on; the message is the one line it exits with."""


# Every error of the database after which the relay retries: a statement's, and every way
# the pool says a connection is gone, including the moment of a failover when no host of
# a multi-host URL accepts writes (TargetServerAttributeNotMatched).
DATABASE_ERRORS: tuple[type[BaseException], ...] = (
    *CONNECTION_LOST,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
)


class Relay:
    def __init__(self, settings: Settings, primary: ServerPool, holder: str) -> None:
        self.settings = settings
        self.primary = primary
        self.publisher = Publisher(settings)
        self.lease = Lease(primary, settings.relay_stream, holder, settings.relay_lease_seconds)
        self.stopping = asyncio.Event()
        self.readiness = health.Readiness()
        self.position = reader.START
        self.confirmation = reader.Confirmation()
        self.publish_timeout = settings.relay_publish_timeout_ms / 1000

    async def start(self) -> None:
        """Check the broker and the stream, and register the stream's row (else Fatal)."""
        try:
            js = await self.publisher.connect()
        except (OSError, nats.errors.Error) as error:
            raise Fatal(
                f"cannot reach NATS at {self.settings.nats_url}: {_describe(error)}"
            ) from None
        try:
            await ensure_stream(js, self.settings)
        except StreamUnfit as error:
            raise Fatal(str(error)) from None
        except APIError as error:
            raise Fatal(
                f"stream {self.settings.relay_stream} cannot be made: {error.description}"
            ) from None
        except (OSError, nats.errors.Error) as error:
            raise Fatal(f"NATS at {self.settings.nats_url} failed: {_describe(error)}") from None
        try:
            await self.lease.register()
        except asyncpg.UndefinedTableError:
            raise Fatal(
                "the database has no relay_state table: apply the migrations (make migrate)"
            ) from None
        except DATABASE_ERRORS as error:
            raise Fatal(f"cannot reach the database: {_describe(error)}") from None

    async def run(self) -> None:
        """Publish (or stand by) until `stopping` is set; release the lease on the way out."""
        failures = 0
        try:
            while not self.stopping.is_set():
                try:
                    if self.lease.held:
                        await self._round()
                    elif not await self._take():
                        await self._pause(self.settings.relay_lease_seconds / 4)
                    failures = 0
                except DATABASE_ERRORS as error:
                    self._not_ready(f"database: {_describe(error)}")
                    self.lease.lost()  # unknown: take it again, from the stored position
                    RELAY_LEASE_HELD.set(0)
                    logger.warning("relay: database error, retrying: %s", _describe(error))
                    await self._pause(RETRY_SECONDS[min(failures, len(RETRY_SECONDS) - 1)])
                    failures += 1
        finally:
            await self._release()
            await self.publisher.close()

    async def _take(self) -> bool:
        position = await self.lease.take()
        self.readiness.ready, self.readiness.reason = True, ""
        if position is None:
            self.readiness.lease = False
            RELAY_LEASE_HELD.set(0)
            return False
        self.position = position
        self.readiness.lease = True
        RELAY_LEASE_HELD.set(1)
        logger.info("relay: took the lease; publishing from %s", _format(position))
        return True

    async def _round(self) -> None:
        if self.lease.remaining() < self.publish_timeout + 0.5 and not await self._renew():
            return
        async with self.primary.connection() as connection:
            page = await reader.read(connection, self.position, self.settings.relay_batch)
            if self.confirmation.needed(self.position, page):
                await self.confirmation.confirm(connection, page)
        if self.position != reader.START and page.gone(self.position):
            raise Fatal(
                f"the relay's position {_format(self.position)} is older than the feed's "
                f"oldest kept event (pruned up to {_format(page.pruned)}): events were "
                "deleted by retention before they were published"
            )
        if not page.events:
            self.position = page.next  # stored with the next renewal
            await self._pause(self.settings.relay_poll_ms / 1000)
            return
        if not await self._publish(page.events):
            return
        if await self.lease.store(page.next):
            self.position = page.next
        else:
            self._lost_lease()

    async def _publish(self, events: list[Event]) -> bool:
        """Publish until acknowledged; False if the lease was lost or a stop came first."""
        failures = 0
        while True:
            try:
                if not self.publisher.connected:
                    await self.publisher.connect()
                acks = await self.publisher.publish(events)
            except (BrokerGone, OSError, nats.errors.Error) as error:
                reason = error.reason if isinstance(error, BrokerGone) else type(error).__name__
                RELAY_PUBLISH_ERRORS.labels(reason).inc()
                self._not_ready(f"broker: {_describe(error)}")
                if failures == 0:
                    logger.warning(
                        "relay: broker failed (%s); publishing the batch again once it is back",
                        _describe(error),
                    )
                await self._pause(RETRY_SECONDS[min(failures, len(RETRY_SECONDS) - 1)])
                failures += 1
                if self.stopping.is_set():
                    return False
                # Keep the lease while waiting (the position stays where it was).
                if not await self._renew():
                    return False
                continue
            if failures:
                logger.info("relay: broker back after %d failed attempts", failures)
            self.readiness.ready, self.readiness.reason = True, ""
            RELAY_EVENTS_PUBLISHED.inc(len(acks))
            RELAY_DUPLICATES.inc(sum(1 for ack in acks if ack.duplicate))
            return True

    async def _renew(self) -> bool:
        if await self.lease.store(self.position):
            return True
        self._lost_lease()
        return False

    def _lost_lease(self) -> None:
        logger.warning("relay: lost the lease (expired or taken over); standing by")
        self.readiness.lease = False
        RELAY_LEASE_HELD.set(0)

    async def _release(self) -> None:
        if not self.lease.held:
            return
        try:
            if await self.lease.store(self.position):
                await self.lease.release()
                logger.info("relay: released the lease at %s", _format(self.position))
        except DATABASE_ERRORS as error:
            logger.warning("relay: could not release the lease: %s", _describe(error))
        RELAY_LEASE_HELD.set(0)

    def _not_ready(self, reason: str) -> None:
        self.readiness.ready, self.readiness.reason = False, reason

    async def _pause(self, seconds: float) -> None:
        """Sleep, ending early when a stop is asked for."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stopping.wait(), seconds)

    async def sample_lag(self) -> None:
        """The lag gauges every few seconds, from the stored position. Runs until cancelled."""
        while True:
            try:
                async with self.primary.connection() as connection:
                    row = await connection.fetchrow(SQL["lag"], self.settings.relay_stream)
                if row is not None:
                    RELAY_LAG_EVENTS.set(row[0])
                    RELAY_LAG_SECONDS.set(row[1])
            except DATABASE_ERRORS as error:
                logger.info("relay: lag not sampled: %s", _describe(error))
            await asyncio.sleep(LAG_SAMPLE_SECONDS)


def _format(position: FeedPosition) -> str:
    return f"{position.xid}.{position.seq}"


def _describe(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0]}" if text else type(error).__name__


def holder_id() -> str:
    """Who holds the lease, as `relay_state.holder` shows it: host, process, a nonce."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"


async def relay(settings: Settings, database_url: str) -> None:
    """Run one relay process until SIGTERM or SIGINT (or Fatal)."""
    primary = ServerPool("primary", database_url, settings)
    await primary.open()
    relay = Relay(settings, primary, holder_id())
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, relay.stopping.set)
    server = None
    if settings.relay_metrics_port:
        server = health.serve(settings.host, settings.relay_metrics_port, relay.readiness)
    sampler = None
    try:
        await relay.start()
        relay.readiness.ready, relay.readiness.reason = True, ""
        logger.info(
            "relay: stream %s on %s, subjects %s.>, holder %s",
            settings.relay_stream,
            settings.nats_url,
            settings.relay_subject_prefix,
            relay.lease.holder,
        )
        sampler = asyncio.create_task(relay.sample_lag())
        await relay.run()
    finally:
        if sampler is not None:
            sampler.cancel()
        if server is not None:
            server.shutdown()
        await relay.publisher.close()
        await primary.close()


def main(settings: Settings) -> int:
    """`python -m service relay`: the exit code (1 with one line on stderr when it cannot
    run)."""
    started = time.monotonic()
    try:
        with database(settings) as database_url:
            if settings.should_migrate_on_start:
                migrations.apply(database_url)
            asyncio.run(relay(settings, database_url))
    except Fatal as error:
        print(f"relay: {error}", file=sys.stderr)
        return 1
    except (OSError, asyncpg.PostgresError) as error:  # the metrics port is taken, no database...
        print(f"relay: {_describe(error)}", file=sys.stderr)
        return 1
    logger.info("relay: stopped after %.0f s", time.monotonic() - started)
    return 0
