"""HTTP behaviour shared by every single resource: ids in paths, ETags, conditional writes.

Users and posts answer GET, PATCH and DELETE the same way; their controllers pass the
resource-specific queries in, and the rules of API.md live here once.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from litestar import Request, Response
from litestar.exceptions import NotFoundException

from service.base.scope import header_list
from service.database.replication import TOKEN_HEADER, encode_token
from service.http.concurrency import Versioned, if_match_versions, none_match
from service.http.errors import problem
from service.http.validation import MAX_ID

T = TypeVar("T")

# Read from the request's raw headers, not declared as Litestar header parameters: parsing
# the headers for a parameter costs about 3% of a get-by-id (docs/performance.md). The
# OpenAPI document declares them (service.openapi).
_IF_MATCH = b"if-match"
_IF_NONE_MATCH = b"if-none-match"

Read = Callable[[], Awaitable[Versioned[T] | None]]


def require_id(value: int) -> int:
    """A path id, or 404: ids are positive bigints, so nothing else can name a row."""
    if not 0 < value <= MAX_ID:
        raise NotFoundException()
    return value


def found(stored: Versioned[T] | None) -> Versioned[T]:
    if stored is None:
        raise NotFoundException()
    return stored


def with_etag(
    stored: Versioned[T], *, status_code: int = 200, location: str | None = None
) -> Response[T]:
    headers = {"ETag": stored.etag}
    if location is not None:
        headers["Location"] = location
    if stored.written_by is not None:
        headers[TOKEN_HEADER] = encode_token(stored.written_by)
    return Response(stored.resource, status_code=status_code, headers=headers)


def conditional_get(stored: Versioned[T] | None, request: Request[Any, Any, Any]) -> Response[Any]:
    """The resource with its ETag, or 304 when the request's If-None-Match matches it."""
    stored = found(stored)
    if not none_match(header_list(request.scope, _IF_NONE_MATCH), stored.etag):
        return Response(None, status_code=304, headers={"ETag": stored.etag})
    return with_etag(stored)


def _precondition_failed() -> Exception:
    return problem(412, "If-Match does not match the current ETag; nothing was changed")


async def _refuse_write(read: Read[T]) -> Exception:
    """Why a conditional write touched no row: the row is gone (404) or changed (412)."""
    return _precondition_failed() if await read() is not None else NotFoundException()


async def patch(
    request: Request[Any, Any, Any],
    changes: dict[str, object],
    read: Read[T],
    update: Callable[[dict[str, object], list[int] | None], Awaitable[Versioned[T] | None]],
) -> Response[T]:
    """Apply a merge patch under the request's `If-Match`; `{}` answers the resource as it
    is."""
    versions = if_match_versions(header_list(request.scope, _IF_MATCH))
    if not changes:
        current = found(await read())
        if versions is not None and current.version not in versions:
            raise _precondition_failed()
        return with_etag(current)
    updated = await update(changes, versions)
    if updated is None:
        raise await _refuse_write(read)
    return with_etag(updated)


async def delete(
    request: Request[Any, Any, Any],
    read: Read[T],
    remove: Callable[[list[int] | None], Awaitable[int | None]],
) -> Response[None]:
    """Delete under the request's `If-Match`. `remove` answers the deleting transaction's
    id, or None when it deleted nothing."""
    written_by = await remove(if_match_versions(header_list(request.scope, _IF_MATCH)))
    if written_by is None:
        raise await _refuse_write(read)
    return Response(None, status_code=204, headers={TOKEN_HEADER: encode_token(written_by)})
