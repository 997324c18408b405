"""Command line: `python -m service [serve]`, `python -m service migrate [...]`,
`python -m service relay` (the change feed to NATS JetStream: `service.relay`).

`serve` is what `make run` runs: without DATABASE_URL it starts the embedded PostgreSQL,
applies pending migrations, serves with uvicorn (uvloop, httptools, WORKERS processes),
and on Ctrl-C or SIGTERM stops serving first and the embedded PostgreSQL last.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from pathlib import Path

from service.base.logs import configure_logging
from service.base.metrics import multiprocess_directory
from service.base.settings import Settings, SettingsError, from_env
from service.database import migrations
from service.database.embedded import database
from service.edge import auth
from service.http.pagination import cursor_key

logger = logging.getLogger("service")

MAX_CONNECTIONS_PER_WORKER = 1000


class Stopped(Exception):
    """SIGTERM or SIGINT arrived; raised once uvicorn has finished serving."""


def _stop(signum: int, frame: object) -> None:
    raise Stopped(signal.Signals(signum).name)


def serve(settings: Settings) -> None:
    import uvicorn

    # uvicorn drains its requests on SIGTERM/SIGINT and then re-raises the signal with the
    # handlers found at start: these turn it into an exception, so that the embedded
    # PostgreSQL is stopped on the way out instead of the process dying with it running.
    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    settings = auth.settle(settings)
    if settings.auth_disabled:
        os.environ["AUTH_DISABLED"] = "1"  # for the workers, which read the environment
    with database(settings) as database_url:
        if settings.should_migrate_on_start:
            applied = migrations.apply(database_url, migrations.Bounds.of(settings))
            logger.info("migrations applied: %s", ", ".join(applied) or "none pending")
        # Made before the workers start, so that they all share one key.
        cursor_key(settings.cursor_secret, settings.data_dir)
        # Workers build their settings from the environment (`app_from_env`).
        os.environ["DATABASE_URL"] = database_url
        if settings.workers > 1:
            # Read by prometheus-client when each worker imports it: metrics of all workers.
            os.environ["PROMETHEUS_MULTIPROC_DIR"] = multiprocess_directory(settings.data_dir)
        uvicorn.run(
            "service.app:app_from_env",
            factory=True,
            host=settings.host,
            port=settings.port,
            workers=settings.workers,
            loop="uvloop",
            http="httptools",
            log_level=settings.log_level.lower(),
            # Our logging (JSON by default) and our request log, not uvicorn's.
            log_config=None,
            access_log=False,
            timeout_graceful_shutdown=settings.shutdown_timeout,
            # Idle keep-alive connections close after 5 s; beyond this many open
            # connections a worker answers 503 instead of taking more.
            timeout_keep_alive=5,
            limit_concurrency=MAX_CONNECTIONS_PER_WORKER,
        )


def migrate(settings: Settings, arguments: argparse.Namespace) -> int:
    folder = Path(arguments.folder).resolve()
    bounds = migrations.Bounds.of(settings)
    with database(settings) as database_url:
        try:
            if arguments.list:
                for migration_id, applied in migrations.status(database_url, folder):
                    print(f"{'applied' if applied else 'pending'}  {migration_id}")
            elif arguments.break_lock:
                print(migrations.break_lock(database_url))
            elif arguments.rollback is not None:
                steps = None if arguments.rollback == "all" else int(arguments.rollback)
                rolled_back = migrations.rollback(database_url, steps, bounds, folder)
                print("rolled back:", ", ".join(rolled_back) or "nothing")
            else:
                done = migrations.apply(database_url, bounds, folder)
                print("applied:", ", ".join(done) or "nothing pending")
        except migrations.MigrationError as error:
            print(f"migration failed: {error}", file=sys.stderr)
            return 1
    return 0


def print_new_token(name: str, scopes: list[str]) -> int:
    try:
        token, line = auth.new_token(name, scopes)
    except SettingsError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"token (give it to the caller; it is not stored anywhere): {token}")
    print(f"line for API_TOKENS_FILE or API_TOKENS: {line}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m service")
    commands = parser.add_subparsers(dest="command")
    commands.add_parser("serve", help="serve HTTP (the default)")
    commands.add_parser("relay", help="publish the change feed to NATS JetStream")
    migrate_parser = commands.add_parser("migrate", help="apply pending migrations")
    migrate_parser.add_argument(
        "--rollback",
        nargs="?",
        const="1",
        metavar="N",
        help="roll back the last N applied migrations (default 1, or 'all')",
    )
    migrate_parser.add_argument("--list", action="store_true", help="list applied and pending")
    migrate_parser.add_argument(
        "--break-lock",
        action="store_true",
        help="remove the migration lock left by a run that is gone (docs/operations.md)",
    )
    migrate_parser.add_argument(
        "--folder",
        default=str(migrations.MIGRATIONS_DIR),
        help="the migrations folder (default: the one shipped with this version)",
    )
    token_parser = commands.add_parser("token", help="make a service token")
    token_commands = token_parser.add_subparsers(dest="token_command", required=True)
    new_parser = token_commands.add_parser("new", help="print a new token and its config line")
    new_parser.add_argument("name", help="who the token is for, one word (e.g. billing)")
    new_parser.add_argument("--scopes", default="read", help="read, write or read,write")
    arguments = parser.parse_args(argv)
    if (
        arguments.command == "migrate"
        and arguments.rollback not in (None, "all")
        and not (arguments.rollback.isdigit() and int(arguments.rollback) > 0)
    ):
        parser.error("--rollback takes a positive number or 'all'")
    if arguments.command == "token":
        return print_new_token(arguments.name, arguments.scopes.split(","))
    try:
        settings = from_env()
    except SettingsError as error:
        print(f"configuration error: {error}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level, settings.log_format)
    if arguments.command == "migrate":
        return migrate(settings, arguments)
    if arguments.command == "relay":
        from service.relay import runner

        return runner.main(settings)
    try:
        serve(settings)
    except Stopped as stopped:
        logger.info("stopped by %s", stopped)
    except migrations.MigrationError as error:
        print(f"migration failed: {error}", file=sys.stderr)
        return 1
    except SettingsError as error:
        print(f"configuration error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
