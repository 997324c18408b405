"""Traces: a caller's W3C trace context in, one span per request and per SQL statement, OTLP out.

Off unless `OTEL_EXPORTER_OTLP_ENDPOINT` or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` is set, and
then really off: no ASGI layer, no patched driver, nothing in the request path. On, each
process (each uvicorn worker, as it builds its app) gets its own tracer provider with a
batching OTLP/HTTP exporter, and asyncpg is instrumented to feed it. The SDK reads the
other standard variables itself: `OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`,
`OTEL_TRACES_SAMPLER`, `OTEL_EXPORTER_OTLP_HEADERS`, `OTEL_BSP_*`, `OTEL_PROPAGATORS`...

Like logging, tracing belongs to the process, not to one app: `configure` sets it up,
`create_app` asks `configured()`, `reset` undoes it (tests). The global tracer provider
of the OpenTelemetry API is left alone: spans go to our provider, handed over explicitly.

A span keeps only the attributes named in `KEPT_ATTRIBUTES`: method, route template,
status, and the SQL text (only `$n` placeholders). Never a raw path (an unrouted one can
hold anything), a query string (the email filter), a header, a body or an SQL parameter;
an exception keeps its type, not its message (PostgreSQL's quotes the value it refused).
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

from litestar.enums import ScopeType
from litestar.types import ASGIApp, Message, Receive, Scope, Send
from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.propagators.textmap import Getter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan, Span, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import SpanKind, Status, StatusCode, Tracer
from opentelemetry.util.types import Attributes

if TYPE_CHECKING:
    from opentelemetry.instrumentation.asyncpg import AsyncPGInstrumentor

# Its name from before the packages by layer: operators filter the log by it.
logger = logging.getLogger("service.tracing")

DEFAULT_SERVICE_NAME = "posts-service"
FLUSH_TIMEOUT_MILLIS = 5000
"""How long a stopping worker waits for its last spans to reach the collector."""

ENDPOINT_VARIABLES = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")
PROTOCOL_VARIABLES = ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL")
SUPPORTED_PROTOCOL = "http/protobuf"

# Semantic-convention names. Statement spans come from the asyncpg instrumentation, in
# the old (default) or the new names (`OTEL_SEMCONV_STABILITY_OPT_IN=database`).
KEPT_ATTRIBUTES = frozenset(
    {
        "http.request.method",
        "http.route",
        "http.response.status_code",
        "url.scheme",
        "network.protocol.version",
        "error.type",
        "db.system",
        "db.system.name",
        "db.name",
        "db.namespace",
        "db.user",
        "db.statement",
        "db.query.text",
        "net.peer.name",
        "net.peer.port",
        "net.transport",
        "server.address",
        "server.port",
        "network.transport",
    }
)
KEPT_EVENT_ATTRIBUTES = frozenset({"exception.type", "exception.escaped"})
"""Of an exception event: not `exception.message` nor `exception.stacktrace`."""

_METHODS = frozenset(
    {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT"}
)


_LEADING_COMMENTS = re.compile(r"\A(?:\s+|--[^\n]*|/\*.*?\*/)*", re.DOTALL)


_COMMAND = re.compile(r"[A-Za-z]+")


def operation(statement: str) -> str:
    """The SQL command a statement runs (`SELECT`, `INSERT`...), after its comments."""
    command = _COMMAND.match(_LEADING_COMMENTS.sub("", statement, count=1))
    return command.group().upper() if command else "postgresql"


class NamingStatements(SpanProcessor):
    """Names each statement span by its SQL command. The asyncpg instrumentation takes
    the statement's first word, which for our SQL files is their leading `--` comment."""

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        attributes = span.attributes or {}
        statement = attributes.get("db.statement", attributes.get("db.query.text"))
        if isinstance(statement, str):
            span.update_name(operation(statement))


