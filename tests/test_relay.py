"""The relay to NATS JetStream (`python -m service relay`) as a real process, against a
nats-server and databases of the test's own: crashes of the relay and of the broker under
a steady write load, two relays and a lease, graceful stop, clear errors, and the example
consumer. After each, the stream itself (every message, not a deduplicating consumer)
holds every event of the `events` table exactly once, in the feed's order, as `GET
/events` shows it.

Run once per CI run (in the suite's first, embedded-PostgreSQL run; the lease test goes
through a PgBouncer of its own in transaction mode): they take about a minute, and the
second and third runs would prove nothing more about the relay.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import msgspec
import nats
import pytest
from nats.js.api import RetentionPolicy, StreamConfig

from service.database import migrations
from service.feed import reader
from service.http.pagination import FeedPosition
from tests.clusters import hosts_url
from tests.helpers import connect
from tests.nats import NatsServer, running_nats
from tests.server import free_port
from tests.test_replicas import DATABASE, _migrated

pytestmark = pytest.mark.skipif(
    bool(os.environ.get("TEST_DATABASE_URL")),
    reason="the relay's tests run once, in the suite's embedded-PostgreSQL run",
)

STREAM = "POSTS_SERVICE_EVENTS"
PREFIX = "posts_service"
LEASE_SECONDS = 2
EXAMPLE_CONSUMER = Path(__file__).resolve().parents[1] / "docs" / "examples" / "consume_nats.py"


@pytest.fixture
def nats_server() -> Iterator[NatsServer]:
    with running_nats() as server:
        yield server


@pytest.fixture
async def relay_database(make_database) -> str:  # type: ignore[no-untyped-def]
    """A database of the test's own: the relay publishes every event in it."""
    url: str = await make_database()
    migrations.apply(url)
    return url


class RelayProcess:
    """`python -m service relay`, its stderr in a file, its metrics on a port of its own."""

    def __init__(self, database_url: str, nats_url: str, log: Path, **environment: str) -> None:
        self.metrics_port = free_port()
        self.log = log
        self.environment = (
            {key: value for key, value in os.environ.items() if not key.startswith("RELAY_")}
            | {
                "DATABASE_URL": database_url,
                "NATS_URL": nats_url,
                "RELAY_METRICS_PORT": str(self.metrics_port),
                "RELAY_LEASE_SECONDS": str(LEASE_SECONDS),
                "RELAY_PUBLISH_TIMEOUT_MS": "1000",
                "RELAY_BATCH": "100",
                "LOG_FORMAT": "text",
                "LOG_LEVEL": "INFO",
            }
            | environment
        )
        with log.open("ab") as output:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "service", "relay"],
                env=self.environment,
                stdout=output,
                stderr=subprocess.STDOUT,
            )

    def get(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(
                f"http://127.0.0.1:{self.metrics_port}{path}", timeout=5
            ) as answer:
                return answer.status, answer.read().decode()
        except urllib.error.HTTPError as error:
            return error.code, error.read().decode()

    def metric(self, name: str) -> float:
        """A figure of the relay's /metrics, summed over its labels (0 when absent)."""
        _, text = self.get("/metrics")
        return sum(
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith((name + " ", name + "{"))
        )

    async def wait_ready(self, seconds: float = 20) -> dict[str, Any]:
        """Until /health/ready answers 200 (without blocking the test's write load)."""
        deadline = time.monotonic() + seconds
        while True:
            assert self.process.poll() is None, f"the relay exited:\n{self.log_tail()}"
            try:
                status, body = await asyncio.to_thread(self.get, "/health/ready")
                if status == 200:
                    return json.loads(body)  # type: ignore[no-any-return]
            except OSError:
                pass
            assert time.monotonic() < deadline, f"the relay is not ready:\n{self.log_tail()}"
            await asyncio.sleep(0.05)

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)

    def terminate(self, timeout: float = 20) -> int:
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=timeout)

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log.read_text().splitlines()[-lines:])


