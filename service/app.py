"""The app factory: one place that puts routes, plugins, dependencies and lifecycle together."""

from __future__ import annotations

import gc
from collections.abc import AsyncGenerator
from contextlib import asynccontextmanager, nullcontext

from litestar import Litestar
from litestar.datastructures import State

from service import openapi
from service.base.logs import configure_logging, flushing_logs
from service.base.settings import Settings, SettingsError, from_env
from service.database import routing
from service.edge import auth, tracing
from service.edge.layer import Edge
from service.edge.observer import in_flight_sampler
from service.feed import retention
from service.feed.controller import list_events
from service.feed.reader import Confirmation
from service.feed.watcher import watching
from service.http import idempotency
from service.http.errors import problem_details_plugin
from service.http.feed_positions import FeedIdentity
from service.http.pagination import CursorCodec, cursor_key
from service.http.sessions import closing_sessions
from service.http.validation import QUERY_DECODERS, ClosedStructSchemaPlugin, QuerySchemaPlugin
from service.operations import HealthController, MetricsController
from service.posts.controller import PostController, list_user_posts
from service.users.controller import UserController

MAX_BODY_BYTES = 1024 * 1024


def create_app(settings: Settings) -> Litestar:
    """The service on the database at `settings.database_url` (which must be set: the
    command line starts the embedded database first and passes its URL here)."""
    if settings.database_url is None:
        raise SettingsError(
            "create_app needs DATABASE_URL; `python -m service serve` starts "
            "the embedded database and sets it"
        )
    database_url = settings.database_url
    traced = tracing.configured()

    @asynccontextmanager
    async def database_lifespan(app: Litestar) -> AsyncGenerator[None, None]:
        async with (
            routing.running(settings, database_url) as database,
            traced.flushing() if traced else nullcontext(),
            flushing_logs(),
            in_flight_sampler(),
            idempotency.cleanup(database.primary, settings.idempotency_ttl_hours),
            retention.pruning(
                database.primary, settings.events_retention_hours, settings.events_prune_seconds
            ),
            watching(database.primary, settings.events_poll_ms / 1000) as watcher,
        ):
            app.state.database = database
            app.state.feed_watcher = watcher
            yield

    codec = CursorCodec(cursor_key(settings.cursor_secret, settings.data_dir))
    app = Litestar(
        route_handlers=[
            UserController,
            PostController,
            list_user_posts,
            list_events,
            HealthController,
            MetricsController,
        ],
        lifespan=[database_lifespan],
        # Not dependencies: Litestar resolves several dependencies of one handler in an
        # anyio task group, two tasks a request (~80 us); `state` is handed over as is.
        state=State(
            {
                "settings": settings,
                "cursors": codec,
                "feed_identity": FeedIdentity(),
                "feed_confirmation": Confirmation(),
            }
        ),
        plugins=[problem_details_plugin(), ClosedStructSchemaPlugin(), QuerySchemaPlugin()],
        type_decoders=QUERY_DECODERS,
        request_max_body_size=MAX_BODY_BYTES,
        # Logging is configured once by the process (service.logs), not per app.
        logging_config=None,
        openapi_config=openapi.config(settings),
    )
    openapi.complete(app, settings)
    # Outside Litestar's routing, so that every request gets its id and log line, 404s too.
    edge = Edge(
        closing_sessions(app.asgi_handler),
        auth.gate(settings),
        trace_fields=tracing.log_fields if traced else None,
    )
    # Tracing outside it: refused requests get a span too, and the log line its ids.
    app.asgi_handler = traced.around(edge) if traced else edge
    return app


def app_from_env() -> Litestar:
    """Factory for the ASGI server: `uvicorn --factory service.app:app_from_env`."""
    settings = from_env()
    configure_logging(settings.log_level, settings.log_format)
    # Here, in each worker process: an exporter's thread and connections are its own.
    tracing.configure_from_env()
    app = create_app(settings)
    # What start-up made (modules, the app, its routes and OpenAPI document: some 10^5
    # objects) lives as long as the process. Frozen, the garbage collector no longer walks
    # it in every full collection, each of which paused requests for 10 to 40 ms.
    gc.collect()
    gc.freeze()
    return app
