"""`make bench-feed`: what the change feed costs the writes and how fast it delivers, in one
run (issue 18, item 7).

On one seeded embedded PostgreSQL of the bench's own (BENCH_DATA_DIR, default
`.data/bench-feed`), the service in the default production configuration of `make bench`
(`bench.server_environment`: a token required, request logs on, metrics on, one worker):
1. **Capture cost**: wrk's create_post and patch_post against the same service and data with
   the capture on and off, interleaved rounds (on, off, on, off …). Off is the feed's AFTER
   triggers disabled (`sql/feed_capture_off.sql`, on this database only; the BEFORE triggers
   that move `version` and `updated_at` keep running), re-enabled after every off round and
   whatever happens. Target: req/s with capture at least 0.85x without.
2. **Backlog**: one follower reads the first FEED_BENCH_BACKLOG events of the feed (the
   seed's: one per seeded row) with `limit=1000`, page after page over one keep-alive
   connection, decoding each page (the events' `data` left undecoded: the follower's own
   work is not the service's). Target: at least 20,000 events/s directly.
3. **Delivery delay**: one follower long-polls (`wait=30`, `limit=1000`) from the feed's
   end while writes (creates and patches of posts, half each) fall due at
   FEED_BENCH_WRITE_RATE (500) a second, open loop, on BENCH_CONNECTIONS connections. A
   write's delay runs from when its answer was read to when the follower read the page
   holding its event (the same clock, one process); an event read before its write's answer
   counts 0. Every answered write's event must arrive (within DRAIN_SECONDS after the last
   write), else the round fails. Target: p99 at most 100 ms directly; reported through
   PgBouncer too (a PgBouncer 1.18 of the bench's own in transaction mode, as
   `make bench-pooler` runs it, and the service with `DB_POOLER=transaction`).
Backlog and delay rounds are interleaved between the direct and the pooled service.

Every figure is the median of the rounds. One table gives the measures and the targets,
PASS or FAIL; the exit code is 1 when a target is missed, a request failed or an event was
never delivered (BENCH_GATE=0: report only).

Environment: BENCH_SECONDS (10) per round, BENCH_ROUNDS (3, at least 2), BENCH_CONNECTIONS
(32), BENCH_THREADS (2), SEED_SCALE (1), BENCH_SEED (1; 0 re-uses the data in
BENCH_DATA_DIR), BENCH_DATA_DIR (.data/bench-feed), BENCH_GATE (1), FEED_BENCH_WRITE_RATE
(500), FEED_BENCH_BACKLOG (200000 events, at most what the seed wrote), FEED_BENCH_POOLED
(1; 0 skips the PgBouncer rounds), BENCH_SERVICE_PORT and BENCH_POOLED_PORT (default: free
ports, so that it never collides with a `make bench` running elsewhere on the machine).
"""

from __future__ import annotations

import asyncio
import functools
import math
import os
import random
import shutil
import statistics
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import NamedTuple
from urllib.parse import quote

import asyncpg
import msgspec

from loadtests import bench, seed
from loadtests.bench import BenchError, RatioColumn, Round, Server, Summary
from loadtests.openloop import percentile
from service.base.settings import SettingsError
from tests.server import free_port

CAPTURE_SCENARIOS = ("create_post", "patch_post")
CAPTURE_LABELS = {"on": "capture on", "off": "capture off"}
FEED_TARGETS = ("service", "pooled")
FEED_LABELS = {"service": "direct", "pooled": "via PgBouncer"}

# The targets of issue 18, item 7.
MIN_CAPTURE_RATIO = 0.85  # create_post and patch_post req/s with capture over without
MIN_BACKLOG_EVENTS_PER_SECOND = 20_000.0  # one follower, limit=1000, directly
MAX_DELAY_P99_MS = 100.0  # commit to delivery at about 500 writes/s, directly

BACKLOG_LIMIT = 1000
FOLLOW_WAIT_SECONDS = 30
FOLLOW_LIMIT = 1000
DRAIN_SECONDS = 10.0  # after the last write, how long its event may take to arrive
FOLLOWER_START_SECONDS = 0.5  # the follower's first long poll is waiting before writes start
HTTP_TIMEOUT_SECONDS = 60.0  # above the long poll's 30 s
BODY_TEXT = "Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor "


