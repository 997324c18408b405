"""Schema migrations with yoyo: the plain-SQL steps in `migrations/`, each with a rollback.

yoyo runs on a synchronous driver (psycopg 3) and takes its own lock in the database (a
row in a table, not a session lock), so two processes migrating at once apply each step
once. The service's URL becomes yoyo's by naming the driver: `postgresql+psycopg://…`.

Through a transaction pooler too: psycopg prepares a statement it runs a fifth time on a
connection (yoyo's lock polling does), which PgBouncer 1.18 in transaction mode cannot
keep, so the migration connection never prepares. yoyo reads one host from a URL: for a
multi-host URL (`a:5432,b:5432/db?target_session_attrs=read-write`) libpq picks the host
first, and yoyo is given that one.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from service.database.sql import project_folder
from service.database.urls import has_several_hosts, with_host

MIGRATIONS_DIR = project_folder("migrations")


def single_host(database_url: str) -> str:
    """`database_url` with the one host libpq connects to, when it names several."""
    if not has_several_hosts(database_url):
        return database_url
    import psycopg

    with psycopg.connect(database_url, connect_timeout=10) as connection:
        return with_host(database_url, connection.info.host, connection.info.port)


def yoyo_url(database_url: str) -> str:
    scheme, rest = single_host(database_url).split("://", 1)
    return f"postgresql+psycopg://{rest}" if scheme in ("postgresql", "postgres") else database_url


@cache
def migration_ids() -> frozenset[str]:
    """Ids of every migration shipped with this version of the service (read once: the
    readiness probe asks on every call)."""
    return frozenset(
        path.name.removesuffix(".sql")
        for path in MIGRATIONS_DIR.glob("*.sql")
        if not path.name.endswith(".rollback.sql")
    )


def _backend_and_migrations(database_url: str) -> tuple[Any, Any]:
    from yoyo import get_backend, read_migrations

    backend = get_backend(yoyo_url(database_url))
    backend.connection.prepare_threshold = None  # never prepare: see the module's docstring
    return backend, read_migrations(str(MIGRATIONS_DIR))


def apply(database_url: str) -> list[str]:
    """Apply every pending migration; return the ids applied."""
    backend, migrations = _backend_and_migrations(database_url)
    with backend.lock():
        pending = backend.to_apply(migrations)
        backend.apply_migrations(pending)
    return [migration.id for migration in pending]


def rollback(database_url: str, steps: int | None = 1) -> list[str]:
    """Roll back the last `steps` applied migrations (all when None); return their ids."""
    backend, migrations = _backend_and_migrations(database_url)
    with backend.lock():
        applied = backend.to_rollback(migrations)
        chosen = applied if steps is None else applied[:steps]
        backend.rollback_migrations(chosen)
    return [migration.id for migration in chosen]


def status(database_url: str) -> list[tuple[str, bool]]:
    """Every migration id in order, with whether it is applied."""
    backend, migrations = _backend_and_migrations(database_url)
    pending = {migration.id for migration in backend.to_apply(migrations)}
    return [(migration.id, migration.id not in pending) for migration in migrations]
