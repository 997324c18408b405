"""`make bench-replica`: GETs on one streaming replica beside the primary alone, and what the
read-your-writes check costs (issue 12, item 8).

A primary and one streaming standby on this machine (`tests/clusters.py`: the embedded
wheel's `initdb`, `pg_basebackup -R` and `pg_ctl`, in a temporary folder removed
afterwards): the primary migrated and seeded, then the standby copied from it and caught
up. Two service processes, each in the default production configuration of `make bench`
(`bench.server_environment`: a token required, request logs on, metrics on, one worker):
- `primary`: `DATABASE_URL` alone, every request on the primary;
- `replica`: `DATABASE_READ_URL` naming the standby as well, so that GETs run there.

Three configurations are measured with wrk, interleaved per scenario (primary only,
replica, replica + token, primary only, …), as `make bench` interleaves its servers:
1. `primary`: the primary-only service;
2. `replica`: the replica service;
3. `token`: the replica service, every request sending the `Consistency-Token` of one write
   made before the rounds and already replayed, so that every GET first runs the check on
   the replica (`sql/replication/shows_transaction.sql`) and then reads there.

Before the rounds, the services' own counters (`/metrics`: `service_db_reads_total
{served_by}`, `service_db_read_fallbacks_total{reason}`) must show each configuration doing
what it claims, or the bench fails (`verify_routing`); during the rounds they are read
around every round, and the table shows the share of reads the replica served.

Environment: BENCH_SECONDS (10), BENCH_ROUNDS (3, at least 2), BENCH_CONNECTIONS (32),
BENCH_THREADS (2), BENCH_SCENARIOS (get_post,user_posts,mixed), SEED_SCALE (1),
BENCH_SERVICE_PORT (8101, the primary-only service), BENCH_REPLICA_PORT (8104, the replica
service). Exit code 0 when the routing was verified and every round ran.
"""

from __future__ import annotations

import asyncio
import functools
import os
import shutil
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple

from prometheus_client.parser import text_string_to_metric_families

from loadtests import bench, seed
from loadtests.bench import BenchError, RatioColumn, Round, Server, Summary
from service.database import migrations
from service.database.replication import TOKEN_HEADER
from tests import clusters

SCENARIOS = ("get_post", "user_posts", "mixed")
CONFIGURATIONS = ("primary", "replica", "token")
LABELS = {"primary": "primary only", "replica": "replica", "token": "replica + token"}
# The service process each configuration runs on: the token rounds differ from the replica
# rounds by the header wrk sends, nothing else.
SERVICE_OF = {"primary": "primary", "replica": "replica", "token": "replica"}
DATABASE = "bench"

PROBE_READS = 20  # GETs per configuration in the check before the rounds
PROBE_PATH = "/posts/1"
REPLICA_READY_TIMEOUT_SECONDS = 30.0


@dataclass(frozen=True)
class ReplicaConfig:
    seconds: int
    rounds: int
    connections: int
    threads: int
    scenarios: tuple[str, ...]
    scale: float
    ports: dict[str, int]
    """Service process (`primary`, `replica`) → port."""

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> ReplicaConfig:
        number = functools.partial(bench.whole_number, environ)
        return cls(
            seconds=number("BENCH_SECONDS", 10, 1),
            rounds=number("BENCH_ROUNDS", 3, 2),
            connections=number("BENCH_CONNECTIONS", 32, 1),
            threads=number("BENCH_THREADS", 2, 1),
            scenarios=bench.comma_list(environ, "BENCH_SCENARIOS", SCENARIOS),
            scale=seed.scale_from_env(environ),
            ports={
                "primary": number("BENCH_SERVICE_PORT", 8101, 1),
                "replica": number("BENCH_REPLICA_PORT", 8104, 1),
            },
        )


