"""Publishing a batch of events to JetStream and waiting for every acknowledgement.

Each event is published as `msgspec.json.encode(event)` (what `GET /events` shows for it)
on `<prefix>.<type>`, with `Nats-Msg-Id` = the event's id, pipelined (all sent, then all
acknowledgements awaited, within `RELAY_PUBLISH_TIMEOUT_MS`).

Order. A batch goes out on one connection, in the feed's order, and the server stores the
messages of one connection in the order they arrive, so what the stream holds of a batch
is a prefix of it (a message is lost only with everything after it). Publishing the batch
again from its start adds, in order, what is missing; JetStream drops the rest as
duplicates. That is why the client never reconnects by itself (`allow_reconnect=False`):
nats-py would otherwise keep messages published while it reconnects and send them on the
new connection, after earlier ones that the old connection lost, and a retry would then
store an older version of a resource after a newer one. Instead any failure closes the
connection, and the relay connects anew and publishes the batch again.
"""

from __future__ import annotations

import asyncio
import logging

import msgspec
import nats
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.api import PubAck

from service.base.settings import Settings
from service.feed.models import Event
from service.relay.stream import subject

logger = logging.getLogger(__name__)

MSG_ID = "Nats-Msg-Id"


class BrokerGone(Exception):
    """The broker did not acknowledge a batch (unreachable, closed, timed out, refused)."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


class Publisher:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.prefix = settings.relay_subject_prefix
        self.timeout = settings.relay_publish_timeout_ms / 1000
        self._client: Client | None = None
        self._js: JetStreamContext | None = None
        self._closed = asyncio.Event()

    @property
    def connected(self) -> bool:
        return self._client is not None and self._client.is_connected

    async def connect(self, connect_timeout: float = 2.0) -> JetStreamContext:
        """A fresh connection (the previous one closed); OSError and nats' errors pass."""
        await self.close()
        self._closed = asyncio.Event()
        closed = self._closed

        async def on_closed() -> None:
            closed.set()

        errors: list[Exception] = []

        async def on_error(error: Exception) -> None:
            errors.append(error)
            logger.info("NATS connection error: %s", error or type(error).__name__)

        try:
            # max_reconnect_attempts=0 would be "for ever", also for the first connect.
            self._client = await nats.connect(
                self.settings.nats_url,
                name="posts-service-relay",
                allow_reconnect=False,
                connect_timeout=connect_timeout,
                max_reconnect_attempts=1,
                reconnect_time_wait=0.1,
                closed_cb=on_closed,
                error_cb=on_error,
            )
        except nats.errors.NoServersError:
            if errors:  # the cause, rather than "no servers available for connection"
                raise errors[-1] from None
            raise
        self._js = self._client.jetstream(timeout=self.timeout)
        return self._js

    async def close(self) -> None:
        client, self._client, self._js = self._client, None, None
        if client is not None and not client.is_closed:
            try:
                await asyncio.wait_for(client.close(), self.timeout)
            except Exception as error:  # closing a broken connection: nothing to save
                logger.debug("closing the NATS connection: %s", error)

    async def publish(self, events: list[Event]) -> list[PubAck]:
        """Publish every event and wait for every acknowledgement, or raise BrokerGone."""
        js = self._js
        if js is None or self._client is None or not self._client.is_connected:
            raise BrokerGone("disconnected", "no connection to the broker")
        try:
            futures = [
                await js.publish_async(
                    subject(self.prefix, event.type),
                    msgspec.json.encode(event),
                    wait_stall=self.timeout,
                    headers={MSG_ID: event.id},
                )
                for event in events
            ]
            acks = asyncio.gather(*futures)
            closed = asyncio.ensure_future(self._closed.wait())
            try:
                done, _ = await asyncio.wait(
                    (acks, closed), timeout=self.timeout, return_when=asyncio.FIRST_COMPLETED
                )
            finally:
                closed.cancel()
            if acks not in done:
                acks.cancel()
                reason = "closed" if closed in done else "timeout"
                raise BrokerGone(reason, f"{len(events)} events not all acknowledged")
            return acks.result()
        except BrokerGone:
            await self.close()
            raise
        except (OSError, nats.errors.Error) as error:
            await self.close()
            raise BrokerGone(type(error).__name__, str(error) or repr(error)) from error