@pytest.fixture
def relays(tmp_path: Path) -> Iterator[Callable[..., RelayProcess]]:
    """`relays(database_url, nats_url, **environment)`: a started relay; every one still
    running is killed afterwards."""
    started: list[RelayProcess] = []

    def start(database_url: str, nats_url: str, **environment: str) -> RelayProcess:
        relay = RelayProcess(
            database_url, nats_url, tmp_path / f"relay-{len(started)}.log", **environment
        )
        started.append(relay)
        return relay

    yield start
    for relay in started:
        if relay.process.poll() is None:
            relay.kill()


# -- The write load -----------------------------------------------------------------------


async def _write(
    connection: asyncpg.Connection, rng: random.Random, mine: dict[int, list[int]]
) -> int:
    """One transaction of one to three random changes; how many rows it changed."""
    async with connection.transaction():
        changed = 0
        for _ in range(rng.randint(1, 3)):
            choice = rng.random()
            posts = [post for posts in mine.values() for post in posts]
            if choice < 0.1 or not mine:
                user = await connection.fetchval(
                    "INSERT INTO users (email, name) VALUES ($1, 'w') RETURNING id",
                    f"relay-{rng.random():.12f}@example.com",
                )
                mine[user] = []
            elif choice < 0.35 or not posts:
                author = rng.choice(list(mine))
                post = await connection.fetchval(
                    "INSERT INTO posts (author_id, title, body) VALUES ($1, 't', 'b') RETURNING id",
                    author,
                )
                mine[author].append(post)
            elif choice < 0.85:
                await connection.execute(
                    "UPDATE posts SET title = $2 WHERE id = $1",
                    rng.choice(posts),
                    f"t{rng.random():.6f}",
                )
            elif choice < 0.97:
                post = rng.choice(posts)
                await connection.execute("DELETE FROM posts WHERE id = $1", post)
                for author_posts in mine.values():
                    if post in author_posts:
                        author_posts.remove(post)
            else:
                user = rng.choice(list(mine))
                await connection.execute("DELETE FROM users WHERE id = $1", user)
                del mine[user]
            changed += 1
    return changed


@asynccontextmanager
async def write_load(
    database_url: str, writers: int = 4, per_second: float = 150
) -> AsyncIterator[list[int]]:
    """`writers` connections committing about `per_second` transactions in all, each
    writer on its own users and posts (no deadlocks); yields the count of committed
    changes, final once the block ends."""
    committed = [0]
    stop = asyncio.Event()

    async def writer(seed: int) -> None:
        rng = random.Random(seed)
        mine: dict[int, list[int]] = {}
        connection = await connect(database_url)
        try:
            while not stop.is_set():
                committed[0] += await _write(connection, rng, mine)
                await asyncio.sleep(writers / per_second * rng.uniform(0.5, 1.5))
        finally:
            await connection.close()

    tasks = [asyncio.create_task(writer(seed)) for seed in range(writers)]
    try:
        yield committed
    finally:
        stop.set()
        await asyncio.gather(*tasks)


# -- What the stream holds -----------------------------------------------------------------


async def feed_in_order(db: asyncpg.Connection) -> tuple[list[Any], FeedPosition]:
    """Every event of the database in the feed's order (as the relay reads it), and the
    feed's end."""
    events: list[Any] = []
    position = reader.START
    while True:
        page = await reader.read(db, position, 1000)
        events += page.events
        if not page.events:
            return events, page.next
        position = page.next


async def stream_messages(nats_url: str) -> list[Any]:
    """Every message the stream holds, by stream sequence, read one by one."""
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        info = await js.stream_info(STREAM)
        assert info.state.first_seq in (0, 1), "nothing may have been deleted from the stream"
        messages = []
        for start in range(1, info.state.last_seq + 1, 200):
            stop = min(start + 200, info.state.last_seq + 1)
            messages += await asyncio.gather(
                *(js.get_msg(STREAM, seq) for seq in range(start, stop))
            )
        return messages
    finally:
        await nc.close()