@dataclass(frozen=True)
class Reads:
    """The service's read counters: reads answered by a replica and by the primary, and
    the reads that fell back to the primary although a replica is configured, by reason."""

    replica: float = 0.0
    primary: float = 0.0
    fallbacks: dict[str, float] = field(default_factory=dict)

    @classmethod
    def parse(cls, metrics: str) -> Reads:
        """From the service's Prometheus text (`GET /metrics`)."""
        served: dict[str, float] = {}
        fallbacks: dict[str, float] = {}
        for family in text_string_to_metric_families(metrics):
            for sample in family.samples:
                if sample.name == "service_db_reads_total":
                    served[sample.labels["served_by"]] = sample.value
                elif sample.name == "service_db_read_fallbacks_total":
                    fallbacks[sample.labels["reason"]] = sample.value
        return cls(served.get("replica", 0.0), served.get("primary", 0.0), fallbacks)

    def __sub__(self, earlier: Reads) -> Reads:
        return Reads(
            self.replica - earlier.replica,
            self.primary - earlier.primary,
            {
                reason: count - earlier.fallbacks.get(reason, 0.0)
                for reason, count in self.fallbacks.items()
            },
        )

    def __add__(self, other: Reads) -> Reads:
        reasons = self.fallbacks.keys() | other.fallbacks.keys()
        return Reads(
            self.replica + other.replica,
            self.primary + other.primary,
            {r: self.fallbacks.get(r, 0.0) + other.fallbacks.get(r, 0.0) for r in reasons},
        )

    @property
    def replica_share(self) -> float:
        total = self.replica + self.primary
        return self.replica / total if total else 0.0

    def fallback_text(self) -> str:
        """`reason count, …` of the reasons that happened, or `none`."""
        happened = {reason: n for reason, n in sorted(self.fallbacks.items()) if n}
        return ", ".join(f"{reason} {n:.0f}" for reason, n in happened.items()) or "none"


def read_counters(server: Server) -> Reads:
    with urllib.request.urlopen(
        f"{server.base_url}/metrics", timeout=bench.HTTP_TIMEOUT_SECONDS
    ) as answer:
        return Reads.parse(answer.read().decode())


def reads_during_gets(server: Server, count: int, token: str | None = None) -> Reads:
    """What `count` GETs of one post (sending `token`, if given) did to the counters."""
    headers = {} if token is None else {TOKEN_HEADER: token}
    before = read_counters(server)
    for _ in range(count):
        bench.request_json(server.base_url + PROBE_PATH, headers=headers)
    return read_counters(server) - before


def write_token(server: Server) -> str:
    """The Consistency-Token of one write (a new user) through `server`."""
    email = f"bench-{uuid.uuid4().hex}@example.com"
    headers, _ = bench.request_json(
        server.base_url + "/users", "POST", {"email": email, "name": "replica bench"}
    )
    token = headers.get(TOKEN_HEADER)
    if not token:
        raise BenchError(f"a write on {server.name} answered no {TOKEN_HEADER} header")
    return str(token)


def wait_replica_in_use(server: Server) -> None:
    """Wait until the service's replica monitor finds every server ok (it checks every 0.2 s)."""
    deadline = time.monotonic() + REPLICA_READY_TIMEOUT_SECONDS
    while True:
        servers = bench.request_json(f"{server.base_url}/health/ready")[1]["servers"]
        if len(servers) < 2:
            raise BenchError(f"{server.name} has no replica: /health/ready lists {servers}")
        if all(s["state"] == "ok" for s in servers):
            return
        if time.monotonic() > deadline:
            raise BenchError(f"{server.name}: the replica is not in use: /health/ready {servers}")
        time.sleep(0.05)


def verify_routing(services: dict[str, Server], standby: clusters.Server, token: str) -> list[str]:
    """Prove from the services' own counters that each configuration does what it claims:
    primary-only GETs on the primary, replica GETs on the replica, GETs with the replayed
    `token` on the replica after a check that can say no (a token the paused standby lacks
    sends the read to the primary, as `behind_token`). BenchError when one does not; else
    one line per finding, for the report."""
    primary, replica = services["primary"], services["replica"]
    # Without replicas the service counts no reads by server (there is only one): the
    # primary-only configuration shows itself in /health/ready, and no read on a replica.
    found = reads_during_gets(primary, PROBE_READS)
    servers = bench.request_json(f"{primary.base_url}/health/ready")[1]["servers"]
    if len(servers) != 1 or found.replica:
        raise BenchError(
            f"{primary.name}: {PROBE_READS} GETs should all run on the primary; /health/ready "
            f"lists {servers}, and a replica served {found.replica:.0f}"
        )
    lines = [f"primary only: no replica configured; none of {PROBE_READS} GETs on a replica"]
    wait_replica_in_use(replica)
    for label, sent in (("replica", None), ("replica + token (replayed)", token)):
        found = reads_during_gets(replica, PROBE_READS, sent)
        if found.replica != PROBE_READS or found.primary:
            raise BenchError(
                f"{replica.name} ({label}): {PROBE_READS} GETs should all run on the replica; "
                f"served by the replica {found.replica:.0f}, by the primary "
                f"{found.primary:.0f}; fallbacks: {found.fallback_text()}"
            )
        lines.append(f"{label}: {found.replica:.0f} of {PROBE_READS} GETs served by the replica")
    standby.pause_replay()
    try:
        unseen = write_token(replica)
        found = reads_during_gets(replica, 1, unseen)
    finally:
        standby.resume_replay()
    if found.fallbacks.get("behind_token") != 1 or found.primary != 1:
        raise BenchError(
            f"{replica.name}: a GET with the token of a write the paused replica has not "
            "replayed should run the check and fall back to the primary (behind_token); "
            f"served by the primary {found.primary:.0f}, by the replica {found.replica:.0f}; "
            f"fallbacks: {found.fallback_text()}"
        )
    lines.append(
        "the check runs: a token the paused replica lacks was answered by the primary "
        "(behind_token)"
    )
    standby.wait_replayed()
    wait_replica_in_use(replica)
    return lines


