"""Every error the service answers, as RFC 9457 problem details, decided in this one module.

Litestar's `ProblemDetailsPlugin` renders the body; the functions here decide status,
detail and the `errors` list. Database errors map by SQLSTATE and by the constraint names
chosen in `migrations/` (never by message text), so no driver message reaches a caller.
"""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any, NamedTuple

import asyncpg
import msgspec
from litestar.exceptions import HTTPException, ValidationException
from litestar.openapi.datastructures import ResponseSpec
from litestar.plugins.problem_details import (
    ProblemDetailsConfig,
    ProblemDetailsException,
    ProblemDetailsPlugin,
)
from litestar.types import HTTPResponseStartEvent, Send

# Its name from before the packages by layer: operators filter the log by it.
logger = logging.getLogger("service.errors")

RETRY_AFTER_SECONDS = "1"
INVALID_FIELDS = "The request has invalid fields"


class FieldError(msgspec.Struct, frozen=True):
    """One bad field of a request: where it is and what is wrong with it."""

    field: str
    message: str


class InvalidInput(ValueError):
    """Raised by validation with every bad field found; answered with 400."""

    def __init__(self, errors: list[FieldError]) -> None:
        super().__init__("; ".join(f"{error.field}: {error.message}" for error in errors))
        self.errors = errors


class Problem(msgspec.Struct):
    """The body of every error response (`application/problem+json`), for the OpenAPI document."""

    type: str
    title: str
    status: int
    detail: str
    errors: list[FieldError] | msgspec.UnsetType = msgspec.UNSET


MEANINGS = {
    400: "Invalid body, query, cursor or Consistency-Token; `errors` names each bad field",
    401: "No valid bearer token",
    403: "The token lacks the scope: read for GET, write for POST, PATCH and DELETE",
    404: "No such resource (also an id that is not a positive 64-bit integer)",
    408: "The body did not arrive within 10 seconds",
    409: "Conflict: the email is taken, or a request with this Idempotency-Key is in flight",
    410: "The feed cursor is older than the oldest event kept: list again and follow from "
    "the new Events-Cursor",
    412: "`If-Match` does not match the current `ETag`; nothing changed",
    413: "The body is larger than 1 MiB",
    414: "The query string is longer than 4 KiB",
    415: "The body is not sent as `Content-Type: application/json`; nothing changed",
    422: "`author_id` names no user, or the Idempotency-Key was used with another body",
    431: "More than 100 headers, or more than 16 KiB of them",
    503: "The database is unavailable; retry after `Retry-After` seconds",
}
"""What each error status means, as the OpenAPI document describes it."""


def problem_responses(*statuses: int) -> dict[int, ResponseSpec]:
    """OpenAPI entries for the errors a handler can answer: these, and 503 (it uses the
    database). The statuses of the layers in front of the handlers (token gate, limits,
    body checks) are added to the document by `service.openapi`."""
    return {
        status: ResponseSpec(
            data_container=Problem,
            description=MEANINGS[status],
            media_type="application/problem+json",
            generate_examples=False,
        )
        for status in (*statuses, 503)
    }


NOT_MODIFIED = {
    304: ResponseSpec(
        data_container=None,
        description="`If-None-Match` matches the current `ETag`: no body",
        generate_examples=False,
    )
}


def problem(
    status: int,
    detail: str,
    *,
    errors: list[FieldError] | None = None,
    headers: dict[str, str] | None = None,
) -> ProblemDetailsException:
    extra = {"errors": msgspec.to_builtins(errors)} if errors else None
    return ProblemDetailsException(
        status_code=status,
        type_="about:blank",
        title=HTTPStatus(status).phrase,
        detail=detail,
        extra=extra,
        headers=headers,
    )


_encode = msgspec.json.Encoder().encode


class Refusal(NamedTuple):
    """A request answered with a problem before it reaches Litestar (by the edge layer)."""

    status: int
    detail: str
    headers: tuple[tuple[bytes, bytes], ...] = ()


async def send_problem(send: Send, refusal: Refusal) -> None:
    """Answer a refusal straight over ASGI; the same body as `problem` gives through
    Litestar."""
    status = refusal.status
    body = _encode(Problem("about:blank", HTTPStatus(status).phrase, status, refusal.detail))
    start: HTTPResponseStartEvent = {
        "type": "http.response.start",
        "status": status,
        "headers": [
            (b"content-type", b"application/problem+json"),
            (b"content-length", str(len(body)).encode()),
            *refusal.headers,
        ],
    }
    await send(start)
    await send({"type": "http.response.body", "body": body, "more_body": False})


def unavailable(
    detail: str = "The database is unavailable; retry shortly",
) -> ProblemDetailsException:
    return problem(503, detail, headers={"Retry-After": RETRY_AFTER_SECONDS})