@dataclass(frozen=True)
class FeedConfig:
    seconds: int
    rounds: int
    connections: int
    threads: int
    scale: float
    reseed: bool
    data_dir: Path
    gate: bool
    write_rate: float
    backlog: int
    targets: tuple[str, ...]
    """`service`, and `pooled` unless FEED_BENCH_POOLED=0."""
    ports: dict[str, int]

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> FeedConfig:
        number = functools.partial(bench.whole_number, environ)
        raw_rate = environ.get("FEED_BENCH_WRITE_RATE") or "500"
        try:
            write_rate = float(raw_rate)
        except ValueError:
            write_rate = math.nan
        if not (write_rate > 0 and math.isfinite(write_rate)):
            raise SettingsError(f"FEED_BENCH_WRITE_RATE={raw_rate!r}: must be a number > 0")
        pooled = (environ.get("FEED_BENCH_POOLED") or "1") != "0"
        return cls(
            seconds=number("BENCH_SECONDS", 10, 1),
            rounds=number("BENCH_ROUNDS", 3, 2),
            connections=number("BENCH_CONNECTIONS", 32, 1),
            threads=number("BENCH_THREADS", 2, 1),
            scale=seed.scale_from_env(environ),
            reseed=(environ.get("BENCH_SEED") or "1") != "0",
            data_dir=Path(environ.get("BENCH_DATA_DIR") or ".data/bench-feed"),
            gate=(environ.get("BENCH_GATE") or "1") != "0",
            write_rate=write_rate,
            backlog=number("FEED_BENCH_BACKLOG", 200_000, 1),
            targets=FEED_TARGETS if pooled else ("service",),
            ports={
                "service": number("BENCH_SERVICE_PORT", free_port(), 1),
                "pooled": number("BENCH_POOLED_PORT", free_port(), 1),
            },
        )

    def bench_config(self) -> bench.Config:
        """The same knobs as `make bench`'s configuration, for its helpers."""
        return bench.Config(
            seconds=self.seconds,
            rounds=self.rounds,
            connections=self.connections,
            threads=self.threads,
            scenarios=CAPTURE_SCENARIOS,
            targets=self.targets,
            open_rate=0.0,
            gate=False,
            scale=self.scale,
            reseed=self.reseed,
            data_dir=self.data_dir,
            ports=self.ports,
        )


# The capture switch ------------------------------------------------------------------


async def _set_capture(database_url: str, on: bool) -> None:
    connection = await asyncpg.connect(database_url)
    try:
        await connection.execute(seed.SQL["feed_capture_on" if on else "feed_capture_off"])
    finally:
        await connection.close()


def set_capture(database_url: str, on: bool) -> None:
    """Turn the feed's capture on or off on `database_url` (the bench's database only)."""
    asyncio.run(_set_capture(database_url, on))


@contextmanager
def capture_off(database_url: str) -> Iterator[None]:
    """No events written while inside; the capture back on when leaving, whatever happens."""
    set_capture(database_url, False)
    try:
        yield
    finally:
        set_capture(database_url, True)


# A small HTTP/1.1 client over one keep-alive connection -------------------------------


class Answer(NamedTuple):
    status: int
    headers: dict[str, str]
    body: bytes


