"""`make bench`: what the service costs over the database work it does.

wrk sends the same scenarios to two servers on one seeded embedded PostgreSQL:
- the service (`python -m service serve`), and
- the baseline (`python -m loadtests.baseline`): a bare ASGI app running the same SQL on
  the same pool with the same msgspec structs, under the same uvicorn settings.
Their requests/s ratio is the price of everything the service adds (framework, DI,
validation, metrics) on top of the database work.

Rounds are interleaved per scenario (service, baseline, service, baseline …) so that a
drift of the machine (another process, autovacuum, caches) hits both alike; the table shows
the median of the rounds of each. Raw wrk results go to loadtests/reports/bench-*.json and
the table to bench-*.txt.

Environment: BENCH_SECONDS (10) per round, BENCH_ROUNDS (3, at least 2) per server and
scenario, BENCH_CONNECTIONS (32), BENCH_THREADS (2), BENCH_SCENARIOS (all, comma-
separated), SEED_SCALE (1; 10 gives 2,000,000 posts), BENCH_SEED (1; 0 re-uses the data
already in BENCH_DATA_DIR), BENCH_DATA_DIR (.data/bench), BENCH_SERVICE_PORT (8101),
BENCH_BASELINE_PORT (8102). Exit code 0 when every round ran, whatever the figures.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

import asyncpg

from loadtests import seed
from service.database import migrations
from service.database.embedded import database
from service.settings import Settings, SettingsError

ROOT = Path(__file__).resolve().parent.parent
WRK_DIR = Path(__file__).resolve().parent / "wrk"
REPORTS = Path(__file__).resolve().parent / "reports"
ADDRESS = "127.0.0.1"  # the only target: load goes to this machine, never elsewhere
# Signs the cursors of both servers, so that the baseline accepts the service's cursors.
CURSOR_SECRET = "bench-cursor-secret-not-for-production"
# The service runs as in production: with a token required (the baseline ignores it).
BENCH_TOKEN = "bench-token-not-for-production"

SCENARIOS = ("get_post", "user_posts", "list_deep", "create_post", "patch_post", "mixed")
WARM_UP_SECONDS = 3
READY_TIMEOUT_SECONDS = 60.0
STOP_TIMEOUT_SECONDS = 30.0
HTTP_TIMEOUT_SECONDS = 10.0
# The deep page: walk 250 pages of 200 (50,000 posts, where page 1,000 of 50 would be)
# and keep the cursors of the last pages walked, so requests are spread over a few pages.
DEEP_WALK_PAGES = 250
DEEP_CURSORS_KEPT = 20
DEEP_WALK_TIMEOUT_SECONDS = 120.0


class BenchError(Exception):
    """A round could not run: the message says why; the bench exits 1."""


@dataclass(frozen=True)
class Config:
    seconds: int
    rounds: int
    connections: int
    threads: int
    scenarios: tuple[str, ...]
    scale: float
    reseed: bool
    data_dir: Path
    ports: dict[str, int]

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Config:
        def number(name: str, default: int, minimum: int) -> int:
            raw = environ.get(name, "") or str(default)
            if not raw.isdigit() or int(raw) < minimum:
                raise SettingsError(f"{name}={raw!r}: must be a whole number >= {minimum}")
            return int(raw)

        scenarios = tuple(
            name.strip()
            for name in (environ.get("BENCH_SCENARIOS") or ",".join(SCENARIOS)).split(",")
        )
        if unknown := set(scenarios) - set(SCENARIOS):
            raise SettingsError(f"BENCH_SCENARIOS: unknown {sorted(unknown)}; known {SCENARIOS}")
        return cls(
            seconds=number("BENCH_SECONDS", 10, 1),
            rounds=number("BENCH_ROUNDS", 3, 2),
            connections=number("BENCH_CONNECTIONS", 32, 1),
            threads=number("BENCH_THREADS", 2, 1),
            scenarios=scenarios,
            scale=seed.scale_from_env(environ),
            reseed=(environ.get("BENCH_SEED") or "1") != "0",
            data_dir=Path(environ.get("BENCH_DATA_DIR") or ".data/bench"),
            ports={
                "service": number("BENCH_SERVICE_PORT", 8101, 1),
                "baseline": number("BENCH_BASELINE_PORT", 8102, 1),
            },
        )


@dataclass
class Round:
    """One wrk run: its BENCH_RESULT line (see wrk/common.lua), as parsed."""

    scenario: str
    target: str
    number: int
    result: dict[str, float]

    @property
    def requests_per_second(self) -> float:
        return self.result["requests"] / (self.result["duration_us"] / 1e6)

    @property
    def errors(self) -> int:
        keys = ("connect_errors", "read_errors", "write_errors", "status_errors", "timeouts")
        return int(sum(self.result[key] for key in keys))


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


def _get_json(url: str) -> Any:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {BENCH_TOKEN}"})
    with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT_SECONDS) as answer:
        return json.load(answer)


def _server_environment(database_url: str, data_dir: Path, port: int) -> dict[str, str]:
    environment = dict(os.environ)
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
    )
    return environment


@contextmanager
def running(name: str, module: str, environment: dict[str, str], port: int) -> Iterator[Server]:
    """Start `python -m module`, wait until it is ready, and stop it (SIGTERM) on exit."""
    REPORTS.mkdir(parents=True, exist_ok=True)
    log_path = REPORTS / f"bench-{name}.log"
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", module], cwd=ROOT, env=environment, stdout=log, stderr=log
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


async def _data_set_bounds(database_url: str) -> tuple[int, int]:
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


def _deep_cursors(service: Server) -> list[str]:
    """Walk GET /posts?limit=200 from the newest, once, keeping the last cursors given."""
    deadline = time.monotonic() + DEEP_WALK_TIMEOUT_SECONDS
    cursors: list[str] = []
    url = f"{service.base_url}/posts?limit=200"
    for _ in range(DEEP_WALK_PAGES):
        if time.monotonic() > deadline:
            raise BenchError(f"walking to the deep page took over {DEEP_WALK_TIMEOUT_SECONDS} s")
        cursor = _get_json(url)["next_cursor"]
        if cursor is None:
            break  # a small data set: as deep as it goes
        cursors.append(cursor)
        url = f"{service.base_url}/posts?limit=200&cursor={cursor}"
    if not cursors:
        raise BenchError("the listing has a single page: seed more posts")
    return cursors[-DEEP_CURSORS_KEPT:]


def _compare_answers(servers: dict[str, Server], max_user_id: int, deep_cursor: str) -> list[str]:
    """Both servers must give the same bodies for the same reads, or they do different work."""
    paths = ["/posts/1", f"/users/{max_user_id}/posts", f"/posts?limit=50&cursor={deep_cursor}"]
    differences = []
    for path in paths:
        bodies = {name: _get_json(server.base_url + path) for name, server in servers.items()}
        if bodies["service"] != bodies["baseline"]:
            differences.append(path)
    return differences


def _run_wrk(
    config: Config, server: Server, scenario: str, seconds: int, env: dict[str, str]
) -> dict[str, float]:
    script = WRK_DIR / f"{scenario}.lua"
    command = [
        "wrk",
        f"--threads={config.threads}",
        f"--connections={config.connections}",
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


def _table(config: Config, rounds: list[Round]) -> str:
    def median(scenario: str, target: str, value: str) -> float:
        chosen = [r for r in rounds if r.scenario == scenario and r.target == target]
        if value == "rps":
            return statistics.median(r.requests_per_second for r in chosen)
        if value == "errors":
            return sum(r.errors for r in chosen)
        return statistics.median(r.result[f"{value}_us"] for r in chosen) / 1000

    header = (
        f"{'scenario':<12} | {'service req/s':>13} {'p50':>6} {'p95':>6} {'p99':>6} | "
        f"{'baseline req/s':>14} {'p50':>6} {'p95':>6} {'p99':>6} | {'ratio':>5} | errors"
    )
    lines = [
        f"median of {config.rounds} interleaved rounds of {config.seconds} s per server; "
        f"{config.connections} connections, {config.threads} wrk threads; latencies in ms; "
        f"ratio = service req/s / baseline req/s",
        header,
        "-" * len(header),
    ]
    for scenario in config.scenarios:
        cells = []
        for target in ("service", "baseline"):
            cells.append(
                (
                    median(scenario, target, "rps"),
                    *(median(scenario, target, p) for p in ("p50", "p95", "p99")),
                )
            )
        (s_rps, s50, s95, s99), (b_rps, b50, b95, b99) = cells
        errors = median(scenario, "service", "errors") + median(scenario, "baseline", "errors")
        lines.append(
            f"{scenario:<12} | {s_rps:>13.0f} {s50:>6.1f} {s95:>6.1f} {s99:>6.1f} | "
            f"{b_rps:>14.0f} {b50:>6.1f} {b95:>6.1f} {b99:>6.1f} | "
            f"{s_rps / b_rps if b_rps else float('nan'):>5.2f} | {errors:.0f}"
        )
    return "\n".join(lines)


def bench(config: Config) -> int:
    if shutil.which("wrk") is None:
        raise BenchError("wrk is not installed: `make bench` installs it (apt-get install wrk)")
    started = datetime.now(UTC)
    settings = Settings(data_dir=str(config.data_dir))
    rounds: list[Round] = []
    with ExitStack() as stack:
        database_url = stack.enter_context(database(settings))
        migrations.apply(database_url)
        if config.reseed:
            wanted = seed.DataSet.at_scale(config.scale)
            print(f"seeding {wanted.users:,} users and {wanted.posts:,} posts …", flush=True)
            seeding_started = time.perf_counter()
            asyncio.run(seed.seed_url(database_url, wanted))
            print(f"seeded in {time.perf_counter() - seeding_started:.1f} s", flush=True)
        max_user_id, max_post_id = asyncio.run(_data_set_bounds(database_url))

        servers = {
            name: stack.enter_context(
                running(
                    name,
                    module,
                    _server_environment(database_url, config.data_dir, config.ports[name]),
                    config.ports[name],
                )
            )
            for name, module in (("service", "service"), ("baseline", "loadtests.baseline"))
        }
        # `python -m service` runs `serve` by default.
        cursors = _deep_cursors(servers["service"])
        if differences := _compare_answers(servers, max_user_id, cursors[0]):
            print(f"WARNING: service and baseline answer differently: {differences}")
        wrk_env = dict(
            os.environ,
            BENCH_MAX_USER_ID=str(max_user_id),
            BENCH_TOKEN=BENCH_TOKEN,
            BENCH_MAX_POST_ID=str(max_post_id),
            BENCH_DEEP_CURSORS=",".join(cursors),
        )
        print(
            f"data set: users 1..{max_user_id:,}, posts 1..{max_post_id:,}; "
            f"{len(cursors)} deep cursors; {config.rounds} rounds x {config.seconds} s "
            f"x {len(config.scenarios)} scenarios x 2 servers",
            flush=True,
        )
        for server in servers.values():
            # Warm both alike: prepared statements, pool connections, caches.
            _run_wrk(config, server, "mixed", WARM_UP_SECONDS, wrk_env)
        for scenario in config.scenarios:
            for number in range(1, config.rounds + 1):
                for target in ("service", "baseline"):
                    result = _run_wrk(config, servers[target], scenario, config.seconds, wrk_env)
                    rounds.append(Round(scenario, target, number, result))
                    print(
                        f"  {scenario:<12} round {number} {target:<8} "
                        f"{rounds[-1].requests_per_second:>8.0f} req/s "
                        f"p95 {result['p95_us'] / 1000:6.1f} ms errors {rounds[-1].errors}",
                        flush=True,
                    )

    table = _table(config, rounds)
    stamp = started.strftime("%Y%m%dT%H%M%SZ")
    REPORTS.mkdir(parents=True, exist_ok=True)
    raw_path = REPORTS / f"bench-{stamp}.json"
    table_path = REPORTS / f"bench-{stamp}.txt"
    raw_path.write_text(
        json.dumps(
            {
                "started": started.isoformat(),
                "config": {**asdict(config), "data_dir": str(config.data_dir)},
                "data_set": {"max_user_id": max_user_id, "max_post_id": max_post_id},
                "rounds": [
                    asdict(r) | {"requests_per_second": r.requests_per_second} for r in rounds
                ],
            },
            indent=2,
        )
    )
    table_path.write_text(table + "\n")
    print()
    print(table)
    if any(r.errors for r in rounds):
        print("WARNING: some requests failed (errors column): those figures are not comparable")
    print(f"\nraw results: {raw_path}\ntable: {table_path}")
    return 0


def main() -> int:
    try:
        config = Config.from_env(os.environ)
    except SettingsError as error:
        print(f"configuration error: {error}", file=sys.stderr)
        return 2

    def terminate(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)  # unwinds the ExitStack: servers and database stop

    signal.signal(signal.SIGTERM, terminate)
    try:
        return bench(config)
    except BenchError as error:
        print(f"bench failed: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
