"""`python -m loadtests.baseline`: serve the baseline as `python -m service serve` serves the
service (uvicorn, uvloop, httptools, one worker, no access log), on HOST:PORT, against
DATABASE_URL (required: the benchmark starts the database and migrates it)."""

from __future__ import annotations

import sys

import uvicorn

from service.observability import configure_logging
from service.settings import SettingsError, from_env


def main() -> int:
    try:
        settings = from_env()
    except SettingsError as error:
        print(f"configuration error: {error}", file=sys.stderr)
        return 2
    if settings.database_url is None:
        print("configuration error: the baseline needs DATABASE_URL", file=sys.stderr)
        return 2
    configure_logging(settings.log_level)
    uvicorn.run(
        "loadtests.baseline.app:app_from_env",
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=1,
        loop="uvloop",
        http="httptools",
        log_level=settings.log_level.lower(),
        access_log=False,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