class ReplicatedDatabase(NamedTuple):
    """The bench's database on a primary, and its standby; `root` holds both servers."""

    primary: clusters.Server
    standby: clusters.Server
    primary_url: str
    standby_url: str
    root: Path


@contextmanager
def replicated_database(scale: float) -> Iterator[ReplicatedDatabase]:
    """A primary with the bench's database, migrated and seeded at `scale`, and a standby
    copied from it once seeded and streaming; both stopped and their folder removed on
    exit."""
    with clusters.temporary_clusters() as owner:
        # fsync as in production (tests/clusters.py turns it off for its crash tests).
        primary = owner.primary(fsync=True)
        primary.sql(f"CREATE DATABASE {DATABASE}")
        primary_url = primary.url(DATABASE)
        migrations.apply(primary_url)
        bench.seed_database(primary_url, scale)
        standby = owner.standby(primary)
        standby.wait_replayed()
        yield ReplicatedDatabase(primary, standby, primary_url, standby.url(DATABASE), owner.root)


def start_services(
    stack: ExitStack, ports: Mapping[str, int], database: ReplicatedDatabase
) -> dict[str, Server]:
    """The primary-only and the replica service, each until `stack` closes; their output
    goes to loadtests/reports/bench-primary-only.log and bench-replica-reads.log."""
    services = {}
    for name, label, read_url in (
        ("primary", "primary-only", None),
        ("replica", "replica-reads", database.standby_url),
    ):
        data_dir = database.root / f"service-{name}"
        data_dir.mkdir()
        environment = bench.server_environment(
            database.primary_url, data_dir, ports[name], read_url
        )
        services[name] = stack.enter_context(
            bench.running(label, bench.COMMANDS["service"], environment, ports[name])
        )
    return services


def replica_table(
    config: ReplicaConfig,
    summaries: dict[tuple[str, str], Summary],
    routing: dict[tuple[str, str], Reads],
    root: Path,
) -> str:
    """The medians of each configuration and scenario, with their ratios and the share of
    the reads the replica served."""

    def replica_share(scenario: str, configuration: str) -> str:
        reads = routing.get((scenario, configuration))
        return "-" if reads is None else f"{reads.replica_share:.0%}"

    preamble = [
        f"reads on one streaming replica beside the primary alone: median of {config.rounds} "
        f"interleaved rounds of {config.seconds} s per configuration; {config.connections} "
        f"connections, {config.threads} wrk threads; latencies in ms. ONE machine of "
        f"{os.cpu_count()} cores: the primary, the standby, the service and wrk share its CPU, "
        "so the point is the relative cost, not the absolute figures",
        "the service in its default production configuration (one worker, token, logs, "
        f"metrics); both servers in a temporary folder in {root.parent} (tests/clusters.py), "
        "fsync on",
        "primary only: no DATABASE_READ_URL; replica: DATABASE_READ_URL = the standby; "
        "replica + token: the same, every GET sending the Consistency-Token of a write the "
        "replica has replayed (one more statement there). repl = share of the reads the "
        "replica served; r/p = replica / primary only, t/p = replica + token / primary only, "
        "t/r = replica + token / replica (the check's own cost)",
    ]
    return bench.comparison_table(
        preamble,
        config.scenarios,
        LABELS,
        summaries,
        [
            RatioColumn("r/p req/s", "replica", "primary", "rps"),
            RatioColumn("r/p p99", "replica", "primary", "p99"),
            RatioColumn("t/p req/s", "token", "primary", "rps"),
            RatioColumn("t/p p99", "token", "primary", "p99"),
            RatioColumn("t/r req/s", "token", "replica", "rps"),
        ],
        extra=("repl", replica_share),
    )


