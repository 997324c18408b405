"""Seed a database with the data set that load tests and benchmarks run against.

`python -m loadtests.seed` (or `make seed`) fills DATABASE_URL, or the embedded database
in DATA_DIR/postgres by default, with 10,000 users and 200,000 posts times SEED_SCALE
(default 1; 10 gives 100,000 users and 2,000,000 posts). It empties both tables and the
change feed's events first, so every seed writes the same rows with the same ids (1..N),
and the tables are vacuumed and analyzed before it returns. The feed's triggers fire on
the seed's inserts: one event per seeded row, which about doubles the seed's time
(measured here at scale 1, interleaved on a busy machine: 9.8-11.8 s against 5.4-6.8 s
with the feed's triggers disabled). The history before the
seed is gone (TRUNCATE writes no events), so the seed moves the feed's pruned position to
its own transaction: a cursor handed out before it is a 410, as behind retention. The
seeded rows are up to three years old, and so are their events: a service with the
default retention (7 days) prunes nearly all of them in its first round.

The rows are made by the database itself, set-based (`INSERT … SELECT … FROM
generate_series`, the statements in `loadtests/sql/`): two statements, whatever the scale,
instead of one request per row.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import asyncpg

from service.base.settings import SettingsError, from_env
from service.database import migrations
from service.database.embedded import database

USERS_PER_SCALE = 10_000
POSTS_PER_SCALE = 200_000
MAX_SCALE = 100.0

SQL_DIR = Path(__file__).resolve().parent / "sql"
SQL = {path.stem: path.read_text() for path in sorted(SQL_DIR.glob("*.sql"))}


@dataclass(frozen=True)
class DataSet:
    """How many rows each table holds; ids run from 1 to these counts after a seed."""

    users: int
    posts: int

    @classmethod
    def at_scale(cls, scale: float) -> DataSet:
        users = max(1, round(USERS_PER_SCALE * scale))
        return cls(users=users, posts=round(POSTS_PER_SCALE * scale))


def scale_from_env(environ: Mapping[str, str] | None = None) -> float:
    """SEED_SCALE as a number in (0, MAX_SCALE]; `SettingsError` naming it otherwise."""
    raw = (os.environ if environ is None else environ).get("SEED_SCALE", "") or "1"
    try:
        scale = float(raw)
    except ValueError:
        raise SettingsError(f"SEED_SCALE={raw!r}: must be a number") from None
    if not 0 < scale <= MAX_SCALE:
        raise SettingsError(f"SEED_SCALE={raw!r}: must be above 0 and at most {MAX_SCALE:g}")
    return scale


async def seed(
    connection: asyncpg.Connection, data_set: DataSet, *, newest: datetime | None = None
) -> DataSet:
    """Replace every user and post with `data_set`'s rows; return the counts found after.

    `newest` is the created_at of the newest post (default: now), so that the seeded rows
    are older than whatever the API creates afterwards.
    """
    newest = datetime.now(UTC) if newest is None else newest
    # One transaction: a failed seed leaves the tables as they were, never half-filled.
    async with connection.transaction():
        await connection.execute(SQL["truncate"])
        await connection.execute(SQL["forget_feed"])
        await connection.execute(SQL["users"], data_set.users, newest)
        await connection.execute(SQL["posts"], data_set.posts, data_set.users, newest)
        await connection.execute(SQL["restart_identities"], data_set.users, data_set.posts)
    await connection.execute(SQL["vacuum"])
    users = await connection.fetchval("SELECT count(*) FROM users")
    posts = await connection.fetchval("SELECT count(*) FROM posts")
    return DataSet(users=users, posts=posts)


async def seed_url(database_url: str, data_set: DataSet) -> DataSet:
    # No statement timeout: at SEED_SCALE=10 one INSERT takes a minute or more.
    connection = await asyncpg.connect(database_url, command_timeout=None)
    try:
        return await seed(connection, data_set)
    finally:
        await connection.close()


def main() -> int:
    try:
        settings = from_env()
        scale = scale_from_env()
    except SettingsError as error:
        print(f"configuration error: {error}", file=sys.stderr)
        return 2
    wanted = DataSet.at_scale(scale)
    where = (
        "DATABASE_URL"
        if settings.database_url
        else f"the embedded database in {settings.postgres_dir}"
    )
    print(f"seeding {where}: {wanted.users:,} users, {wanted.posts:,} posts (SEED_SCALE={scale:g})")
    with database(settings) as database_url:
        migrations.apply(database_url)
        started = time.perf_counter()
        seeded = asyncio.run(seed_url(database_url, wanted))
        elapsed = time.perf_counter() - started
    print(f"seeded {seeded.users:,} users and {seeded.posts:,} posts in {elapsed:.1f} s")
    return 0 if seeded == wanted else 1


if __name__ == "__main__":
    sys.exit(main())
