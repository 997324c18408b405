"""`python -m loadtests.baseline {bare,floor}`: serve a baseline as `python -m service serve`
serves the service (uvicorn, uvloop, httptools, one worker, no access log), on HOST:PORT,
against DATABASE_URL (required: the benchmark starts the database and migrates it).

`bare` is the plain ASGI app (`loadtests.baseline.bare`), `floor` the minimal Litestar app
(`loadtests.baseline.floor`).
"""

from __future__ import annotations

import argparse
import sys

import uvicorn

from service.base.logs import configure_logging
from service.base.settings import SettingsError, from_env

APPS = {
    "bare": "loadtests.baseline.bare:app_from_env",
    "floor": "loadtests.baseline.floor:app_from_env",
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtests.baseline")
    parser.add_argument("app", choices=sorted(APPS), help="which baseline to serve")
    arguments = parser.parse_args(argv)
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
        APPS[arguments.app],
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
