"""Failover as production does it: the service (real processes) in front of a Patroni cluster
of the test's own (tests/patroni.py), real faults under a steady load of checkable writes
(tests/workload.py), and every history checked afterwards (tests/history.py).

Two topologies: the service's DATABASE_URL naming HAProxy (which routes by Patroni's
`GET /primary`), or naming the three nodes in one multi-host URL with
`target_session_attrs=read-write`. Faults: the leader's PostgreSQL killed (SIGKILL of its
postmaster), `patronictl switchover`, the leader's Patroni killed (its PostgreSQL left an
orphan), and a restart of one of two service instances in the middle of a failover.

Run by `make chaos` (CHAOS=full: every fault in both topologies, TRIALS trials each) and
`make chaos-ci` (CHAOS=ci: one kill and one switchover through HAProxy); skipped otherwise,
so `make test` does not run them. Each trial prints one line: fault, topology, time from the
fault to the first acknowledged write after the last failed one, requests failed, and the
checker's verdict.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import httpx
import pytest

from service.database import migrations
from tests.history import History, Row, availability, check, check_feed
from tests.patroni import PatroniCluster, running_patroni_cluster
from tests.server import free_port
from tests.workload import FeedFollower, Workload

MODE = os.environ.get("CHAOS", "")
pytestmark = pytest.mark.skipif(
    MODE not in {"ci", "full"}, reason="failover under load: `make chaos` or `make chaos-ci`"
)
TRIALS = int(os.environ.get("CHAOS_TRIALS", "3")) if MODE == "full" else 1
FULL_ONLY = pytest.mark.skipif(MODE != "full", reason="`make chaos` only (CHAOS=full)")
TOPOLOGIES = ["haproxy", pytest.param("multi-host", marks=FULL_ONLY)]

# The leader key lives `ttl` (20 s): a fault Patroni learns of only by its expiry needs that.
ORPHAN_SECONDS = 45
RESULTS = Path(os.environ.get("CHAOS_RESULTS", tempfile.gettempdir())) / "posts-chaos.txt"


class Instance:
    """One service process on a fixed port, so that it can be restarted in place."""

    def __init__(self, folder: Path, environment: dict[str, str]) -> None:
        self.folder = folder
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.environment = environment
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        inherited = {key: value for key, value in os.environ.items() if key != "DATABASE_URL"}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "service", "serve"],
            env=inherited
            | {"DATA_DIR": str(self.folder), "PORT": str(self.port)}
            | self.environment,
        )

    def wait_ready(self, seconds: float = 60) -> None:
        deadline = time.monotonic() + seconds
        while True:
            assert self.process is not None
            assert self.process.poll() is None, "the service exited while starting"
            try:
                if httpx.get(f"{self.base_url}/health/live", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the service did not start"
            time.sleep(0.1)

    def kill(self) -> None:
        """SIGKILL the service and its worker processes, as a crash or an OOM kill would."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()


@contextmanager
def service_instances(database_url: str, count: int = 1) -> Iterator[list[Instance]]:
    environment = {
        "DATABASE_URL": database_url,
        "AUTH_DISABLED": "1",
        "CURSOR_SECRET": "chaos-test-cursor-secret",
        "LOG_LEVEL": "ERROR",
        "DB_POOL_MIN": "1",
        "DB_POOL_MAX": "8",
        "DB_ACQUIRE_TIMEOUT": "1",
        "DB_STATEMENT_TIMEOUT_MS": "2000",
    }
    with ExitStack() as stack:
        instances = []
        for _ in range(count):
            folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="posts-chaos-")))
            instance = Instance(folder, environment)
            stack.callback(instance.kill)
            instance.start()
            instances.append(instance)
        for instance in instances:
            instance.wait_ready()
        yield instances


@pytest.fixture(scope="module")
def cluster() -> Iterator[PatroniCluster]:
    with running_patroni_cluster() as cluster:
        migrations.apply(cluster.haproxy.url())
        yield cluster


def _url(cluster: PatroniCluster, topology: str) -> str:
    return cluster.haproxy.url() if topology == "haproxy" else cluster.multi_host_url()


def _seed(base_url: str, history: History) -> tuple[int, list[int]]:
    """An author and three posts for the updaters, made before the load."""
    with httpx.Client(base_url=base_url, timeout=10) as http:
        author = http.post("/users", json={"email": f"chaos-{time.time_ns()}@x.y", "name": "C"})
        assert author.status_code == 201, author.text
        posts = []
        for number in range(3):
            body = {"author_id": author.json()["id"], "title": f"seed {number}", "body": ""}
            post = http.post("/posts", json=body)
            assert post.status_code == 201, post.text
            posts.append(post.json()["id"])
            history.initial[post.json()["id"]] = 1
        return author.json()["id"], posts


def _final(cluster: PatroniCluster, author_id: int) -> tuple[dict[int, Row], Counter[str]]:
    rows = cluster.sql("SELECT id, version, title FROM posts WHERE author_id = $1", author_id)
    return {row["id"]: Row(row["version"], row["title"]) for row in rows}, Counter(
        row["title"] for row in rows
    )


