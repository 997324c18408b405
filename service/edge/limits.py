"""Limits a hostile or buggy caller cannot exceed, checked before any routing or parsing.

Body size (1 MiB, 413) is Litestar's `request_max_body_size`; page size and string
lengths are the models' rules; statement time is PostgreSQL's `statement_timeout`; idle
keep-alive connections and concurrency are uvicorn's (see `service.__main__`). This
module adds what none of them bounds: the query string (414), the header section (431),
and a body that trickles in too slowly (408). `service.edge.layer` applies them.
"""

from __future__ import annotations

import asyncio

from litestar.types import Receive, ReceiveMessage, Scope

from service.base.deadlines import Deadlines
from service.http.errors import Refusal, SlowBody

MAX_QUERY_BYTES = 4096
MAX_HEADER_BYTES = 16 * 1024
MAX_HEADERS = 100
BODY_TIMEOUT_SECONDS = 10.0


class _Watchdog:
    """The body deadlines of one event loop's requests, kept by a single timer.

    A request waiting for its body is entered with its deadline and left when the chunk
    arrives; the one timer (`Deadlines`) fires for the earliest deadline and cancels the
    tasks whose deadline has passed (as `asyncio.timeout` would). So a request pays two
    dictionary operations, not a timer of its own: with `asyncio.timeout_at` around each
    receive, the deadline cost about 31k instructions a POST (`make instructions`), more
    than the rest of the limits.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.waiting: dict[asyncio.Task[object], float] = {}
        self.expired: set[asyncio.Task[object]] = set()
        self.deadlines = Deadlines(loop, self._cancel_late)

    def enter(self, task: asyncio.Task[object], deadline: float) -> None:
        self.waiting[task] = deadline
        self.deadlines.include(deadline)

    def _cancel_late(self, now: float) -> float | None:
        late = [task for task, deadline in self.waiting.items() if deadline <= now]
        for task in late:
            del self.waiting[task]
            self.expired.add(task)
            task.cancel()
        return min(self.waiting.values(), default=None)


_watchdogs: dict[asyncio.AbstractEventLoop, _Watchdog] = {}
"""One per event loop (a process runs one; tests run several, one after the other)."""


def _watchdog() -> _Watchdog:
    loop = asyncio.get_running_loop()
    watchdog = _watchdogs.get(loop)
    if watchdog is None:
        for stale in [other for other in _watchdogs if other.is_closed()]:
            del _watchdogs[stale]
        watchdog = _watchdogs[loop] = _Watchdog(loop)
    return watchdog


def refusal(scope: Scope, header_bytes: int) -> Refusal | None:
    """The 414 or 431 of a request over the limits, before anything else reads it
    (`header_bytes`: the names and values of its headers, counted by the edge layer in
    its one pass over them)."""
    if len(scope["query_string"]) > MAX_QUERY_BYTES:
        return Refusal(414, f"The query string is longer than {MAX_QUERY_BYTES} bytes")
    # A list, as servers send them (ASGI says any iterable; Litestar reads it as a list).
    headers: list[tuple[bytes, bytes]] = scope["headers"]  # type: ignore[assignment]
    if len(headers) > MAX_HEADERS or header_bytes > MAX_HEADER_BYTES:
        return Refusal(431, f"Headers over {MAX_HEADERS} or {MAX_HEADER_BYTES} bytes in all")
    return None


def body_in_time(receive: Receive) -> Receive:
    """`receive`, raising `SlowBody` (408) once the whole body has taken longer than
    `BODY_TIMEOUT_SECONDS` from now, the request's arrival. For a request with a body: no
    route reads the body of a GET or HEAD, so nothing can keep one waiting."""
    watchdog = _watchdog()
    deadline = watchdog.loop.time() + BODY_TIMEOUT_SECONDS
    body_complete = False

    async def receive_in_time() -> ReceiveMessage:
        nonlocal body_complete
        if body_complete:  # e.g. waiting for a disconnect: not the body's deadline
            return await receive()
        task: asyncio.Task[object] = asyncio.current_task()  # type: ignore[assignment]
        watchdog.enter(task, deadline)
        try:
            message = await receive()
        except asyncio.CancelledError:
            if task in watchdog.expired:
                watchdog.expired.discard(task)
                if task.uncancel() == 0:  # the deadline's cancellation, nobody else's
                    raise SlowBody from None
            raise
        finally:
            watchdog.waiting.pop(task, None)
        body_complete = message["type"] != "http.request" or not message.get("more_body")
        return message

    return receive_in_time
