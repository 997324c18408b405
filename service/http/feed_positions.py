"""Positions in the change feed as callers see them: the `Events-Cursor` of every list page
and the `after` of `GET /events`, signed cursors bound to the feed's database.

A list page is read together with the feed's head (`split_head`): the newest event
below the horizon of the page's own snapshot. Every transaction with an id below that
horizon had ended when the snapshot was taken, so its change is in the page; every change
the page does not show comes from a transaction whose events stand at or above the
horizon, after the head. A follower that starts at the head misses nothing the page
missed. (The head, not the horizon: a cursor names a committed event, which survives a
failover to a synchronous standby; `service.feed.reader` says why.)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from service.database.routing import Session
from service.database.sql import load_queries
from service.http.pagination import CursorCodec, FeedPosition

SQL = load_queries("events")
EVENTS_CURSOR = "Events-Cursor"


class FeedIdentity:
    """The id of the database's feed (`feed_state.feed_id`), read at the first need and
    kept: it never changes (a standby and its promotion share it)."""

    def __init__(self) -> None:
        self._value: str | None = None

    async def of(self, session: Session) -> str:
        if self._value is None:
            self._value = str(await session.fetchval(SQL["feed_id"]))
        return self._value


def split_head(rows: Sequence[Any]) -> tuple[FeedPosition, Sequence[Any]]:
    """A page read with the feed's head (`service.database.statements.behind_horizon`): the
    feed position it gives, and the page's rows (each still starting with the head's two
    columns). The one row of an empty page has NULL columns after the head."""
    first = rows[0]
    return FeedPosition(first[0], first[1]), rows if first[2] is not None else ()


async def events_cursor(
    session: Session, identity: FeedIdentity, cursors: CursorCodec, head: FeedPosition
) -> dict[str, str]:
    """The `Events-Cursor` header of a list page that read the feed's `head`."""
    return {EVENTS_CURSOR: cursors.encode_position(await identity.of(session), head)}
