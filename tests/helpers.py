"""Small helpers the tests share."""

from __future__ import annotations

import uuid
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import httpx


def unique_email() -> str:
    return f"user-{uuid.uuid4().hex[:12]}@example.com"


def fresh_database_name() -> str:
    return f"service_test_{uuid.uuid4().hex[:10]}"


def database_url_for(server_url: str, name: str) -> str:
    """The server URL with its database replaced by `name` (keeps ?host= for sockets)."""
    parts = urlsplit(server_url)
    return urlunsplit(parts._replace(path=f"/{name}"))


def assert_problem(
    response: httpx.Response, status: int, *, field: str | None = None
) -> dict[str, Any]:
    """The response is an RFC 9457 problem with this status (naming `field`, if given)."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    assert body["type"] == "about:blank"
    assert body["title"]
    assert isinstance(body["detail"], str)
    if field is not None:
        assert field in [error["field"] for error in body["errors"]], body
    return body


async def count_rows(db: asyncpg.Connection, table: str) -> int:
    value: int = await db.fetchval(f"SELECT count(*) FROM {table}")
    return value
