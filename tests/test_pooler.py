"""Behind PgBouncer 1.18 in transaction mode, with its default configuration: the pooler is
noticed, the statement timeout is still enforced on the server, and neither a PgBouncer
restart nor a PostgreSQL restart behind it gives anything but 503 with Retry-After until
service resumes by itself.

(The whole suite also runs through PgBouncer in CI: `.ci/run`.)
"""

from __future__ import annotations

import asyncio
import os
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from functools import partial
from urllib.parse import urlsplit

import httpx
import msgspec
import pytest

from tests.helpers import app_client, assert_problem, connect, database_url_for

pytestmark = pytest.mark.usefixtures("pgbouncer_available")


@pytest.fixture
def direct_database_url(database_url: str, server_url: str) -> str:
    """The suite's database on the server itself, never through a pooler."""
    server = os.environ.get("TEST_ADMIN_DATABASE_URL") or server_url
    return database_url_for(server, urlsplit(database_url).path.lstrip("/"))


def _name(url: str) -> str:
    return urlsplit(url).path.lstrip("/")


class Load:
    """Readers and writers hitting the service until stopped; every answer is counted and
    every 503 checked for Retry-After."""

    def __init__(self, client: httpx.AsyncClient, author_id: int, post_id: int) -> None:
        self.client = client
        self.author_id = author_id
        self.post_id = post_id
        self.statuses: Counter[int] = Counter()
        self.without_retry_after = 0
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    async def _one(self, send: Callable[[], Awaitable[httpx.Response]]) -> None:
        while not self._stop.is_set():
            response = await send()
            self.statuses[response.status_code] += 1
            if response.status_code == 503:
                if response.headers.get("retry-after") != "1":
                    self.without_retry_after += 1
                await asyncio.sleep(0.02)

    def start(self, readers: int = 6, writers: int = 2) -> None:
        body = {"author_id": self.author_id, "title": "under load", "body": ""}
        for _ in range(readers):
            read = lambda: self.client.get(f"/posts/{self.post_id}")  # noqa: E731
            self._tasks.append(asyncio.create_task(self._one(read)))
        for _ in range(writers):
            write = lambda: self.client.post("/posts", json=body)  # noqa: E731
            self._tasks.append(asyncio.create_task(self._one(write)))

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks)

    def since(self, before: Counter[int]) -> Counter[int]:
        return self.statuses - before

    async def through(
        self,
        fault: Callable[[], object],
        repair: Callable[[], object],
        *,
        away: float,
        served_path: str,
        what: str,
    ) -> None:
        """Under load: `fault`, `away` seconds, `repair`; then check that meanwhile every
        answer was a 503 with Retry-After or a success, never a 500, and that service came
        back by itself with no 503 afterwards."""
        self.start()
        await asyncio.sleep(0.5)
        before = Counter(self.statuses)
        await asyncio.to_thread(fault)
        await asyncio.sleep(away)
        during = self.since(before)
        await asyncio.to_thread(repair)
        recovery = await _until_served(self.client, served_path)
        await asyncio.sleep(0.5)
        settled = Counter(self.statuses)
        await asyncio.sleep(0.5)
        after = self.since(settled)
        await self.stop()
        print(f"{what} back: served again after {recovery:.2f} s; answers {dict(self.statuses)}")
        assert set(self.statuses) <= {200, 201, 503}, self.statuses
        assert during[503] > 0, during  # the fault was seen
        assert self.without_retry_after == 0
        assert after[200] > 0, after
        assert after[201] > 0, after
        assert after[503] == 0, after


async def _until_served(client: httpx.AsyncClient, path: str, seconds: float = 15) -> float:
    started = time.monotonic()
    while (await client.get(path)).status_code != 200:
        assert time.monotonic() - started < seconds, f"no service {seconds} s after the fault"
        await asyncio.sleep(0.1)
    return time.monotonic() - started


