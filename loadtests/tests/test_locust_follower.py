"""The Locust follower of the change feed (`FeedFollower` in loadtests/locustfile.py), run
headless as `make loadtest` runs Locust, against a real service on the suite's PostgreSQL:
the delay of every write's delivery is an entry of the stats and the CSV, the gate fails a
slow delivery, and a write whose event never arrives is a failure."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

from loadtests import bench, feed_bench
from loadtests.bench import Server

ROOT = Path(__file__).resolve().parents[2]
LOCUST = Path(sys.executable).parent / "locust"
WRITERS_AND_FOLLOWER = ("CreatePost", "PatchPost", "FeedFollower")
DELIVERED = "write answered -> event delivered"
NEVER_DELIVERED = "event never delivered"


def run_locust(
    service: Server, tmp_path: Path, seconds: int, **environment: str
) -> tuple[int, str, dict[tuple[str, str], dict[str, str]]]:
    """Locust headless against `service` with 4 users (one follower): exit code, output,
    and the CSV's rows by (type, name)."""
    prefix = tmp_path / "locust"
    completed = subprocess.run(
        [
            str(LOCUST),
            "-f",
            "loadtests/locustfile.py",
            "--headless",
            "--only-summary",
            "--host",
            service.base_url,
            "--users",
            "4",
            "--spawn-rate",
            "4",
            "--run-time",
            f"{seconds}s",
            "--stop-timeout",
            "2",
            "--csv",
            str(prefix),
            *WRITERS_AND_FOLLOWER,
        ],
        cwd=ROOT,
        env=os.environ
        | {"LOADTEST_TOKEN": bench.BENCH_TOKEN, "LOADTEST_P95_MS": "10000"}
        | environment,
        capture_output=True,
        text=True,
        timeout=seconds + 90,
        check=False,
    )
    with Path(f"{prefix}_stats.csv").open() as stats:
        rows = {(row["Type"], row["Name"]): row for row in csv.DictReader(stats)}
    return completed.returncode, completed.stdout + completed.stderr, rows


def test_every_writes_delivery_is_reported_and_gated(feed_service: Server, tmp_path: Path) -> None:
    code, output, rows = run_locust(feed_service, tmp_path, 5, LOADTEST_FEED_P99_MS="5000")
    assert code == 0, output
    delivered = rows[("FEED", DELIVERED)]
    writes = sum(
        int(rows[key]["Request Count"]) for key in (("POST", "/posts"), ("PATCH", "/posts/{id}"))
    )
    # Every write answered while the follower ran, less those still on their way at the end.
    assert 0.8 * writes <= int(delivered["Request Count"]) <= writes, (delivered, writes)
    assert delivered["Failure Count"] == "0"
    assert float(delivered["99%"]) <= 5000
    assert ("FEED", NEVER_DELIVERED) not in rows
    assert int(rows[("GET", "/events (long poll)")]["Request Count"]) > 0
    assert "PASS" in output


def test_the_gate_fails_a_delivery_over_its_goal(feed_service: Server, tmp_path: Path) -> None:
    code, output, rows = run_locust(feed_service, tmp_path, 3, LOADTEST_FEED_P99_MS="0.001")
    assert code == 1, output
    assert int(rows[("FEED", DELIVERED)]["Request Count"]) > 0
    assert "feed delivery: p99" in output


def test_a_write_whose_event_never_arrives_fails(
    feed_service: Server, feed_database: str, tmp_path: Path
) -> None:
    with feed_bench.capture_off(feed_database):
        code, output, rows = run_locust(feed_service, tmp_path, 4, LOADTEST_FEED_UNDELIVERED_S="1")
    assert code == 1, output
    assert ("FEED", DELIVERED) not in rows
    assert ("FEED", NEVER_DELIVERED) in rows, output
    never = rows[("FEED", NEVER_DELIVERED)]
    assert int(never["Failure Count"]) == int(never["Request Count"]) > 0
    assert "event never delivered" in output
