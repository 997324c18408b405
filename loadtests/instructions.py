"""`make instructions`: CPU instructions per request, by layer, counted by valgrind.

Timings on a 2-core machine shared with wrk and PostgreSQL drift by several percent from
run to run; callgrind's instruction counts repeat to the thousand. Each configuration
builds its app in process (the service's `create_app`, or the Litestar floor's) on the
bench's seeded database, and sends it requests straight over ASGI (no HTTP server, no
client library) from 32 concurrent tasks, as wrk's 32 connections would. It runs twice
under `valgrind --tool=callgrind`, with INSTRUCTIONS_REQUESTS requests and with four
times as many; the difference of the two totals divided by the difference of the counts
is the cost of one request, without start-up.

Configurations: the floor; the service in its default production configuration (a token
required, request log and metrics on); then the service with its edge layer taken off
(`app.asgi_handler` unwrapped once), so that the layer's cost (request id, limits, token
gate, metrics, request log) is the difference between the two lines. What is left is
Litestar, the handlers, the database session and asyncpg. `make instructions-layers`
counts each of the edge layer's parts; `make instructions-features`
(INSTRUCTIONS_FEATURES) counts each feature of the rest the same way, the service with
that feature taken out (`loadtests.features`), on the scenarios that go through it.
Scenarios, as `make bench` sends them: GET /posts/{id},
GET /users/{id}/posts (the first page of 50), GET /posts?cursor=… (list_deep: a page of 50
about 50,000 posts deep), GET /events?limit=100&after=… (events: a backlog page of the
change feed), POST /posts, PATCH /posts/{id} (a merge patch of title and published, no
If-Match). The two cursor scenarios take real signed cursors, made before counting, outside
valgrind, on the seeded database (`cursors`): the deep ones the bench's walk of the listing
is given (the same ids, signed with the bench's key), the feed's from a walk of the feed
with the service's reader, as the bench walks it over HTTP. Writes fire PostgreSQL's row
triggers (the change feed) outside this process: callgrind does not count them, on either
side.

Under the table, issue 22's targets: the service at most 1.10x the floor, and the edge
layer (the observer, limits and token gate of issue 22; the service less the line without
it) at most 15k instructions, on each scenario.

Environment: INSTRUCTIONS_REQUESTS (320; a multiple of 32), INSTRUCTIONS_SCENARIOS (all),
INSTRUCTIONS_LAYERS (1; 0 counts only the floor and the service), INSTRUCTIONS_FEATURES
(none; `all` or names of `loadtests.features.FEATURES`, comma-separated), BENCH_DATA_DIR
(.data/bench), BENCH_SEED (1; 0 re-uses the data there), SEED_SCALE. Reports: the table
is printed and written to loadtests/reports/instructions-<time>.txt.
"""

from __future__ import annotations

import asyncio
import gc
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple

import asyncpg

from loadtests import bench
from loadtests.features import FEATURES
from service.base.settings import SettingsError
from service.feed import reader
from service.http.pagination import CursorCodec, cursor_key

CALLERS = 32
WARM_UP_PER_CALLER = 3
SCENARIOS = ("get_post", "user_posts", "list_deep", "events", "create_post", "patch_post")
MAX_RATIO = 1.10
"""Issue 22: the service's instructions per request at most this times the floor's."""
MAX_LAYERS = 15_000
"""Issue 22: the observer, the limits and the token gate together (the edge layer), per request."""
NOTHING = "none"
# (label, target, the feature of `loadtests.features` taken out, or NOTHING)
CONFIGURATIONS = (
    ("Litestar floor", "floor", NOTHING),
    ("service", "service", NOTHING),
    ("  without the edge layer", "service", "edge"),
)
POST_BODY = b'{"author_id": 17, "title": "A title of some length", "body": "' + b"x" * 400 + b'"}'
PATCH_BODY = b'{"title": "A new title of some length", "published": true}'
MAX_USER_ID, MAX_POST_ID = 10_000, 200_000
"""The seed's ids at SEED_SCALE=1: what the requests spread over (fewer on a smaller seed)."""
SPREAD = "SELECT least((SELECT max(id) FROM users), $1), least((SELECT max(id) FROM posts), $2)"
DEEP_PAGE = 200
"""The page of the bench's walk of the listing (`bench._deep_cursors`)."""
# The last post id of each page of 200 of the bench's walk, newest first: what the next
# cursor of each page carries.
WALKED_PAGE_ENDS = """
SELECT id FROM (
    SELECT id, row_number() OVER (ORDER BY id DESC) AS walked
    FROM posts ORDER BY id DESC LIMIT $1
) AS page_ends
WHERE walked % $2 = 0 AND walked < (SELECT count(*) FROM posts)
ORDER BY id DESC
"""


