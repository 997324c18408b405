"""The JSON shapes of the change feed: what `GET /events` answers and the relay publishes."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec

EventType = Literal[
    "user.created",
    "user.updated",
    "user.deleted",
    "post.created",
    "post.updated",
    "post.deleted",
]


class Event(msgspec.Struct):
    id: Annotated[
        str,
        msgspec.Meta(
            description="Unique and stable: the same event has this id for every follower, "
            "on every retry and in the broker. Opaque."
        ),
    ]
    type: EventType
    resource_id: int
    version: Annotated[
        int,
        msgspec.Meta(
            description="The resource's version after the change (its ETag, unquoted); for "
            "a delete, the version deleted."
        ),
    ]
    occurred_at: Annotated[
        datetime,
        msgspec.Meta(description="The change's updated_at; for a delete, when it was deleted."),
    ]
    # A `User` or a `Post` (as GET shows it after the change), or None for a delete.
    # Typed Any: msgspec cannot describe a union of two untagged structs, so the OpenAPI
    # document states the union itself (`service.openapi`).
    data: Any


class EventPage(msgspec.Struct):
    items: list[Event]
    next_cursor: Annotated[
        str,
        msgspec.Meta(
            description="Never null: pass it as `after` to go on; with nothing new it is the "
            "cursor passed in, or the feed's current end."
        ),
    ]
