"""A multi-host DATABASE_URL passes over a primary whose commits cannot complete (an orphan:
read-write, but waiting for a synchronous standby that is gone), at connect and after a
commit cut off by the client's timeout (service/database/pool.py). Two primaries of the
test's own (tests/clusters.py): `stalled` names a synchronous standby that never connects.

The same under a Patroni cluster, with the leader's Patroni killed: tests/test_chaos.py.
"""

from __future__ import annotations

import asyncio
import uuid

import msgspec

from service.database import migrations
from tests.clusters import Server, hosts_url
from tests.helpers import app_client, assert_problem

DATABASE = "app"


def _migrated(*servers: Server) -> None:
    for server in servers:
        server.sql(f"CREATE DATABASE {DATABASE}")
        migrations.apply(server.url(DATABASE))


def _stall(server: Server) -> None:
    """Make every commit on `server` wait for a synchronous standby that never connects
    (after the set-up, whose own commits would wait too)."""
    server.set_config(synchronous_standby_names="gone")


def _users_on(server: Server, email: str) -> int:
    rows = server.sql("SELECT count(*) FROM users WHERE email = $1", email, database=DATABASE)
    return int(rows[0][0])


async def _create(client, email: str):  # type: ignore[no-untyped-def]
    return await client.post("/users", json={"email": email, "name": "Orphan"})


async def test_a_stalled_primary_first_in_the_url_is_passed_over(settings, clusters):
    stalled = clusters.primary("stalled")
    good = clusters.primary("good")
    _migrated(stalled, good)
    _stall(stalled)
    url = hosts_url(stalled, good, database=DATABASE, target_session_attrs="read-write")
    passing_over = msgspec.structs.replace(settings, database_url=url, db_statement_timeout_ms=1000)
    async with app_client(passing_over) as client:
        email = f"{uuid.uuid4().hex}@x.y"
        response = await _create(client, email)
        assert response.status_code == 201, response.text
    assert _users_on(good, email) == 1
    assert _users_on(stalled, email) == 0


async def test_a_primary_whose_commits_stall_is_left_after_one_timeout(settings, clusters):
    first = clusters.primary("first")
    second = clusters.primary("second")
    _migrated(first, second)
    url = hosts_url(first, second, database=DATABASE, target_session_attrs="read-write")
    failing_over = msgspec.structs.replace(
        settings, database_url=url, db_statement_timeout_ms=1000, db_pool_max=2
    )
    async with app_client(failing_over) as client:
        before = f"{uuid.uuid4().hex}@x.y"
        assert (await _create(client, before)).status_code == 201
        assert _users_on(first, before) == 1
        # The first loses the synchronous standby it waits for: its commits hang.
        await asyncio.to_thread(_stall, first)
        cut_off = await _create(client, f"{uuid.uuid4().hex}@x.y")
        assert_problem(cut_off, 503)
        assert cut_off.headers["retry-after"] == "1"
        after = f"{uuid.uuid4().hex}@x.y"
        response = await _create(client, after)
        assert response.status_code == 201, response.text
    assert _users_on(second, after) == 1
    assert _users_on(first, after) == 0


async def test_with_every_primary_stalled_the_first_is_used_and_answers_503(settings, clusters):
    first = clusters.primary("first")
    second = clusters.primary("second")
    _migrated(first, second)
    _stall(first)
    _stall(second)
    url = hosts_url(first, second, database=DATABASE, target_session_attrs="read-write")
    stalled = msgspec.structs.replace(settings, database_url=url, db_statement_timeout_ms=500)
    async with app_client(stalled) as client:
        response = await _create(client, f"{uuid.uuid4().hex}@x.y")
        assert_problem(response, 503)
        assert response.headers["retry-after"] == "1"
