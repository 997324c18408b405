"""Database faults: the service answers 503 fast while PostgreSQL is gone, and serves again
without a restart when it is back; slow statements and an exhausted pool are 503 too."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time

import msgspec

from service.database import migrations
from tests.helpers import app_client, assert_problem, connect

ALL = sorted(migrations.migration_ids())


async def test_postgres_stopped_under_the_service_then_started_again(settings, own_postgres):
    embedded, url = own_postgres
    own = msgspec.structs.replace(settings, database_url=url, db_pool_min=2, db_acquire_timeout=1.0)
    async with app_client(own) as client:
        user = await client.post("/users", json={"email": "f@example.com", "name": "F"})
        assert user.status_code == 201

        embedded.pg_ctl("-w", "-m", "immediate", "stop")

        for method, path, body in [
            ("GET", user.headers["location"], None),
            ("GET", "/users", None),
            ("POST", "/users", {"email": "g@example.com", "name": "G"}),
            ("PATCH", user.headers["location"], {"name": "H"}),
            ("GET", "/posts", None),
            ("GET", "/health/ready", None),
        ]:
            started = time.monotonic()
            response = await client.request(method, path, json=body)
            assert time.monotonic() - started < 3, f"{method} {path} hung"
            assert_problem(response, 503)
            assert response.headers["retry-after"] == "1"
        assert (await client.get("/health/live")).status_code == 200

        embedded.start()

        deadline = time.monotonic() + 10
        while (await client.get(user.headers["location"])).status_code != 200:
            assert time.monotonic() < deadline, "the service did not recover"
            await asyncio.sleep(0.2)
        assert (await client.get("/health/ready")).status_code == 200
        again = await client.post("/users", json={"email": "g@example.com", "name": "G"})
        assert again.status_code == 201


async def test_statement_timeout_answers_503_and_changes_nothing(settings, db, user):
    quick = msgspec.structs.replace(settings, db_statement_timeout_ms=300)
    async with app_client(quick) as client:
        async with db.transaction():
            # Hold the row: the service's UPDATE waits on the lock until its timeout.
            await db.execute("SELECT 1 FROM users WHERE id = $1 FOR UPDATE", user["id"])
            started = time.monotonic()
            response = await client.patch(f"/users/{user['id']}", json={"name": "Slow"})
            elapsed = time.monotonic() - started
        assert_problem(response, 503)
        assert elapsed < 2
    assert await db.fetchval("SELECT name FROM users WHERE id = $1", user["id"]) == user["name"]


async def test_exhausted_pool_answers_503_fast_instead_of_queueing(settings, user):
    single = msgspec.structs.replace(settings, db_pool_min=1, db_pool_max=1, db_acquire_timeout=0.3)
    async with app_client(single) as client:
        primary = client._transport.app.state.database.primary
        async with primary.connection():  # every connection of the pool is busy
            started = time.monotonic()
            response = await client.get(f"/users/{user['id']}")
            assert time.monotonic() - started < 1.5
            assert_problem(response, 503)
            assert response.headers["retry-after"] == "1"
        assert (await client.get(f"/users/{user['id']}")).status_code == 200


async def test_two_concurrent_migrations_apply_each_step_once(make_database, repo_root):
    url = await make_database()
    runs = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "service",
            "migrate",
            env=_environment(url),
            cwd=repo_root,
            stdout=subprocess.PIPE,
        )
        for _ in range(2)
    ]
    outputs = [(await asyncio.wait_for(run.communicate(), timeout=60))[0].decode() for run in runs]

    assert [run.returncode for run in runs] == [0, 0]
    assert sorted(outputs) == sorted([f"applied: {', '.join(ALL)}\n", "applied: nothing pending\n"])
    connection = await connect(url)
    try:
        applies = await connection.fetch(
            "SELECT migration_id, count(*) FROM _yoyo_log WHERE operation = 'apply'"
            " GROUP BY migration_id"
        )
    finally:
        await connection.close()
    assert {row[0]: row[1] for row in applies} == dict.fromkeys(ALL, 1)


async def test_migrate_command_lists_applies_and_rolls_back(make_database, repo_root):
    url = await make_database()

    def migrate(*arguments: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "service", "migrate", *arguments],
            env=_environment(url),
            cwd=repo_root,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    assert migrate("--list").stdout == "".join(f"pending  {step}\n" for step in ALL)
    assert migrate().stdout == f"applied: {', '.join(ALL)}\n"
    assert migrate("--rollback").stdout == f"rolled back: {ALL[-1]}\n"
    assert migrate("--list").stdout == "".join(
        f"{'pending' if step == ALL[-1] else 'applied'}  {step}\n" for step in ALL
    )
    assert migrate("--rollback", "all").stdout == f"rolled back: {', '.join(ALL[-2::-1])}\n"
    refused = migrate("--rollback", "zero")
    assert refused.returncode == 2
    assert "--rollback takes a positive number or 'all'" in refused.stderr


def _environment(database_url: str) -> dict[str, str]:
    return {"DATABASE_URL": database_url, "PATH": "/usr/bin:/bin", "LOG_LEVEL": "WARNING"}
