"""`make bench-relay`: how fast the relay moves the change feed to NATS JetStream.

On an embedded PostgreSQL and a nats-server of the bench's own (temporary folders, free
ports, removed afterwards), with `python -m service relay` as a real process:

1. Backlog: RELAY_BENCH_BACKLOG events (default 50,000; inserts of posts, 1,000 a
   transaction) written before the relay starts; the time from the relay's readiness
   until the stream holds them all, and the events per second that makes.
2. Delay: with the relay caught up, one writer commits RELAY_BENCH_RATE single-insert
   transactions a second (default 500, open loop) for RELAY_BENCH_SECONDS (20) while a
   subscriber of the stream (a push consumer in the same process) notes when each event
   arrives; the delay is from the moment the writer's commit returned to the moment the
   subscriber got the message: p50, p99, max. Four writer connections share the rate.

Relay settings are the defaults (RELAY_BATCH 500, RELAY_POLL_MS 20) unless set in the
environment.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import asyncpg
import nats

from service.database import migrations
from service.database.embedded import EmbeddedPostgres
from tests.nats import NatsServer, require_nats
from tests.server import free_port

STREAM = "POSTS_SERVICE_EVENTS"


def _setting(name: str, default: int) -> int:
    return int(os.environ.get(name) or default)


async def _stream_count(js: nats.js.JetStreamContext) -> int:
    return (await js.stream_info(STREAM)).state.messages


async def bench(database_url: str, nats_url: str, folder: Path) -> dict[str, object]:
    backlog = _setting("RELAY_BENCH_BACKLOG", 50_000)
    rate = _setting("RELAY_BENCH_RATE", 500)
    seconds = _setting("RELAY_BENCH_SECONDS", 20)
    db = await asyncpg.connect(database_url)
    author = await db.fetchval(
        "INSERT INTO users (email, name) VALUES ('bench@example.com', 'b') RETURNING id"
    )
    for start in range(0, backlog - 1, 1000):
        await db.execute(
            "INSERT INTO posts (author_id, title, body) "
            "SELECT $1, 'backlog ' || g, 'b' FROM generate_series(1, $2) AS g",
            author,
            min(1000, backlog - 1 - start),
        )
    wanted = await db.fetchval("SELECT count(*) FROM events")

    environment = os.environ | {
        "DATABASE_URL": database_url,
        "NATS_URL": nats_url,
        "RELAY_METRICS_PORT": "0",
        "LOG_LEVEL": "WARNING",
    }
    log = (folder / "relay.log").open("wb")
    relay = subprocess.Popen(  # noqa: ASYNC220 (started once, before anything is measured)
        [sys.executable, "-m", "service", "relay"], env=environment, stdout=log, stderr=log
    )
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    try:
        while True:  # the stream exists once the relay has started
            try:
                await _stream_count(js)
                break
            except nats.js.errors.NotFoundError:
                assert relay.poll() is None, (folder / "relay.log").read_text()
                await asyncio.sleep(0.01)
        started = time.perf_counter()
        while (held := await _stream_count(js)) < wanted:
            assert relay.poll() is None, (folder / "relay.log").read_text()
            await asyncio.sleep(0.05)
        drained = time.perf_counter() - started
        result: dict[str, object] = {
            "backlog_events": held,
            "backlog_seconds": round(drained, 2),
            "backlog_events_per_second": round(held / drained),
        }

        arrived: dict[int, float] = {}

        async def on_message(message: nats.aio.msg.Msg) -> None:
            event = json.loads(message.data)
            if event["type"] == "post.created":
                arrived[event["resource_id"]] = time.perf_counter()

        await js.subscribe(
            "posts_service.post.created",
            cb=on_message,
            ordered_consumer=True,
            deliver_policy=nats.js.api.DeliverPolicy.NEW,
        )
        committed: dict[int, float] = {}
        writers = 4
        begin = time.perf_counter()

        async def writer(index: int) -> None:
            # Open loop: each of the writers on its own connection, its inserts evenly
            # spaced, together `rate` a second.
            connection = await asyncpg.connect(database_url)
            interval = writers / rate
            try:
                for n in range(rate * seconds // writers):
                    due = begin + (n + index / writers) * interval
                    if (pause := due - time.perf_counter()) > 0:
                        await asyncio.sleep(pause)
                    post = await connection.fetchval(
                        "INSERT INTO posts (author_id, title, body) "
                        "VALUES ($1, 'live', 'b') RETURNING id",
                        author,
                    )
                    committed[post] = time.perf_counter()
            finally:
                await connection.close()

        await asyncio.gather(*(writer(index) for index in range(writers)))
        achieved = len(committed) / (time.perf_counter() - begin)
        deadline = time.perf_counter() + 10
        while len(arrived.keys() & committed.keys()) < len(committed):
            assert time.perf_counter() < deadline, "events missing at the subscriber"
            await asyncio.sleep(0.05)
        delays = sorted((arrived[post] - at) * 1000 for post, at in committed.items())
        result |= {
            "writes": len(committed),
            "writes_per_second": round(achieved),
            "delay_ms_p50": round(statistics.median(delays), 1),
            "delay_ms_p99": round(delays[int(len(delays) * 0.99) - 1], 1),
            "delay_ms_max": round(delays[-1], 1),
        }
        return result
    finally:
        relay.terminate()
        relay.wait(timeout=30)
        await nc.close()
        await db.close()


def main() -> int:
    require = os.environ.get("REQUIRE_NATS")
    os.environ["REQUIRE_NATS"] = "1"
    try:
        require_nats()
    except BaseException as error:  # pytest's Failed outside pytest
        print(error, file=sys.stderr)
        return 2
    finally:
        if require is None:
            os.environ.pop("REQUIRE_NATS")
    with tempfile.TemporaryDirectory(prefix="posts-relay-bench-") as name:
        folder = Path(name)
        postgres = EmbeddedPostgres(folder / "postgres")
        server = NatsServer(folder / "nats", free_port())
        try:
            url = postgres.start()
            migrations.apply(url)
            server.start()
            result = asyncio.run(bench(url, server.url, folder))
        finally:
            server.stop()
            postgres.stop()
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
