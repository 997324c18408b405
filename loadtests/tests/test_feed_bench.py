"""`make bench-feed`: its verdict at the targets' bounds, its knobs, and its instruments
against a real service on the suite's PostgreSQL (the capture switch, the backlog reader,
the delivery delay, which counts an event that never arrives), and the seed's events."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

import asyncpg
import httpx
import pytest

from loadtests import bench, feed_bench, seed
from loadtests.bench import BenchError, Server, Summary
from loadtests.feed_bench import FeedCheck, FeedConfig, FeedRound, feed_checks
from loadtests.tests.conftest import FEED_DATA_SET
from service.base.settings import SettingsError
from service.database import migrations
from service.feed import reader

AUTH = {"Authorization": f"Bearer {bench.BENCH_TOKEN}"}
BOUNDS = (FEED_DATA_SET.users, FEED_DATA_SET.posts)


def summary(rps: float) -> Summary:
    return Summary(rps=rps, p50=1.0, p95=2.0, p99=3.0, errors=0)


def delay(p99_ms: float, missing: int = 0, failed: int = 0) -> dict[str, float]:
    return {
        "writes": 5000,
        "writes_per_second": 500,
        "failed_writes": failed,
        "follower_errors": 0,
        "missing": missing,
        "p50_ms": 10.0,
        "p95_ms": 20.0,
        "p99_ms": p99_ms,
        "max_ms": 200.0,
    }


def backlog(events_per_second: float) -> dict[str, float]:
    return {
        "events": 1000,
        "seconds": 1000 / events_per_second,
        "events_per_second": events_per_second,
    }


def verdicts(checks: list[FeedCheck]) -> list[bool | None]:
    return [check.passed for check in checks]


def test_each_target_is_checked_at_its_bound() -> None:
    capture = {
        ("create_post", "on"): summary(850),  # exactly 0.85x: met
        ("create_post", "off"): summary(1000),
        ("patch_post", "on"): summary(849),  # just under
        ("patch_post", "off"): summary(1000),
    }
    met = [FeedRound("backlog", "service", 1, backlog(20_000))]
    met.append(FeedRound("delay", "service", 1, delay(100.0)))
    assert verdicts(feed_checks(capture, met, 500)) == [True, False, True, True, True]
    missed = [FeedRound("backlog", "service", 1, backlog(19_999))]
    missed.append(FeedRound("delay", "service", 1, delay(100.1)))
    assert verdicts(feed_checks(capture, missed, 500)) == [True, False, False, False, True]


def test_a_failed_write_or_an_event_never_delivered_fails_even_through_the_pooler() -> None:
    rounds = [
        FeedRound("delay", "service", 1, delay(10.0)),
        FeedRound("delay", "pooled", 1, delay(10.0, missing=1)),
    ]
    assert verdicts(feed_checks({}, rounds, 500)) == [True, False]
    rounds = [FeedRound("delay", "service", 1, delay(10.0, failed=1))]
    assert verdicts(feed_checks({}, rounds, 500)) == [True, False]


def test_medians_of_the_rounds_and_sums_of_the_failures() -> None:
    rounds = [
        FeedRound("delay", "service", n, delay(p99, missing=n))
        for n, p99 in ((1, 90.0), (2, 300.0), (3, 50.0))
    ]
    figures = feed_bench.medians(rounds, "delay", "service")
    assert figures is not None
    assert (figures["p99_ms"], figures["missing"]) == (90.0, 6)
    assert feed_bench.medians(rounds, "delay", "pooled") is None


def test_knobs() -> None:
    config = FeedConfig.from_env({})
    assert (config.write_rate, config.backlog, config.gate) == (500, 200_000, True)
    assert config.targets == ("service", "pooled")
    assert config.data_dir == Path(".data/bench-feed")
    config = FeedConfig.from_env({"FEED_BENCH_POOLED": "0", "BENCH_GATE": "0"})
    assert (config.targets, config.gate) == (("service",), False)
    for bad in ("0", "-5", "fast", "inf"):
        with pytest.raises(SettingsError, match="FEED_BENCH_WRITE_RATE"):
            FeedConfig.from_env({"FEED_BENCH_WRITE_RATE": bad})


def test_the_backlog_is_read_page_by_page_from_the_start(feed_service: Server) -> None:
    # Only the seed's events so far: 2,100, read in pages of 1,000.
    assert feed_bench.read_backlog(feed_service, 2000)["events"] == 2000
    assert feed_bench.read_backlog(feed_service, 2001)["events"] == 2100
    with pytest.raises(BenchError, match="fewer than"):
        feed_bench.read_backlog(feed_service, 2101)


class RoundFailed(Exception):
    pass


def test_capture_off_writes_no_event_and_is_on_again_after(
    feed_service: Server, feed_database: str
) -> None:
    def events() -> int:
        return asyncio.run(feed_bench.events_in_feed(feed_database))

    post = {"author_id": 1, "title": "Capture", "body": "x" * 100}
    with httpx.Client(base_url=feed_service.base_url, headers=AUTH) as client:

        def failing_round() -> None:
            with feed_bench.capture_off(feed_database):
                assert client.post("/posts", json=post).status_code == 201
                assert events() == before
                raise RoundFailed  # the capture comes back on whatever happens

        before = events()
        with pytest.raises(RoundFailed):
            failing_round()
        assert client.post("/posts", json=post).status_code == 201
    assert events() == before + 1


def test_every_write_is_matched_to_its_event(feed_service: Server) -> None:
    result = feed_bench.measure_delay(feed_service, 40, 1.5, 4, BOUNDS, drain=5)
    assert result["writes"] == 60
    assert (result["failed_writes"], result["missing"], result["follower_errors"]) == (0, 0, 0)
    # Through the watcher (it polls every 20 ms): more than nothing, far less than the 30 s
    # long poll.
    assert 0 < result["p50_ms"] <= result["p99_ms"] <= result["max_ms"] < 2000


def test_an_event_that_never_arrives_is_counted(feed_service: Server, feed_database: str) -> None:
    with feed_bench.capture_off(feed_database):
        result = feed_bench.measure_delay(feed_service, 20, 1.0, 2, BOUNDS, drain=0.5)
    assert result["writes"] == 20
    assert result["missing"] == 20
    assert verdicts(feed_checks({}, [FeedRound("delay", "service", 1, result)], 20))[-1] is False


async def test_a_seed_replaces_the_feed_and_a_cursor_from_before_is_gone(
    make_database: Callable[[], Awaitable[str]],
) -> None:
    url = await make_database()
    migrations.apply(url)
    tiny = seed.DataSet(users=10, posts=200)
    connection = await asyncpg.connect(url)
    try:
        await seed.seed(connection, tiny)
        first = await reader.read(connection, reader.START, 1000)
        assert len(first.events) == 210
        assert not first.gone(first.next)
        await seed.seed(connection, tiny)
        again = await reader.read(connection, reader.START, 1000)
        assert len(again.events) == 210
        assert [e.type for e in again.events].count("post.created") == 200
        # Event ids are never given twice on one database.
        assert min(int(e.id) for e in again.events) > max(int(e.id) for e in first.events)
        assert (await reader.read(connection, first.next, 10)).gone(first.next)
    finally:
        await connection.close()