class Connection:
    """One keep-alive connection to the service on this machine, sending the bench's token.
    Our own rather than an HTTP library: it adds almost no CPU to a machine whose cores the
    service and PostgreSQL need (the service always sends Content-Length)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self._streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def request(self, method: str, path: str, body: bytes | None = None) -> Answer:
        if self._streams is None:
            self._streams = await asyncio.open_connection(bench.ADDRESS, self.port)
        reader, writer = self._streams
        head = (
            f"{method} {path} HTTP/1.1\r\nHost: {bench.ADDRESS}:{self.port}\r\n"
            f"Authorization: Bearer {bench.BENCH_TOKEN}\r\n"
        )
        if body is not None:
            head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        writer.write(head.encode() + b"\r\n" + (body or b""))
        try:
            async with asyncio.timeout(HTTP_TIMEOUT_SECONDS):
                raw = await reader.readuntil(b"\r\n\r\n")
                lines = raw.decode("latin-1").split("\r\n")
                headers = {}
                for line in lines[1:]:
                    name, _, value = line.partition(":")
                    if name:
                        headers[name.strip().lower()] = value.strip()
                content = await reader.readexactly(int(headers["content-length"]))
        except BaseException:
            self.close()  # a half-read answer leaves the connection unusable
            raise
        if headers.get("connection", "").lower() == "close":
            self.close()
        return Answer(int(lines[0][9:12]), headers, content)

    def close(self) -> None:
        if self._streams is not None:
            self._streams[1].close()
            self._streams = None


class FeedEvent(msgspec.Struct):
    """What the bench reads of an event: `data` is skipped (parsed, not made into objects)."""

    id: str
    type: str
    resource_id: int
    version: int


class FeedPageBody(msgspec.Struct):
    items: list[FeedEvent]
    next_cursor: str


_PAGE = msgspec.json.Decoder(FeedPageBody)


def _page(answer: Answer, what: str) -> FeedPageBody:
    if answer.status != 200:
        raise BenchError(f"{what}: status {answer.status}: {answer.body[:200]!r}")
    return _PAGE.decode(answer.body)


def _events_path(after: str | None, limit: int, wait: int = 0) -> str:
    query = f"limit={limit}" + (f"&after={quote(after, safe='')}" if after else "")
    return f"/events?{query}" + (f"&wait={wait}" if wait else "")


# The backlog ---------------------------------------------------------------------------


async def _read_backlog(port: int, events: int) -> tuple[int, float]:
    connection = Connection(port)
    try:
        read, after = 0, None
        started = time.perf_counter()
        while read < events:
            page = _page(
                await connection.request("GET", _events_path(after, BACKLOG_LIMIT)), "backlog"
            )
            if not page.items:
                raise BenchError(f"the feed holds {read:,} events, fewer than {events:,}")
            read += len(page.items)
            after = page.next_cursor
        return read, time.perf_counter() - started
    finally:
        connection.close()


def read_backlog(server: Server, events: int) -> dict[str, float]:
    """One follower reads the feed from its start, `limit=1000`, until it has read at least
    `events` events: how many, and in how many seconds."""
    read, seconds = asyncio.run(_read_backlog(server.port, events))
    return {"events": read, "seconds": seconds, "events_per_second": read / seconds}


# The delivery delay --------------------------------------------------------------------

WriteKey = tuple[str, int, int]
"""(resource, id, version): what ties a write's answer to its event."""


@dataclass
class DelayTally:
    answered: dict[WriteKey, float] = field(default_factory=dict)
    delivered: dict[WriteKey, float] = field(default_factory=dict)
    failed_writes: int = 0
    follower_errors: int = 0
    page_read: asyncio.Event = field(default_factory=asyncio.Event)
    """Set whenever the follower has read a page."""

    def delays_ms(self) -> list[float]:
        """Each answered write's delay, sorted; an event read before its answer counts 0."""
        return sorted(
            max(0.0, self.delivered[key] - answered) * 1000
            for key, answered in self.answered.items()
            if key in self.delivered
        )

    def missing(self) -> int:
        return sum(key not in self.delivered for key in self.answered)


def _write_request(max_user_id: int, max_post_id: int) -> tuple[str, str, bytes]:
    """A create or a patch of a post, half each, with bodies like the other loads'."""
    if random.random() < 0.5:
        offset = random.randrange(len(BODY_TEXT))
        body = {
            "author_id": random.randint(1, max_user_id),
            "title": f"Feed bench {random.randrange(10**9)}",
            "body": (BODY_TEXT * 8)[offset : offset + 480],
            "published": random.random() < 0.5,
        }
        return "POST", "/posts", msgspec.json.encode(body)
    changes = {"title": f"Patched {random.randrange(10**9)}", "published": random.random() < 0.5}
    return "PATCH", f"/posts/{random.randint(1, max_post_id)}", msgspec.json.encode(changes)


def _version(etag: str) -> int:
    return int(etag.removeprefix("W/").strip('"'))


async def _writer(
    port: int, queue: asyncio.Queue[tuple[str, str, bytes] | None], tally: DelayTally
) -> None:
    connection = Connection(port)
    try:
        while (item := await queue.get()) is not None:
            method, path, body = item
            try:
                answer = await connection.request(method, path, body)
            except (OSError, TimeoutError, asyncio.IncompleteReadError):
                tally.failed_writes += 1
                continue
            answered = time.perf_counter()
            if answer.status not in (200, 201) or "etag" not in answer.headers:
                tally.failed_writes += 1
                continue
            post_id = int(msgspec.json.decode(answer.body)["id"])
            tally.answered[("post", post_id, _version(answer.headers["etag"]))] = answered
    finally:
        connection.close()


