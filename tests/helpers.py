"""Small helpers the tests share."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import httpx
from hypothesis import HealthCheck, settings

from service.app import create_app
from service.base.settings import Settings

REPRODUCIBLE = settings(
    derandomize=True,
    database=None,
    deadline=None,
    max_examples=200,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
"""Hypothesis settings of the property tests: derandomized (the examples follow from the
test's name, not a clock), no example database, no deadline: a CI run is reproducible."""


@asynccontextmanager
async def app_client(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """The app built by `create_app`, its lifespan run, served over ASGI to an httpx client.

    In the test's own event loop (not Litestar's AsyncTestClient, which runs the app on a
    portal thread and serialises requests): requests sent together really run together.
    """
    app = create_app(settings)
    started, stopping = asyncio.Event(), asyncio.Event()

    async def lifespan() -> None:
        # One task enters and leaves the lifespan: its task groups require it, and
        # pytest-asyncio may tear a session fixture down from another task.
        async with app.lifespan():
            started.set()
            await stopping.wait()

    running = asyncio.create_task(lifespan())
    await asyncio.wait(
        [running, asyncio.create_task(started.wait())], return_when="FIRST_COMPLETED"
    )
    if running.done():
        running.result()  # start-up failed: raise its error
    try:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://service") as client:
            yield client
    finally:
        stopping.set()
        await running


async def connect(url: str) -> asyncpg.Connection:
    """A connection of the test's own. Unnamed statements only: the suite also runs through
    PgBouncer in transaction mode, where prepared statements do not survive a transaction."""
    return await asyncpg.connect(url, statement_cache_size=0)


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


def refused_start(environment: dict[str, str]) -> str:
    """Run `python -m service serve`, which must refuse to start: its one-line complaint."""
    result = subprocess.run(
        [sys.executable, "-m", "service", "serve"],
        env={"PATH": "/usr/bin:/bin"} | environment,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    return result.stderr
