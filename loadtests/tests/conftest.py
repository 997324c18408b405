"""The instruments' tests use the suite's real PostgreSQL: the same fixtures, imported; and
a service on a small seeded database of their own, for the change feed's instruments."""

from collections.abc import Awaitable, Callable, Iterator

import pytest

from loadtests import bench, seed
from service.database import migrations
from tests.conftest import database_url, make_database, server_url
from tests.server import free_port

__all__ = ["database_url", "feed_database", "feed_service", "make_database", "server_url"]

FEED_DATA_SET = seed.DataSet(users=100, posts=2000)
"""Seeded: 2,100 events, three pages of 1,000."""


@pytest.fixture(scope="module")
async def feed_database(make_database: Callable[[], Awaitable[str]]) -> str:
    """A database of the module's own, migrated and seeded with FEED_DATA_SET."""
    url = await make_database()
    migrations.apply(url)
    assert await seed.seed_url(url, FEED_DATA_SET) == FEED_DATA_SET
    return url


@pytest.fixture(scope="module")
def feed_service(
    feed_database: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[bench.Server]:
    """The service on it, as `make bench-feed` runs it (the seed's events kept)."""
    port = free_port()
    environment = bench.target_environment(
        "service", feed_database, tmp_path_factory.mktemp("feed-service"), port
    )
    with bench.running("test-feed-service", bench.COMMANDS["service"], environment, port) as server:
        yield server
