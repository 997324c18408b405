"""`make bench`: what the service costs over the framework and over the database work.

wrk sends the same scenarios to three servers on one seeded embedded PostgreSQL:
- the service (`python -m service serve`), in its default production configuration;
- the Litestar floor (`python -m loadtests.baseline floor`): a minimal idiomatic Litestar
  app with the service's SQL, msgspec structs and pool opener;
- the bare baseline (`python -m loadtests.baseline bare`): a plain ASGI app doing the same
  database work with no framework at all;
- on request (BENCH_TARGETS=service,pooled), the service again behind a PgBouncer 1.18 of
  the bench's own in transaction mode, with `DB_POOLER=transaction`, on the same database:
  pooled / service is what transaction pooling costs (issue 8: at least 0.8x).
The baselines' pool holds 16 connections, all opened at start; the service keeps its own
pool settings. service / floor is what the service's own layers cost (token gate, limits,
request id, metrics, request log, database session, conditional requests); floor /
bare is what Litestar costs.

Rounds are interleaved per scenario (service, floor, bare, service, floor, bare …) so that
a drift of the machine (another process, autovacuum, caches) hits all alike. Each round
starts right after a CHECKPOINT: a round of the default 10 s writes less WAL than sets the
next one off (max_wal_size), so no round gets a checkpoint in its middle. The table shows
the median of the rounds of each. Then the targets of issue 9 are checked on those
medians, and the mixed scenario runs below saturation: at a fixed arrival rate (half the
service's mixed req/s, or BENCH_OPEN_RATE) with an open-loop generator
(`loadtests.openloop`), for the service and the floor. Raw results go to
loadtests/reports/bench-*.json and the tables to bench-*.txt.

Environment: BENCH_SECONDS (10) per round, BENCH_ROUNDS (3, at least 2) per server and
scenario, BENCH_CONNECTIONS (32), BENCH_THREADS (2), BENCH_SCENARIOS (all, comma-
separated), BENCH_TARGETS (service,floor,bare; also pooled), BENCH_OPEN_RATE (requests/s
of the open-loop phase; 0 skips it), BENCH_GATE (1: exit 1 when a target is missed),
SEED_SCALE (1; 10 gives 2,000,000 posts), BENCH_SEED (1; 0 re-uses the data already in
BENCH_DATA_DIR), BENCH_DATA_DIR (.data/bench), BENCH_SERVICE_PORT (8101),
BENCH_BASELINE_PORT (8102, the bare baseline), BENCH_FLOOR_PORT (8103), BENCH_POOLED_PORT
(8105, the service via PgBouncer; PgBouncer itself on a free port). Exit code 0 when every
round ran, whatever the figures, unless BENCH_GATE=1.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import json
import math
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from email.message import Message
from pathlib import Path
from typing import Any, NamedTuple, TextIO, TypeVar
from urllib.parse import urlsplit

import asyncpg

from loadtests import openloop, seed
from service.base.settings import Settings, SettingsError
from service.database import migrations
from service.database.embedded import database
from tests.pgbouncer import PGBOUNCER, running_pgbouncer

ROOT = Path(__file__).resolve().parent.parent
WRK_DIR = Path(__file__).resolve().parent / "wrk"
REPORTS = Path(__file__).resolve().parent / "reports"
ADDRESS = "127.0.0.1"  # the only target: load goes to this machine, never elsewhere
# Signs the cursors of every server, so that the baselines accept the service's cursors.
CURSOR_SECRET = "bench-cursor-secret-not-for-production"
# The service runs as in production: with a token required (the baselines ignore it).
BENCH_TOKEN = "bench-token-not-for-production"

C = TypeVar("C")  # a bench's configuration

SCENARIOS = (
    "get_post",
    "user_posts",
    "list_deep",
    "events",
    "create_post",
    "patch_post",
    "mixed",
)
TARGETS = ("service", "pooled", "floor", "bare")
DEFAULT_TARGETS = ("service", "floor", "bare")
LABELS = {
    "service": "service",
    "pooled": "via PgBouncer",
    "floor": "Litestar floor",
    "bare": "bare ASGI",
}
COMMANDS = {
    "service": ("service", "serve"),
    "pooled": ("service", "serve"),
    "floor": ("loadtests.baseline", "floor"),
    "bare": ("loadtests.baseline", "bare"),
}
# The pool of both baselines: 16 connections, opened at start, no reset query (the
# service's `open_pool`). The service runs with its own defaults, as in production.
BASELINE_POOL_SIZE = 16

# The targets of issue 9, item 3: the service against the Litestar floor, in one run.
MIN_RPS_RATIO = 0.85  # every scenario's req/s at least this times the floor's
MAX_P99_RATIO = 2.0  # every scenario's p99 at most this times the floor's
MAX_MIXED_P95_MS = 8.0
# The target of issue 8, item 4: the service through PgBouncer against the service direct.
MIN_POOLED_RPS_RATIO = 0.8

# Below saturation: the mixed scenario at a fixed rate, for these targets.
OPEN_LOOP_SCENARIO = "mixed"
OPEN_LOOP_TARGETS = ("service", "floor")
OPEN_LOOP_SHARE = 0.5  # of the service's measured mixed req/s, unless BENCH_OPEN_RATE

WARM_UP_SECONDS = 3
READY_TIMEOUT_SECONDS = 60.0
STOP_TIMEOUT_SECONDS = 30.0
HTTP_TIMEOUT_SECONDS = 10.0
# The deep page: walk 250 pages of 200 (50,000 posts, where page 1,000 of 50 would be)
# and keep the cursors of the last pages walked, so requests are spread over a few pages.
DEEP_WALK_PAGES = 250
DEEP_CURSORS_KEPT = 20
DEEP_WALK_TIMEOUT_SECONDS = 120.0
# The feed's backlog page (issue 22): GET /events?limit=100&after=… Feed cursors are signed
# and bound to the database, so the driver walks the feed once from the oldest event kept,
# in pages of 1,000 (at most 250 of them: 250,000 events, the whole backlog at SEED_SCALE=1),
# and keeps cursors spread evenly over what it walked, each followed by a full page.
EVENTS_PAGE = 100
EVENTS_WALK_LIMIT = 1000
EVENTS_WALK_PAGES = 250
EVENTS_CURSORS_KEPT = 20


class BenchError(Exception):
    """A round could not run: the message says why; the bench exits 1."""


def whole_number(environ: Mapping[str, str], name: str, default: int, minimum: int) -> int:
    raw = environ.get(name, "") or str(default)
    if not raw.isdigit() or int(raw) < minimum:
        raise SettingsError(f"{name}={raw!r}: must be a whole number >= {minimum}")
    return int(raw)


def comma_list(
    environ: Mapping[str, str],
    name: str,
    known: tuple[str, ...],
    default: tuple[str, ...] | None = None,
) -> tuple[str, ...]:
    """The names of `environ[name]` (default: `default`, or all `known`), in known's order."""
    chosen = [part.strip() for part in (environ.get(name) or ",".join(default or known)).split(",")]
    if unknown := set(chosen) - set(known):
        raise SettingsError(f"{name}: unknown {sorted(unknown)}; known {known}")
    return tuple(name for name in known if name in chosen)  # in the canonical order