async def wait_caught_up(db: asyncpg.Connection, nats_url: str, seconds: float = 30) -> None:
    """Until the stream holds as many messages as the events table has rows."""
    deadline = time.monotonic() + seconds
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        while True:
            wanted = await db.fetchval("SELECT count(*) FROM events")
            held = (await js.stream_info(STREAM)).state.messages
            if held >= wanted:
                return
            assert time.monotonic() < deadline, f"the stream holds {held} of {wanted} events"
            await asyncio.sleep(0.2)
    finally:
        await nc.close()


async def assert_exactly_once_in_order(db: asyncpg.Connection, nats_url: str) -> list[Any]:
    """The stream holds every event once, in the feed's order, as GET /events shows it."""
    events, _ = await feed_in_order(db)
    assert len(events) == await db.fetchval("SELECT count(*) FROM events")
    messages = await stream_messages(nats_url)
    ids = [message.headers["Nats-Msg-Id"] for message in messages]
    assert len(ids) == len(set(ids)), f"{len(ids) - len(set(ids))} duplicates in the stream"
    assert set(ids) == {event.id for event in events}, "the stream and the feed differ"
    versions: dict[tuple[str, int], int] = {}
    by_id = {event.id: event for event in events}
    for message in messages:
        event = by_id[message.headers["Nats-Msg-Id"]]
        assert message.subject == f"{PREFIX}.{event.type}"
        assert message.data == msgspec.json.encode(event)
        key = (event.type.split(".")[0], event.resource_id)
        assert versions.get(key, 0) <= event.version, f"{key} out of version order"
        versions[key] = event.version
    # Stronger than per-resource order: the stream is the feed's own order.
    assert ids == [event.id for event in events]
    return events


async def stored_state(db: asyncpg.Connection) -> asyncpg.Record:
    row = await db.fetchrow("SELECT * FROM relay_state WHERE stream = $1", STREAM)
    assert row is not None
    return row


# -- The tests ------------------------------------------------------------------------------


async def test_relay_killed_at_random_moments_under_load_publishes_each_event_once(
    relay_database, nats_server, relays, tmp_path
):
    rng = random.Random(19)
    db = await connect(relay_database)
    async with write_load(relay_database) as committed:
        relay = relays(relay_database, nats_server.url)
        await relay.wait_ready()
        for _ in range(5):
            await asyncio.sleep(rng.uniform(0.3, 1.5))
            relay.kill()
            relay = relays(relay_database, nats_server.url)
            await relay.wait_ready()
        await asyncio.sleep(rng.uniform(0.3, 1.0))
    assert committed[0] > 300
    await wait_caught_up(db, nats_server.url)
    await asyncio.sleep(0.5)  # a round with nothing new: the end position is stored
    # Graceful stop: exits 0, the position stored at the feed's end, the lease released.
    assert relay.metric("service_relay_lease_held") == 1
    assert relay.terminate() == 0, relay.log_tail()
    events = await assert_exactly_once_in_order(db, nats_server.url)
    state = await stored_state(db)
    stored = FeedPosition(state["position"], state["seq"])
    assert stored > reader.START
    assert (await reader.read(db, stored, 10)).events == [], "stored before the feed's end"
    assert state["holder"] is None
    assert len(events) >= committed[0]

    # The example consumer (docs/examples/consume_nats.py) builds a copy equal to the tables.
    copy = tmp_path / "copy.sqlite"
    consumer = await asyncio.create_subprocess_exec(
        sys.executable,
        str(EXAMPLE_CONSUMER),
        "--nats-url",
        nats_server.url,
        "--db",
        str(copy),
        "--exit-when-idle",
        "1.5",
        stdout=asyncio.subprocess.PIPE,
    )
    output, _ = await asyncio.wait_for(consumer.communicate(), 60)
    assert consumer.returncode == 0
    assert json.loads(output)["events"] == len(events)
    with sqlite3.connect(copy) as local:
        kept = {
            (kind, resource_id): (version, json.loads(data))
            for kind, resource_id, version, data in local.execute(
                "SELECT kind, id, version, data FROM resources WHERE deleted = 0"
            )
        }
    users = await db.fetch("SELECT id, version FROM users")
    posts = await db.fetch("SELECT id, version, title FROM posts")
    assert set(kept) == {("user", row["id"]) for row in users} | {
        ("post", row["id"]) for row in posts
    }
    for row in posts:
        version, data = kept["post", row["id"]]
        assert (version, data["title"]) == (row["version"], row["title"])
    await db.close()