def _from_http_exception(exc: HTTPException) -> ProblemDetailsException:
    status = exc.status_code
    detail = exc.detail if exc.detail and exc.detail != HTTPStatus(status).phrase else ""
    if status == 404 and not detail:
        detail = "No such resource"
    if status == 413:
        detail = "The request body is larger than the service accepts"
    return problem(status, detail or HTTPStatus(status).phrase, headers=exc.headers)


def _from_validation_exception(exc: ValidationException) -> ProblemDetailsException:
    """Litestar's own validation (query and path parameters, JSON syntax) as field errors."""
    errors = [
        _field_error(item)
        for item in (exc.extra if isinstance(exc.extra, list) else [])
        if isinstance(item, dict)
    ]
    if not errors:
        errors = [FieldError(field="body", message=str(exc.detail))]
    # Not Litestar's detail: it repeats the query string, which is the caller's input.
    return problem(400, INVALID_FIELDS, errors=errors)


def _field_error(item: dict[str, Any]) -> FieldError:
    if item.get("source") == "body" and item.get("key") == "data":
        # An empty body: Litestar hands the handler no `data` at all.
        return FieldError("body", "is required: a JSON object")
    return FieldError(field=str(item.get("key") or "body"), message=str(item.get("message")))


def _from_invalid_input(exc: InvalidInput) -> ProblemDetailsException:
    return problem(400, INVALID_FIELDS, errors=exc.errors)


# SQLSTATE of errors the service expects, by the constraint (or None: any constraint).
_CONSTRAINT_ERRORS: dict[tuple[str, str | None], tuple[int, FieldError]] = {
    ("23505", "users_email_key"): (409, FieldError("email", "is already taken")),
    ("23503", "posts_author_id_fkey"): (422, FieldError("author_id", "names no user")),
}

# SQLSTATE classes and codes meaning "the database cannot serve now; a retry may succeed".
_UNAVAILABLE_CLASSES = ("08", "53", "57P")
# 25006, a write refused as read-only: the server is a standby now (a demoted primary that a
# router such as HAProxy still sends connections to, between its health checks).
_UNAVAILABLE_CODES = {"57014", "40001", "40P01", "55P03", "25006"}


def _from_database_error(exc: asyncpg.PostgresError) -> ProblemDetailsException:
    """PostgreSQL errors to HTTP, like PostgREST's mapSQLtoHTTP."""
    sqlstate: str = exc.sqlstate
    constraint: str | None = getattr(exc, "constraint_name", None)
    if (known := _CONSTRAINT_ERRORS.get((sqlstate, constraint))) is not None:
        status, error = known
        return problem(status, f"{error.field} {error.message}", errors=[error])
    if sqlstate.startswith(_UNAVAILABLE_CLASSES) or sqlstate in _UNAVAILABLE_CODES:
        logger.warning("database unavailable: SQLSTATE %s", sqlstate)
        return unavailable()
    if sqlstate.startswith(("22", "23")):
        # Data exceptions and other integrity errors: the input got past validation but
        # the database refused it. Still the caller's input, so 4xx, without the message.
        logger.warning("database refused input: SQLSTATE %s constraint %s", sqlstate, constraint)
        return problem(400, "The database refused a value of this request")
    logger.error("unexpected database error SQLSTATE %s", sqlstate, exc_info=exc)
    return problem(500, "Internal error; it has been logged")


class SlowBody(Exception):
    """The request body did not arrive in time (`service.limits`): answered 408."""


def _from_slow_body(exc: SlowBody) -> ProblemDetailsException:
    return problem(408, "The request body did not arrive in time")


def _from_connection_error(exc: Exception) -> ProblemDetailsException:
    logger.warning("database unreachable: %s", type(exc).__name__)
    return unavailable()


def _from_unexpected(exc: Exception) -> ProblemDetailsException:
    logger.error("unhandled error", exc_info=exc)
    return problem(500, "Internal error; it has been logged")


def problem_details_plugin() -> ProblemDetailsPlugin:
    mapping: dict[type[Exception], Any] = {
        HTTPException: _from_http_exception,
        ValidationException: _from_validation_exception,
        InvalidInput: _from_invalid_input,
        SlowBody: _from_slow_body,
        asyncpg.PostgresError: _from_database_error,
        # The pool could not reach the server, lost it mid-query, or waited too long.
        OSError: _from_connection_error,
        TimeoutError: _from_connection_error,
        asyncpg.ConnectionDoesNotExistError: _from_connection_error,
        asyncpg.InterfaceError: _from_connection_error,
        # A multi-host DATABASE_URL found no host that accepts writes (a failover is on),
        # or the connection's protocol state broke under a server restart.
        asyncpg.InternalClientError: _from_connection_error,
        Exception: _from_unexpected,
    }
    return ProblemDetailsPlugin(ProblemDetailsConfig(exception_to_problem_detail_map=mapping))