@dataclass(frozen=True)
class Config:
    seconds: int
    rounds: int
    connections: int
    threads: int
    scenarios: tuple[str, ...]
    targets: tuple[str, ...]
    open_rate: float | None
    """Requests/s of the open-loop phase; None: a share of the service's; 0: no phase."""
    gate: bool
    scale: float
    reseed: bool
    data_dir: Path
    ports: dict[str, int]

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Config:
        number = functools.partial(whole_number, environ)
        raw_rate = environ.get("BENCH_OPEN_RATE", "")
        try:
            open_rate = float(raw_rate) if raw_rate else None
        except ValueError:
            open_rate = -1.0
        if open_rate is not None and not (open_rate >= 0 and math.isfinite(open_rate)):
            raise SettingsError(f"BENCH_OPEN_RATE={raw_rate!r}: must be a number >= 0")
        targets = comma_list(environ, "BENCH_TARGETS", TARGETS, DEFAULT_TARGETS)
        gate = (environ.get("BENCH_GATE") or "0") == "1"
        if gate and not ("service" in targets and {"floor", "pooled"} & set(targets)):
            raise SettingsError(
                "BENCH_GATE=1 compares the service with the floor or with itself via "
                "PgBouncer: run the service and one of them"
            )
        return cls(
            seconds=number("BENCH_SECONDS", 10, 1),
            rounds=number("BENCH_ROUNDS", 3, 2),
            connections=number("BENCH_CONNECTIONS", 32, 1),
            threads=number("BENCH_THREADS", 2, 1),
            scenarios=comma_list(environ, "BENCH_SCENARIOS", SCENARIOS),
            targets=targets,
            open_rate=open_rate,
            gate=gate,
            scale=seed.scale_from_env(environ),
            reseed=(environ.get("BENCH_SEED") or "1") != "0",
            data_dir=Path(environ.get("BENCH_DATA_DIR") or ".data/bench"),
            ports={
                "service": number("BENCH_SERVICE_PORT", 8101, 1),
                "bare": number("BENCH_BASELINE_PORT", 8102, 1),
                "floor": number("BENCH_FLOOR_PORT", 8103, 1),
                "pooled": number("BENCH_POOLED_PORT", 8105, 1),
            },
        )


@dataclass
class Round:
    """One run of a load against one server: wrk's BENCH_RESULT line (see wrk/common.lua)
    for the saturated rounds, `openloop.run`'s result in the same keys for the open ones."""

    scenario: str
    target: str
    number: int
    result: dict[str, float]
    load: str = "closed"  # "closed": wrk, BENCH_CONNECTIONS at full speed; "open": a fixed rate

    @property
    def requests_per_second(self) -> float:
        return self.result["requests"] / (self.result["duration_us"] / 1e6)

    @property
    def errors(self) -> int:
        keys = ("connect_errors", "read_errors", "write_errors", "status_errors", "timeouts")
        return int(sum(self.result[key] for key in keys))


