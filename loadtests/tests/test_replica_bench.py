"""`make bench-replica`: its routing check on a real primary, standby and services, the
service's counters as it reads them, and its table."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest
from prometheus_client import REGISTRY, generate_latest

from loadtests import replica_bench
from loadtests.bench import BenchError, Server, Summary
from loadtests.replica_bench import Reads, ReplicaConfig, ReplicatedDatabase
from service.base.metrics import READ_FALLBACKS, READS
from service.base.settings import SettingsError
from tests.server import free_port

TINY_SCALE = 0.001  # 10 users, 200 posts: enough to read, quick to seed and copy


@pytest.fixture(scope="module")
def database() -> Iterator[ReplicatedDatabase]:
    with replica_bench.replicated_database(TINY_SCALE) as replicated:
        yield replicated


@pytest.fixture(scope="module")
def services(database: ReplicatedDatabase) -> Iterator[dict[str, Server]]:
    with ExitStack() as stack:
        ports = {"primary": free_port(), "replica": free_port()}
        yield replica_bench.start_services(stack, ports, database)


def test_the_routing_check_passes_on_a_primary_only_and_a_replica_service(
    database: ReplicatedDatabase, services: dict[str, Server]
) -> None:
    token = replica_bench.write_token(services["replica"])
    database.standby.wait_replayed()
    lines = replica_bench.verify_routing(services, database.standby, token)
    assert lines == [
        "primary only: no replica configured; none of 20 GETs on a replica",
        "replica: 20 of 20 GETs served by the replica",
        "replica + token (replayed): 20 of 20 GETs served by the replica",
        "the check runs: a token the paused replica lacks was answered by the primary "
        "(behind_token)",
    ]
    # The replica is back in use afterwards: replay resumed and caught up.
    found = replica_bench.reads_during_gets(services["replica"], 3, token)
    assert (found.replica, found.primary) == (3, 0)


def test_the_routing_check_fails_when_a_service_reads_elsewhere(
    database: ReplicatedDatabase, services: dict[str, Server]
) -> None:
    token = replica_bench.write_token(services["replica"])
    database.standby.wait_replayed()
    # A "replica" service that has no replica: its GETs go to the primary.
    no_replica = {"primary": services["primary"], "replica": services["primary"]}
    with pytest.raises(BenchError, match="has no replica"):
        replica_bench.verify_routing(no_replica, database.standby, token)
    # A "primary-only" service that reads on the replica.
    reads_replica = {"primary": services["replica"], "replica": services["replica"]}
    with pytest.raises(BenchError, match="should all run on the primary"):
        replica_bench.verify_routing(reads_replica, database.standby, token)


def test_the_counters_are_read_from_the_services_own_metrics_text() -> None:
    before = Reads.parse(generate_latest(REGISTRY).decode())
    READS.labels("replica").inc(3)
    READS.labels("primary").inc()
    READ_FALLBACKS.labels("behind_token").inc()
    change = Reads.parse(generate_latest(REGISTRY).decode()) - before
    assert (change.replica, change.primary) == (3, 1)
    assert change.fallbacks["behind_token"] == 1
    assert change.replica_share == 0.75
    assert change.fallback_text() == "behind_token 1"
    assert (change + change).replica == 6
    assert Reads().fallback_text() == "none"


def summary(rps: float, p99: float) -> Summary:
    return Summary(rps=rps, p50=1.0, p95=2.0, p99=p99, errors=0)


def test_the_table_gives_each_configuration_its_ratios_and_the_replicas_share() -> None:
    config = ReplicaConfig.from_env({"BENCH_SCENARIOS": "user_posts,get_post"})
    summaries = {
        ("get_post", "primary"): summary(1000, 10.0),
        ("get_post", "replica"): summary(900, 12.0),
        ("get_post", "token"): summary(600, 20.0),
        ("user_posts", "primary"): summary(500, 10.0),
    }
    routing = {
        ("get_post", "primary"): Reads(replica=0, primary=10),
        ("get_post", "replica"): Reads(replica=10, primary=0),
        ("get_post", "token"): Reads(replica=5, primary=5, fallbacks={"busy": 5}),
    }
    table = replica_bench.replica_table(config, summaries, routing, Path("/dev/shm/x"))
    rows = {line.split()[0]: line for line in table.splitlines() if "|" in line}
    get_post = rows["get_post"].split("|")
    assert get_post[1].split()[-1] == "0%"
    assert get_post[2].split()[-1] == "100%"
    assert get_post[3].split()[-1] == "50%"
    # r/p req/s, r/p p99, t/p req/s, t/p p99, t/r req/s
    assert get_post[4].split() == ["0.90x", "1.20x", "0.60x", "2.00x", "0.67x"]
    assert rows["user_posts"].split("|")[4].split() == ["-"] * 5  # only primary ran
    assert f"ONE machine of {os.cpu_count()} cores: the primary, the standby" in table

    block = replica_bench.fallback_block(config, routing)
    assert "get_post     replica + token  5 of 10 reads on the primary; fallbacks: busy 5" in block
    assert "on the replica" in replica_bench.fallback_block(config, {})


def test_knobs() -> None:
    config = ReplicaConfig.from_env({})
    assert config.scenarios == replica_bench.SCENARIOS
    assert config.ports == {"primary": 8101, "replica": 8104}
    assert ReplicaConfig.from_env({"BENCH_SCENARIOS": "mixed,get_post"}).scenarios == (
        "get_post",
        "mixed",
    )
    for bad in ({"BENCH_SCENARIOS": "create_post"}, {"BENCH_ROUNDS": "1"}):
        with pytest.raises(SettingsError):
            ReplicaConfig.from_env(bad)
