"""The edge layer: the one ASGI layer in front of Litestar, around every request.

In order, it gives the request its id (`X-Request-ID`, kept from the caller or made),
refuses it when it is over the limits (`service.edge.limits`: 414, 431) or has no token
with the scope it needs (`service.edge.auth`: 401, 403), bounds the time its body may take
(408), passes it to Litestar, and at the end counts it in the metrics and writes its log
line (`service.edge.observer`). Refused requests get their id, metrics and log line too.

One layer rather than three of their own: every ASGI layer is one more coroutine frame
that each resume of the request passes through, and one more pass over the headers.
Merged, the three cost 54k instructions a get_post instead of 65k (`make instructions`).
What each part costs now is counted by `make instructions-layers` (docs/performance.md).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from litestar.enums import ScopeType
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from service.base.logs import REQUEST_LOG, request_id
from service.base.metrics import UNMATCHED
from service.edge import limits
from service.edge.auth import TokenGate
from service.edge.observer import ROUTE_METRICS, in_flight, log_request, new_request_id
from service.http.errors import send_problem

_BODILESS = frozenset({"GET", "HEAD"})


class Edge:
    """ASGI middleware around Litestar: request id, limits, token gate, metrics, log line."""

    def __init__(
        self,
        app: ASGIApp,
        gate: TokenGate | None,
        trace_fields: Callable[[], dict[str, str]] | None = None,
    ) -> None:
        self.app = app
        self.gate = gate  # None when auth is disabled
        self.trace_fields = trace_fields  # the trace and span ids, when tracing is on

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP:
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        sent_id = authorization = None
        header_bytes = 0
        for name, value in scope["headers"]:  # one pass: their size, and the two read here
            header_bytes += len(name) + len(value)
            if name == b"x-request-id":
                if sent_id is None:
                    sent_id = value
            elif name == b"authorization" and authorization is None:
                authorization = value
        current = new_request_id(sent_id)
        context_token = request_id.set(current)
        encoded_id = current.encode()
        method = scope["method"]
        counted = method if method in in_flight else "other"
        status = 500

        # Not a coroutine of its own: it hands back `send`'s, one frame fewer per message.
        def send_with_id(message: Message) -> Awaitable[None]:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), (b"x-request-id", encoded_id)]
            return send(message)

        in_flight[counted] += 1
        try:
            refusal = limits.refusal(scope, header_bytes)
            if refusal is None and self.gate is not None:
                refusal = self.gate.refusal(scope, authorization)
            if refusal is not None:
                await send_problem(send_with_id, refusal)
            elif method in _BODILESS:
                await self.app(scope, receive, send_with_id)
            else:
                await self.app(scope, limits.body_in_time(receive), send_with_id)
        finally:
            in_flight[counted] -= 1
            seconds = time.perf_counter() - started
            route = scope.get("path_template", UNMATCHED)
            ROUTE_METRICS.observe(method, route, status, seconds)
            if REQUEST_LOG.handler is not None:
                log_request(scope, current, method, route, status, seconds, self.trace_fields)
            request_id.reset(context_token)
