"""The service as `make run` starts it: a real uvicorn process on the embedded PostgreSQL.

Data acknowledged before a restart is there after it, and SIGTERM stops the service and
then its PostgreSQL.
"""

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


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@contextmanager
def running_service(data_dir: Path) -> Iterator[httpx.Client]:
    port = _free_port()
    environment = {
        key: value for key, value in os.environ.items() if key not in {"DATABASE_URL"}
    } | {"DATA_DIR": str(data_dir), "PORT": str(port), "LOG_LEVEL": "WARNING"}
    process = subprocess.Popen([sys.executable, "-m", "service", "serve"], env=environment)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            deadline = time.monotonic() + 60
            while True:
                assert process.poll() is None, "the service exited while starting"
                try:
                    if client.get("/health/ready").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline, "the service did not become ready"
                time.sleep(0.2)
            yield client
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_data_survives_a_restart_and_sigterm_stops_postgres_too(data_dir):
    with running_service(data_dir) as client:
        user = client.post("/users", json={"email": "durable@example.com", "name": "Durable"})
        assert user.status_code == 201
        post = client.post(
            "/posts", json={"author_id": user.json()["id"], "title": "Kept", "body": "safe"}
        )
        assert post.status_code == 201
    assert not (data_dir / "postgres" / "postmaster.pid").exists(), "PostgreSQL kept running"

    with running_service(data_dir) as client:
        assert client.get(user.headers["location"]).json() == user.json()
        assert client.get(post.headers["location"]).json() == post.json()
        assert client.get("/health/ready").json() == {"status": "ready"}
    assert not (data_dir / "postgres" / "postmaster.pid").exists()
