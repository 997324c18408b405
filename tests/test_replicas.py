"""Reads on streaming replicas, read-your-writes, and failover, on clusters of the test's own
(made with the embedded wheel's initdb, pg_basebackup -R and pg_ctl: tests/clusters.py).

Each test makes a database `app` on its primary, migrates it, and runs the app on it with
DATABASE_READ_URL naming the standby.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from typing import Any

import httpx
import msgspec

from service.base.metrics import READ_FALLBACKS, READS
from service.base.settings import Settings
from service.database import migrations
from tests.clusters import Replicated, Server, hosts_url
from tests.helpers import app_client, assert_problem

DATABASE = "app"


def _migrated(cluster: Replicated) -> None:
    cluster.primary.sql(f"CREATE DATABASE {DATABASE}")
    migrations.apply(cluster.primary.url(DATABASE))
    cluster.standby.wait_replayed()


def _settings(settings: Settings, cluster: Replicated, **changes: Any) -> Settings:
    return msgspec.structs.replace(
        settings,
        database_url=cluster.primary.url(DATABASE),
        database_read_url=cluster.standby.url(DATABASE),
        **changes,
    )


def _count(counter: Any, label: str) -> float:
    return float(counter.labels(label)._value.get())


async def _replica_in_use(client: httpx.AsyncClient) -> None:
    """Wait until the replica monitor has seen the replica current (it checks every 0.2 s)."""
    deadline = time.monotonic() + 10
    while True:
        servers = (await client.get("/health/ready")).json()["servers"]
        if all(server["state"] == "ok" for server in servers):
            return
        assert time.monotonic() < deadline, servers
        await asyncio.sleep(0.05)


async def _user(client: httpx.AsyncClient, name: str = "Ada") -> httpx.Response:
    response = await client.post("/users", json={"email": f"{uuid.uuid4().hex}@x.y", "name": name})
    assert response.status_code == 201, response.text
    return response


async def _post_on_the_replica(
    client: httpx.AsyncClient, cluster: Replicated
) -> tuple[dict[str, Any], httpx.Response]:
    """A user and a post, replayed on the standby, with the replica in use."""
    author = (await _user(client)).json()
    post = await client.post("/posts", json={"author_id": author["id"], "title": "t", "body": ""})
    await asyncio.to_thread(cluster.standby.wait_replayed)
    await _replica_in_use(client)
    return author, post


def _scans(server: Server) -> tuple[int, int]:
    """Index scans of posts and committed transactions of `app`, by the server's own
    cumulative statistics."""
    row = server.sql(
        "SELECT (SELECT idx_scan FROM pg_stat_user_tables WHERE relname = 'posts'),"
        " (SELECT xact_commit FROM pg_stat_database WHERE datname = $1)",
        DATABASE,
        database=DATABASE,
    )[0]
    return int(row[0] or 0), int(row[1] or 0)


async def test_plain_gets_are_served_by_the_replica(settings, replicated):
    _migrated(replicated)
    async with app_client(_settings(settings, replicated)) as client:
        _, post = await _post_on_the_replica(client, replicated)
        primary_before, standby_before = _scans(replicated.primary), _scans(replicated.standby)
        for _ in range(50):
            assert (await client.get(post.headers["location"])).status_code == 200
    # The pools are closed now: the server processes that ran the reads have exited and
    # flushed their statistics (a busy backend flushes them only when idle for a while).
    primary_after, standby_after = _scans(replicated.primary), _scans(replicated.standby)
    assert standby_after[0] - standby_before[0] >= 50, (standby_before, standby_after)
    assert primary_after[0] - primary_before[0] < 5, (primary_before, primary_after)
    assert standby_after[1] - standby_before[1] >= 50


async def test_a_token_reads_the_write_while_replay_is_paused_and_no_token_reads_the_replica(
    settings, replicated
):
    _migrated(replicated)
    # Lag would otherwise take the paused replica out of service after a second.
    patient = _settings(settings, replicated, db_max_replica_lag_ms=600_000)
    async with app_client(patient) as client:
        created = await _user(client, "Before")
        location = created.headers["location"]
        await asyncio.to_thread(replicated.standby.wait_replayed)
        await _replica_in_use(client)
        await asyncio.to_thread(replicated.standby.pause_replay)

        patched = await client.patch(location, json={"name": "After"})
        assert patched.status_code == 200
        token = patched.headers["consistency-token"]
        behind = _count(READ_FALLBACKS, "behind_token")

        stale = await client.get(location)
        fresh = await client.get(location, headers={"Consistency-Token": token})
        assert stale.json()["name"] == "Before"  # the replica's older answer
        assert fresh.json()["name"] == "After"  # the primary's, since the replica lacks it
        assert fresh.headers["etag"] == patched.headers["etag"]
        assert _count(READ_FALLBACKS, "behind_token") == behind + 1

        # A token covers the commit, not just the statement: a token of a write made on
        # the primary, checked on the replica once it replays that commit.
        await asyncio.to_thread(replicated.standby.resume_replay)
        await asyncio.to_thread(replicated.standby.wait_replayed)
        replica_reads = _count(READS, "replica")
        caught_up = await client.get(location, headers={"Consistency-Token": token})
        assert caught_up.json()["name"] == "After"
        assert _count(READS, "replica") == replica_reads + 1
        assert _count(READ_FALLBACKS, "behind_token") == behind + 1


async def test_every_kind_of_write_answers_a_token_and_a_foreign_token_is_400(settings, replicated):
    _migrated(replicated)
    async with app_client(_settings(settings, replicated)) as client:
        user = await _user(client)
        post = await client.post(
            "/posts",
            json={"author_id": user.json()["id"], "title": "t", "body": ""},
            headers={"Idempotency-Key": "token-test"},
        )
        replay = await client.post(
            "/posts",
            json={"author_id": user.json()["id"], "title": "t", "body": ""},
            headers={"Idempotency-Key": "token-test"},
        )
        patched = await client.patch(post.headers["location"], json={"title": "u"})
        unchanged = await client.patch(post.headers["location"], json={})
        deleted = await client.delete(post.headers["location"])
        tokens = [r.headers.get("consistency-token") for r in (user, post, patched, deleted)]
        assert all(tokens), tokens
        assert len(set(tokens)) == 4
        assert replay.headers["idempotent-replayed"] == "true"
        assert replay.headers["consistency-token"] == post.headers["consistency-token"]
        assert "consistency-token" not in unchanged.headers  # `{}` writes nothing
        for bad in ("", "abc", "0", "2.5", "1.-5", "1.1234567890123456789", "1.5x"):
            refused = await client.get(user.headers["location"], headers={"Consistency-Token": bad})
            assert_problem(refused, 400, field="Consistency-Token")


async def test_a_lagging_replica_is_skipped(settings, replicated):
    _migrated(replicated)
    async with app_client(_settings(settings, replicated, db_max_replica_lag_ms=300)) as client:
        created = await _user(client, "Before")
        await asyncio.to_thread(replicated.standby.wait_replayed)
        await _replica_in_use(client)
        await asyncio.to_thread(replicated.standby.pause_replay)
        await client.patch(created.headers["location"], json={"name": "After"})
        deadline = time.monotonic() + 5
        while (await client.get("/health/ready")).json()["servers"][1]["state"] != "lagging":
            assert time.monotonic() < deadline, "the paused replica never counted as lagging"
            await asyncio.sleep(0.05)
        lagging = _count(READ_FALLBACKS, "lagging")
        answer = await client.get(created.headers["location"])
        assert answer.json()["name"] == "After"  # from the primary: no token needed
        assert _count(READ_FALLBACKS, "lagging") == lagging + 1
        await asyncio.to_thread(replicated.standby.resume_replay)


async def test_a_replica_stopped_under_load_costs_no_request(settings, replicated):
    _migrated(replicated)
    async with app_client(_settings(settings, replicated)) as client:
        author, post = await _post_on_the_replica(client, replicated)
        statuses: Counter[int] = Counter()
        stop = asyncio.Event()

        async def read() -> None:
            while not stop.is_set():
                for path in (post.headers["location"], f"/users/{author['id']}/posts", "/posts"):
                    statuses[(await client.get(path)).status_code] += 1

        readers = [asyncio.create_task(read()) for _ in range(8)]
        await asyncio.sleep(0.5)
        served_by_replica = _count(READS, "replica")
        await asyncio.to_thread(replicated.standby.stop, "immediate")
        await asyncio.sleep(1.0)
        stop.set()
        await asyncio.gather(*readers)
        ready = (await client.get("/health/ready")).json()
    assert statuses[200] > 100
    assert statuses == Counter({200: statuses[200]}), statuses
    assert served_by_replica > 0
    assert ready["status"] == "ready"
    assert ready["servers"][1]["state"].startswith("down")


async def test_failover_to_a_synchronous_standby_loses_no_acknowledged_write(
    settings, sync_replicated
):
    cluster = sync_replicated
    _migrated(cluster)
    both = hosts_url(
        cluster.primary, cluster.standby, database=DATABASE, target_session_attrs="read-write"
    )
    failing_over = msgspec.structs.replace(
        settings,
        database_url=both,
        database_read_url=cluster.standby.url(DATABASE),
        db_acquire_timeout=1.0,
        db_statement_timeout_ms=2000,
    )
    async with app_client(failing_over) as client:
        author = (await _user(client)).json()
        first = await client.post(
            "/posts", json={"author_id": author["id"], "title": "first", "body": ""}
        )
        await _replica_in_use(client)
        acknowledged: list[dict[str, Any]] = []
        write_statuses: Counter[int] = Counter()
        read_statuses: Counter[int] = Counter()
        first_write_after: list[float] = []
        promoted_at: list[float] = []
        stop = asyncio.Event()

        async def write(number: int) -> None:
            for sequence in range(100_000):
                if stop.is_set():
                    return
                body = {"author_id": author["id"], "title": f"{number}-{sequence}", "body": ""}
                response = await client.post("/posts", json=body)
                write_statuses[response.status_code] += 1
                if response.status_code == 201:
                    acknowledged.append(response.json())
                    if promoted_at and not first_write_after:
                        first_write_after.append(time.monotonic() - promoted_at[0])
                else:
                    assert_problem(response, 503)
                    assert response.headers["retry-after"] == "1"
                    await asyncio.sleep(0.05)

        async def read() -> None:
            while not stop.is_set():
                read_statuses[(await client.get(first.headers["location"])).status_code] += 1
                await asyncio.sleep(0.005)

        tasks = [asyncio.create_task(write(n)) for n in range(4)]
        tasks += [asyncio.create_task(read()) for _ in range(2)]
        await asyncio.sleep(1.0)
        before_crash = len(acknowledged)
        await asyncio.to_thread(cluster.primary.stop, "immediate")
        await asyncio.sleep(1.0)
        # From `pg_ctl promote` on: the write that promote() itself makes to prove the
        # server writable happens inside this interval too.
        promoted_at.append(time.monotonic())
        await asyncio.to_thread(cluster.standby.promote)
        promote_took = time.monotonic() - promoted_at[0]
        deadline = time.monotonic() + 10
        while not first_write_after and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.5)
        ready = await client.get("/health/ready")
        stop.set()
        await asyncio.gather(*tasks)

    assert first_write_after, f"no write succeeded within 10 s of the promotion: {write_statuses}"
    print(
        f"\nfailover: first write {first_write_after[0]:.2f} s after `pg_ctl promote` "
        f"(which took {promote_took:.2f} s); "
        f"writes {dict(write_statuses)}, replica reads {dict(read_statuses)}"
    )
    assert before_crash > 0
    assert set(write_statuses) <= {201, 503}
    assert read_statuses == Counter({200: read_statuses[200]}), read_statuses
    assert ready.status_code == 200
    stored = {
        row["id"]
        for row in cluster.standby.sql(
            "SELECT id FROM posts WHERE author_id = $1", author["id"], database=DATABASE
        )
    }
    lost = [post["id"] for post in acknowledged if post["id"] not in stored]
    assert lost == [], f"{len(lost)} acknowledged writes lost"


async def test_a_commit_waiting_for_a_missing_synchronous_standby_is_cut_off(
    settings, sync_replicated
):
    cluster = sync_replicated
    _migrated(cluster)
    await asyncio.to_thread(cluster.primary.stop, "immediate")
    # Promoted as pg_basebackup copied it: every commit waits for a standby of its own.
    await asyncio.to_thread(cluster.standby.promote, keep_synchronous_standby_names=True)
    stalled = msgspec.structs.replace(
        settings, database_url=cluster.standby.url(DATABASE), db_statement_timeout_ms=500
    )
    async with app_client(stalled) as client:
        ready = await client.get("/health/ready")
        assert_problem(ready, 503)
        assert "synchronous standby" in ready.json()["detail"]
        started = time.monotonic()
        body = {"email": "stalled@example.com", "name": "Stalled"}
        key = {"Idempotency-Key": "stalled-create"}
        cut_off = await client.post("/users", json=body, headers=key)
        assert time.monotonic() - started < 3, "the commit hung past the statement timeout"
        assert_problem(cut_off, 503)
        # Committed locally, not replicated: a retry with the key answers the first write.
        retried = await client.post("/users", json=body, headers=key)
        assert retried.status_code == 201, retried.text
        assert retried.headers["idempotent-replayed"] == "true"


async def test_a_standby_reached_as_the_primary_answers_writes_and_the_feed_503(
    settings, replicated
):
    """A router that has not noticed a demotion yet (HAProxy between two health checks, as
    when `make chaos` restarts Patroni on an orphan and it rejoins as a standby) sends the
    service's connections to a standby. Writes and the feed's confirmation fail there as
    read-only: a 503 to retry, as in every other moment of a failover, never a 500."""
    _migrated(replicated)
    replicated.primary.sql(
        "INSERT INTO users (email, name) VALUES ('before@x.y', 'Before')", database=DATABASE
    )
    await asyncio.to_thread(replicated.standby.wait_replayed)
    demoted = msgspec.structs.replace(settings, database_url=replicated.standby.url(DATABASE))
    async with app_client(demoted) as client:
        created = await client.post("/users", json={"email": "after@x.y", "name": "After"})
        assert_problem(created, 503)
        assert created.headers["retry-after"] == "1"
        feed = await client.get("/events")  # an event to hand out: confirmed on the "primary"
        assert_problem(feed, 503)
    assert replicated.primary.sql("SELECT count(*) FROM users", database=DATABASE)[0][0] == 1
