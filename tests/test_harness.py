"""The test harness itself, proven for real: clusters of our own (tests/clusters.py)
replicate, pause, promote and stop as they claim, PgBouncer (tests/pgbouncer.py) pools in
transaction mode and refuses what production's would, and neither leaves anything behind."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable
from pathlib import Path

import asyncpg
import psutil
import pytest

from tests import pgbouncer as pgbouncer_module
from tests.clusters import (
    Clusters,
    Replicated,
    Server,
    hosts_url,
    process_gone,
    temporary_clusters,
    temporary_folder,
    wait_for,
)
from tests.pgbouncer import PgBouncer, require_pgbouncer, running_pgbouncer
from tests.server import free_port


def family(server: Server) -> list[psutil.Process]:
    """The postmaster of a running server and every process it started."""
    pid = server.pid()
    assert pid is not None, f"{server} does not run"
    postmaster = psutil.Process(pid)
    return [postmaster, *postmaster.children(recursive=True)]


def all_gone(processes: list[psutil.Process]) -> bool:
    """Every one of them exits within 5 s (a zombie counts as gone: this machine's init
    reaps re-parented processes only now and then)."""
    try:
        wait_for(lambda: all(process_gone(process.pid) for process in processes), "exits", 5)
    except TimeoutError:
        return False
    return True


def test_a_standby_streams_what_the_primary_commits(replicated: Replicated) -> None:
    primary, standby = replicated
    assert not primary.in_recovery()
    assert standby.in_recovery()
    primary.sql("CREATE TABLE notes (id int PRIMARY KEY, body text)")
    primary.sql("INSERT INTO notes VALUES (1, 'streamed')")

    standby.wait_replayed()

    assert standby.value("SELECT body FROM notes WHERE id = 1") == "streamed"
    with pytest.raises(asyncpg.ReadOnlySQLTransactionError):
        standby.sql("INSERT INTO notes VALUES (2, 'refused')")
    [state] = primary.sql(
        "SELECT state, sync_state FROM pg_stat_replication WHERE application_name = $1",
        standby.name,
    )
    assert tuple(state) == ("streaming", "async")


def test_paused_replay_hides_a_new_row_until_resumed(replicated: Replicated) -> None:
    primary, standby = replicated
    primary.sql("CREATE TABLE notes (id int PRIMARY KEY)")
    standby.wait_replayed()

    standby.pause_replay()
    primary.sql("INSERT INTO notes VALUES (1)")
    written = primary.current_lsn()
    # The standby has received the row's WAL, and still does not show it.
    received = "SELECT pg_last_wal_receive_lsn() >= $1::text::pg_lsn"
    wait_for(lambda: standby.value(received, written), "the standby to receive the row")
    replayed_before = standby.replay_lsn()
    assert standby.value("SELECT count(*) FROM notes") == 0

    standby.resume_replay()
    standby.wait_replayed(written)

    assert standby.value("SELECT count(*) FROM notes") == 1
    assert standby.replay_lsn() != replayed_before


def test_a_promoted_standby_accepts_writes_after_the_primary_crashed(
    replicated: Replicated,
) -> None:
    primary, standby = replicated
    primary.sql("CREATE TABLE notes (id int PRIMARY KEY)")
    primary.sql("INSERT INTO notes VALUES (1)")
    standby.wait_replayed()

    primary.stop("immediate")
    standby.promote()

    assert not standby.in_recovery()
    standby.sql("INSERT INTO notes VALUES (2)")
    assert standby.value("SELECT array_agg(id ORDER BY id) FROM notes") == [1, 2]


def test_a_restarted_standby_streams_again_and_catches_up(replicated: Replicated) -> None:
    primary, standby = replicated
    primary.sql("CREATE TABLE notes (id int PRIMARY KEY)")

    standby.stop("immediate")
    primary.sql("INSERT INTO notes VALUES (1)")  # written while the standby is down
    standby.start()
    standby.wait_streaming()
    standby.wait_replayed()

    assert standby.value("SELECT count(*) FROM notes") == 1


async def test_a_multi_host_url_reaches_the_writable_server(replicated: Replicated) -> None:
    primary, standby = replicated
    url = hosts_url(standby, primary, target_session_attrs="read-write")

    connection = await asyncpg.connect(url)
    try:
        assert await connection.fetchval("SELECT inet_server_port()") == primary.port
    finally:
        await connection.close()


@pytest.mark.parametrize("keep", [False, True], ids=["cleared", "kept"])
def test_a_promoted_synchronous_standby_waits_forever_only_if_it_keeps_the_setting(
    sync_replicated: Replicated, keep: bool
) -> None:
    primary, standby = sync_replicated
    primary.sql("CREATE TABLE notes (id int PRIMARY KEY)")  # committed: the standby is sync
    assert standby.value("SHOW synchronous_standby_names") == standby.name  # the copy's

    primary.stop("immediate")
    standby.promote(keep_synchronous_standby_names=keep)

    if keep:
        # The commit waits for a synchronous standby the new primary does not have, and
        # until it ends the row is invisible to everyone else.
        with pytest.raises(TimeoutError):
            standby.sql("INSERT INTO notes VALUES (1)", timeout=0.5)
        waiting = "FROM pg_stat_activity WHERE wait_event = 'SyncRep'"
        assert standby.value(f"SELECT count(*) {waiting}") == 1
        assert standby.value("SELECT count(*) FROM notes") == 0
        # Cancelling the wait does not undo the commit: it was written locally already.
        standby.value(f"SELECT pg_cancel_backend(pid) {waiting}")
        wait_for(lambda: standby.value("SELECT count(*) FROM notes") == 1, "the row")
    else:
        standby.sql("INSERT INTO notes VALUES (1)", timeout=5)
        assert standby.value("SHOW synchronous_standby_names") == ""
        assert standby.value("SELECT count(*) FROM notes") == 1


def test_an_immediate_stop_really_stops_and_the_server_starts_again(
    clusters: Clusters,
) -> None:
    primary = clusters.primary()
    primary.sql("CREATE TABLE notes (id int PRIMARY KEY)")
    primary.sql("INSERT INTO notes VALUES (1)")
    processes = family(primary)
    assert len(processes) > 3  # checkpointer, walwriter, autovacuum launcher...

    primary.stop("immediate")

    assert primary.pid() is None
    assert all_gone(processes)
    with pytest.raises(ConnectionRefusedError):
        primary.sql("SELECT 1", timeout=2)

    primary.start()  # crash recovery: the committed row is there
    assert primary.value("SELECT count(*) FROM notes") == 1


def test_set_config_applies_to_new_connections(clusters: Clusters) -> None:
    primary = clusters.primary(work_mem="5MB")
    assert primary.value("SHOW work_mem") == "5MB"

    primary.set_config(work_mem="7MB")

    assert primary.value("SHOW work_mem") == "7MB"
    primary.set_config(work_mem=None)  # back to postgresql.conf's value
    assert primary.value("SHOW work_mem") == "5MB"


def test_clusters_leave_no_process_and_no_folder_even_when_the_test_fails(
    postgres_template: Path,
) -> None:
    processes: list[psutil.Process] = []
    roots: list[Path] = []

    def failing_test() -> None:
        with temporary_clusters(postgres_template) as owner:
            roots.append(owner.root)
            primary = owner.primary()
            processes.extend(family(primary) + family(owner.standby(primary)))
            raise RuntimeError("the test failed")

    with pytest.raises(RuntimeError, match="the test failed"):
        failing_test()

    assert processes
    assert all_gone(processes)
    assert not roots[0].exists()


# -- PgBouncer ---------------------------------------------------------------------------


async def test_pgbouncer_pools_asyncpg_without_a_statement_cache_in_transaction_mode(
    pgbouncer_for: Callable[..., PgBouncer], database_url: str, db: asyncpg.Connection
) -> None:
    # The suite's own database: on the embedded server that is a unix socket that
    # PgBouncer's user must reach, with TEST_DATABASE_URL a TCP server.
    bouncer = pgbouncer_for(database_url)
    database = await db.fetchval("SELECT current_database()")

    async def through_pgbouncer(task: int) -> list[int]:
        connection = await asyncpg.connect(bouncer.url(database), statement_cache_size=0)
        try:
            return [await connection.fetchval("SELECT $1::int * 2", task) for _ in range(20)]
        finally:
            await connection.close()

    answers = await asyncio.gather(*(through_pgbouncer(task) for task in range(32)))

    assert answers == [[task * 2] * 20 for task in range(32)]
    direct_users = await db.fetchval("SELECT count(*) FROM users")
    connection = await asyncpg.connect(bouncer.url(database), statement_cache_size=0)
    try:
        assert await connection.fetchval("SELECT count(*) FROM users") == direct_users
    finally:
        await connection.close()
    [pool] = [row for row in bouncer.admin("SHOW POOLS") if row["database"] == database]
    assert pool["pool_mode"] == "transaction"


async def test_pgbouncer_hands_one_server_connection_to_clients_in_turn(
    pgbouncer_for: Callable[..., PgBouncer], clusters: Clusters
) -> None:
    primary = clusters.primary()
    bouncer = pgbouncer_for(primary.url(), default_pool_size=1)
    first = await asyncpg.connect(bouncer.url(), statement_cache_size=0)
    second = await asyncpg.connect(bouncer.url(), statement_cache_size=0)
    try:
        # Transaction mode: both open clients run on the same server connection, one
        # transaction at a time (session mode would need one each).
        assert await first.fetchval("SELECT pg_backend_pid()") == await second.fetchval(
            "SELECT pg_backend_pid()"
        )
    finally:
        await first.close()
        await second.close()


async def test_pgbouncer_refuses_the_startup_parameter_statement_timeout(
    pgbouncer_for: Callable[..., PgBouncer], clusters: Clusters
) -> None:
    bouncer = pgbouncer_for(clusters.primary().url())

    with pytest.raises(asyncpg.ProtocolViolationError, match="statement_timeout") as refused:
        await asyncpg.connect(bouncer.url(), server_settings={"statement_timeout": "1000"})

    assert refused.value.sqlstate == "08P01"


async def test_pgbouncer_restart_cuts_clients_and_serves_again_on_its_port(
    pgbouncer_for: Callable[..., PgBouncer], clusters: Clusters
) -> None:
    bouncer = pgbouncer_for(clusters.primary().url())
    before = await asyncpg.connect(bouncer.url(), statement_cache_size=0)
    old_pid, port = bouncer.pid(), bouncer.port

    bouncer.restart()

    with pytest.raises((asyncpg.ConnectionDoesNotExistError, ConnectionError)):
        await before.fetchval("SELECT 1")
    before.terminate()
    assert (bouncer.port, bouncer.pid() is not None) == (port, True)
    assert bouncer.pid() != old_pid
    after = await asyncpg.connect(bouncer.url(), statement_cache_size=0)
    try:
        assert await after.fetchval("SELECT 1") == 1
    finally:
        await after.close()


def test_pgbouncer_leaves_no_process_and_no_folder(
    pgbouncer_available: None, clusters: Clusters
) -> None:
    with running_pgbouncer(clusters.primary().url()) as bouncer:
        pid = bouncer.pid()
        assert pid is not None
        process = psutil.Process(pid)
        folder = bouncer.folder

    assert all_gone([process])
    assert not folder.exists()


async def test_the_command_line_serves_as_a_daemon_until_stopped(
    pgbouncer_available: None, clusters: Clusters, repo_root: Path
) -> None:
    primary = clusters.primary()
    port = free_port()

    async def command_line(*arguments: str) -> None:
        run = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "tests.pgbouncer", *arguments, cwd=repo_root
        )
        assert await asyncio.wait_for(run.wait(), 30) == 0

    with temporary_folder("posts-pgbouncer-cli-") as folder:
        await command_line(
            *("serve", "--port", str(port), "--dir", str(folder), "--daemon"),
            *("--target", f"127.0.0.1:{primary.port}"),
        )
        try:
            process = psutil.Process(int((folder / "pgbouncer.pid").read_text()))
            url = f"postgresql://postgres@127.0.0.1:{port}/postgres"
            connection = await asyncpg.connect(url, statement_cache_size=0)
            try:
                assert await connection.fetchval("SELECT inet_server_port()") == primary.port
            finally:
                await connection.close()
        finally:
            await command_line("stop", "--dir", str(folder))

        assert all_gone([process])


def test_a_missing_pgbouncer_skips_unless_it_is_required(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(pgbouncer_module, "PGBOUNCER", tmp_path / "no-pgbouncer")
    monkeypatch.delenv("REQUIRE_PGBOUNCER", raising=False)
    with pytest.raises(pytest.skip.Exception):
        require_pgbouncer()

    monkeypatch.setenv("REQUIRE_PGBOUNCER", "1")
    with pytest.raises(pytest.fail.Exception, match="REQUIRE_PGBOUNCER=1"):
        require_pgbouncer()