@dataclass(frozen=True)
class Summary:
    """The medians of a server's rounds of one scenario (latencies in ms)."""

    rps: float
    p50: float
    p95: float
    p99: float
    errors: int
    # Open loop only: the generator's own lateness, and that plus the wait for a connection.
    lag_p99: float = math.nan
    wait_p99: float = math.nan

    @classmethod
    def of(cls, rounds: list[Round]) -> Summary:
        def ms(key: str) -> float:
            return statistics.median(r.result.get(key, math.nan) for r in rounds) / 1000

        return cls(
            rps=statistics.median(r.requests_per_second for r in rounds),
            p50=ms("p50_us"),
            p95=ms("p95_us"),
            p99=ms("p99_us"),
            errors=sum(r.errors for r in rounds),
            lag_p99=ms("lag_p99_us"),
            wait_p99=ms("wait_p99_us"),
        )


def summarise(rounds: list[Round], load: str) -> dict[tuple[str, str], Summary]:
    """(scenario, target) → Summary, for the rounds of one kind of load."""
    groups: dict[tuple[str, str], list[Round]] = {}
    for r in rounds:
        if r.load == load:
            groups.setdefault((r.scenario, r.target), []).append(r)
    return {key: Summary.of(group) for key, group in groups.items()}


@dataclass(frozen=True)
class Check:
    """One target of issue 9 for one scenario, with the figures it was decided on."""

    scenario: str
    measure: str
    passed: bool
    text: str


def check_targets(
    summaries: dict[tuple[str, str], Summary], scenarios: tuple[str, ...]
) -> list[Check]:
    """Every target that the scenarios and servers run can decide: issue 9's against the
    floor, issue 8's of the service via PgBouncer against the service direct."""
    checks = []
    for scenario in scenarios:
        service, floor = summaries.get((scenario, "service")), summaries.get((scenario, "floor"))
        pooled = summaries.get((scenario, "pooled"))
        if service is not None and floor is not None:
            checks.append(
                _at_least(scenario, "req/s", service.rps, MIN_RPS_RATIO, floor.rps, "the floor")
            )
            most = MAX_P99_RATIO * floor.p99
            checks.append(
                Check(
                    scenario,
                    "p99 ms",
                    service.p99 <= most,
                    f"{service.p99:.1f} <= {MAX_P99_RATIO:g} x {floor.p99:.1f} = {most:.1f}"
                    f"  ({ratio(service.p99, floor.p99)} of the floor)",
                )
            )
        if service is not None and pooled is not None:
            checks.append(
                _at_least(
                    scenario,
                    "pooler",
                    pooled.rps,
                    MIN_POOLED_RPS_RATIO,
                    service.rps,
                    "the service direct",
                )
            )
        if scenario == "mixed" and service is not None and floor is not None:
            checks.append(
                Check(
                    scenario,
                    "p95 ms",
                    service.p95 <= MAX_MIXED_P95_MS,
                    f"{service.p95:.1f} <= {MAX_MIXED_P95_MS:g}",
                )
            )
    return checks


def _at_least(
    scenario: str, measure: str, value: float, share: float, reference: float, of: str
) -> Check:
    """`value` (req/s) must be at least `share` times `reference`, the req/s of `of`."""
    least = share * reference
    return Check(
        scenario,
        measure,
        value >= least,
        f"{value:,.0f} >= {share} x {reference:,.0f} = {least:,.0f}"
        f"  ({ratio(value, reference)} of {of})",
    )


def ratio(numerator: float, denominator: float) -> str:
    return f"{numerator / denominator:.2f}x" if denominator else "n/a"


@dataclass
class Server:
    name: str
    port: int
    process: subprocess.Popen[bytes]
    log_path: Path
    log: TextIO = field(repr=False)

    @property
    def base_url(self) -> str:
        return f"http://{ADDRESS}:{self.port}"


def request_json(
    url: str, method: str = "GET", body: Any = None, headers: Mapping[str, str] | None = None
) -> tuple[Message, Any]:
    """One request with the bench's token (and `body` as JSON): the answer's headers and
    JSON body. A status of 400 or more raises `urllib.error.HTTPError`."""
    request = urllib.request.Request(
        url,
        method=method,
        data=None if body is None else json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {BENCH_TOKEN}", "Content-Type": "application/json"}
        | dict(headers or {}),
    )
    with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT_SECONDS) as answer:
        return answer.headers, json.load(answer)


def _get_json(url: str) -> Any:
    return request_json(url)[1]


SEEDED_EVENTS_RETENTION_HOURS = str(24 * 3650)


