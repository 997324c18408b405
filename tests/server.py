"""The service as a real process (`python -m service serve`), for tests of its lifecycle."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class ServiceProcess:
    def __init__(self, process: subprocess.Popen[bytes], base_url: str) -> None:
        self.process = process
        self.base_url = base_url

    def client(self, **options: object) -> httpx.Client:
        return httpx.Client(base_url=self.base_url, timeout=10, **options)  # type: ignore[arg-type]

    def wait_ready(self, seconds: float = 60) -> None:
        deadline = time.monotonic() + seconds
        with self.client() as client:
            while True:
                assert self.process.poll() is None, "the service exited while starting"
                try:
                    if client.get("/health/ready").status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline, "the service did not become ready"
                time.sleep(0.2)

    def terminate(self, timeout: float = 30) -> int:
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=timeout)


@contextmanager
def running_service(data_dir: Path, **environment: str) -> Iterator[ServiceProcess]:
    """The service on the embedded PostgreSQL in `data_dir` (or on DATABASE_URL, when the
    environment names one), ready; stopped if left running: SIGTERM first, so that uvicorn
    stops its worker processes too, then SIGKILL."""
    port = free_port()
    inherited = {key: value for key, value in os.environ.items() if key != "DATABASE_URL"}
    process = subprocess.Popen(
        [sys.executable, "-m", "service", "serve"],
        env=inherited
        | {"DATA_DIR": str(data_dir), "PORT": str(port), "LOG_LEVEL": "WARNING"}
        | environment,
    )
    service = ServiceProcess(process, f"http://127.0.0.1:{port}")
    try:
        service.wait_ready()
        yield service
    finally:
        if process.poll() is None:
            try:
                service.terminate()
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
