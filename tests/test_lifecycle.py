"""The service as `make run` starts it: a real uvicorn process on the embedded PostgreSQL.

Data acknowledged before a restart is there after it; SIGTERM lets in-flight requests
finish, then stops the service and its PostgreSQL; several workers report one set of
metrics.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time

import httpx

from tests.server import running_service


def test_data_survives_a_restart_and_sigterm_stops_postgres_too(data_dir):
    with running_service(data_dir) as service, service.client() as client:
        user = client.post("/users", json={"email": "durable@example.com", "name": "Durable"})
        assert user.status_code == 201
        post = client.post(
            "/posts", json={"author_id": user.json()["id"], "title": "Kept", "body": "safe"}
        )
        assert post.status_code == 201
        assert service.terminate() == 0
    assert not (data_dir / "postgres" / "postmaster.pid").exists(), "PostgreSQL kept running"

    with running_service(data_dir) as service, service.client() as client:
        assert client.get(user.headers["location"]).json() == user.json()
        assert client.get(post.headers["location"]).json() == post.json()
        assert service.terminate() == 0
    assert not (data_dir / "postgres" / "postmaster.pid").exists()


def test_sigterm_during_a_burst_of_writes_loses_no_acknowledged_write(data_dir):
    acknowledged: list[dict] = []
    cut_off: list[str] = []
    stop = threading.Event()

    with running_service(data_dir) as service:
        with service.client() as client:
            author = client.post("/users", json={"email": "burst@example.com", "name": "B"})
        author_id = author.json()["id"]

        def writer(number: int) -> None:
            # A new connection per request: a keep-alive connection closed by the server
            # between two requests is not a request cut off.
            with service.client(limits=httpx.Limits(max_keepalive_connections=0)) as client:
                for sequence in range(10_000):
                    if stop.is_set():
                        return
                    answered = False
                    body = {"author_id": author_id, "title": f"{number}-{sequence}", "body": "x"}
                    try:
                        with client.stream("POST", "/posts", json=body) as response:
                            answered = True  # the status line and headers arrived
                            response.read()
                    except httpx.TransportError as error:
                        if answered:
                            cut_off.append(repr(error))
                        # Otherwise the server had stopped accepting: refused, never run.
                        return
                    assert response.status_code == 201, response.text
                    acknowledged.append(response.json())

        writers = [threading.Thread(target=writer, args=(number,)) for number in range(8)]
        for thread in writers:
            thread.start()
        time.sleep(1.0)
        assert service.terminate() == 0
        stop.set()
        for thread in writers:
            thread.join(timeout=30)

    assert acknowledged, "no write went through before SIGTERM"
    assert cut_off == [], "a request was cut off mid-answer"

    with running_service(data_dir) as service, service.client() as client:
        stored = set()
        cursor = None
        while True:
            page = client.get(
                f"/users/{author_id}/posts",
                params={"limit": 200} | ({"cursor": cursor} if cursor else {}),
            ).json()
            stored |= {item["id"] for item in page["items"]}
            if (cursor := page["next_cursor"]) is None:
                break
        assert {post["id"] for post in acknowledged} <= stored
        assert service.terminate() == 0


def test_metrics_cover_every_worker(data_dir):
    with running_service(data_dir, WORKERS="2") as service:
        for _ in range(40):
            # New connections, so that both workers answer some of them.
            with service.client() as client:
                assert client.get("/users/9223372036854775807").status_code == 404
        pattern = re.compile(
            r'service_requests_total\{[^}]*path="/users/\{user_id\}",status_code="404"\} (\S+)'
        )
        for _ in range(4):
            with service.client() as client:
                text = client.get("/metrics").text
            match = pattern.search(text)
            assert match, text
            assert float(match.group(1)) == 40.0
            assert re.search(r'^service_db_pool_size\{server="primary"\} [1-9]', text, re.MULTILINE)
        assert service.terminate() == 0


def test_a_second_command_borrows_the_running_postgres_and_leaves_it_running(data_dir):
    with running_service(data_dir) as service, service.client() as client:
        listed = subprocess.run(
            [sys.executable, "-m", "service", "migrate", "--list"],
            env=os.environ | {"DATA_DIR": str(data_dir), "LOG_LEVEL": "WARNING"},
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        assert "applied  0001.create-users" in listed.stdout
        assert client.get("/health/ready").status_code == 200  # its database is still up
        assert service.terminate() == 0
    assert not (data_dir / "postgres" / "postmaster.pid").exists()


def test_postgres_left_by_a_killed_service_is_adopted_and_stopped_by_the_next(data_dir):
    with running_service(data_dir) as service:
        service.process.send_signal(signal.SIGKILL)
        service.process.wait(timeout=30)
    assert (data_dir / "postgres" / "postmaster.pid").exists()  # orphaned, still running

    with running_service(data_dir) as service:
        assert service.terminate() == 0
    assert not (data_dir / "postgres" / "postmaster.pid").exists()
