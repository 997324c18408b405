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
from bisect import bisect_left
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

from litestar.types import Scope

from service.base.background import every
from service.base.logs import REQUEST_LOG, RequestLine, timestamp
from service.base.metrics import (
    IN_FLIGHT,
    LATENCY_BUCKETS,
    REQUEST_SECONDS,
    REQUESTS,
    SERVER_ERRORS,
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


_BOUNDS = tuple(float(bound) for bound in LATENCY_BUCKETS)


class _RouteMetrics:
    """The request count, duration histogram and error count of each (method, route,
    status), tallied in plain numbers on the hot path and added to prometheus-client's
    children by `publish` (every second and at each scrape, `sample_in_flight`).

    A child's `inc` and `observe` take a lock for each value they touch, and `observe`
    walks the bucket bounds in Python: about 18k instructions a request (`make
    instructions`). The tally is a dictionary look-up, a bisection in C and two additions.
    The buckets are the histogram's own (`_buckets`, `_sum` of a child: prometheus-client
    is pinned, and tests/test_observability.py reads the exported buckets back).
    With several workers (`PROMETHEUS_MULTIPROC_DIR`) a scrape reads every worker's
    files, but can publish only its own worker's tallies: there each request is published
    at once, as before.
    """

    def __init__(self) -> None:
        self._children: dict[tuple[str, str, int], tuple[Any, Any, Any]] = {}
        self._tallies: dict[tuple[str, str, int], list[float]] = {}
        self.deferred = True  # set by the edge layer

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        key = (method, route, status)
        tally = self._tallies.get(key)
        if tally is None:
            tally = self._tallies[key] = self._start(key)
        tally[0] += seconds
        tally[1 + bisect_left(_BOUNDS, seconds)] += 1  # amount <= bound, as observe does
        if not self.deferred:
            self.publish()

    def _start(self, key: tuple[str, str, int]) -> list[float]:
        method, route, status = key
        labels = (method, route, str(status))
        self._children[key] = (
            REQUESTS.labels(*labels),
            REQUEST_SECONDS.labels(*labels),
            SERVER_ERRORS.labels(*labels) if status >= 500 else None,
        )
        return [0.0] + [0] * (len(_BOUNDS) + 1)  # the sum, then each bucket and +Inf

    def publish(self) -> None:
        for key, tally in self._tallies.items():
            total = sum(tally[1:])
            if not total:
                continue
            count, duration, errors = self._children[key]
            count.inc(total)
            duration._sum.inc(tally[0])
            for index, observed in enumerate(tally[1:]):
                if observed:
                    duration._buckets[index].inc(observed)
            if errors is not None:
                errors.inc(total)
            tally[:] = [0.0] + [0] * (len(tally) - 1)


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