class Cursors(NamedTuple):
    """Real signed cursors for the scenarios that take one, passed to the counted process
    in the variables wrk reads them from."""

    deep: list[str]
    events: list[str]

    def environment(self) -> dict[str, str]:
        return {
            "BENCH_DEEP_CURSORS": ",".join(self.deep),
            "BENCH_EVENT_CURSORS": ",".join(self.events),
        }

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Cursors:
        def listed(name: str) -> list[str]:
            return [cursor for cursor in environ.get(name, "").split(",") if cursor]

        return cls(listed("BENCH_DEEP_CURSORS"), listed("BENCH_EVENT_CURSORS"))


def cursors(database_url: str) -> Cursors:
    """The cursors the bench's walks are given on this database, signed with the bench's
    key: the listing's last DEEP_CURSORS_KEPT of DEEP_WALK_PAGES pages of 200, and the
    feed's, walked with the service's reader (`bench.walk_feed`)."""
    codec = CursorCodec(cursor_key(bench.CURSOR_SECRET, ""))
    with asyncio.Runner() as runner:
        connection = runner.run(asyncpg.connect(database_url))
        try:
            feed_id = str(runner.run(connection.fetchval(reader.SQL["feed_id"])))

            def page(after: str | None, limit: int) -> tuple[int, str]:
                position = reader.START if after is None else codec.decode_position(feed_id, after)
                read = runner.run(reader.read(connection, position, limit))
                return len(read.events), codec.encode_position(feed_id, read.next)

            events = bench.walk_feed(page)
            ends = runner.run(
                connection.fetch(WALKED_PAGE_ENDS, bench.DEEP_WALK_PAGES * DEEP_PAGE, DEEP_PAGE)
            )
        finally:
            runner.run(connection.close())
    deep = [codec.encode("posts", row["id"]) for row in ends][-bench.DEEP_CURSORS_KEPT :]
    return Cursors(deep, events)


@dataclass(frozen=True)
class Config:
    requests: int
    scenarios: tuple[str, ...]
    layers: bool
    features: tuple[str, ...]
    bench: bench.Config

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Config:
        requests = bench.whole_number(environ, "INSTRUCTIONS_REQUESTS", 320, CALLERS)
        if requests % CALLERS:
            raise SettingsError(f"INSTRUCTIONS_REQUESTS={requests}: a multiple of {CALLERS}")
        layers = environ.get("INSTRUCTIONS_LAYERS", "1") or "1"
        if layers not in ("0", "1"):
            raise SettingsError(f"INSTRUCTIONS_LAYERS={layers!r}: 0 or 1")
        features: tuple[str, ...] = ()
        if named := environ.get("INSTRUCTIONS_FEATURES", ""):
            features = (
                tuple(FEATURES)
                if named == "all"
                else bench.comma_list(environ, "INSTRUCTIONS_FEATURES", tuple(FEATURES))
            )
        return cls(
            requests,
            bench.comma_list(environ, "INSTRUCTIONS_SCENARIOS", SCENARIOS),
            layers == "1",
            features,
            bench.Config.from_env(environ),
        )

    @property
    def configurations(self) -> tuple[tuple[str, str, str], ...]:
        chosen = CONFIGURATIONS if self.layers else CONFIGURATIONS[:2]
        taken = {without for _, _, without in chosen}
        return chosen + tuple(
            (f"  without {name}", "service", name) for name in self.features if name not in taken
        )

    def counted(self, without: str) -> tuple[str, ...]:
        """The scenarios counted with `without` taken out: those going through it."""
        if without == NOTHING:
            return self.scenarios
        return tuple(s for s in self.scenarios if s in FEATURES[without].scenarios)


def _scope(method: str, target: str, headers: list[tuple[bytes, bytes]]) -> dict[str, Any]:
    path, _, query = target.partition("?")
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": query.encode(),
        "root_path": "",
        "client": ("127.0.0.1", 50000),
        "server": (bench.ADDRESS, 8101),
        "headers": [
            (b"host", b"127.0.0.1:8101"),
            (b"authorization", f"Bearer {bench.BENCH_TOKEN}".encode()),
            (b"content-type", b"application/json"),
            *headers,
        ],
        "state": {},
        "extensions": {},
    }


