"""The database session of a request: handlers receive it as their `session` dependency.

GET and HEAD are reads (a replica may answer, see `service.database.routing`); every other
method may write and runs on the primary. A read that sends back the `Consistency-Token`
of a write is answered by a server that shows that write.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator

from litestar.datastructures import State
from litestar.types import Scope

from service.database.replication import TOKEN_HEADER, InvalidToken, decode_token
from service.database.routing import Session
from service.errors import FieldError, InvalidInput
from service.http import header

READ_METHODS = frozenset({"GET", "HEAD"})
_TOKEN_KEY = TOKEN_HEADER.lower().encode()


async def provide_session(scope: Scope, state: State) -> AsyncGenerator[Session, None]:
    read_only = scope["method"] in READ_METHODS  # type: ignore[typeddict-item]
    token = None
    if read_only and (sent := header(scope, _TOKEN_KEY)) is not None:
        try:
            token = decode_token(sent)
        except InvalidToken:
            raise InvalidInput(
                [FieldError(TOKEN_HEADER, "is not a token this service issued")]
            ) from None
    session = state.database.session(read_only=read_only, token=token)
    try:
        yield session
    finally:
        await session.close()