def server_environment(
    database_url: str, data_dir: Path, port: int, read_url: str | None = None
) -> dict[str, str]:
    """The service's environment in its default production configuration; reads on the
    replicas of `read_url` when given, else on the primary (whatever the caller's shell says)."""
    environment = dict(os.environ)
    environment.pop("DATABASE_READ_URL", None)
    if read_url is not None:
        environment["DATABASE_READ_URL"] = read_url
    environment.update(
        DATABASE_URL=database_url,
        DATA_DIR=str(data_dir),
        HOST=ADDRESS,
        PORT=str(port),
        WORKERS="1",
        # The default production configuration: request logs (INFO) and metrics on.
        LOG_LEVEL="INFO",
        API_TOKENS=f"bench read,write {hashlib.sha256(BENCH_TOKEN.encode()).hexdigest()}",
        MIGRATE_ON_START="false",  # the bench migrated before seeding
        CURSOR_SECRET=CURSOR_SECRET,
        # The seeded rows, and so their events, are up to three years old: with the default
        # retention the service's first pruning round would delete ~200,000 events while
        # the bench measures. Kept as long as allowed.
        EVENTS_RETENTION_HOURS=SEEDED_EVENTS_RETENTION_HOURS,
    )
    return environment


def target_environment(target: str, database_url: str, data_dir: Path, port: int) -> dict[str, str]:
    environment = server_environment(database_url, data_dir, port)
    if target == "pooled":
        environment.update(DB_POOLER="transaction")
    elif target != "service":
        pool_size = str(BASELINE_POOL_SIZE)
        environment.update(DB_POOL_MIN=pool_size, DB_POOL_MAX=pool_size)
    return environment


@contextmanager
def running(
    name: str, arguments: tuple[str, ...], environment: dict[str, str], port: int
) -> Iterator[Server]:
    """Start `python -m *arguments`, wait until it is ready, and stop it (SIGTERM) on exit."""
    REPORTS.mkdir(parents=True, exist_ok=True)
    log_path = REPORTS / f"bench-{name}.log"
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", *arguments], cwd=ROOT, env=environment, stdout=log, stderr=log
        )
        server = Server(name, port, process, log_path, log)
        try:
            _wait_ready(server)
            yield server
        finally:
            _stop(process)


def _wait_ready(server: Server) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise BenchError(f"{server.name} exited early; see {server.log_path}")
        try:
            with urllib.request.urlopen(f"{server.base_url}/health/ready", timeout=2) as answer:
                if answer.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise BenchError(f"{server.name} not ready within {READY_TIMEOUT_SECONDS:.0f} s")


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=STOP_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=STOP_TIMEOUT_SECONDS)


async def checkpoint(database_url: str) -> None:
    """A CHECKPOINT now, before a round: see `bench`."""
    connection = await asyncpg.connect(database_url)
    try:
        await connection.execute("CHECKPOINT")
    finally:
        await connection.close()


async def data_set_bounds(database_url: str) -> tuple[int, int]:
    connection = await asyncpg.connect(database_url)
    try:
        row = await connection.fetchrow(
            "SELECT (SELECT max(id) FROM users) AS users, (SELECT max(id) FROM posts) AS posts"
        )
    finally:
        await connection.close()
    if row is None or row["users"] is None or row["posts"] is None:
        raise BenchError("the database has no users or no posts: seed it (BENCH_SEED=1)")
    return int(row["users"]), int(row["posts"])


@dataclass(frozen=True)
class DataSet:
    """What the load scripts draw from: ids 1..max, real cursors deep in the listing, and
    real feed cursors spread over the feed's backlog."""

    max_user_id: int
    max_post_id: int
    deep_cursors: list[str]
    event_cursors: list[str] = field(default_factory=list)

    def wrk_environment(self, consistency_token: str | None = None) -> dict[str, str]:
        """wrk's environment; with `consistency_token`, every request sends it (wrk/common.lua)."""
        environment = dict(
            os.environ,
            BENCH_MAX_USER_ID=str(self.max_user_id),
            BENCH_MAX_POST_ID=str(self.max_post_id),
            BENCH_TOKEN=BENCH_TOKEN,
            BENCH_DEEP_CURSORS=",".join(self.deep_cursors),
            BENCH_EVENT_CURSORS=",".join(self.event_cursors),
        )
        environment.pop("BENCH_CONSISTENCY_TOKEN", None)
        if consistency_token is not None:
            environment["BENCH_CONSISTENCY_TOKEN"] = consistency_token
        return environment


def seed_database(database_url: str, scale: float) -> None:
    """Empty and fill `database_url` with the data set at `scale`, saying how long it took."""
    wanted = seed.DataSet.at_scale(scale)
    print(f"seeding {wanted.users:,} users and {wanted.posts:,} posts …", flush=True)
    seeding_started = time.perf_counter()
    asyncio.run(seed.seed_url(database_url, wanted))
    print(f"seeded in {time.perf_counter() - seeding_started:.1f} s", flush=True)


@contextmanager
def seeded_database(config: Config) -> Iterator[str]:
    """The embedded PostgreSQL of BENCH_DATA_DIR, migrated and (BENCH_SEED=1) seeded."""
    with database(Settings(data_dir=str(config.data_dir))) as database_url:
        migrations.apply(database_url)
        if config.reseed:
            seed_database(database_url, config.scale)
        yield database_url