def fallback_block(config: ReplicaConfig, routing: dict[tuple[str, str], Reads]) -> str:
    """The reads that went to the primary during the replica rounds, and why."""
    lines = []
    for scenario in config.scenarios:
        for configuration in ("replica", "token"):
            reads = routing.get((scenario, configuration))
            if reads is not None and reads.primary:
                lines.append(
                    f"  {scenario:<12} {LABELS[configuration]:<16} {reads.primary:,.0f} of "
                    f"{reads.replica + reads.primary:,.0f} reads on the primary; fallbacks: "
                    f"{reads.fallback_text()}"
                )
    if not lines:
        return "during the rounds every read of the replica configurations ran on the replica"
    return "\n".join(["reads of the replica configurations that ran on the primary:", *lines])


def bench_replica(config: ReplicaConfig) -> int:
    if shutil.which("wrk") is None:
        raise BenchError("wrk is not installed: `make bench-replica` installs it")
    started = datetime.now(UTC)
    rounds: list[Round] = []
    round_reads: list[dict[str, Any]] = []
    routing: dict[tuple[str, str], Reads] = {}
    with ExitStack() as stack:
        database = stack.enter_context(replicated_database(config.scale))
        services = start_services(stack, config.ports, database)
        max_user_id, max_post_id = asyncio.run(bench.data_set_bounds(database.primary_url))
        data = bench.DataSet(max_user_id, max_post_id, deep_cursors=[])
        token = write_token(services["replica"])
        database.standby.wait_replayed()
        verified = verify_routing(services, database.standby, token)
        print("routing verified:\n  " + "\n  ".join(verified), flush=True)
        environments = {
            configuration: data.wrk_environment(token if configuration == "token" else None)
            for configuration in CONFIGURATIONS
        }
        print(
            f"data set: users 1..{max_user_id:,}, posts 1..{max_post_id:,}; "
            f"{config.rounds} rounds x {config.seconds} s x {len(config.scenarios)} scenarios "
            f"x {len(CONFIGURATIONS)} configurations",
            flush=True,
        )
        for configuration in CONFIGURATIONS:
            server = services[SERVICE_OF[configuration]]
            bench.run_wrk(
                server,
                "mixed",
                bench.WARM_UP_SECONDS,
                config.connections,
                config.threads,
                environments[configuration],
            )
        for scenario in config.scenarios:
            for number in range(1, config.rounds + 1):
                for configuration in CONFIGURATIONS:
                    server = services[SERVICE_OF[configuration]]
                    before = read_counters(server)
                    result = bench.run_wrk(
                        server,
                        scenario,
                        config.seconds,
                        config.connections,
                        config.threads,
                        environments[configuration],
                    )
                    reads = read_counters(server) - before
                    rounds.append(Round(scenario, configuration, number, result))
                    key = (scenario, configuration)
                    routing[key] = routing.get(key, Reads()) + reads
                    round_reads.append(
                        {"scenario": scenario, "configuration": configuration, "number": number}
                        | asdict(reads)
                    )
                    bench.print_round(rounds[-1])
        root = database.root

    summaries = bench.summarise(rounds, "closed")
    text = "\n".join(
        [
            replica_table(config, summaries, routing, root),
            "",
            fallback_block(config, routing),
            "",
            "routing verified before the rounds (the services' own counters):",
            *(f"  {line}" for line in verified),
        ]
    )
    raw = {
        "config": asdict(config),
        "data_set": {"max_user_id": max_user_id, "max_post_id": max_post_id},
        "routing_verified": verified,
        "reads": round_reads,
    }
    bench.report_results("bench-replica", started, raw, rounds, text)
    return 0


def main() -> int:
    return bench.run_main(ReplicaConfig.from_env, bench_replica)


if __name__ == "__main__":
    sys.exit(main())