async def _follower(port: int, after: str, tally: DelayTally) -> None:
    connection = Connection(port)
    try:
        while True:
            path = _events_path(after, FOLLOW_LIMIT, FOLLOW_WAIT_SECONDS)
            try:
                page = _page(await connection.request("GET", path), "the follower")
            except (OSError, TimeoutError, asyncio.IncompleteReadError, BenchError):
                tally.follower_errors += 1
                await asyncio.sleep(0.1)
                continue
            read = time.perf_counter()
            for event in page.items:
                resource = event.type.partition(".")[0]
                tally.delivered.setdefault((resource, event.resource_id, event.version), read)
            tally.page_read.set()
            after = page.next_cursor
    finally:
        connection.close()


async def _measure_delay(
    port: int, rate: float, seconds: float, connections: int, bounds: tuple[int, int], drain: float
) -> tuple[DelayTally, float]:
    tally = DelayTally()
    start = Connection(port)
    try:
        listed = await start.request("GET", "/posts?limit=1")
    finally:
        start.close()
    if listed.status != 200 or "events-cursor" not in listed.headers:
        raise BenchError(f"GET /posts gave no Events-Cursor (status {listed.status})")
    follower = asyncio.create_task(_follower(port, listed.headers["events-cursor"], tally))
    await asyncio.sleep(FOLLOWER_START_SECONDS)
    queue: asyncio.Queue[tuple[str, str, bytes] | None] = asyncio.Queue()
    writers = [asyncio.create_task(_writer(port, queue, tally)) for _ in range(connections)]
    started = time.perf_counter()
    due_count = math.floor(rate * seconds)
    for number in range(due_count):  # open loop: each write falls due at its time
        if (wait := started + number / rate - time.perf_counter()) > 0:
            await asyncio.sleep(wait)
        queue.put_nowait(_write_request(*bounds))
    for _ in writers:
        queue.put_nowait(None)
    await asyncio.gather(*writers)
    writing = time.perf_counter() - started
    deadline = time.perf_counter() + drain
    while tally.missing() and (left := deadline - time.perf_counter()) > 0:
        tally.page_read.clear()
        try:
            await asyncio.wait_for(tally.page_read.wait(), left)
        except TimeoutError:
            break
    follower.cancel()
    await asyncio.gather(follower, return_exceptions=True)
    return tally, writing


def measure_delay(
    server: Server,
    rate: float,
    seconds: float,
    connections: int,
    bounds: tuple[int, int],
    drain: float = DRAIN_SECONDS,
) -> dict[str, float]:
    """Writes at `rate` a second for `seconds` (ids within `bounds`: max user, max post id)
    while one follower long-polls from the feed's end: the delays' percentiles (ms), the
    writes answered and failed, and the answered writes whose event never arrived."""
    tally, writing = asyncio.run(
        _measure_delay(server.port, rate, seconds, connections, bounds, drain)
    )
    delays = tally.delays_ms()
    return {
        "writes": len(tally.answered),
        "writes_per_second": len(tally.answered) / writing,
        "failed_writes": tally.failed_writes,
        "follower_errors": tally.follower_errors,
        "missing": tally.missing(),
        "p50_ms": percentile(delays, 0.50),
        "p95_ms": percentile(delays, 0.95),
        "p99_ms": percentile(delays, 0.99),
        "max_ms": delays[-1] if delays else math.nan,
    }


# The verdict ---------------------------------------------------------------------------


@dataclass(frozen=True)
class FeedRound:
    """One backlog read or one delay round on one target: `measure_delay`'s or
    `read_backlog`'s figures."""

    kind: str  # "backlog" or "delay"
    target: str
    number: int
    result: dict[str, float]


def medians(rounds: list[FeedRound], kind: str, target: str) -> dict[str, float] | None:
    """The median of each figure over the rounds of one kind and target (counts of failures
    summed instead); None when none ran."""
    chosen = [r.result for r in rounds if r.kind == kind and r.target == target]
    if not chosen:
        return None
    summed = {"failed_writes", "follower_errors", "missing"}
    return {
        key: sum(c[key] for c in chosen)
        if key in summed
        else statistics.median(c[key] for c in chosen)
        for key in chosen[0]
    }


@dataclass(frozen=True)
class FeedCheck:
    """One line of the table: a measure, its figures per target, and its verdict (None:
    reported, no target)."""

    measure: str
    figures: dict[str, str]
    goal: str
    passed: bool | None