@contextmanager
def pgbouncer_in_front(database_url: str) -> Iterator[str]:
    """The URL of `database_url`'s database through a PgBouncer in transaction mode, with
    its default configuration (tests/pgbouncer.py), stopped and removed on exit."""
    if not PGBOUNCER.exists():
        raise BenchError(f"{PGBOUNCER} is missing: `make bench-pooler` installs it")
    with running_pgbouncer(database_url) as bouncer:
        yield bouncer.url(urlsplit(database_url).path.lstrip("/"))


def start_servers(
    stack: ExitStack,
    config: Config,
    database_url: str,
    targets: tuple[str, ...],
) -> dict[str, Server]:
    """Every target, started and ready; the pooled one behind a PgBouncer of its own."""
    urls = dict.fromkeys(targets, database_url)
    if "pooled" in urls:
        urls["pooled"] = stack.enter_context(pgbouncer_in_front(database_url))
    return {
        target: stack.enter_context(
            running(
                target,
                COMMANDS[target],
                target_environment(target, urls[target], config.data_dir, config.ports[target]),
                config.ports[target],
            )
        )
        for target in targets
    }


def read_data_set(database_url: str, server: Server) -> DataSet:
    max_user_id, max_post_id = asyncio.run(data_set_bounds(database_url))
    return DataSet(max_user_id, max_post_id, _deep_cursors(server), event_cursors(server))


def _deep_cursors(server: Server) -> list[str]:
    """Walk GET /posts?limit=200 from the newest, once, keeping the last cursors given."""
    deadline = time.monotonic() + DEEP_WALK_TIMEOUT_SECONDS
    cursors: list[str] = []
    url = f"{server.base_url}/posts?limit=200"
    for _ in range(DEEP_WALK_PAGES):
        if time.monotonic() > deadline:
            raise BenchError(f"walking to the deep page took over {DEEP_WALK_TIMEOUT_SECONDS} s")
        cursor = _get_json(url)["next_cursor"]
        if cursor is None:
            break  # a small data set: as deep as it goes
        cursors.append(cursor)
        url = f"{server.base_url}/posts?limit=200&cursor={cursor}"
    if not cursors:
        raise BenchError("the listing has a single page: seed more posts")
    return cursors[-DEEP_CURSORS_KEPT:]


def events_path(cursor: str) -> str:
    """The events scenario's request (wrk/events.lua): a backlog page after `cursor`."""
    return f"/events?limit={EVENTS_PAGE}&after={cursor}"


FeedPage = Callable[[str | None, int], tuple[int, str]]
"""A page of the feed after a cursor (None: from the oldest event kept) of at most `limit`
events: how many it holds, and its next_cursor."""


def event_cursors(server: Server) -> list[str]:
    """`walk_feed` over HTTP: GET /events of `server` (the cursors it signs)."""

    def page(after: str | None, limit: int) -> tuple[int, str]:
        query = f"limit={limit}" if after is None else f"limit={limit}&after={after}"
        body = _get_json(f"{server.base_url}/events?{query}")
        return len(body["items"]), body["next_cursor"]

    return walk_feed(page)


def walk_feed(
    page: FeedPage,
    walk_limit: int = EVENTS_WALK_LIMIT,
    kept: int = EVENTS_CURSORS_KEPT,
    pages: int = EVENTS_WALK_PAGES,
) -> list[str]:
    """Walk the feed from the oldest event kept, `walk_limit` events a page, once (at most
    `pages` pages), and keep `kept` of the cursors given, spread evenly over the walk,
    each followed by at least a full page of EVENTS_PAGE events; asked again, each gives
    one (else BenchError). Empty when the feed has no such backlog."""
    deadline = time.monotonic() + DEEP_WALK_TIMEOUT_SECONDS
    cursors: list[str] = []  # the next_cursor of each full page
    sizes: list[int] = []  # how many events each page held
    after: str | None = None
    for _ in range(pages):
        if time.monotonic() > deadline:
            raise BenchError(f"walking the feed took over {DEEP_WALK_TIMEOUT_SECONDS} s")
        count, after = page(after, walk_limit)
        sizes.append(count)
        if count < walk_limit:
            break  # the end of the feed
        cursors.append(after)
    # The page walked after cursors[i] is sizes[i + 1]: the events that follow it, at least
    # (the last cursor of a walk cut short by `pages` has none walked: left out).
    followed = zip(cursors, sizes[1:], strict=False)
    chosen = spread([cursor for cursor, size in followed if size >= EVENTS_PAGE], kept)
    for cursor in chosen:
        if (count := page(cursor, EVENTS_PAGE)[0]) != EVENTS_PAGE:
            raise BenchError(f"a walked feed cursor gives {count} events, not {EVENTS_PAGE}")
    return chosen


def spread(items: list[str], kept: int) -> list[str]:
    """`kept` of `items` spread evenly from the first to the last (all, when fewer)."""
    if len(items) <= kept:
        return items
    return [items[round(k * (len(items) - 1) / (kept - 1))] for k in range(kept)]


