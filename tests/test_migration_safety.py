"""Migrations that cannot stall the service (issue 17), on a real PostgreSQL.

A step that needs ACCESS EXCLUSIVE on `posts` while a transaction holds a lock on it gives
up after its retries, names itself and the blocking session, and the CLI exits non-zero,
while the real app keeps answering on posts; released, the same command applies it. A
migrate run killed with SIGKILL leaves a lock the next run removes by itself. A concurrent
index build that failed leaves an INVALID index the retry drops and builds again.
Scratch steps live in a temporary copy of `migrations/` (the folder is a parameter).
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import signal
import sys
import time
from pathlib import Path

import pytest

from service.base.settings import Settings
from service.database import migrations
from tests.helpers import app_client, connect, unique_email

LOCK_TIMEOUT_MS = 300


def scratch_folder(tmp_path: Path, name: str, sql: str, rollback: str, header: str = "") -> Path:
    """A copy of the shipped migrations plus one scratch step after the newest."""
    folder = tmp_path / "migrations"
    shutil.copytree(migrations.MIGRATIONS_DIR, folder)
    newest = max(migrations.migration_ids())
    (folder / f"{name}.sql").write_text(f"{header}-- depends: {newest}\n{sql}\n")
    (folder / f"{name}.rollback.sql").write_text(f"{rollback}\n")
    return folder


def migrate_command(folder: Path) -> list[str]:
    return [sys.executable, "-m", "service", "migrate", "--folder", str(folder)]


def migrate_environment(url: str) -> dict[str, str]:
    return os.environ | {
        "DATABASE_URL": url,
        "MIGRATION_LOCK_TIMEOUT_MS": str(LOCK_TIMEOUT_MS),
        "MIGRATION_RETRIES": "2",
        "MIGRATION_RETRY_BACKOFF_MS": "200",
        "LOG_LEVEL": "WARNING",
    }


async def run_migrate(folder: Path, url: str) -> tuple[int, str, str]:
    """The CLI as a subprocess, awaited without blocking the event loop (the app serves on)."""
    process = await asyncio.create_subprocess_exec(
        *migrate_command(folder),
        env=migrate_environment(url),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=120)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_a_blocked_step_gives_up_names_its_blocker_and_the_service_keeps_serving(
    make_database, tmp_path: Path
):
    url = await make_database()
    migrations.apply(url)
    folder = scratch_folder(
        tmp_path,
        "0999.posts-scratch-column",
        "ALTER TABLE posts ADD COLUMN scratch text;",
        "ALTER TABLE posts DROP COLUMN scratch;",
    )
    settings = Settings(
        database_url=url,
        data_dir=str(tmp_path / "data"),
        auth_disabled=True,
        db_pooler=os.environ.get("TEST_DB_POOLER", "none"),  # type: ignore[arg-type]
    )
    async with app_client(settings) as client:
        author = await client.post("/users", json={"email": unique_email(), "name": "Load"})
        assert author.status_code == 201, author.text
        first = await client.post(
            "/posts", json={"author_id": author.json()["id"], "title": "t", "body": "b"}
        )
        assert first.status_code == 201, first.text
        latencies: list[float] = []
        failures: list[str] = []
        stop = asyncio.Event()

        async def load() -> None:
            """Reads and writes on posts, one after the other, timing each."""
            number = 0
            while not stop.is_set():
                number += 1
                started = time.perf_counter()
                if number % 3 == 0:
                    response = await client.post(
                        "/posts",
                        json={"author_id": author.json()["id"], "title": f"{number}", "body": "b"},
                    )
                    expected = 201
                elif number % 3 == 1:
                    response = await client.get(f"/posts/{first.json()['id']}")
                    expected = 200
                else:
                    response = await client.get("/posts", params={"limit": 5})
                    expected = 200
                latencies.append(time.perf_counter() - started)
                if response.status_code != expected:
                    failures.append(f"{response.status_code} {response.text[:200]}")
                await asyncio.sleep(0.005)

        # The usual latency: the same load with no migration running.
        loader = asyncio.create_task(load())
        await asyncio.sleep(1.5)
        stop.set()
        await loader
        usual_worst = max(latencies)
        latencies.clear()
        stop.clear()

        holder = await connect(url)
        try:
            await holder.execute("SET application_name = 'nightly-report'")
            holder_pid = await holder.fetchval("SELECT pg_backend_pid()")
            await holder.execute("BEGIN")
            await holder.fetchval("SELECT count(*) FROM posts")  # ACCESS SHARE, kept

            loader = asyncio.create_task(load())
            code, out, err = await run_migrate(folder, url)
            stop.set()
            await loader
        finally:
            await holder.execute("ROLLBACK")
            await holder.close()

        assert code == 1, (out, err)
        assert "0999.posts-scratch-column gave up after 3 attempts" in err, err
        assert f"pid {holder_pid} (application_name 'nightly-report'" in err, err
        assert "state idle in transaction" in err, err
        assert "query: SELECT count(*) FROM posts" in err, err
        assert "Traceback" not in err
        assert failures == []
        worst = max(latencies)
        print(
            f"requests {len(latencies)}, usual worst {usual_worst * 1000:.0f} ms, "
            f"worst during the blocked step {worst * 1000:.0f} ms"
        )
        # A request queues behind the waiting step for at most its lock timeout.
        assert worst < LOCK_TIMEOUT_MS / 1000 + usual_worst + 0.3
        assert len(latencies) > 50

        code, out, err = await run_migrate(folder, url)
        assert code == 0, err
        assert out.strip() == "applied: 0999.posts-scratch-column"
    db = await connect(url)
    try:
        assert (
            await db.fetchval(
                "SELECT count(*) FROM information_schema.columns"
                " WHERE table_name = 'posts' AND column_name = 'scratch'"
            )
            == 1
        )
    finally:
        await db.close()


async def test_a_run_killed_halfway_does_not_block_the_next(make_database, tmp_path: Path):
    url = await make_database()
    migrations.apply(url)
    folder = scratch_folder(tmp_path, "0999.slow-step", "SELECT pg_sleep(3);", "SELECT 1;")
    killed = await asyncio.create_subprocess_exec(
        *migrate_command(folder), env=migrate_environment(url)
    )
    db = await connect(url)
    try:
        deadline = time.monotonic() + 30
        while not await db.fetchval(
            # This database's only (a killed run of another test may still be sleeping in its
            # own database: its server process finishes the statement first), and never this
            # session, whose own query names pg_sleep too (and, behind PgBouncer, whose server
            # connection may still carry the migrate run's application_name).
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
            " AND pid <> pg_backend_pid() AND application_name LIKE 'posts-service migrate%'"
            " AND query LIKE 'SELECT pg_sleep(3)%'"
        ):
            assert time.monotonic() < deadline, "the slow step never started"
            await asyncio.sleep(0.05)
        assert await db.fetchval("SELECT count(*) FROM yoyo_lock") == 1
        killed.send_signal(signal.SIGKILL)
        assert await asyncio.wait_for(killed.wait(), 10) == -signal.SIGKILL
        assert await db.fetchval("SELECT count(*) FROM yoyo_lock") == 1  # left behind

        started = time.monotonic()
        applied = await asyncio.to_thread(
            migrations.apply, url, migrations.Bounds(lock_wait_s=30), folder
        )
        took = time.monotonic() - started
        assert applied == ["0999.slow-step"]
        # It waited for the heartbeat to fall silent, not for its own 30 s.
        assert took < migrations.LOCK_STALE_AFTER_S + 3 + 5
        assert await db.fetchval("SELECT count(*) FROM yoyo_lock") == 0
    finally:
        if killed.returncode is None:
            killed.kill()
            await killed.wait()
        await db.close()


async def test_a_live_run_keeps_its_lock_and_break_lock_is_the_way_out(
    make_database, tmp_path: Path
):
    url = await make_database()
    migrations.apply(url)
    folder = scratch_folder(tmp_path, "0999.slow-step", "SELECT pg_sleep(14);", "SELECT 1;")
    # A live run holds the lock longer than the stale limit: its heartbeat keeps it.
    running = asyncio.create_task(asyncio.to_thread(migrations.apply, url, folder=folder))
    db = await connect(url)
    try:
        deadline = time.monotonic() + 30
        while not await db.fetchval("SELECT count(*) FROM yoyo_lock"):
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        with pytest.raises(migrations.LockHeld, match="--break-lock"):
            await asyncio.to_thread(
                migrations.apply,
                url,
                migrations.Bounds(lock_wait_s=migrations.LOCK_STALE_AFTER_S + 2),
                folder,
            )
        assert await running == ["0999.slow-step"]

        # A lock row nobody refreshes (yoyo's own CLI, a hand edit): one command removes it.
        await db.execute("INSERT INTO yoyo_lock (locked, ctime, pid) VALUES (1, now(), 42)")
        breaker = await asyncio.create_subprocess_exec(
            *migrate_command(folder),
            "--break-lock",
            env=migrate_environment(url),
            stdout=asyncio.subprocess.PIPE,
        )
        out, _ = await asyncio.wait_for(breaker.communicate(), 60)
        assert breaker.returncode == 0
        assert "removed the migration lock of run 42" in out.decode()
        assert await db.fetchval("SELECT count(*) FROM yoyo_lock") == 0
    finally:
        await db.close()


async def test_a_failed_concurrent_index_build_is_dropped_and_built_again(
    make_database, tmp_path: Path, caplog: pytest.LogCaptureFixture
):
    url = await make_database()
    migrations.apply(url)
    folder = scratch_folder(
        tmp_path,
        "0999.posts-title-index",
        "CREATE INDEX CONCURRENTLY IF NOT EXISTS posts_scratch_title_idx ON posts (title);",
        "DROP INDEX CONCURRENTLY IF EXISTS posts_scratch_title_idx;",
        header="-- transactional: false\n",
    )
    bounds = migrations.Bounds(lock_timeout_ms=LOCK_TIMEOUT_MS, retries=1, backoff_ms=100)
    validity = (
        "SELECT array_agg(indisvalid) FROM pg_index"
        " WHERE indexrelid = to_regclass('posts_scratch_title_idx')"
    )
    writer = await connect(url)
    db = await connect(url)
    try:
        user_id = await db.fetchval(
            "INSERT INTO users (email, name) VALUES ($1, 'w') RETURNING id", unique_email()
        )
        # A write left open: the build waits for it after making its index, then gives up.
        await writer.execute("BEGIN")
        await writer.execute(
            "INSERT INTO posts (author_id, title, body) VALUES ($1, 'x', 'y')", user_id
        )
        with pytest.raises(migrations.StepBlocked, match=r"0999\.posts-title-index"):
            await asyncio.to_thread(migrations.apply, url, bounds, folder)
        assert await db.fetchval(validity) == [False]  # what a failed build leaves
        await writer.execute("ROLLBACK")

        with caplog.at_level(logging.WARNING, logger=migrations.__name__):
            applied = await asyncio.to_thread(migrations.apply, url, bounds, folder)
        assert applied == ["0999.posts-title-index"]
        assert await db.fetchval(validity) == [True]
        assert "dropping the invalid index posts_scratch_title_idx" in caplog.text
    finally:
        await writer.close()
        await db.close()
