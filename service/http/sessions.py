"""The database session of a request: `session_of(request)` in a handler.

GET and HEAD are reads (a replica may answer, see `service.database.routing`); every other
method may write and runs on the primary. A read that sends back the `Consistency-Token`
of a write is answered by a server that shows that write.

Not a Litestar dependency: resolving one costs about 8% of a get-by-id's instructions
(measured with callgrind; docs/performance.md). A handler asks for the session when it
needs it; `closing_sessions`, an ASGI layer around Litestar, closes it once the answer has
gone, whatever happened in between (a write's session has usually given its connection
back already, after its statement: `service.database.routing`).
"""

from __future__ import annotations

from typing import Any

from litestar import Request
from litestar.types import ASGIApp, Receive, Scope, Send

from service.base.scope import header
from service.database.replication import TOKEN_HEADER, InvalidToken, decode_token
from service.database.routing import Session
from service.http.errors import FieldError, InvalidInput

READ_METHODS = frozenset({"GET", "HEAD"})
_TOKEN_KEY = TOKEN_HEADER.lower().encode()
_SESSION_KEY = "session"


def session_of(request: Request[Any, Any, Any]) -> Session:
    """The request's session, made at the first call (400 for a foreign token)."""
    state = request.scope["state"]
    if (session := state.get(_SESSION_KEY)) is not None:
        return session  # type: ignore[no-any-return]
    read_only = request.scope["method"] in READ_METHODS
    token = None
    if read_only and (sent := header(request.scope, _TOKEN_KEY)) is not None:
        try:
            token = decode_token(sent)
        except InvalidToken:
            raise InvalidInput(
                [FieldError(TOKEN_HEADER, "is not a token this service issued")]
            ) from None
    session = request.app.state.database.session(read_only=read_only, token=token)
    state[_SESSION_KEY] = session
    return session  # type: ignore[no-any-return]


def closing_sessions(app: ASGIApp) -> ASGIApp:
    """`app`, with the session a request made (if any) closed when the request is done."""

    async def close_after(scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await app(scope, receive, send)
        finally:
            if (session := scope.get("state", {}).pop(_SESSION_KEY, None)) is not None:
                await session.close()

    return close_after