def feed_checks(
    capture: Mapping[tuple[str, str], Summary],
    rounds: list[FeedRound],
    write_rate: float,
) -> list[FeedCheck]:
    checks = []
    for scenario in CAPTURE_SCENARIOS:
        on, off = capture.get((scenario, "on")), capture.get((scenario, "off"))
        if on is None or off is None:
            continue
        checks.append(
            FeedCheck(
                f"capture cost: {scenario} req/s on / off",
                {"service": f"{bench.ratio(on.rps, off.rps)} ({on.rps:,.0f} / {off.rps:,.0f})"},
                f">= {MIN_CAPTURE_RATIO}x",
                on.rps >= MIN_CAPTURE_RATIO * off.rps and not on.errors and not off.errors,
            )
        )
    backlog = {t: medians(rounds, "backlog", t) for t in FEED_TARGETS}
    if (direct := backlog["service"]) is not None:
        checks.append(
            FeedCheck(
                f"backlog: one follower, limit={BACKLOG_LIMIT}, events/s",
                {t: f"{b['events_per_second']:,.0f}" for t, b in backlog.items() if b},
                f">= {MIN_BACKLOG_EVENTS_PER_SECOND:,.0f} (direct)",
                direct["events_per_second"] >= MIN_BACKLOG_EVENTS_PER_SECOND,
            )
        )
    delay = {t: medians(rounds, "delay", t) for t in FEED_TARGETS}
    if (direct := delay["service"]) is not None:
        checks.append(
            FeedCheck(
                f"delivery delay, wait={FOLLOW_WAIT_SECONDS}, {write_rate:g} writes/s asked: "
                "p50 / p95 / p99 ms",
                {
                    t: f"{d['p50_ms']:.1f} / {d['p95_ms']:.1f} / {d['p99_ms']:.1f}"
                    for t, d in delay.items()
                    if d
                },
                f"p99 <= {MAX_DELAY_P99_MS:g} (direct)",
                direct["p99_ms"] <= MAX_DELAY_P99_MS,
            )
        )
        checks.append(
            FeedCheck(
                "  writes/s answered; failed; events never delivered",
                {
                    t: f"{d['writes_per_second']:,.0f}; {d['failed_writes']:.0f}; "
                    f"{d['missing']:.0f}"
                    for t, d in delay.items()
                    if d
                },
                "0 failed, 0 missing",
                all(not d["failed_writes"] and not d["missing"] for d in delay.values() if d),
            )
        )
    return checks


def checks_table(config: FeedConfig, checks: list[FeedCheck]) -> str:
    width = max([len(c.measure) for c in checks] + [40])
    columns = {t: max([len(c.figures.get(t, "-")) for c in checks] + [14]) for t in config.targets}
    goal_width = max([len(c.goal) for c in checks] + [10])
    header = (
        f"{'measure':<{width}} | "
        + " | ".join(f"{FEED_LABELS[t]:<{w}}" for t, w in columns.items())
        + f" | {'target':<{goal_width}} | verdict"
    )
    lines = [header, "-" * len(header)]
    for check in checks:
        verdict = "-" if check.passed is None else "PASS" if check.passed else "FAIL"
        lines.append(
            f"{check.measure:<{width}} | "
            + " | ".join(f"{check.figures.get(t, '-'):<{w}}" for t, w in columns.items())
            + f" | {check.goal:<{goal_width}} | {verdict}"
        )
    decided = [c for c in checks if c.passed is not None]
    lines.append(f"{sum(bool(c.passed) for c in decided)} of {len(decided)} targets met")
    return "\n".join(lines)


def preamble(config: FeedConfig, backlog: int) -> str:
    return (
        f"change feed bench (issue 18, item 7): SEED_SCALE={config.scale:g}, median of "
        f"{config.rounds} interleaved rounds of {config.seconds} s; the service in its default "
        f"production configuration (one worker); ONE machine of {os.cpu_count()} cores: "
        "PostgreSQL, the service, PgBouncer, wrk and the bench's own follower and writers share "
        f"it. Capture: wrk, {config.connections} connections, capture off = the feed's AFTER "
        f"triggers disabled. Backlog: the first {backlog:,} events from the feed's start. "
        f"Delay: writes (post creates and patches, half each) at {config.write_rate:g}/s, open "
        f"loop on {config.connections} connections, one follower long-polling from the feed's "
        "end; from the write's answer to the follower reading its event"
    )


# The run -------------------------------------------------------------------------------