class Redacting(SpanProcessor):
    """Hands each ended span on to `inner` with only what it may carry: the attributes
    in `KEPT_ATTRIBUTES`, exception events without their message, and a status without
    its description (the SDK writes the exception's message there too)."""

    def __init__(self, inner: SpanProcessor) -> None:
        self.inner = inner

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        self.inner.on_start(span, parent_context)

    def on_end(self, span: ReadableSpan) -> None:
        self.inner.on_end(
            ReadableSpan(
                name=span.name,
                context=span.context,
                parent=span.parent,
                resource=span.resource,
                attributes=_kept(span.attributes, KEPT_ATTRIBUTES),
                events=[
                    Event(
                        event.name, _kept(event.attributes, KEPT_EVENT_ATTRIBUTES), event.timestamp
                    )
                    for event in span.events
                ],
                links=span.links,
                kind=span.kind,
                status=Status(span.status.status_code),
                start_time=span.start_time,
                end_time=span.end_time,
                instrumentation_scope=span.instrumentation_scope,
            )
        )

    def shutdown(self) -> None:
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.inner.force_flush(timeout_millis)


def _kept(attributes: Attributes, names: frozenset[str]) -> dict[str, Any]:
    return {key: value for key, value in (attributes or {}).items() if key in names}


class _HeaderGetter(Getter[Scope]):
    """The propagator's view of an ASGI scope's headers (lower-case names, latin-1)."""

    def get(self, carrier: Scope, key: str) -> list[str] | None:
        name = key.lower().encode("latin-1")
        values = [value.decode("latin-1") for header, value in carrier["headers"] if header == name]
        return values or None

    def keys(self, carrier: Scope) -> list[str]:
        return [header.decode("latin-1") for header, _ in carrier["headers"]]


_HEADERS = _HeaderGetter()