async def test_broker_killed_and_restarted_under_load_the_relay_waits_and_skips_nothing(
    relay_database, nats_server, relays
):
    db = await connect(relay_database)
    async with write_load(relay_database):
        relay = relays(relay_database, nats_server.url)
        await relay.wait_ready()
        for down in (1.0, 2.5):
            await asyncio.sleep(1.0)
            nats_server.kill()
            await asyncio.sleep(down)
            nats_server.start()
        await asyncio.sleep(1.5)
    await wait_caught_up(db, nats_server.url)
    assert relay.metric("service_relay_publish_errors_total") >= 1, relay.log_tail()
    assert relay.process.poll() is None, relay.log_tail()
    assert relay.terminate() == 0, relay.log_tail()
    await assert_exactly_once_in_order(db, nats_server.url)
    await db.close()


async def test_two_relays_through_pgbouncer_one_publishes_and_the_other_takes_over(
    relay_database, nats_server, relays, pgbouncer_for
):
    bouncer = pgbouncer_for(relay_database)
    pooled = bouncer.url(urlsplit(relay_database).path.lstrip("/"))
    db = await connect(relay_database)
    async with write_load(relay_database, per_second=100):
        first = relays(pooled, nats_server.url, DB_POOLER="transaction")
        await first.wait_ready()
        second = relays(pooled, nats_server.url, DB_POOLER="transaction")
        await second.wait_ready()
        await asyncio.sleep(1.0)
        held = {relay: relay.metric("service_relay_lease_held") for relay in (first, second)}
        assert sorted(held.values()) == [0, 1], held
        holder, standby = (first, second) if held[first] == 1 else (second, first)
        state = await stored_state(db)
        assert state["holder"].split(":")[1] == str(holder.process.pid)

        holder.kill()
        killed = time.monotonic()
        while (await stored_state(db))["holder"].split(":")[1] != str(standby.process.pid):
            assert time.monotonic() - killed < LEASE_SECONDS + 3, "no takeover"
            await asyncio.sleep(0.05)
        took_over = time.monotonic() - killed
        await asyncio.sleep(1.0)
    assert took_over <= LEASE_SECONDS + 1, took_over
    await wait_caught_up(db, nats_server.url)
    assert standby.metric("service_relay_lease_held") == 1
    assert standby.terminate() == 0, standby.log_tail()
    await assert_exactly_once_in_order(db, nats_server.url)
    await db.close()


async def test_a_broker_that_cannot_be_reached_is_one_line_and_exit_1(
    relay_database, relays, tmp_path
):
    relay = relays(relay_database, f"nats://127.0.0.1:{free_port()}")
    assert relay.process.wait(timeout=20) == 1
    output = relay.log.read_text()
    assert "Traceback" not in output
    assert [line for line in output.splitlines() if line.startswith("relay: ")] == [
        line for line in output.splitlines() if "cannot reach NATS" in line
    ]
    assert "relay: cannot reach NATS at nats://127.0.0.1:" in output


async def test_a_stream_that_does_not_fit_is_one_line_and_exit_1(
    relay_database, nats_server, relays
):
    nc = await nats.connect(nats_server.url)
    js = nc.jetstream()
    await js.add_stream(
        StreamConfig(
            name=STREAM,
            subjects=[f"{PREFIX}.post.*"],
            retention=RetentionPolicy.WORK_QUEUE,
            duplicate_window=10,
        )
    )
    await nc.close()
    relay = relays(relay_database, nats_server.url)
    assert relay.process.wait(timeout=20) == 1
    output = relay.log.read_text()
    assert "Traceback" not in output
    (line,) = [line for line in output.splitlines() if line.startswith("relay: ")]
    assert f"stream {STREAM} does not fit" in line
    assert f"do not cover {PREFIX}.user.created" in line
    assert "retention is workqueue" in line
    assert "duplicate window is 10 s" in line