async def test_a_pooler_is_noticed_and_served_correctly_with_the_default_setting(
    settings, direct_database_url, pgbouncer_for, log_lines, user
):
    bouncer = pgbouncer_for(direct_database_url)
    behind = msgspec.structs.replace(
        settings, database_url=bouncer.url(_name(direct_database_url)), db_pooler="none"
    )
    async with app_client(behind) as client:
        created = await client.post(
            "/posts", json={"author_id": user["id"], "title": "pooled", "body": ""}
        )
        assert created.status_code == 201, created.text
        # More concurrent statements than PgBouncer has server connections (20): with
        # named prepared statements most of these would fail with SQLSTATE 26000.
        answers = await asyncio.gather(
            *(client.get(created.headers["location"]) for _ in range(96)),
            *(client.get(f"/users/{user['id']}/posts") for _ in range(32)),
        )
        assert Counter(answer.status_code for answer in answers) == Counter({200: 128})
        assert client._transport.app.state.database.primary.transaction_pooler  # type: ignore[attr-defined]
    warnings = [line for line in log_lines() if line["level"] == "WARNING"]
    assert any("DB_POOLER=transaction" in line["message"] for line in warnings), warnings


async def test_a_slow_statement_is_cancelled_on_the_server_through_pgbouncer(
    settings, direct_database_url, pgbouncer_for, user
):
    bouncer = pgbouncer_for(direct_database_url)
    quick = msgspec.structs.replace(
        settings,
        database_url=bouncer.url(_name(direct_database_url)),
        db_pooler="transaction",
        db_statement_timeout_ms=300,
    )
    holder = await connect(direct_database_url)
    try:
        async with app_client(quick) as client:
            async with holder.transaction():
                # Hold the row: the service's UPDATE waits on the lock until its timeout.
                await holder.execute("SELECT 1 FROM users WHERE id = $1 FOR UPDATE", user["id"])
                started = time.monotonic()
                response = await client.patch(f"/users/{user['id']}", json={"name": "Slow"})
                elapsed = time.monotonic() - started
                assert_problem(response, 503)
                assert response.headers["retry-after"] == "1"
                assert elapsed < 2
                # Cancelled on the server too, not only abandoned by the client: no
                # session of the service still waits for the lock.
                waiting = "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                deadline = time.monotonic() + 2
                while await holder.fetchval(waiting):
                    assert time.monotonic() < deadline, "the UPDATE still waits on the server"
                    await asyncio.sleep(0.05)
            assert (await client.get(f"/users/{user['id']}")).json()["name"] == user["name"]
    finally:
        await holder.close()


async def test_pgbouncer_restarted_under_load(settings, direct_database_url, pgbouncer_for, user):
    bouncer = pgbouncer_for(direct_database_url)
    behind = msgspec.structs.replace(
        settings,
        database_url=bouncer.url(_name(direct_database_url)),
        db_pooler="transaction",
        db_acquire_timeout=1.0,
    )
    async with app_client(behind) as client:
        post = await client.post("/posts", json={"author_id": user["id"], "title": "p", "body": ""})
        await Load(client, user["id"], post.json()["id"]).through(
            bouncer.stop,
            bouncer.start,
            away=1.0,
            served_path=f"/posts/{post.json()['id']}",
            what="PgBouncer",
        )


async def test_postgres_restarted_behind_pgbouncer(settings, own_postgres, pgbouncer_for):
    embedded, url = own_postgres
    # PgBouncer waits server_login_retry (15 s by default) after a failed login to the
    # server before it tries again; 1 s here, so that the test waits for the service's
    # recovery rather than for that timer.
    bouncer = pgbouncer_for(url, server_login_retry=1)
    behind = msgspec.structs.replace(
        settings,
        database_url=bouncer.url(_name(url)),
        db_pooler="transaction",
        db_acquire_timeout=1.0,
        db_statement_timeout_ms=1000,
    )
    async with app_client(behind) as client:
        author = await client.post("/users", json={"email": "pb@example.com", "name": "P"})
        post = await client.post(
            "/posts", json={"author_id": author.json()["id"], "title": "p", "body": ""}
        )
        await Load(client, author.json()["id"], post.json()["id"]).through(
            partial(embedded.pg_ctl, "-w", "-m", "immediate", "stop"),
            embedded.start,
            away=1.5,  # PostgreSQL is away; PgBouncer is up
            served_path=f"/posts/{post.json()['id']}",
            what="PostgreSQL",
        )
        assert (await client.get("/health/ready")).status_code == 200
