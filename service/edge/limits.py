"""Limits a hostile or buggy caller cannot exceed, checked before any routing or parsing.

Body size (1 MiB, 413) is Litestar's `request_max_body_size`; page size and string
lengths are the models' rules; statement time is PostgreSQL's `statement_timeout`; idle
keep-alive connections and concurrency are uvicorn's (see `service.__main__`). This
module adds what none of them bounds: the query string (414), the header section (431),
and a body that trickles in too slowly (408).
"""

from __future__ import annotations

import asyncio

from litestar.enums import ScopeType
from litestar.types import ASGIApp, Receive, ReceiveMessage, Scope, Send

from service.http.errors import SlowBody, send_problem

MAX_QUERY_BYTES = 4096
MAX_HEADER_BYTES = 16 * 1024
MAX_HEADERS = 100
BODY_TIMEOUT_SECONDS = 10.0
_BODILESS = frozenset({"GET", "HEAD"})


class RequestLimits:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP:
            await self.app(scope, receive, send)
            return
        if len(scope["query_string"]) > MAX_QUERY_BYTES:
            await send_problem(
                send, 414, f"The query string is longer than {MAX_QUERY_BYTES} bytes"
            )
            return
        headers = list(scope["headers"])
        if (
            len(headers) > MAX_HEADERS
            or sum(len(k) + len(v) for k, v in headers) > MAX_HEADER_BYTES
        ):
            await send_problem(
                send, 431, f"Headers over {MAX_HEADERS} or {MAX_HEADER_BYTES} bytes in all"
            )
            return
        if scope["method"] in _BODILESS:
            # No route reads the body of these, so nothing can keep one waiting: no
            # deadline to watch, and most requests are GETs.
            await self.app(scope, receive, send)
            return
        deadline = asyncio.get_running_loop().time() + BODY_TIMEOUT_SECONDS
        body_complete = False

        async def receive_in_time() -> ReceiveMessage:
            nonlocal body_complete
            if body_complete:  # e.g. waiting for a disconnect: not the body's deadline
                return await receive()
            try:
                async with asyncio.timeout_at(deadline):
                    message = await receive()
            except TimeoutError:
                raise SlowBody from None
            body_complete = message["type"] != "http.request" or not message.get("more_body")
            return message

        await self.app(scope, receive_in_time, send)
