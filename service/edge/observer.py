"""The request observer: the ASGI layer around the whole app that gives every request its
id, its metrics and its one log line.

It wraps Litestar's handler (not a route), so unrouted requests (404, 405) count too, and
reads the route template Litestar leaves in the scope: metrics and logs name
`/users/{user_id}`, never the raw path. It logs the method, route, status, duration,
client address and caller (a token's name): never bodies, query strings or headers, which
can carry emails or tokens.
"""

from __future__ import annotations

import os
import re
import time
from bisect import bisect_left
from collections import Counter
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

from litestar.enums import ScopeType
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from service.base.background import every
from service.base.logs import REQUEST_LOG, RequestLine, request_id, timestamp
from service.base.metrics import (
    IN_FLIGHT,
    LATENCY_BUCKETS,
    REQUEST_SECONDS,
    REQUESTS,
    SERVER_ERRORS,
    UNMATCHED,
)
from service.base.scope import header

_VALID_REQUEST_ID = re.compile(r"[A-Za-z0-9._:@/+=-]{1,128}")
"""A caller's X-Request-ID is kept when short and made of printable, harmless characters."""

_METHODS = ("GET", "HEAD", "POST", "PATCH", "PUT", "DELETE", "OPTIONS")

IN_FLIGHT_SAMPLE_SECONDS = 1.0
_in_flight: Counter[str] = Counter()
"""Requests being answered now, by method: a plain count on the hot path (a gauge's
`inc`/`dec` takes a lock twice a request), copied into `IN_FLIGHT` by `sample_in_flight`."""


def sample_in_flight() -> None:
    """Copy the in-flight counts into their gauge, and the requests tallied since the last
    time into theirs (`ROUTE_METRICS`): every second and at each scrape."""
    for method in (*_METHODS, "other"):
        IN_FLIGHT.labels(method).set(_in_flight[method])
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
        self.deferred = True

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


class RequestObserver:
    """ASGI middleware around the whole app: request id, metrics and one log line a request."""

    def __init__(
        self, app: ASGIApp, trace_fields: Callable[[], dict[str, str]] | None = None
    ) -> None:
        self.app = app
        self.trace_fields = trace_fields  # the trace and span ids, when tracing is on
        self.metrics = ROUTE_METRICS
        ROUTE_METRICS.deferred = "PROMETHEUS_MULTIPROC_DIR" not in os.environ

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP:
            await self.app(scope, receive, send)
            return
        incoming = header(scope, b"x-request-id")
        current = incoming if incoming and _VALID_REQUEST_ID.fullmatch(incoming) else None
        current = current or os.urandom(16).hex()  # what uuid4().hex is made of, faster
        token = request_id.set(current)
        started = time.perf_counter()
        status = 500
        encoded_id = current.encode()
        method = scope["method"]
        counted = method if method in _METHODS else "other"

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), (b"x-request-id", encoded_id)]
            await send(message)

        _in_flight[counted] += 1
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            _in_flight[counted] -= 1
            seconds = time.perf_counter() - started
            route = scope.get("path_template", UNMATCHED)
            self.metrics.observe(method, route, status, seconds)
            if REQUEST_LOG.handler is not None:
                self._log(scope, current, method, route, status, seconds)
            request_id.reset(token)

    def _log(
        self, scope: Scope, current: str, method: str, route: str, status: int, seconds: float
    ) -> None:
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
            round(seconds * 1000, 3),
            client[0] if client else None,
            scope["state"].get("caller") if "state" in scope else None,
        )
        if self.trace_fields is not None:
            ids = self.trace_fields()
            line.trace_id, line.span_id = ids.get("trace_id"), ids.get("span_id")
        REQUEST_LOG.write(line, now)