async def _trial(
    cluster: PatroniCluster,
    instances: list[Instance],
    fault: Callable[[], None],
    *,
    name: str,
    topology: str,
    wait_at_least: float = 4.0,
    give_up_after: float = 40.0,
    during: Callable[[], None] | None = None,
    heal: Callable[[], None] | None = None,
) -> None:
    """Load, `fault` (then `during`, in the middle of the failover), wait until writes are
    back (or `give_up_after`), stop the load, `heal`, let the cluster settle, check."""
    history = History()
    author_id, posts = await asyncio.to_thread(_seed, instances[0].base_url, history)
    workload = Workload(history, [instance.base_url for instance in instances], author_id, posts)
    follower = FeedFollower(workload.base_urls, author_id, workload.violations)
    load_done = asyncio.Event()
    following = asyncio.create_task(follower.follow(load_done))
    load = asyncio.create_task(workload.run())
    await asyncio.sleep(2.0)
    before = sum(op.outcome == "ok" for op in history.ops)
    history.mark("fault")
    await asyncio.to_thread(fault)
    if during is not None:
        await asyncio.sleep(0.5)
        await asyncio.to_thread(during)
    deadline = history.marks["fault"] + give_up_after
    while time.monotonic() < deadline:
        await asyncio.sleep(0.25)
        quiet = time.monotonic() - max(workload.failed_at, default=0.0)
        if (
            time.monotonic() - history.marks["fault"] >= wait_at_least
            and quiet > 2.0
            and availability(history, workload.failed_at).back_after is not None
        ):
            break
    back = availability(history, workload.failed_at)
    workload.finish()
    if heal is not None:
        await asyncio.to_thread(heal)
    await asyncio.wait_for(load, 60)
    load_done.set()
    await asyncio.wait_for(following, 60)
    await asyncio.to_thread(cluster.wait_healthy)
    final, titles = await asyncio.to_thread(_final, cluster, author_id)
    verdict = check(history, final, titles)
    verdict.problems += check_feed(history, follower.events)
    back_text = "never" if back.back_after is None else f"{back.back_after:.1f} s"
    line = (
        f"{name} | {topology} | writes back after {back_text} | {back.failed} requests failed | "
        f"{'valid' if verdict.valid else 'INVALID'} | {len(history.ops)} writes, "
        f"{dict(verdict.outcomes)}, {len(follower.events)} feed events"
    )
    print(f"\n{line}\n{verdict.report()}")
    with RESULTS.open("a") as results:
        results.write(line + "\n")
    assert before > 0, "no write was acknowledged before the fault"
    assert workload.violations == [], workload.violations[:10]
    assert verdict.valid, verdict.report()
    assert back.back_after is not None, f"writes did not come back within {give_up_after} s"


def _kill_leaders_postgres(cluster: PatroniCluster) -> None:
    leader = cluster.wait_healthy()
    leader.kill_postgres()


@pytest.mark.parametrize("topology", TOPOLOGIES)
@pytest.mark.parametrize("trial", range(TRIALS))
async def test_the_leaders_postgres_killed(cluster, topology, trial):
    with service_instances(_url(cluster, topology)) as instances:
        await _trial(
            cluster,
            instances,
            lambda: _kill_leaders_postgres(cluster),
            name="leader's PostgreSQL killed",
            topology=topology,
        )


@pytest.mark.parametrize("topology", TOPOLOGIES)
@pytest.mark.parametrize("trial", range(TRIALS))
async def test_a_switchover(cluster, topology, trial):
    await asyncio.to_thread(cluster.wait_healthy)
    with service_instances(_url(cluster, topology)) as instances:
        await _trial(cluster, instances, cluster.switchover, name="switchover", topology=topology)


@FULL_ONLY
@pytest.mark.parametrize("topology", ["haproxy", "multi-host"])
@pytest.mark.parametrize("trial", range(TRIALS))
async def test_a_service_instance_restarted_in_the_middle_of_a_failover(cluster, topology, trial):
    with service_instances(_url(cluster, topology), count=2) as instances:

        def restart() -> None:
            instances[0].kill()
            instances[0].start()

        await _trial(
            cluster,
            instances,
            lambda: _kill_leaders_postgres(cluster),
            during=restart,
            name="leader's PostgreSQL killed, one of 2 instances restarted",
            topology=topology,
        )


@FULL_ONLY
@pytest.mark.parametrize("topology", ["haproxy", "multi-host"])
@pytest.mark.parametrize("trial", range(TRIALS))
async def test_the_leaders_patroni_killed(cluster, topology, trial):
    leader = await asyncio.to_thread(cluster.wait_healthy)
    with service_instances(_url(cluster, topology)) as instances:
        await _trial(
            cluster,
            instances,
            leader.kill_patroni,
            # Patroni restarted on the orphan's node, as a person would: it rejoins.
            heal=leader.start,
            wait_at_least=ORPHAN_SECONDS - 15,
            give_up_after=ORPHAN_SECONDS,
            name="leader's Patroni killed (orphan)",
            topology=topology,
        )
