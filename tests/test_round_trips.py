"""Each request costs one statement on PostgreSQL: counted in the server's statement log.

No pool housekeeping (asyncpg's reset query), no existence check before a write, no read
before an update. Runs on an embedded PostgreSQL of its own, whose log it can read, once
directly and once through PgBouncer in transaction mode (`DB_POOLER=transaction`), where
statements are unnamed: still one statement a request, parsed once, and nothing the pooler
adds (no `SET`, no reset query) in the server's log.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import NamedTuple
from urllib.parse import urlsplit

import httpx
import msgspec
import pytest

from tests.helpers import app_client, connect
from tests.pgbouncer import PgBouncer


class Statements(NamedTuple):
    run: int  # executed: an extended-protocol execute or a simple-protocol statement
    parsed: int  # parsed: 0 for a statement prepared earlier on the connection


def _statements_since(log: Path, offset: int) -> Statements:
    with log.open(encoding="utf-8", errors="replace") as file:
        file.seek(offset)
        lines = file.read().splitlines()
    # log_line_prefix is the application name: only the service's own sessions count.
    # log_statement logs each statement run ("execute ...", "statement: ..."); the
    # durations of log_min_duration_statement show every parse ("duration: ... parse").
    ours = [line for line in lines if line.startswith("posts-service|LOG:  ")]
    return Statements(
        run=sum(" execute " in line or " statement: " in line for line in ours),
        parsed=sum(" parse " in line for line in ours),
    )


def _through_pgbouncer(request: pytest.FixtureRequest, url: str) -> str:
    """`url` itself, or the same database through a PgBouncer in transaction mode."""
    bouncer: PgBouncer = request.getfixturevalue("pgbouncer_for")(url)
    return bouncer.url(urlsplit(url).path.lstrip("/"))


@pytest.fixture(params=["none", "transaction"], ids=["direct", "pgbouncer"])
async def logged(request, settings, own_postgres):
    embedded, url = own_postgres
    admin = await connect(url)
    await admin.execute("ALTER SYSTEM SET log_statement = 'all'")
    await admin.execute("ALTER SYSTEM SET log_line_prefix = '%a|'")
    await admin.execute("ALTER SYSTEM SET log_min_duration_statement = 0")
    await admin.execute("SELECT pg_reload_conf()")
    await admin.close()
    pooler = request.param
    one_connection = msgspec.structs.replace(
        settings,
        database_url=url if pooler == "none" else _through_pgbouncer(request, url),
        db_pooler=pooler,
        db_pool_min=1,
        db_pool_max=1,
    )
    async with app_client(one_connection) as client:
        yield client, embedded.directory / "log", pooler


async def test_every_endpoint_is_one_round_trip(logged):
    client, log, pooler = logged
    user = (await client.post("/users", json={"email": "r@example.com", "name": "R"})).json()
    post = (
        await client.post("/posts", json={"author_id": user["id"], "title": "t", "body": "b"})
    ).json()
    created: list[int] = []

    async def create_post() -> httpx.Response:
        response = await client.post(
            "/posts", json={"author_id": user["id"], "title": "t", "body": "b"}
        )
        created.append(response.json()["id"])
        return response

    async def delete_post() -> httpx.Response:
        return await client.delete(f"/posts/{created.pop()}")

    requests: dict[str, Callable[[], Awaitable[httpx.Response]]] = {
        "GET /posts/{id}": lambda: client.get(f"/posts/{post['id']}"),
        "GET /users/{id}": lambda: client.get(f"/users/{user['id']}"),
        "GET /users/{id}/posts": lambda: client.get(f"/users/{user['id']}/posts"),
        "GET /posts": lambda: client.get("/posts", params={"limit": 10}),
        "GET /posts?author_id&published": lambda: client.get(
            "/posts", params={"author_id": user["id"], "published": "false"}
        ),
        "GET /users": lambda: client.get("/users"),
        "POST /posts": create_post,
        "PATCH /posts/{id}": lambda: client.patch(f"/posts/{post['id']}", json={"title": "u"}),
        "PATCH /users/{id} If-Match": lambda: client.patch(
            f"/users/{user['id']}", json={"name": "N"}, headers={"If-Match": "*"}
        ),
        "DELETE /posts/{id}": delete_post,
        "GET /health/ready": lambda: client.get("/health/ready"),
    }
    counts = {}
    for name, request in requests.items():
        if name == "DELETE /posts/{id}":
            for _ in range(3):
                await create_post()
        # Warm up: asyncpg prepares each statement once per connection (directly).
        for _ in range(2):
            assert (await request()).status_code < 300
        await asyncio.sleep(0.05)
        offset = log.stat().st_size
        assert (await request()).status_code < 300
        await asyncio.sleep(0.2)  # the server writes its log asynchronously to us
        counts[name] = _statements_since(log, offset)

    # Directly each statement was prepared during the warm-up; behind PgBouncer it is
    # parsed with every run, but once, in the exchange that runs it (DescribedOnce).
    parsed = 1 if pooler == "transaction" else 0
    assert counts == dict.fromkeys(requests, Statements(run=1, parsed=parsed))