def _with_body(method: str, path: str, body: bytes) -> dict[str, Any]:
    return _scope(method, path, [(b"content-length", str(len(body)).encode())])


class Spread(NamedTuple):
    """The users and posts that requests name: ids 1 to these."""

    users: int
    posts: int


def _request(
    app: Any, scenario: str, number: int, cursors: Cursors, spread: Spread
) -> Callable[[], Awaitable[None]]:
    """One request of `scenario` to `app` over ASGI, failing unless it succeeds."""
    post_id = 1 + number * 7919 % spread.posts
    body, expected = b"", 200
    if scenario == "get_post":
        scope = _scope("GET", f"/posts/{post_id}", [])
    elif scenario == "user_posts":
        scope = _scope("GET", f"/users/{1 + number * 7919 % spread.users}/posts", [])
    elif scenario == "list_deep":
        scope = _scope("GET", f"/posts?limit=50&cursor={_pick(cursors.deep, number)}", [])
    elif scenario == "events":
        scope = _scope("GET", bench.events_path(_pick(cursors.events, number)), [])
    elif scenario == "create_post":
        scope = _with_body("POST", "/posts", POST_BODY)
        body, expected = POST_BODY, 201
    else:
        scope = _with_body("PATCH", f"/posts/{post_id}", PATCH_BODY)
        body = PATCH_BODY

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start" and message["status"] != expected:
            raise RuntimeError(f"{scenario}: {message['status']}, not {expected}")

    async def call() -> None:
        await app(scope, receive, send)

    return call


def _pick(cursors: list[str], number: int) -> str:
    return cursors[number * 7919 % len(cursors)]


def drive(target: str, scenario: str, without: str, requests: int) -> None:
    """In the process valgrind watches: build the app and send it `requests` requests."""
    import uvloop

    from service.base.logs import configure_logging
    from service.base.settings import from_env

    data_dir = bench.Config.from_env(os.environ).data_dir
    os.environ.update(bench.target_environment(target, os.environ["DATABASE_URL"], data_dir, 8101))
    # Under valgrind a request runs some 50 times slower: the 32 callers may wait longer
    # than the default 2 s for one of the pool's connections (a 503). The timer is armed
    # only for a request that waits, whatever its length.
    os.environ["DB_ACQUIRE_TIMEOUT"] = "60"
    cursors = Cursors.from_env(os.environ)
    settings = from_env()
    configure_logging(settings.log_level, settings.log_format)
    if target == "floor":
        from loadtests.baseline.floor import create_app
    else:
        from service.app import create_app
    app: Any = create_app(settings)
    if without != NOTHING:
        FEATURES[without].take_out(app)

    async def caller(first: int, count: int, spread: Spread) -> None:
        for number in range(first, first + count):
            await _request(app, scenario, number, cursors, spread)()

    async def run() -> None:
        connection = await asyncpg.connect(os.environ["DATABASE_URL"])
        try:
            (row,) = await connection.fetch(SPREAD, MAX_USER_ID, MAX_POST_ID)
            spread = Spread(*row)
        finally:
            await connection.close()
        async with app.lifespan():
            await asyncio.gather(
                *(caller(k * 10_000, WARM_UP_PER_CALLER, spread) for k in range(CALLERS))
            )
            gc.collect()
            gc.freeze()  # as app_from_env does after start-up
            per_caller = requests // CALLERS
            await asyncio.gather(
                *(caller(k * 10_000 + 100, per_caller, spread) for k in range(CALLERS))
            )

    uvloop.run(run())


def _instructions(
    database_url: str, cursors: Cursors, target: str, scenario: str, without: str, count: int
) -> int:
    """callgrind's total of one `drive` run."""
    with tempfile.TemporaryDirectory(prefix="posts-callgrind-") as folder:
        out = Path(folder) / "callgrind.out"
        completed = subprocess.run(
            [
                "valgrind",
                "--tool=callgrind",
                f"--callgrind-out-file={out}",
                sys.executable,
                "-m",
                "loadtests.instructions",
                "drive",
                target,
                scenario,
                without,
                str(count),
            ],
            cwd=bench.ROOT,
            env=dict(os.environ, DATABASE_URL=database_url) | cursors.environment(),
            capture_output=True,
            text=True,
            check=False,
        )
        if completed.returncode != 0:
            raise bench.BenchError(
                f"{target} {scenario} (without {without}) failed:\n{completed.stderr[-2000:]}"
            )
        for line in out.read_text().splitlines():
            if line.startswith(("summary:", "totals:")):
                return int(line.split()[1])
    raise bench.BenchError(f"no total in callgrind's output for {target} {scenario}")


