"""A NATS server with JetStream of the test's own (Debian's `nats-server`): its own port
and store folder, killable (SIGKILL) and restartable on the same port and store, for the
relay's crash tests (tests/test_relay.py) and `make bench-relay`.

Without /usr/sbin/nats-server the tests that need it skip; with REQUIRE_NATS=1 (CI, which
installs it through `make nats-install`) they fail instead.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import pytest

from tests.clusters import temporary_folder
from tests.server import free_port

NATS_SERVER = Path("/usr/sbin/nats-server")


def require_nats() -> None:
    """Skip without nats-server, or fail when REQUIRE_NATS=1."""
    if NATS_SERVER.exists():
        return
    message = f"{NATS_SERVER} is missing (apt-get install -y nats-server)"
    if os.environ.get("REQUIRE_NATS") == "1":
        pytest.fail(f"REQUIRE_NATS=1 but {message}")
    pytest.skip(message)


class NatsServer:
    """One nats-server with JetStream: store under `folder`, log in `folder/nats.log`."""

    def __init__(self, folder: Path, port: int | None = None) -> None:
        self.folder = folder
        self.port = free_port() if port is None else port
        self.store = folder / "store"
        self.log_file = folder / "nats.log"
        self._process: subprocess.Popen[bytes] | None = None

    def __repr__(self) -> str:
        return f"NatsServer(port={self.port})"

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self, timeout: float = 10) -> None:
        if self._listening():
            raise RuntimeError(f"{self}: 127.0.0.1:{self.port} is taken already")
        self.store.mkdir(parents=True, exist_ok=True)
        with self.log_file.open("ab") as log:
            self._process = subprocess.Popen(
                [
                    str(NATS_SERVER),
                    "-js",
                    "-a",
                    "127.0.0.1",
                    "-p",
                    str(self.port),
                    "-sd",
                    str(self.store),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + timeout
        while not self._listening():
            if self._process.poll() is not None:
                raise RuntimeError(f"{self} exited while starting:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                self.kill()
                raise TimeoutError(f"{self} did not listen within {timeout} s")
            time.sleep(0.02)

    def _listening(self) -> bool:
        with socket.socket() as probe:
            probe.settimeout(1)
            return probe.connect_ex(("127.0.0.1", self.port)) == 0

    def kill(self) -> None:
        """SIGKILL: what it had not written is lost, as in a crash."""
        if self._process is not None and self._process.poll() is None:
            self._process.send_signal(signal.SIGKILL)
            self._process.wait(timeout=10)
        self._process = None

    def stop(self, timeout: float = 10) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.send_signal(signal.SIGTERM)
            try:
                self._process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        self._process = None

    def log_tail(self, lines: int = 20) -> str:
        with suppress(OSError):
            return "\n".join(self.log_file.read_text().splitlines()[-lines:])
        return "(no log)"


@contextmanager
def running_nats() -> Iterator[NatsServer]:
    """A started NatsServer in a temporary folder; stopped and removed on exit."""
    require_nats()
    with temporary_folder("posts-nats-") as folder:
        server = NatsServer(folder)
        try:
            server.start()
            yield server
        finally:
            server.stop()
