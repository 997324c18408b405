"""Reading the change feed gaplessly: the one reader of `GET /events` and the relay.

Events stand in the feed's order by position (`FeedPosition`: a transaction id, then a
sequence number). A page holds only events below the horizon, the oldest transaction still
running as the statement's snapshot sees it: every transaction that can still write an
event there has ended, so no event can appear later behind a cursor already handed out
(`migrations/0005.create-change-feed.sql` says how positions keep each resource's events
in version order). When a page is not full, every event up to the head (the newest event
below the horizon, of any resource) has been seen, so the cursor moves to the head: a
follower of one type passes the other type's events. A cursor never goes back, whichever
server (the primary or a lagging replica) answers next.

Why the head and not the horizon itself: a cursor always names a committed event, and
with a synchronous standby every committed event's transaction id is on the standby, so
after a failover the promoted server hands out only higher ids. The horizon can stand above
ids of transactions that were rolled back on the old primary and never reached the standby:
the promoted server hands those ids out again, and events under a cursor at the horizon
would be skipped (tests/test_feed_topologies.py shows it).
"""

from __future__ import annotations

from collections.abc import Awaitable, Sequence
from typing import Any, NamedTuple, Protocol

import msgspec

from service.database.sql import load_queries
from service.feed.models import Event, EventType
from service.http.pagination import FeedPosition
from service.posts.models import Post
from service.users.models import User

SQL = load_queries("events")
RESOURCES = ("users", "posts")
"""The resources the feed follows, as `types` names them (and `events.resource` stores)."""
START = FeedPosition(0, 0)
"""Before every event: a follower without a cursor starts here, at the oldest event kept."""

_DECODERS: dict[str, msgspec.json.Decoder[User] | msgspec.json.Decoder[Post]] = {
    "users": msgspec.json.Decoder(User),
    "posts": msgspec.json.Decoder(Post),
}
_TYPES: dict[tuple[str, str], EventType] = {
    ("users", "created"): "user.created",
    ("users", "updated"): "user.updated",
    ("users", "deleted"): "user.deleted",
    ("posts", "created"): "post.created",
    ("posts", "updated"): "post.updated",
    ("posts", "deleted"): "post.deleted",
}


class Fetcher(Protocol):
    """A request's session or a plain connection: whatever runs the statement."""

    def fetch(self, query: str, *args: Any) -> Awaitable[list[Any]]: ...


class FeedPage(NamedTuple):
    events: list[Event]
    positions: list[FeedPosition]
    """Each event's position, in the same order."""
    next: FeedPosition
    """Where the follower goes on from: never before the position asked for."""
    pruned: FeedPosition
    """How far retention has deleted: a position before it can no longer be followed."""

    def gone(self, after: FeedPosition) -> bool:
        """Whether events after `after` were deleted by retention (a 410)."""
        return after < self.pruned


async def read(
    db: Fetcher, after: FeedPosition, limit: int, resources: Sequence[str] = RESOURCES
) -> FeedPage:
    """At most `limit` events of `resources` after `after`, and where to go on from."""
    rows = await db.fetch(SQL["read_page"], after.xid, after.seq, limit, list(resources))
    head_xid, head_seq, pruned_xid, pruned_seq = rows[0][:4]
    pruned = FeedPosition(pruned_xid, pruned_seq)
    # With every event pruned there is no head: the pruned position stands for it.
    head = pruned if head_xid is None else FeedPosition(head_xid, head_seq)
    if rows[0][4] is None:
        return FeedPage([], [], max(after, head), pruned)
    events = [_event(row) for row in rows]
    positions = [FeedPosition(row[4], row[5]) for row in rows]
    if len(rows) < limit:
        # Every event up to the head has been read: go on from the head.
        return FeedPage(events, positions, max(after, head), pruned)
    return FeedPage(events, positions, positions[-1], pruned)


def _event(row: Any) -> Event:
    _, _, _, _, _, seq, resource, action, resource_id, version, occurred_at, data = row
    return Event(
        id=str(seq),
        type=_TYPES[resource, action],
        resource_id=resource_id,
        version=version,
        occurred_at=occurred_at,
        data=None if data is None else _DECODERS[resource].decode(data),
    )
