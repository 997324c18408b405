"""One real PostgreSQL per test session, the real app over ASGI, and a connection to look
at the rows.

Without TEST_DATABASE_URL the session starts the embedded PostgreSQL in a temporary folder;
with it, it uses that server. Either way the suite works in a database of its own, made at
the start and dropped at the end, with every migration applied once. Tests isolate
themselves by the rows they create (unique emails, their own authors), never by wiping.

Tests of replication and of pooling get servers of their own: `clusters`, `replicated` and
`sync_replicated` (tests/clusters.py), and `pgbouncer_for` (tests/pgbouncer.py).
"""

from __future__ import annotations

import io
import json
import logging
import os
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from service.base import logs
from service.base.settings import Settings
from service.database import migrations
from service.database.embedded import EmbeddedPostgres
from tests.clusters import Clusters, Replicated, temporary_clusters, temporary_template
from tests.helpers import (
    app_client,
    connect,
    database_url_for,
    fresh_database_name,
    unique_email,
)
from tests.pgbouncer import PgBouncer, require_pgbouncer, running_pgbouncer


@contextmanager
def postgres_folder() -> Iterator[Path]:
    """A folder for an embedded PostgreSQL's data, removed afterwards.

    Not under pytest's tmp_path: the server runs as another user when the suite runs as
    root, and each new pytest session resets the permissions of pytest's temporary root,
    which would lock a server of a concurrent session out of its own data.
    """
    with tempfile.TemporaryDirectory(prefix="posts-service-test-") as folder:
        yield Path(folder)


@pytest.fixture
def data_dir() -> Iterator[Path]:
    with postgres_folder() as folder:
        yield folder


@pytest.fixture
def own_postgres() -> Iterator[tuple[EmbeddedPostgres, str]]:
    """An embedded PostgreSQL of the test's own, migrated: to stop, restart, reconfigure."""
    with postgres_folder() as folder:
        embedded = EmbeddedPostgres(folder / "postgres")
        url = embedded.start()
        try:
            migrations.apply(url)
            yield embedded, url
        finally:
            embedded.stop()


@pytest.fixture(scope="session")
def server_url() -> Iterator[str]:
    """A URL of a PostgreSQL server the suite may create databases on."""
    if url := os.environ.get("TEST_DATABASE_URL"):
        yield url
        return
    with postgres_folder() as folder:
        embedded = EmbeddedPostgres(folder / "postgres")
        try:
            yield embedded.start()
        finally:
            embedded.stop()


@pytest.fixture(scope="session")
async def make_database(server_url: str) -> AsyncIterator[object]:
    """Creates empty databases on the server on demand, and drops them all at the end.

    Through TEST_ADMIN_DATABASE_URL when set: with TEST_DATABASE_URL naming a pooler, the
    databases are made and dropped on the server itself, and used through the pooler.
    """
    admin = await connect(os.environ.get("TEST_ADMIN_DATABASE_URL") or server_url)
    made: list[str] = []

    async def make() -> str:
        name = fresh_database_name()
        await admin.execute(f'CREATE DATABASE "{name}"')
        made.append(name)
        return database_url_for(server_url, name)

    try:
        yield make
    finally:
        for name in made:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


@pytest.fixture(scope="session")
async def database_url(make_database) -> str:  # type: ignore[no-untyped-def]
    url: str = await make_database()
    migrations.apply(url)
    return url


@pytest.fixture(scope="session")
def settings(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return Settings(
        database_url=database_url,
        data_dir=str(tmp_path_factory.mktemp("data")),
        db_pool_min=1,
        db_pool_max=8,
        auth_disabled=True,  # tests of authentication build their own settings
        # `transaction` when TEST_DATABASE_URL is a transaction pooler (as in .ci/run).
        db_pooler=os.environ.get("TEST_DB_POOLER", "none"),  # type: ignore[arg-type]
    )


@pytest.fixture(scope="session")
async def client(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async with app_client(settings) as test_client:
        yield test_client


@pytest.fixture(scope="session")
async def db(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    """A connection of the test's own, to check what the service wrote."""
    connection = await connect(database_url)
    yield connection
    await connection.close()


@pytest.fixture
def email() -> str:
    """An email no other test uses."""
    return unique_email()


@pytest.fixture
async def user(client: httpx.AsyncClient, email: str) -> dict:  # type: ignore[type-arg]
    response = await client.post("/users", json={"email": email, "name": "Ada Lovelace"})
    assert response.status_code == 201, response.text
    return response.json()  # type: ignore[no-any-return]


@pytest.fixture
async def post(client: httpx.AsyncClient, user: dict) -> dict:  # type: ignore[type-arg]
    response = await client.post(
        "/posts", json={"author_id": user["id"], "title": "Hello", "body": "First words."}
    )
    assert response.status_code == 201, response.text
    return response.json()  # type: ignore[no-any-return]


@pytest.fixture
def repo_root() -> Path:
    return Path(__file__).resolve().parent.parent


@pytest.fixture
def log_lines() -> Iterator[Callable[[], list[dict[str, Any]]]]:
    """The process's log lines (JSON, level INFO) written while the test runs."""
    stream = io.StringIO()
    logs.configure_logging("INFO", "json", stream=stream)
    try:
        yield lambda: [json.loads(line) for line in stream.getvalue().splitlines()]
    finally:
        logging.getLogger().handlers[:] = []
        logging.getLogger().setLevel(logging.WARNING)
        logs.REQUEST_LOG.configure(None, "json")


# -- Clusters of the test's own (tests/clusters.py) and PgBouncer (tests/pgbouncer.py) ----


@pytest.fixture(scope="session")
def postgres_template() -> Iterator[Path]:
    """initdb once per session: every primary of `clusters` is a copy of it."""
    with temporary_template() as template:
        yield template


@pytest.fixture
def clusters(postgres_template: Path) -> Iterator[Clusters]:
    """Makes primaries and standbys; all stopped and their folders removed afterwards."""
    with temporary_clusters(postgres_template) as owner:
        yield owner


@pytest.fixture
def replicated(clusters: Clusters) -> Replicated:
    """A primary and one asynchronous streaming standby."""
    primary = clusters.primary()
    return Replicated(primary, clusters.standby(primary))


@pytest.fixture
def sync_replicated(clusters: Clusters) -> Replicated:
    """A primary and its synchronous standby (`standby.promote()` clears the copied
    synchronous_standby_names unless told to keep it)."""
    primary = clusters.primary()
    return Replicated(primary, clusters.standby(primary, synchronous=True))


@pytest.fixture
def pgbouncer_available() -> None:
    """Skips the test without /usr/sbin/pgbouncer; fails it instead if REQUIRE_PGBOUNCER=1."""
    require_pgbouncer()


@pytest.fixture
def pgbouncer_for(pgbouncer_available: None) -> Iterator[Callable[..., PgBouncer]]:
    """`pgbouncer_for(url, **options)`: a started PgBouncer in front of the server of `url`
    (options as `PgBouncer` takes them); every one stopped and removed afterwards."""
    with ExitStack() as stack:
        yield lambda url, **options: stack.enter_context(running_pgbouncer(url, **options))