def measure(config: Config) -> int:
    if shutil.which("valgrind") is None:
        raise bench.BenchError("valgrind is not installed (apt-get install -y valgrind)")
    started = datetime.now(UTC)
    few, many = config.requests, 4 * config.requests
    per_request: dict[tuple[str, str], float] = {}
    configurations, scenarios = config.configurations, config.scenarios
    with bench.seeded_database(config.bench) as database_url:
        walked = cursors(database_url)
        if "events" in scenarios and not walked.events:
            raise bench.BenchError("the feed has no backlog: seed it (BENCH_SEED=1)")
        for label, target, without in configurations:
            for scenario in config.counted(without):
                totals = [
                    _instructions(database_url, walked, target, scenario, without, count)
                    for count in (few, many)
                ]
                per_request[label, scenario] = (totals[1] - totals[0]) / (many - few)
                print(f"  {label.strip():<34} {scenario:<12} {per_request[label, scenario]:>9,.0f}")
    width = max(len(label) for label, _, _ in configurations)
    lines = [
        f"instructions per request (callgrind; {few:,} and {many:,} requests from "
        f"{CALLERS} concurrent tasks over ASGI, the difference)",
        f"{'configuration':<{width}} " + " ".join(f"{s:>12}" for s in scenarios),
    ]
    for label, _, _ in configurations:
        lines.append(f"{label:<{width}} {_cells(per_request, label, scenarios, decimals=0)}")
    lines += ["", *target_lines(per_request, configurations, scenarios)]
    features = [(label, without) for label, _, without in configurations[2:]]
    if features:
        lines += [
            "",
            "what each feature costs: the service less the service without it "
            "(thousands; `loadtests.features`)",
            f"{'feature':<{width}} " + " ".join(f"{s:>12}" for s in scenarios),
        ]
        service = configurations[1][0]
        costs = {
            (without, s): per_request[service, s] - per_request[label, s]
            for label, without in features
            for s in scenarios
            if (label, s) in per_request
        }
        lines += [
            f"{without:<{width}} {_cells(costs, without, scenarios, decimals=1)}"
            for _, without in features
        ]
        lines += [f"  {without}: {FEATURES[without].what}" for _, without in features]
    text = "\n".join(lines)
    print(text)
    bench.REPORTS.mkdir(parents=True, exist_ok=True)
    path = bench.REPORTS / f"instructions-{started.strftime('%Y%m%dT%H%M%SZ')}.txt"
    path.write_text(text + "\n")
    print(f"\ntable: {path}")
    return 0


def _cells(
    counts: Mapping[tuple[str, str], float], row: str, scenarios: tuple[str, ...], *, decimals: int
) -> str:
    """One row of a table in thousands, a dash where the row was not counted."""
    return " ".join(
        f"{counts[row, s] / 1000:>11,.{decimals}f}k" if (row, s) in counts else f"{'-':>12}"
        for s in scenarios
    )


def target_lines(
    per_request: Mapping[tuple[str, str], float],
    configurations: tuple[tuple[str, str, str], ...],
    scenarios: tuple[str, ...],
) -> list[str]:
    """Issue 22's targets, met or not, one line each."""
    floor, service = configurations[0][0], configurations[1][0]
    ratios = {s: per_request[service, s] / per_request[floor, s] for s in scenarios}
    lines = [
        f"service / floor at most {MAX_RATIO:.2f}x: "
        + ("met" if max(ratios.values()) <= MAX_RATIO else "NOT met")
        + " ("
        + ", ".join(f"{s} {ratios[s]:.3f}x" for s in scenarios)
        + ")"
    ]
    for bare, _, without in configurations:
        if without != "edge":
            continue
        layers = {s: per_request[service, s] - per_request[bare, s] for s in scenarios}
        lines.append(
            f"the edge layer at most {MAX_LAYERS // 1000}k: "
            + ("met" if max(layers.values()) <= MAX_LAYERS else "NOT met")
            + " ("
            + ", ".join(f"{s} {layers[s] / 1000:,.1f}k" for s in scenarios)
            + ")"
        )
    return lines


def main() -> int:
    if sys.argv[1:2] == ["drive"]:
        target, scenario, without, count = sys.argv[2:6]
        drive(target, scenario, without, int(count))
        return 0
    return bench.run_main(Config.from_env, measure)


if __name__ == "__main__":
    sys.exit(main())
