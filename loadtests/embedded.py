"""`python -m loadtests.embedded stop DATA_DIR`: stop an embedded PostgreSQL left behind.

The load-test script runs it after the service it started is gone, in case that service
was killed before it could stop its PostgreSQL. A server that another live process owns
(a `make run` in another terminal) is left running: see `service.database.embedded`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from service.database.embedded import EmbeddedPostgres


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtests.embedded")
    parser.add_argument("command", choices=["stop"])
    parser.add_argument("data_dir", help="the service's DATA_DIR (the server is in its postgres/)")
    arguments = parser.parse_args(argv)
    directory = Path(arguments.data_dir).resolve() / "postgres"
    if not (directory / "PG_VERSION").exists():
        print(f"no embedded PostgreSQL in {directory}")
        return 0
    server = EmbeddedPostgres(directory)
    server.start()  # adopts a server whose owner died
    stopped = server.owned
    server.stop()
    print(f"embedded PostgreSQL in {directory}: {'stopped' if stopped else 'left to its owner'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
