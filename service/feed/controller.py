"""HTTP route of the change feed: `GET /events`, a page or a long poll."""

from __future__ import annotations

import time
from typing import Annotated, Any

from litestar import Request, get
from litestar.datastructures import State
from litestar.params import QueryParameter

from service.base.metrics import FEED_EVENTS_DELIVERED, FEED_REQUESTS
from service.feed import reader
from service.feed.models import EventPage
from service.feed.watcher import Watcher
from service.http.errors import problem, problem_responses
from service.http.feed_positions import FeedIdentity
from service.http.pagination import CursorCodec
from service.http.sessions import session_of
from service.http.validation import QueryInt

MAX_WAIT_SECONDS = 30


class EventLimit(QueryInt):
    """`limit` of the feed: 1 to 1000 events a page."""

    minimum = 1
    maximum = 1000


class WaitSeconds(QueryInt):
    """`wait`: whole seconds, 0 to 30."""

    minimum = 0
    maximum = MAX_WAIT_SECONDS


DEFAULT_EVENT_LIMIT = EventLimit(100)
NO_WAIT = WaitSeconds(0)
After = Annotated[
    str | None,
    QueryParameter(
        max_length=300,
        description="A `next_cursor` of an earlier answer, or a list page's `Events-Cursor`. "
        "Absent: from the oldest event kept.",
    ),
]
Types = Annotated[
    str | None,
    QueryParameter(
        pattern="^(users|posts|users,posts|posts,users)$",
        description="A comma-separated subset of `users,posts` (no spaces or repeats). "
        "Absent: both.",
    ),
]
Limit = Annotated[EventLimit, QueryParameter(description="Events per page, 1 to 1000.")]
Wait = Annotated[
    WaitSeconds,
    QueryParameter(
        description="With nothing to return, hold the answer until an event is available "
        "or this many seconds (0 to 30) have passed: a long poll."
    ),
]


def _resources(types: str | None) -> tuple[str, ...]:
    """The resources `types` names (its pattern, checked by Litestar, admits only subsets of
    `users,posts` without repeats)."""
    return reader.RESOURCES if types is None else tuple(types.split(","))


@get(
    "/events",
    operation_id="listEvents",
    tags=["events"],
    responses=problem_responses(400, 410),
)
async def list_events(
    request: Request[Any, Any, Any],
    state: State,
    after: After = None,
    limit: Limit = DEFAULT_EVENT_LIMIT,
    types: Types = None,
    wait: Wait = NO_WAIT,
) -> EventPage:
    """The change feed: every change to users and posts after `after`, in order."""
    resources = _resources(types)
    session = session_of(request)
    identity: FeedIdentity = state.feed_identity
    cursors: CursorCodec = state.cursors
    feed_id = await identity.of(session)
    position = reader.START if after is None else cursors.decode_position(feed_id, after)
    watcher: Watcher = state.feed_watcher
    deadline = time.monotonic() + wait
    from_oldest_kept = after is None  # START, where no retention makes a 410
    asked = position
    while True:
        page = await reader.read(session, position, limit, resources)
        if not from_oldest_kept and page.gone(position):
            FEED_REQUESTS.labels(str(wait > 0).lower(), "gone").inc()
            raise problem(410, "This cursor is older than the oldest event kept")
        remaining = deadline - time.monotonic()
        if page.events or remaining <= 0:
            break
        # Wait without a connection: a thousand waiting followers hold none.
        await session.close()
        await watcher.wait_beyond(page.next, remaining)
        position, from_oldest_kept = page.next, False
    confirmation: reader.Confirmation = state.feed_confirmation
    if confirmation.needed(asked, page):
        await session.to_primary()
        await confirmation.confirm(session, page)
    FEED_REQUESTS.labels(str(wait > 0).lower(), "events" if page.events else "empty").inc()
    FEED_EVENTS_DELIVERED.inc(len(page.events))
    return EventPage(items=page.events, next_cursor=cursors.encode_position(feed_id, page.next))