class TraceRequests:
    """ASGI layer outside all others: one SERVER span per HTTP request, in the caller's
    trace when its `traceparent` says so, current while the request runs (so statement
    spans are its children and the request log line can name it).

    Named `GET /users/{user_id}` by the route template Litestar leaves in the scope, known
    only once routed, so the name is set at the end; a request that matched no route, or
    was refused before routing (401, 414, 431), is named by its method alone, as the
    semantic conventions say.

    Not Litestar's OpenTelemetryPlugin: it wraps Litestar's own handler, inside the token
    gate and the limits, so refused requests would get no span; and the ASGI middleware
    it runs names the span by the raw path, records `http.url` and `http.target` with the
    query string, and adds two spans per request for the ASGI messages.
    """

    def __init__(self, app: ASGIApp, tracer: Tracer) -> None:
        self.app = app
        self.tracer = tracer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP:
            await self.app(scope, receive, send)
            return
        method = scope["method"] if scope["method"] in _METHODS else "_OTHER"
        name = "HTTP" if method == "_OTHER" else method
        status: int | None = None

        async def send_with_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        with self.tracer.start_as_current_span(
            name,
            context=propagate.extract(scope, getter=_HEADERS),
            kind=SpanKind.SERVER,
            attributes={
                "http.request.method": method,
                "url.scheme": scope["scheme"],
                "network.protocol.version": scope["http_version"],
            },
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            try:
                await self.app(scope, receive, send_with_status)
            except Exception as error:
                span.set_attribute("error.type", type(error).__qualname__)
                span.set_status(StatusCode.ERROR)
                raise
            finally:
                if route := scope.get("path_template"):
                    span.update_name(f"{name} {route}")
                    span.set_attribute("http.route", route)
                if status is not None:
                    span.set_attribute("http.response.status_code", status)
                    if status >= 500:  # a 4xx is the caller's error, not the server span's
                        span.set_attribute("error.type", str(status))
                        span.set_status(StatusCode.ERROR)


class Tracing:
    """This process's tracer provider, fed by the request layer and by asyncpg."""

    def __init__(self, processor: SpanProcessor) -> None:
        self.provider = TracerProvider(resource=_resource())
        self.provider.add_span_processor(NamingStatements())
        self.provider.add_span_processor(Redacting(processor))
        self.tracer = self.provider.get_tracer("service")
        # Imported here, like the exporter: an untraced process does without both, a
        # hundred modules and 6,000 objects more for the garbage collector to walk.
        from opentelemetry.instrumentation.asyncpg import AsyncPGInstrumentor

        # Patches asyncpg's Connection methods for the whole process, until `close`.
        # Parameters are not captured (its default): they are the callers' values.
        self.asyncpg: AsyncPGInstrumentor = AsyncPGInstrumentor(capture_parameters=False)
        self.asyncpg.instrument(tracer_provider=self.provider)

    def around(self, app: ASGIApp) -> TraceRequests:
        return TraceRequests(app, self.tracer)

    @asynccontextmanager
    async def flushing(self) -> AsyncIterator[None]:
        """While the app runs; at its end, send what is still queued, so that a stopping
        worker does not lose the spans of its last requests."""
        try:
            yield
        finally:
            await asyncio.to_thread(self.provider.force_flush, FLUSH_TIMEOUT_MILLIS)

    def close(self) -> None:
        self.asyncpg.uninstrument()
        self.provider.shutdown()


def _resource() -> Resource:
    """Who sends the spans: `OTEL_SERVICE_NAME` / `OTEL_RESOURCE_ATTRIBUTES`, else
    posts-service; with the process id, to tell the workers apart."""
    resource = Resource.create({"process.pid": os.getpid()})
    if str(resource.attributes.get("service.name", "")).startswith("unknown_service"):
        resource = resource.merge(Resource({"service.name": DEFAULT_SERVICE_NAME}))
    return resource


def log_fields() -> dict[str, str]:
    """The trace and span ids of the current span, for the request log line."""
    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return {}
    return {
        "trace_id": trace.format_trace_id(context.trace_id),
        "span_id": trace.format_span_id(context.span_id),
    }


_configured: Tracing | None = None


def configure(processor: SpanProcessor) -> Tracing:
    """Trace this process's requests and statements into `processor`."""
    global _configured
    reset()
    _configured = Tracing(processor)
    return _configured


def configured() -> Tracing | None:
    return _configured


def reset() -> None:
    """Tracing off again: instrumentation removed, provider shut down."""
    global _configured
    if _configured is not None:
        _configured.close()
        _configured = None


def enabled_by_environment() -> bool:
    """Whether the standard variables ask for traces: an OTLP endpoint, and neither
    `OTEL_SDK_DISABLED=true` nor `OTEL_TRACES_EXPORTER=none`.

    An exporter or protocol this build lacks is logged as an error and leaves tracing off,
    as the OpenTelemetry SDKs do: raising here, in a worker building its app, would only
    make uvicorn start that worker again and again.
    """
    if os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    exporter = os.environ.get("OTEL_TRACES_EXPORTER", "").strip().lower() or "otlp"
    if exporter == "none":
        return False
    if not any(os.environ.get(name, "").strip() for name in ENDPOINT_VARIABLES):
        return False
    if exporter != "otlp":
        logger.error("tracing off: OTEL_TRACES_EXPORTER=%s is not supported, only otlp", exporter)
        return False
    for name in PROTOCOL_VARIABLES:  # the first one set decides
        if protocol := os.environ.get(name, "").strip():
            if protocol != SUPPORTED_PROTOCOL:
                logger.error(
                    "tracing off: %s=%s is not supported, only %s",
                    name,
                    protocol,
                    SUPPORTED_PROTOCOL,
                )
                return False
            break
    return True


def configure_from_env() -> Tracing | None:
    """OTLP/HTTP export in batches when the environment asks for it (see
    `enabled_by_environment`); nothing at all otherwise."""
    if not enabled_by_environment():
        return None
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    # The exporter reads its endpoint, headers, timeout and compression from OTEL_*.
    return configure(BatchSpanProcessor(OTLPSpanExporter()))
