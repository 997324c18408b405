"""The service's features taken out one at a time, for `make instructions-features`.

What a feature costs a request is the service's count less the count of the service
without it (`loadtests.instructions`). A production service keeps every one of these, so
it has no switch for them: each take-out below replaces one feature, in the counted
process only and after the app is built, by what the Litestar floor does in its place
(`loadtests.baseline.floor`), and nothing more. Each names the scenarios whose requests
go through it; it is counted on those alone.

The database's own work is not in any count: callgrind counts the service's process.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import msgspec


class Feature(NamedTuple):
    name: str
    what: str
    scenarios: tuple[str, ...]
    take_out: Callable[[Any], None]
    """Called with the built app, in the process valgrind watches."""


def _edge(app: Any) -> None:
    app.asgi_handler = app.asgi_handler.app


def _fair_gate(app: Any) -> None:
    from service.database.pool import ServerPool

    # asyncpg's pool alone, as the floor takes a connection: no first-come-first-served
    # permits, no deadline, no wait histogram.
    async def acquire(self: ServerPool, wait: float) -> Any:
        return await self.pool.acquire()

    async def release(self: ServerPool, connection: Any, *, lost: bool = False) -> None:
        await self.pool.release(connection)

    ServerPool.acquire = acquire  # type: ignore[method-assign]
    ServerPool.release = release  # type: ignore[method-assign]


def _session(app: Any) -> None:
    from service.database.routing import Database, Session

    class PoolSession(Session):
        """The floor's way to a database: the primary's asyncpg pool, a connection taken at
        the first statement and given back when the request is done; no routing, no fair
        gate. The statement methods are the session's own."""

        __slots__ = ()

        async def _run(self, method: str, query: str, args: tuple[Any, ...]) -> Any:
            if self._connection is None:
                self._connection = await self.database.primary.pool.acquire()
            return await getattr(self._connection, method)(query, *args)

        async def close(self) -> None:
            if self._connection is not None:
                connection, self._connection = self._connection, None
                await self.database.primary.pool.release(connection)

    def session(self: Database, *, read_only: bool, token: int | None = None) -> Session:
        return PoolSession(self, read_only=read_only, token=token)

    Database.session = session  # type: ignore[method-assign]


def _conditional_get(app: Any) -> None:
    from service.http import resources

    def unconditional(stored: Any, request: Any) -> Any:
        return resources.with_etag(resources.found(stored))

    resources.conditional_get = unconditional


def _events_cursor(app: Any) -> None:
    from service.posts import controller

    # A coroutine still, since the handler awaits one: what is left is its call.
    async def no_header(*args: Any) -> dict[str, str]:
        return {}

    setattr(controller, "events_cursor", no_header)  # noqa: B010 (a name it imported)


def _idempotency(app: Any) -> None:
    from service.http import idempotency

    def straight(session: Any, request: Any, data: Any, create: Callable[[], Any]) -> Any:
        return create()

    idempotency.once = straight


def _consistency_token(app: Any) -> None:
    from service.http.concurrency import Versioned
    from service.posts import queries

    # A write's row read as a read's: no transaction id, so no Consistency-Token header.
    def without_writer(model: Callable[..., Any], row: Any) -> Any:
        return Versioned(model(*row[:-2]), row[-2])

    setattr(queries, "written", without_writer)  # noqa: B010 (a name it imported)


def _strict_body(app: Any) -> None:
    from service.http.validation import StrictBody

    # Litestar's own decoding of a body into its struct: lax, no media type check.
    def lax(self: StrictBody[Any], value: bytes) -> Any:
        return msgspec.json.decode(value, type=self.model_type, strict=False)

    StrictBody.decode_bytes = lax  # type: ignore[method-assign]


READS, WRITES = ("get_post", "user_posts", "list_deep", "events"), ("create_post", "patch_post")
FEATURES = {
    feature.name: feature
    for feature in (
        Feature(
            "edge",
            "request id, limits, token gate, metrics, log line (`make instructions-layers`)",
            (*READS, *WRITES),
            _edge,
        ),
        Feature(
            "session",
            "the request's session: routing, lazy connection, fair gate, release",
            (*READS, *WRITES),
            _session,
        ),
        Feature(
            "fair_gate",
            "the pool's first-come-first-served permits, deadline and wait histogram",
            (*READS, *WRITES),
            _fair_gate,
        ),
        Feature(
            "conditional_get", "If-None-Match (304) on a read", ("get_post",), _conditional_get
        ),
        Feature(
            "events_cursor",
            "a list page's Events-Cursor header (signed, from the page's snapshot)",
            ("user_posts", "list_deep"),
            _events_cursor,
        ),
        Feature(
            "idempotency", "the Idempotency-Key check of a POST", ("create_post",), _idempotency
        ),
        Feature(
            "consistency_token", "a write's Consistency-Token header", WRITES, _consistency_token
        ),
        Feature(
            "strict_body",
            "strict body decoding (415, field errors) instead of Litestar's lax decoding",
            WRITES,
            _strict_body,
        ),
    )
}