# What a page of the feed carries besides its body, whoever answers it: the service answers
# neither on GET /events today; a baseline must not answer differently.
FEED_HEADERS = ("events-cursor", "link")


def compare_answers(servers: dict[str, Server], data: DataSet) -> list[str]:
    """Every server must give the same bodies for the same reads, or they do different work;
    for a page of the feed, the same FEED_HEADERS too."""
    paths: list[tuple[str, tuple[str, ...]]] = [
        ("/posts/1", ()),
        (f"/users/{data.max_user_id}/posts", ()),
        (f"/posts?limit=50&cursor={data.deep_cursors[0]}", ()),
    ]
    if data.event_cursors:
        paths.append((events_path(data.event_cursors[-1]), FEED_HEADERS))
    differences = []
    for path, headers in paths:
        answers = {}
        for name, server in servers.items():
            answer_headers, body = request_json(server.base_url + path)
            answers[name] = (body, [answer_headers.get(header) for header in headers])
        first, *others = answers
        if differing := [name for name in others if answers[name] != answers[first]]:
            differences.append(f"{path}: {', '.join(differing)} differ from {first}")
    return differences


def run_wrk(
    server: Server,
    scenario: str,
    seconds: int,
    connections: int,
    threads: int,
    env: dict[str, str],
) -> dict[str, float]:
    script = WRK_DIR / f"{scenario}.lua"
    command = [
        "wrk",
        f"--threads={threads}",
        f"--connections={connections}",
        f"--duration={seconds}s",
        "--timeout=10s",
        f"--script={script}",
        server.base_url,
    ]
    completed = subprocess.run(
        command, env=env, capture_output=True, text=True, timeout=seconds + 60, check=False
    )
    if server.process.poll() is not None:
        raise BenchError(f"{server.name} died during {scenario}; see {server.log_path}")
    for line in completed.stdout.splitlines():
        if line.startswith("BENCH_RESULT "):
            result: dict[str, float] = json.loads(line.removeprefix("BENCH_RESULT "))
            return result
    raise BenchError(
        f"wrk gave no result for {scenario} on {server.name} (exit {completed.returncode}):\n"
        f"{completed.stdout}{completed.stderr}"
    )


def _run_open_loop(config: Config, server: Server, rate: float, data: DataSet) -> dict[str, float]:
    requests = openloop.MixedRequests(
        f"{ADDRESS}:{server.port}", data.max_user_id, data.max_post_id, BENCH_TOKEN
    )
    load = openloop.Load(ADDRESS, server.port, rate, config.seconds, config.connections)
    try:
        result = openloop.run(load, requests)
    except (OSError, TimeoutError) as error:
        raise BenchError(f"the open loop could not connect to {server.name}: {error}") from None
    if server.process.poll() is not None:
        raise BenchError(f"{server.name} died during the open-loop round; see {server.log_path}")
    return result


def ratio_cell(top: Summary | None, bottom: Summary | None, measure: str) -> str:
    if top is None or bottom is None:
        return "-"
    return ratio(getattr(top, measure), getattr(bottom, measure))


def cells(summary: Summary | None) -> str:
    if summary is None:
        return f"{'-':>7} {'-':>6} {'-':>6} {'-':>6}"
    return f"{summary.rps:>7.0f} {summary.p50:>6.1f} {summary.p95:>6.1f} {summary.p99:>6.1f}"


class RatioColumn(NamedTuple):
    """A column of `comparison_table`: `top`'s median `measure` over `bottom`'s."""

    heading: str
    top: str
    bottom: str
    measure: str  # a field of Summary: "rps", "p99" …


def comparison_table(
    preamble: list[str],
    scenarios: tuple[str, ...],
    labels: Mapping[str, str],
    summaries: Mapping[tuple[str, str], Summary],
    ratios: list[RatioColumn],
    extra: tuple[str, Callable[[str, str], str]] | None = None,
) -> str:
    """One row per scenario: req/s, p50, p95, p99 of each of `labels` (a server or a
    configuration → its label; `-` where it did not run), the `ratios`, and the failed
    requests. `extra` adds to each group a column (its heading, and its cell for a scenario
    and a key)."""
    group = f"{'req/s':>7} {'p50':>6} {'p95':>6} {'p99':>6}"
    if extra is not None:
        group += f" {extra[0]:>4}"
    widths = [max(len(column.heading), 8) for column in ratios]
    headings = " ".join(f"{column.heading:>{w}}" for column, w in zip(ratios, widths, strict=True))
    header = f"{'scenario':<12} | " + " | ".join(group for _ in labels) + f" | {headings} | errors"
    names = f"{'':<12} | " + " | ".join(f"{label:<{len(group)}}" for label in labels.values())
    lines = [*preamble, names.rstrip(), header, "-" * len(header)]
    for scenario in scenarios:
        row = {key: summaries.get((scenario, key)) for key in labels}
        groups = [
            cells(summary) + ("" if extra is None else f" {extra[1](scenario, key):>4}")
            for key, summary in row.items()
        ]
        ratio_cells = " ".join(
            f"{ratio_cell(row[column.top], row[column.bottom], column.measure):>{width}}"
            for column, width in zip(ratios, widths, strict=True)
        )
        errors = sum(summary.errors for summary in row.values() if summary is not None)
        lines.append(f"{scenario:<12} | " + " | ".join(groups) + f" | {ratio_cells} | {errors}")
    return "\n".join(lines)


