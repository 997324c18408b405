"""Schema migrations with yoyo: the plain-SQL steps in `migrations/`, each with a rollback.

yoyo runs on a synchronous driver (psycopg 3) and takes its own lock in the database, so
two processes migrating at once apply each step once. The service's asyncpg URL becomes
yoyo's by naming the driver: `postgresql+psycopg://…`.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

MIGRATIONS_DIR = Path(__file__).resolve().parents[2] / "migrations"


def yoyo_url(database_url: str) -> str:
    scheme, rest = database_url.split("://", 1)
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

    return get_backend(yoyo_url(database_url)), read_migrations(str(MIGRATIONS_DIR))


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