def feed_bench(config: FeedConfig) -> int:
    if shutil.which("wrk") is None:
        raise BenchError("wrk is not installed: `make bench-feed` installs it")
    started = datetime.now(UTC)
    base = config.bench_config()
    capture_rounds: list[Round] = []
    rounds: list[FeedRound] = []
    with ExitStack() as stack:
        database_url = stack.enter_context(bench.seeded_database(base))
        set_capture(database_url, True)  # whatever an interrupted run left
        # The seeded events are kept (bench.server_environment's retention).
        servers = bench.start_servers(stack, base, database_url, config.targets)
        service = servers["service"]
        bounds = asyncio.run(bench.data_set_bounds(database_url))
        wrk_env = bench.DataSet(*bounds, deep_cursors=[]).wrk_environment()
        backlog = min(config.backlog, asyncio.run(events_in_feed(database_url)))
        print(
            f"data set: users 1..{bounds[0]:,}, posts 1..{bounds[1]:,}; backlog read: "
            f"{backlog:,} events; servers: {', '.join(servers)}",
            flush=True,
        )
        for server in servers.values():
            bench.run_wrk(
                server, "mixed", bench.WARM_UP_SECONDS, config.connections, config.threads, wrk_env
            )
        for scenario in CAPTURE_SCENARIOS:
            for number in range(1, config.rounds + 1):
                for capture in CAPTURE_LABELS:
                    with ExitStack() as switch:
                        if capture == "off":
                            switch.enter_context(capture_off(database_url))
                        result = bench.run_wrk(
                            service,
                            scenario,
                            config.seconds,
                            config.connections,
                            config.threads,
                            wrk_env,
                        )
                    capture_rounds.append(Round(scenario, capture, number, result))
                    bench.print_round(capture_rounds[-1])
        for number in range(1, config.rounds + 1):
            for target, server in servers.items():
                rounds.append(FeedRound("backlog", target, number, read_backlog(server, backlog)))
                print_feed_round(rounds[-1])
        for number in range(1, config.rounds + 1):
            for target, server in servers.items():
                result = measure_delay(
                    server, config.write_rate, config.seconds, config.connections, bounds
                )
                rounds.append(FeedRound("delay", target, number, result))
                print_feed_round(rounds[-1])

    capture_summaries = bench.summarise(capture_rounds, "closed")
    checks = feed_checks(capture_summaries, rounds, config.write_rate)
    capture_table = bench.comparison_table(
        ["capture cost, wrk (latencies in ms):"],
        CAPTURE_SCENARIOS,
        CAPTURE_LABELS,
        capture_summaries,
        [
            RatioColumn("on/off req/s", "on", "off", "rps"),
            RatioColumn("on/off p99", "on", "off", "p99"),
        ],
    )
    text = "\n".join(
        [preamble(config, backlog), "", checks_table(config, checks), "", capture_table]
    )
    raw = {
        "config": {**asdict(config), "data_dir": str(config.data_dir)},
        "data_set": {"max_user_id": bounds[0], "max_post_id": bounds[1], "backlog": backlog},
        "checks": [asdict(check) for check in checks],
        "feed_rounds": [asdict(r) for r in rounds],
    }
    failed = bench.report_results("bench-feed", started, raw, capture_rounds, text)
    missed = sum(check.passed is False for check in checks)
    if config.gate and (missed or failed):
        print(f"{missed} targets missed, {failed} wrk requests failed", file=sys.stderr)
        return 1
    return 0


async def events_in_feed(database_url: str) -> int:
    """How many events the feed holds."""
    connection = await asyncpg.connect(database_url)
    try:
        count: int = await connection.fetchval("SELECT count(*) FROM events")
    finally:
        await connection.close()
    return count


def print_feed_round(r: FeedRound) -> None:
    if r.kind == "backlog":
        figures = f"{r.result['events']:,.0f} events in {r.result['seconds']:.2f} s: " + (
            f"{r.result['events_per_second']:,.0f} events/s"
        )
    else:
        figures = (
            f"{r.result['writes_per_second']:,.0f} writes/s, delay p50 {r.result['p50_ms']:.1f} "
            f"p99 {r.result['p99_ms']:.1f} max {r.result['max_ms']:.1f} ms, failed "
            f"{r.result['failed_writes']:.0f}, missing {r.result['missing']:.0f}"
        )
    print(f"  {r.kind:<8} round {r.number} {r.target:<8} {figures}", flush=True)


def main() -> int:
    return bench.run_main(FeedConfig.from_env, feed_bench)


if __name__ == "__main__":
    sys.exit(main())
