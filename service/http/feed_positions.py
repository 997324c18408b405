"""Positions in the change feed as callers see them: the `Events-Cursor` of every list page
and the `after` of `GET /events`, signed cursors bound to the feed's database.

A list page is read together with the feed's horizon (`behind_horizon`): every transaction
with an id below it had ended when the page's snapshot was taken, so its change is in the
page, and every change the page does not show comes from a transaction whose events stand
at or after that position. A follower that starts there misses nothing the page missed.
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


def behind_horizon(rows: Sequence[Any]) -> tuple[FeedPosition, Sequence[Any]]:
    """A page read with its horizon (`service.database.statements.behind_horizon`): the feed
    position it gives, and the page's rows (each still starting with the horizon). The one
    row of an empty page has NULL columns after the horizon."""
    first = rows[0]
    return FeedPosition(first[0], 0), rows if first[1] is not None else ()


async def events_cursor(
    session: Session, identity: FeedIdentity, cursors: CursorCodec, horizon: FeedPosition
) -> dict[str, str]:
    """The `Events-Cursor` header of a list page read behind `horizon`."""
    return {EVENTS_CURSOR: cursors.encode_position(await identity.of(session), horizon)}
