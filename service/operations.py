"""The operator's routes: liveness and readiness for orchestrators and load balancers,
and `/metrics` for Prometheus.

Ready means: the primary answers, every migration of this version is applied, and commits
complete (no synchronous standby is awaited that is not there). Replicas are reported as
the replica monitor last saw them, but do not decide readiness: while none is usable the
primary answers their reads.
"""

from __future__ import annotations

import asyncpg
import msgspec
from litestar import Controller, Response, get
from litestar.datastructures import State
from litestar.plugins.prometheus import PrometheusController

from service.database.migrations import migration_ids
from service.database.routing import Database
from service.database.sql import load_queries
from service.edge.observer import sample_in_flight
from service.http.errors import problem_responses, unavailable

SQL = load_queries("health")


class Status(msgspec.Struct):
    status: str


class ServerState(msgspec.Struct):
    server: str
    """`primary`, or `replica <host>:<port>`."""
    state: str
    """`ok`, `down (why)` or `lagging`."""
    lag_ms: float | None = None
    """How far a replica's replay was behind the primary when last checked."""


class Readiness(msgspec.Struct):
    status: str
    servers: list[ServerState]


def _replica_states(database: Database) -> list[ServerState]:
    states = []
    for replica in database.replicas:
        if not replica.up:
            state = f"down ({replica.problem})"
        else:
            state = "lagging" if replica.problem else "ok"
        lag = None if replica.lag_seconds is None else round(replica.lag_seconds * 1000, 1)
        states.append(ServerState(replica.server.name, state, lag))
    return states


class HealthController(Controller):
    path = "/health"
    tags = ["health"]

    @get("/live", operation_id="live")
    async def live(self) -> Status:
        """The process is up. Touches no database."""
        return Status("ok")

    @get("/ready", operation_id="ready", responses=problem_responses())
    async def ready(self, state: State) -> Readiness:
        """The primary answers, every migration of this version is applied, and commits
        complete; each replica's state as last checked."""
        database: Database = state.database
        try:
            async with database.primary.connection() as connection:
                primary = await connection.fetchrow(SQL["readiness"])
        except asyncpg.UndefinedTableError:
            raise unavailable("Migrations are pending: none is applied") from None
        assert primary is not None
        pending = migration_ids() - set(primary["applied"])
        if pending:
            raise unavailable(f"Migrations are pending: {', '.join(sorted(pending))}")
        if primary["commits_stalled"]:
            raise unavailable(
                "Commits on the primary wait for a synchronous standby that is not connected"
            )
        return Readiness("ready", [ServerState("primary", "ok"), *_replica_states(database)])


class MetricsController(PrometheusController):
    """`/metrics` in Prometheus text, with this worker's pools and in-flight count sampled
    at the scrape."""

    @get(media_type="text/plain", operation_id="metrics", tags=["operations"])
    async def get(self, state: State) -> Response[bytes]:
        state.database.sample()
        sample_in_flight()
        response: Response[bytes] = await PrometheusController.get.fn(self)
        return response
