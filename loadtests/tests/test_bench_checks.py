"""The verdict of `make bench`, its knobs, and the checkpoint before each round."""

from __future__ import annotations

import asyncpg
import pytest

from loadtests import bench
from loadtests.bench import Check, Config, Round, Summary, check_targets, summarise
from service.base.settings import SettingsError


def summary(rps: float, p95: float, p99: float) -> Summary:
    return Summary(rps=rps, p50=1.0, p95=p95, p99=p99, errors=0)


def verdicts(checks: list[Check]) -> dict[tuple[str, str], bool]:
    return {(check.scenario, check.measure): check.passed for check in checks}


def test_each_target_of_issue_9_is_checked_at_its_bound() -> None:
    summaries = {
        ("get_post", "service"): summary(850, 4.0, 10.0),  # exactly 0.85x and 2x: met
        ("get_post", "floor"): summary(1000, 3.0, 5.0),
        ("mixed", "service"): summary(849, 8.1, 10.1),  # just under, just over
        ("mixed", "floor"): summary(1000, 3.0, 5.0),
    }
    assert verdicts(check_targets(summaries, ("get_post", "mixed"))) == {
        ("get_post", "req/s"): True,
        ("get_post", "p99 ms"): True,
        ("mixed", "req/s"): False,
        ("mixed", "p99 ms"): False,
        ("mixed", "p95 ms"): False,
    }


def test_issue_9s_targets_are_checked_only_in_a_run_with_the_floor() -> None:
    # A run of the service beside the bare baseline or PgBouncer alone is not the run of
    # issue 9: its mixed p95 would fail a gate that asked only about the pooler.
    summaries = {("mixed", "service"): summary(900, 9.0, 9.0), ("mixed", "bare"): summary(1, 1, 1)}
    assert verdicts(check_targets(summaries, ("mixed",))) == {}


def test_the_pooler_target_of_issue_8_is_checked_at_its_bound() -> None:
    summaries = {
        ("get_post", "service"): summary(1000, 4.0, 10.0),
        ("get_post", "pooled"): summary(800, 5.0, 12.0),  # exactly 0.8x: met
        ("mixed", "service"): summary(1000, 7.0, 9.0),
        ("mixed", "pooled"): summary(799, 9.0, 12.0),  # just under
    }
    assert verdicts(check_targets(summaries, ("get_post", "mixed"))) == {
        ("get_post", "pooler"): True,
        ("mixed", "pooler"): False,
    }


def test_medians_are_per_load_scenario_and_server() -> None:
    def result(requests: int, p99_us: int) -> dict[str, float]:
        errors = ("connect_errors", "read_errors", "write_errors", "status_errors", "timeouts")
        return (
            {"requests": requests, "duration_us": 1e6, "p50_us": 1, "p95_us": 1}
            | {"p99_us": p99_us}
            | dict.fromkeys(errors, 0)
        )

    rounds = [
        Round("mixed", "service", 1, result(100, 9000)),
        Round("mixed", "service", 2, result(300, 1000)),
        Round("mixed", "service", 3, result(200, 5000)),
        Round("mixed", "service", 1, result(50, 2000), load="open"),
    ]
    closed = summarise(rounds, "closed")[("mixed", "service")]
    assert (closed.rps, closed.p99) == (200, 5.0)
    assert summarise(rounds, "open")[("mixed", "service")].rps == 50


def test_knobs() -> None:
    config = Config.from_env({"BENCH_TARGETS": "bare,service", "BENCH_OPEN_RATE": "500"})
    assert config.targets == ("service", "bare")  # always in the same order
    assert config.open_rate == 500
    assert not config.gate
    assert Config.from_env({}).targets == bench.DEFAULT_TARGETS
    assert Config.from_env({"BENCH_TARGETS": "pooled,service"}).targets == ("service", "pooled")
    assert Config.from_env({"BENCH_TARGETS": "service,pooled", "BENCH_GATE": "1"}).gate
    assert Config.from_env({}).open_rate is None
    assert Config.from_env({"BENCH_GATE": "1"}).gate
    for bad in (
        {"BENCH_TARGETS": "service,nginx"},
        {"BENCH_OPEN_RATE": "-1"},
        {"BENCH_OPEN_RATE": "fast"},
        {"BENCH_GATE": "1", "BENCH_TARGETS": "service,bare"},  # nothing to gate against
    ):
        with pytest.raises(SettingsError):
            Config.from_env(bad)


def feed_of(events: int) -> tuple[bench.FeedPage, list[tuple[str | None, int]]]:
    """A feed of `events` events whose cursors are positions, and the pages asked of it."""
    asked: list[tuple[str | None, int]] = []

    def page(after: str | None, limit: int) -> tuple[int, str]:
        asked.append((after, limit))
        start = 0 if after is None else int(after)
        count = max(0, min(limit, events - start))
        return count, str(start + count)

    return page, asked


def test_the_feed_is_walked_once_and_its_cursors_spread_over_it() -> None:
    page, asked = feed_of(25_050)
    cursors = bench.walk_feed(page, walk_limit=1000, kept=5)
    # 25 full pages; after the 25th cursor only 50 events: it is left out.
    assert cursors == ["1000", "7000", "13000", "18000", "24000"]
    walk = [after for after, limit in asked if limit == 1000]
    assert walk == [None, *(str(n * 1000) for n in range(1, 26))]
    # Each cursor kept is asked once more, for the bench's page: a full one.
    assert [after for after, limit in asked if limit == bench.EVENTS_PAGE] == cursors


def test_a_feed_without_a_backlog_gives_no_cursor_and_a_short_walk_all_it_has() -> None:
    assert bench.walk_feed(feed_of(999)[0], walk_limit=1000) == []
    assert bench.walk_feed(feed_of(1099)[0], walk_limit=1000) == []  # 99 after the cursor
    assert bench.walk_feed(feed_of(1100)[0], walk_limit=1000) == ["1000"]
    assert bench.walk_feed(feed_of(3500)[0], walk_limit=1000, kept=20) == ["1000", "2000", "3000"]


def test_a_walk_cut_short_keeps_only_cursors_it_saw_followed() -> None:
    page, asked = feed_of(1_000_000)
    assert bench.walk_feed(page, walk_limit=1000, kept=3, pages=10) == ["1000", "5000", "9000"]
    assert len([after for after, limit in asked if limit == 1000]) == 10


def test_a_cursor_that_no_longer_gives_a_full_page_stops_the_bench() -> None:
    page, _ = feed_of(5000)

    def pruned_meanwhile(after: str | None, limit: int) -> tuple[int, str]:
        count, cursor = page(after, limit)
        return (count - 1 if limit == bench.EVENTS_PAGE else count), cursor

    with pytest.raises(bench.BenchError, match="gives 99 events"):
        bench.walk_feed(pruned_meanwhile, walk_limit=1000)


def test_every_scenario_has_its_wrk_script() -> None:
    assert "events" in bench.SCENARIOS
    for scenario in bench.SCENARIOS:
        assert (bench.WRK_DIR / f"{scenario}.lua").is_file(), scenario


async def test_the_checkpoint_before_each_round_writes_one(database_url: str) -> None:
    async def last_checkpoint() -> str:
        connection = await asyncpg.connect(database_url)
        try:
            return str(
                await connection.fetchval("SELECT checkpoint_lsn FROM pg_control_checkpoint()")
            )
        finally:
            await connection.close()

    before = await last_checkpoint()
    await bench.checkpoint(database_url)
    assert await last_checkpoint() != before
