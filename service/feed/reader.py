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

Why the head and not the horizon: a cursor always names a committed event, and a confirmed
one (below) survives a failover to a synchronous standby, so the promoted server hands out
only higher ids. The horizon can stand above ids of transactions that were rolled back on
the old primary and never reached the standby: the promoted server hands those ids out
again, and events under a cursor at the horizon would be skipped (tests/test_feed_topologies.py
shows it).

What is handed out is confirmed first (`Confirmation`): a commit is visible on the primary
before the synchronous standby has it when its wait for the standby is cut short (its
statement cancelled, its server's postmaster killed). A failover loses such a change, and
the next change of the resource takes its version again: a follower given the lost one
would have two events of one version. So a page is handed out only once its events and its
cursor are as durable as an acknowledged write.
"""

from __future__ import annotations

import asyncio
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
    head: FeedPosition
    """The newest event the page's snapshot could hand out, of any resource."""

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
        return FeedPage([], [], max(after, head), pruned, head)
    events = [_event(row) for row in rows]
    positions = [FeedPosition(row[4], row[5]) for row in rows]
    if len(rows) < limit:
        # Every event up to the head has been read: go on from the head.
        return FeedPage(events, positions, max(after, head), pruned, head)
    return FeedPage(events, positions, positions[-1], pruned, head)


class Confirmation:
    """How far the feed is known to be as durable as an acknowledged write, in one process:
    a page that would hand out more (events, or a cursor beyond it) is confirmed first.

    A confirmation (`sql/events/confirm_durable.sql`, on the primary) returns once every
    commit that a page read before it was sent could see is on the synchronous standby, so
    it confirms everything up to that page's head, not only what the page hands out. A
    follower reading a backlog pays for one; followers at the end of the feed for one per
    answer that moves them, shared: callers that need one while one is out (sent perhaps
    before their page was read) wait for it to end, and the first of them sends the next
    for all. One is out at a time. A standby that does not answer makes the page fail like
    a write (the statement timeout, a 503), not be handed out.
    """

    def __init__(self) -> None:
        self.confirmed = START
        self._sent = 0
        """Confirmations sent so far: a caller shares one numbered above the count it saw
        when it came, sent after its page was read."""
        self._out: tuple[int, asyncio.Future[bool]] | None = None
        """The confirmation out now: its number, and whether it succeeded once it ends."""

    def needed(self, after: FeedPosition, page: FeedPage) -> bool:
        """Whether handing out `page` to a follower at `after` needs a confirmation."""
        return page.next > after and page.next > self.confirmed

    async def confirm(self, primary: Fetcher, page: FeedPage) -> None:
        """Return once `page` (already read) is confirmed, or raise the statement's error."""
        came_at = self._sent
        while (out := self._out) is not None:
            number, succeeded = out
            # Shielded: a caller that goes away must not cancel the future the others share.
            if await asyncio.shield(succeeded) and number > came_at:
                self.confirmed = max(self.confirmed, page.head)
                return
            if page.next <= self.confirmed:
                return  # confirmed meanwhile, up to another page's head beyond this page
            if number > came_at:
                break  # its sender failed or went away: this caller sends its own
        await self._send(primary)
        self.confirmed = max(self.confirmed, page.head)

    async def _send(self, primary: Fetcher) -> None:
        self._sent += 1
        out = self._out = (self._sent, asyncio.get_running_loop().create_future())
        succeeded = False
        try:
            await primary.fetch(SQL["confirm_durable"])
            succeeded = True
        finally:
            out[1].set_result(succeeded)
            if self._out is out:
                self._out = None


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
