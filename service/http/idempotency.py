"""Idempotency keys on POST, as Stripe's API does them: a retry never writes twice.

A request with `Idempotency-Key` runs in a transaction that creates the row and keeps the
response under (caller, key) in `idempotency_keys`. A repeat of a completed request (same
caller, key and body) gets that first response again, marked `Idempotent-Replayed: true`,
and writes nothing; the same key with another body is a 422.

Two identical requests racing with one key: the second one's INSERT of the key waits on
the first one's uncommitted entry (PostgreSQL's unique index), finds it taken once the
first commits, rolls its own row back and answers the first response. If the first one
failed, it rolled back and kept nothing, so the second one runs for real. Either way one
row, one answer. Keys live `IDEMPOTENCY_TTL_HOURS`; `forget_expired` runs in the
background and never waits for a row a request holds.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import asyncpg
import msgspec
from litestar import Request, Response

from service.base.background import every
from service.base.scope import CALLER_STATE_KEY, header
from service.database.pool import ServerPool
from service.database.replication import TOKEN_HEADER, encode_token
from service.database.routing import Session
from service.database.sql import load_queries
from service.http.errors import FieldError, InvalidInput, problem

# Its name from before the packages by layer: operators filter the log by it.
logger = logging.getLogger("service.idempotency")

SQL = load_queries("idempotency")
CLEANUP_INTERVAL_SECONDS = 600
CLEANUP_BATCH = 1000
CLEANUP_LOCK_TIMEOUT = "100ms"

KEY_HEADER = "Idempotency-Key"
KEY_DESCRIPTION = (
    "1 to 255 printable ASCII characters; a retry with the same key and body gets the "
    "first response again and writes nothing."
)
# What `_check` accepts, as it can arrive: HTTP drops spaces around a header value. The
# OpenAPI document declares the header with it (service.openapi); handlers read it raw.
KEY_PATTERN = "^[!-~](?:[ -~]{0,253}[!-~])?$"
_KEY = KEY_HEADER.lower().encode()


class _KeyTaken(Exception):
    """The key was live when this request tried to keep its response: roll back."""


def _check(key: str) -> None:
    # Checked here rather than by Litestar, so that the error names the header.
    if not (1 <= len(key) <= 255 and all(" " <= character <= "~" for character in key)):
        raise InvalidInput(
            [FieldError("Idempotency-Key", "must be 1 to 255 printable ASCII characters")]
        )


def fingerprint(request: Request[Any, Any, Any], data: msgspec.Struct) -> bytes:
    """What makes two requests "the same": method, path and the validated body (so key
    order, whitespace and the case of an email do not matter)."""
    digest = hashlib.sha256(f"{request.method} {request.url.path}\n".encode())
    digest.update(msgspec.json.encode(data))
    return digest.digest()


async def once(
    session: Session,
    request: Request[Any, Any, Any],
    data: msgspec.Struct,
    create: Callable[[], Awaitable[Response[Any]]],
) -> Response[Any]:
    """Run `create` (a POST's write and its response) at most once per Idempotency-Key."""
    key = header(request.scope, _KEY)
    if key is None:
        return await create()
    _check(key)
    caller: str = request.scope["state"].get(CALLER_STATE_KEY) or ""
    ttl_hours = request.app.state.settings.idempotency_ttl_hours
    request_print = fingerprint(request, data)

    async def recall() -> Response[bytes] | None:
        return await _recall(session, caller, key, request_print, ttl_hours)

    if (kept := await recall()) is not None:
        return kept
    try:
        async with session.transaction():
            response = await create()
            body = msgspec.json.encode(response.content)
            remembered = await session.fetchval(
                SQL["remember"],
                caller,
                key,
                request_print,
                response.status_code,
                body,
                response.headers["Location"],
                response.headers["ETag"],
                ttl_hours,
            )
            if remembered is None:
                raise _KeyTaken
    except (_KeyTaken, asyncpg.IntegrityConstraintViolationError) as error:
        # A twin with this key committed first (its row may also be why ours conflicted,
        # e.g. the same email): its answer is ours. Otherwise the error stands.
        if (kept := await recall()) is not None:
            return kept
        if isinstance(error, _KeyTaken):  # taken, then expired and forgotten meanwhile
            raise problem(409, "This Idempotency-Key was just in use; retry") from None
        raise
    return Response(
        body,
        status_code=response.status_code,
        headers=response.headers,
        media_type="application/json",
    )


async def _recall(
    session: Session, caller: str, key: str, request_print: bytes, ttl_hours: int
) -> Response[bytes] | None:
    """The kept first response of a live key, or None; 422 if it answered another body."""
    kept = await session.fetchrow(SQL["recall"], caller, key, ttl_hours)
    if kept is None:
        return None
    if kept["fingerprint"] != request_print:
        raise problem(
            422,
            "This Idempotency-Key was used with another request body",
            errors=[FieldError("Idempotency-Key", "was used with another request body")],
        )
    headers = {"Location": kept["location"], "ETag": kept["etag"], "Idempotent-Replayed": "true"}
    if kept["written_by"] is not None:
        headers[TOKEN_HEADER] = encode_token(kept["written_by"])
    return Response(
        kept["body"], status_code=kept["status"], media_type="application/json", headers=headers
    )


async def forget_expired(primary: ServerPool, ttl_hours: int) -> int:
    """Delete expired keys in small batches; return how many.

    Each batch may wait at most CLEANUP_LOCK_TIMEOUT for a lock (then it fails with
    SQLSTATE 55P03 and the next round tries again): a background job must not sit on one
    of the requests' pooled connections behind somebody else's transaction.
    """
    forgotten = 0
    while True:
        async with primary.connection() as connection, connection.transaction():
            await connection.execute(f"SET LOCAL lock_timeout = '{CLEANUP_LOCK_TIMEOUT}'")
            status = await connection.execute(SQL["forget_expired"], ttl_hours, CLEANUP_BATCH)
        deleted = int(status.split()[-1])
        forgotten += deleted
        if deleted < CLEANUP_BATCH:
            return forgotten


def cleanup(primary: ServerPool, ttl_hours: int) -> AbstractAsyncContextManager[None]:
    """Forget expired keys now and every ten minutes while the app runs."""

    async def forget() -> None:
        try:
            if forgotten := await forget_expired(primary, ttl_hours):
                logger.info("forgot %d expired idempotency keys", forgotten)
        except (OSError, asyncpg.PostgresError) as error:
            logger.warning("idempotency clean-up failed, will retry: %s", type(error).__name__)

    return every(CLEANUP_INTERVAL_SECONDS, forget)
