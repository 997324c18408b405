"""What the edge layer (`service.edge.layer`) observes of every request: its id, its
metrics and its one log line.

The layer wraps Litestar's handler (not a route), so unrouted requests (404, 405) count
too, and reads the route template Litestar leaves in the scope: metrics and logs name
`/users/{user_id}`, never the raw path. The log line has the method, route, status,
duration, client address and caller (a token's name): never bodies, query strings or
headers, which can carry emails or tokens.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager

from litestar.types import Scope

from service.base.background import every
from service.base.logs import REQUEST_LOG, RequestLine, timestamp
from service.base.metrics import (
    IN_FLIGHT,
    REQUEST_SECONDS,
    REQUESTS,
    SERVER_ERRORS,
    HistogramTally,
)

_VALID_REQUEST_ID = re.compile(r"[A-Za-z0-9._:@/+=-]{1,128}")
"""A caller's X-Request-ID is kept when short and made of printable, harmless characters."""

IN_FLIGHT_SAMPLE_SECONDS = 1.0
in_flight = dict.fromkeys(("GET", "HEAD", "POST", "PATCH", "PUT", "DELETE", "OPTIONS", "other"), 0)
"""Requests being answered now, by method (any other is "other"): a plain count on the hot
path (a gauge's `inc`/`dec` takes a lock twice a request), copied into `IN_FLIGHT` by
`sample_in_flight`."""


def sample_in_flight() -> None:
    """Copy the in-flight counts into their gauge, and the requests tallied since the last
    time into theirs (`ROUTE_METRICS`): every second and at each scrape."""
    for method, count in in_flight.items():
        IN_FLIGHT.labels(method).set(count)
    ROUTE_METRICS.publish()


def in_flight_sampler() -> AbstractAsyncContextManager[None]:
    """Copy the in-flight counts and request tallies into their metrics every second while
    the app runs."""

    async def sample() -> None:
        sample_in_flight()

    return every(IN_FLIGHT_SAMPLE_SECONDS, sample)


class _RouteTally(HistogramTally):
    """The duration histogram of one (method, route, status), with the request count and
    error count published beside it."""

    def __init__(self, method: str, route: str, status: int) -> None:
        labels = (method, route, str(status))
        super().__init__(REQUEST_SECONDS.labels(*labels))
        self.requests = REQUESTS.labels(*labels)
        self.errors = SERVER_ERRORS.labels(*labels) if status >= 500 else None

    def publish(self) -> int:
        observed = super().publish()
        if observed:
            self.requests.inc(observed)
            if self.errors is not None:
                self.errors.inc(observed)
        return observed


class _RouteMetrics:
    """The request metrics of each (method, route, status), tallied on the hot path and
    published every second and at each scrape (`sample_in_flight`): see `HistogramTally`."""

    def __init__(self) -> None:
        self._tallies: dict[tuple[str, str, int], _RouteTally] = {}

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        tally = self._tallies.get((method, route, status))
        if tally is None:
            tally = self._tallies[method, route, status] = _RouteTally(method, route, status)
        tally.observe(seconds)

    def publish(self) -> None:
        for tally in self._tallies.values():
            tally.publish()


ROUTE_METRICS = _RouteMetrics()
"""One per process, as the metrics it feeds."""


def new_request_id(sent: bytes | None) -> str:
    """The caller's X-Request-ID when it is short and harmless, else a new random one."""
    if sent is not None:
        kept = sent.decode("latin-1")
        if _VALID_REQUEST_ID.fullmatch(kept):
            return kept
    return os.urandom(16).hex()  # what uuid4().hex is made of, faster


def log_request(
    scope: Scope,
    current: str,
    method: str,
    route: str,
    status: int,
    seconds: float,
    trace_fields: Callable[[], dict[str, str]] | None,
) -> None:
    """The request's one log line (when the log takes INFO lines)."""
    client = scope.get("client")
    now = time.time()
    line = RequestLine(  # by position, in the struct's order: cheaper than keywords
        timestamp(now),
        "INFO",
        "service.requests",
        "request",
        current,
        method,
        route,
        status,
        int(seconds * 1_000_000 + 0.5) / 1000,  # round(seconds * 1000, 3) went through a string
        client[0] if client else None,
        scope["state"].get("caller") if "state" in scope else None,
    )
    if trace_fields is not None:
        ids = trace_fields()
        line.trace_id, line.span_id = ids.get("trace_id"), ids.get("span_id")
    REQUEST_LOG.write(line, now)