async def test_a_position_stored_late_publishes_again_and_jetstream_drops_the_repeats(
    relay_database, nats_server, relays
):
    """The crash between the acks and the store, made certain: the position is put back
    to the start, so the next relay publishes every event again."""
    db = await connect(relay_database)
    async with write_load(relay_database, writers=2, per_second=100):
        await asyncio.sleep(1.0)
    relay = relays(relay_database, nats_server.url)
    await relay.wait_ready()
    await wait_caught_up(db, nats_server.url)
    assert relay.terminate() == 0, relay.log_tail()
    published = await db.fetchval("SELECT count(*) FROM events")
    assert published > 50
    await db.execute("UPDATE relay_state SET position = '0', seq = 0")

    again = relays(relay_database, nats_server.url)
    await again.wait_ready()
    deadline = time.monotonic() + 20
    while again.metric("service_relay_events_published_total") < published:
        assert time.monotonic() < deadline, again.log_tail()
        await asyncio.sleep(0.1)
    assert again.metric("service_relay_duplicates_total") == published
    assert again.terminate() == 0, again.log_tail()
    await assert_exactly_once_in_order(db, nats_server.url)
    await db.close()


async def test_a_change_the_synchronous_standby_lacks_is_not_published_before_a_failover(
    sync_replicated, nats_server, relays
):
    """The relay's side of `tests/test_feed_topologies.py`'s test of the same name: a
    change committed on the primary alone (its writer's wait for the synchronous standby
    cut short by the writer's own timeout) is lost when the standby is promoted, and the
    next change takes its version again. Published, it would be a message of a change that
    does not exist, and a second message of that version."""
    cluster = sync_replicated
    _migrated(cluster)
    url = hosts_url(
        cluster.primary, cluster.standby, database=DATABASE, target_session_attrs="read-write"
    )
    db = await connect(cluster.primary.url(DATABASE))
    author = await db.fetchval("INSERT INTO users (email, name) VALUES ('a@x.y', 'A') RETURNING id")
    post = await db.fetchval(
        "INSERT INTO posts (author_id, title, body) VALUES ($1, 'first', '') RETURNING id", author
    )
    # A long lease: its renewal, a write, would wait for the standby too, before any read.
    relay = relays(
        url,
        nats_server.url,
        DB_STATEMENT_TIMEOUT_MS="1000",
        RELAY_POLL_MS="20",
        RELAY_LEASE_SECONDS="60",
    )
    await relay.wait_ready()
    await wait_caught_up(db, nats_server.url)
    with cluster.standby_cut_off():
        with pytest.raises(TimeoutError):
            await db.execute("UPDATE posts SET title = 'lost' WHERE id = $1", post, timeout=1)
        assert await db.fetchval("SELECT title FROM posts WHERE id = $1", post) == "lost", (
            "the premise: the primary alone has the change"
        )
        await asyncio.sleep(3)  # the relay polls every 20 ms: time to publish it, were it to
        assert [m.data for m in await stream_messages(nats_server.url) if b"lost" in m.data] == []
        await db.close()
        await asyncio.to_thread(cluster.primary.stop, "immediate")
    await asyncio.to_thread(cluster.standby.promote)
    db = await connect(cluster.standby.url(DATABASE))
    await db.execute("UPDATE posts SET title = 'kept' WHERE id = $1", post)
    await wait_caught_up(db, nats_server.url)
    assert relay.terminate() == 0, relay.log_tail()
    events = await assert_exactly_once_in_order(db, nats_server.url)
    await db.close()
    changes = [e for e in events if e.type.startswith("post.")]
    assert [(e.type, e.version, e.data.title) for e in changes] == [  # type: ignore[union-attr]
        ("post.created", 1, "first"),
        ("post.updated", 2, "kept"),
    ]
