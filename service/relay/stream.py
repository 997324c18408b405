"""The stream the relay publishes to: its subjects, the shape it is made with, and the
check that an existing one fits.

Each event goes to `<RELAY_SUBJECT_PREFIX>.<type>` (`posts_service.post.updated`), so a
consumer can filter by resource and action with subjects alone. The stream is made when
missing with file storage, limits retention (messages stay until their age or size limits,
whoever reads them) and a duplicate window of `RELAY_DUPLICATE_WINDOW_SECONDS`: JetStream
drops a message whose `Nats-Msg-Id` it stored within that window, which is what turns the
relay's "at least once" into "effectively once".

An existing stream (made by an operator, with limits of their own) is used when it fits:
its subjects cover the prefix, it acknowledges publishes, it keeps messages by limits
(a work queue or interest stream deletes them once one consumer has them, which other
followers would never see), its duplicate window is at least the relay's, it is not
sealed, and it does not refuse new messages when full (`discard: new`), which would stall
the relay. What does not fit is said in one line, and the relay exits.
"""

from __future__ import annotations

from typing import get_args

from nats.js import JetStreamContext
from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType, StreamConfig, StreamInfo
from nats.js.errors import NotFoundError

from service.base.settings import Settings
from service.feed.models import EventType

EVENT_TYPES: tuple[EventType, ...] = get_args(EventType)


class StreamUnfit(Exception):
    """The stream exists but cannot hold the feed as the relay promises; says why."""


def subject(prefix: str, event_type: str) -> str:
    """The subject of an event of `event_type`: `posts_service.post.updated`."""
    return f"{prefix}.{event_type}"


def wanted_config(settings: Settings) -> StreamConfig:
    """The stream the relay makes when none of that name exists."""
    return StreamConfig(
        name=settings.relay_stream,
        description="posts-service change feed, published by `python -m service relay`",
        subjects=[f"{settings.relay_subject_prefix}.>"],
        retention=RetentionPolicy.LIMITS,
        discard=DiscardPolicy.OLD,
        storage=StorageType.FILE,
        duplicate_window=float(settings.relay_duplicate_window_seconds),
    )


def subject_matches(pattern: str, name: str) -> bool:
    """Whether a NATS subject pattern (`*` one token, `>` the rest) covers `name`."""
    tokens, wanted = pattern.split("."), name.split(".")
    for index, part in enumerate(tokens):
        if part == ">":
            return len(wanted) > index
        if index >= len(wanted) or part not in ("*", wanted[index]):
            return False
    return len(tokens) == len(wanted)


def problems(config: StreamConfig, settings: Settings) -> list[str]:
    """What keeps an existing stream from holding the feed; empty when it fits."""
    found = []
    patterns = config.subjects or []
    uncovered = [
        name
        for name in (subject(settings.relay_subject_prefix, kind) for kind in EVENT_TYPES)
        if not any(subject_matches(pattern, name) for pattern in patterns)
    ]
    if uncovered:
        found.append(f"its subjects {patterns} do not cover {', '.join(uncovered)}")
    if config.no_ack:
        found.append("it does not acknowledge publishes (no_ack)")
    # nats-py leaves the policies of a stream it reads as the server's strings.
    retention = RetentionPolicy(config.retention or RetentionPolicy.LIMITS)
    if retention != RetentionPolicy.LIMITS:
        found.append(
            f"its retention is {retention.value}, which deletes messages once consumed; "
            "the relay needs limits"
        )
    if config.duplicate_window < settings.relay_duplicate_window_seconds:
        found.append(
            f"its duplicate window is {config.duplicate_window:g} s, shorter than "
            f"RELAY_DUPLICATE_WINDOW_SECONDS={settings.relay_duplicate_window_seconds}"
        )
    if config.sealed:
        found.append("it is sealed")
    if DiscardPolicy(config.discard or DiscardPolicy.OLD) == DiscardPolicy.NEW and (
        (config.max_msgs or -1) > 0 or (config.max_bytes or -1) > 0
    ):
        found.append("it refuses new messages when full (discard: new)")
    if config.mirror is not None:
        found.append("it is a mirror (it takes no publishes)")
    return found


async def ensure_stream(js: JetStreamContext, settings: Settings) -> StreamInfo:
    """The relay's stream: made when missing, checked when it exists (StreamUnfit)."""
    try:
        info = await js.stream_info(settings.relay_stream)
    except NotFoundError:
        return await js.add_stream(wanted_config(settings))
    if found := problems(info.config, settings):
        raise StreamUnfit(f"stream {settings.relay_stream} does not fit: {'; '.join(found)}")
    return info