def saturated_table(config: Config, summaries: dict[tuple[str, str], Summary]) -> str:
    return comparison_table(
        [
            f"median of {config.rounds} interleaved rounds of {config.seconds} s per server; "
            f"{config.connections} connections, {config.threads} wrk threads; latencies in ms; "
            "s/f = service / Litestar floor, s/b = service / bare ASGI, "
            "p/s = service via PgBouncer / service direct"
        ],
        config.scenarios,
        {target: LABELS[target] for target in config.targets},
        summaries,
        [
            RatioColumn(heading, top, bottom, measure)
            for heading, top, bottom, measure in (
                ("s/f req/s", "service", "floor", "rps"),
                ("s/f p99", "service", "floor", "p99"),
                ("s/b req/s", "service", "bare", "rps"),
                ("p/s req/s", "pooled", "service", "rps"),
            )
            if {top, bottom} <= set(config.targets)
        ],
    )


def verdict_block(checks: list[Check]) -> str:
    if not checks:
        return "targets: not checked (they need the service and the floor, or via PgBouncer)"
    passed = sum(check.passed for check in checks)
    lines = [
        "targets, on the medians of the rounds (issue 9: the service against the Litestar "
        "floor; issue 8: the service via PgBouncer against the service direct):",
        *(
            f"  {'PASS' if check.passed else 'FAIL'}  {check.scenario:<12} {check.measure:<7} "
            f"{check.text}"
            for check in checks
        ),
        f"  {passed} of {len(checks)} met",
    ]
    return "\n".join(lines)


def open_loop_table(
    config: Config, rate: float, how: str, summaries: dict[tuple[str, str], Summary]
) -> str:
    header = (
        f"{'server':<15} {'asked':>7} {'got':>7} {'p50':>6} {'p95':>6} {'p99':>6} "
        f"{'lag p99':>7} {'wait p99':>8} | errors"
    )
    lines = [
        f"below saturation: {OPEN_LOOP_SCENARIO} at a fixed {rate:,.0f} req/s ({how}), open loop "
        f"on {config.connections} connections; median of {config.rounds} rounds of "
        f"{config.seconds} s; latency (ms) from when each request fell due; lag = the "
        "generator's own lateness, wait = lag and the wait for a free connection",
        header,
        "-" * len(header),
    ]
    for target in OPEN_LOOP_TARGETS:
        if (summary := summaries.get((OPEN_LOOP_SCENARIO, target))) is not None:
            lines.append(
                f"{LABELS[target]:<15} {rate:>7.0f} {summary.rps:>7.0f} {summary.p50:>6.1f} "
                f"{summary.p95:>6.1f} {summary.p99:>6.1f} {summary.lag_p99:>7.1f} "
                f"{summary.wait_p99:>8.1f} | "
                f"{summary.errors}"
            )
    service = summaries.get((OPEN_LOOP_SCENARIO, "service"))
    floor = summaries.get((OPEN_LOOP_SCENARIO, "floor"))
    if service is not None and floor is not None:
        lines.append(f"service p99 / floor p99: {ratio(service.p99, floor.p99)}")
    return "\n".join(lines)


def _open_loop_rate(config: Config, saturated: dict[tuple[str, str], Summary]) -> tuple[float, str]:
    """The rate of the open-loop phase and how it was chosen; 0 when there is none."""
    if config.open_rate is not None:
        return config.open_rate, "BENCH_OPEN_RATE"
    service = saturated.get((OPEN_LOOP_SCENARIO, "service"))
    if service is None or service.rps <= 0:
        return 0.0, f"no saturated {OPEN_LOOP_SCENARIO} round of the service to halve"
    return OPEN_LOOP_SHARE * service.rps, f"half the service's {OPEN_LOOP_SCENARIO} req/s"


def print_round(r: Round) -> None:
    print(
        f"  {r.scenario:<12} {r.load:<6} round {r.number} {r.target:<8} "
        f"{r.requests_per_second:>8.0f} req/s p95 {r.result['p95_us'] / 1000:6.1f} ms "
        f"p99 {r.result['p99_us'] / 1000:6.1f} ms errors {r.errors}",
        flush=True,
    )


