"""Liveness and readiness, for orchestrators and load balancers."""

from __future__ import annotations

import asyncpg
import msgspec
from litestar import Controller, get
from litestar.datastructures import State

from service.database.migrations import migration_ids
from service.errors import problem_responses, unavailable


class Status(msgspec.Struct):
    status: str


class HealthController(Controller):
    path = "/health"
    tags = ["health"]

    @get("/live", operation_id="live")
    async def live(self) -> Status:
        """The process is up. Touches no database."""
        return Status("ok")

    @get("/ready", operation_id="ready", responses=problem_responses())
    async def ready(self, state: State) -> Status:
        """The database answers and every migration of this version is applied."""
        pool: asyncpg.Pool = state.pool
        try:
            async with pool.acquire(timeout=state.settings.db_acquire_timeout) as connection:
                applied = await connection.fetch("SELECT migration_id FROM _yoyo_migration")
        except asyncpg.UndefinedTableError:
            raise unavailable("Migrations are pending: none is applied") from None
        pending = migration_ids() - {row[0] for row in applied}
        if pending:
            raise unavailable(f"Migrations are pending: {', '.join(sorted(pending))}")
        return Status("ready")