def bench(config: Config) -> int:
    if shutil.which("wrk") is None:
        raise BenchError("wrk is not installed: `make bench` installs it (apt-get install wrk)")
    started = datetime.now(UTC)
    rounds: list[Round] = []
    with ExitStack() as stack:
        database_url = stack.enter_context(seeded_database(config))
        servers = start_servers(stack, config, database_url, config.targets)
        data = read_data_set(database_url, next(iter(servers.values())))
        if "events" in config.scenarios and not data.event_cursors:
            raise BenchError(
                f"the feed has no backlog of {EVENTS_PAGE} events after a walked cursor: "
                "seed it (BENCH_SEED=1)"
            )
        if len(servers) > 1 and (differences := compare_answers(servers, data)):
            print(f"WARNING: the servers answer differently: {'; '.join(differences)}")
        wrk_env = data.wrk_environment()
        print(
            f"data set: users 1..{data.max_user_id:,}, posts 1..{data.max_post_id:,}; "
            f"{len(data.deep_cursors)} deep cursors, {len(data.event_cursors)} feed cursors; "
            f"{config.rounds} rounds x {config.seconds} s"
            f" x {len(config.scenarios)} scenarios x {len(servers)} servers "
            f"({', '.join(servers)})",
            flush=True,
        )
        for server in servers.values():
            # Warm all alike: prepared statements, pool connections, caches.
            run_wrk(server, "mixed", WARM_UP_SECONDS, config.connections, config.threads, wrk_env)
        for scenario in config.scenarios:
            for number in range(1, config.rounds + 1):
                for target, server in servers.items():
                    # Every round starts from a checkpoint. The writes' WAL otherwise sets one
                    # off every 20 s or so (max_wal_size), and whichever round it lands in
                    # pays for its I/O and for the full-page images that follow: a p99 of
                    # 50 ms in one server's round, 15 ms in the next one's.
                    asyncio.run(checkpoint(database_url))
                    result = run_wrk(
                        server,
                        scenario,
                        config.seconds,
                        config.connections,
                        config.threads,
                        wrk_env,
                    )
                    rounds.append(Round(scenario, target, number, result))
                    print_round(rounds[-1])
        saturated = summarise(rounds, "closed")
        open_rate, open_how = _open_loop_rate(config, saturated)
        open_servers = {t: s for t, s in servers.items() if t in OPEN_LOOP_TARGETS}
        if open_rate > 0 and open_servers:
            print(f"open loop: {OPEN_LOOP_SCENARIO} at {open_rate:,.0f} req/s ({open_how})")
            for number in range(1, config.rounds + 1):
                for target, server in open_servers.items():
                    asyncio.run(checkpoint(database_url))
                    result = _run_open_loop(config, server, open_rate, data)
                    rounds.append(Round(OPEN_LOOP_SCENARIO, target, number, result, load="open"))
                    print_round(rounds[-1])

    opened = summarise(rounds, "open")
    checks = check_targets(saturated, config.scenarios)
    report = [saturated_table(config, saturated), "", verdict_block(checks), ""]
    if opened:
        report.append(open_loop_table(config, open_rate, open_how, opened))
    else:
        report.append(f"below saturation: not run ({open_how if open_rate <= 0 else 'no server'})")
    text = "\n".join(report)
    raw = {
        "config": {**asdict(config), "data_dir": str(config.data_dir)},
        "data_set": {"max_user_id": data.max_user_id, "max_post_id": data.max_post_id},
        "open_loop_rate": open_rate,
        "checks": [asdict(check) for check in checks],
    }
    failed = report_results("bench", started, raw, rounds, text)
    missed = sum(not check.passed for check in checks)
    if config.gate and (missed or failed):
        print(f"BENCH_GATE=1: {missed} targets missed, {failed} requests failed", file=sys.stderr)
        return 1
    return 0


def report_results(
    name: str, started: datetime, raw: dict[str, Any], rounds: list[Round], text: str
) -> int:
    """Write `<name>-<time>.json` (`raw`, the start and every round) and `.txt` (`text`) to
    loadtests/reports/, print the text, and return how many requests failed."""
    stamp = started.strftime("%Y%m%dT%H%M%SZ")
    REPORTS.mkdir(parents=True, exist_ok=True)
    raw_path = REPORTS / f"{name}-{stamp}.json"
    table_path = REPORTS / f"{name}-{stamp}.txt"
    raw_rounds = [asdict(r) | {"requests_per_second": r.requests_per_second} for r in rounds]
    raw_path.write_text(
        json.dumps({"started": started.isoformat(), **raw, "rounds": raw_rounds}, indent=2)
    )
    table_path.write_text(text + "\n")
    print()
    print(text)
    if failed := sum(r.errors for r in rounds):
        print("WARNING: some requests failed (errors column): those figures are not comparable")
    print(f"\nraw results: {raw_path}\ntables: {table_path}")
    return failed


def run_main(configure: Callable[[Mapping[str, str]], C], measure: Callable[[C], int]) -> int:
    """A bench's entry point: its configuration from the environment (exit 2 when it is
    wrong), then the measure, whose BenchError is one line and exit 1. SIGTERM unwinds the
    measure's ExitStack, so its servers and databases stop."""
    try:
        config = configure(os.environ)
    except SettingsError as error:
        print(f"configuration error: {error}", file=sys.stderr)
        return 2

    def terminate(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, terminate)
    try:
        return measure(config)
    except BenchError as error:
        print(f"bench failed: {error}", file=sys.stderr)
        return 1


def main() -> int:
    return run_main(Config.from_env, bench)


if __name__ == "__main__":
    sys.exit(main())
