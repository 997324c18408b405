"""Trace context: the caller's trace joined, one span per request and per statement, no
request values in any span, OTLP export from every worker, and nothing at all when off.

In-process tests trace into the SDK's in-memory exporter through the service's own
pipeline (`tracing.configure`, the same redaction as in production) and turn tracing off
again afterwards, so that the rest of the suite runs untraced and unpatched.
"""

from __future__ import annotations

import http.server
import json
import os
import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import asyncpg
import httpx
import msgspec
import pytest
from opentelemetry import trace
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from service.app import create_app
from service.edge import auth, tracing
from service.edge.layer import Edge
from tests.helpers import app_client, unique_email
from tests.server import free_port, running_service

CALLER_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"
TRACEPARENT = {"traceparent": f"00-{CALLER_TRACE}-{CALLER_SPAN}-01"}


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    """Tracing on for this process, into memory; off again (asyncpg unpatched) after."""
    exporter = InMemorySpanExporter()
    tracing.configure(SimpleSpanProcessor(exporter))
    try:
        yield exporter
    finally:
        tracing.reset()


@pytest.fixture
async def traced(settings, spans) -> AsyncIterator[httpx.AsyncClient]:
    async with app_client(settings) as client:
        spans.clear()  # the start-up's key clean-up runs statements of its own
        yield client


def hex_trace(span: ReadableSpan) -> str:
    return trace.format_trace_id(span.context.trace_id)


def hex_span(span: ReadableSpan) -> str:
    return trace.format_span_id(span.context.span_id)


def requests_of(exporter: InMemorySpanExporter) -> list[ReadableSpan]:
    return [span for span in exporter.get_finished_spans() if span.kind == SpanKind.SERVER]


def children_of(exporter: InMemorySpanExporter, parent: ReadableSpan) -> list[ReadableSpan]:
    return [
        span
        for span in exporter.get_finished_spans()
        if span.parent is not None and span.parent.span_id == parent.context.span_id
    ]


def everything_recorded(exporter: InMemorySpanExporter) -> str:
    """Every name, attribute, event and status text of every span, as one string."""
    recorded: list[Any] = []
    for span in exporter.get_finished_spans():
        recorded += [span.name, dict(span.attributes or {}), span.status.description]
        recorded += [[event.name, dict(event.attributes or {})] for event in span.events]
    return json.dumps(recorded, default=str)


async def test_the_callers_trace_is_joined_and_the_statement_is_a_child_of_the_request(
    traced, spans, user
):
    response = await traced.get(f"/users/{user['id']}", headers=TRACEPARENT)
    assert response.status_code == 200

    in_trace = [span for span in spans.get_finished_spans() if hex_trace(span) == CALLER_TRACE]
    (request,) = [span for span in in_trace if span.kind == SpanKind.SERVER]
    assert request.name == "GET /users/{user_id}"
    assert request.parent is not None
    assert request.parent.is_remote
    assert trace.format_span_id(request.parent.span_id) == CALLER_SPAN
    assert request.attributes["http.route"] == "/users/{user_id}"
    assert request.attributes["http.response.status_code"] == 200
    assert request.status.status_code == StatusCode.UNSET
    # One statement, the request's child, in the same trace: nothing else in it.
    (statement,) = children_of(spans, request)
    assert {hex_span(span) for span in in_trace} == {hex_span(request), hex_span(statement)}
    assert statement.kind == SpanKind.CLIENT
    assert statement.name == "SELECT"
    assert statement.attributes["db.system"] == "postgresql"
    assert "$1" in statement.attributes["db.statement"]
    assert "db.statement.parameters" not in statement.attributes
    # Spans outside the caller's trace are the app's background statements, roots of their own.
    for other in spans.get_finished_spans():
        if hex_trace(other) != CALLER_TRACE:
            assert other.parent is None
            assert other.kind == SpanKind.CLIENT


async def test_a_request_without_traceparent_starts_a_new_trace(traced, spans, user):
    for _ in range(2):
        assert (await traced.get(f"/users/{user['id']}")).status_code == 200

    first, second = requests_of(spans)
    assert first.parent is None
    assert second.parent is None
    assert hex_trace(first) != hex_trace(second)
    assert CALLER_TRACE not in (hex_trace(first), hex_trace(second))
    for request in (first, second):
        (statement,) = children_of(spans, request)
        assert hex_trace(statement) == hex_trace(request)


async def test_an_unsampled_caller_trace_records_nothing(traced, spans, user):
    unsampled = {"traceparent": f"00-{CALLER_TRACE}-{CALLER_SPAN}-00"}
    assert (await traced.get(f"/users/{user['id']}", headers=unsampled)).status_code == 200
    assert [span for span in spans.get_finished_spans() if hex_trace(span) == CALLER_TRACE] == []


async def test_spans_are_named_by_route_template_never_by_the_raw_path(traced, spans, user):
    email = unique_email()
    assert (await traced.post("/users", json={"email": email, "name": "N"})).status_code == 201
    assert (await traced.get("/users/9223372036854775807")).status_code == 404
    assert (await traced.get(f"/users/{email}")).status_code == 404  # no route matches
    assert (await traced.delete("/health/live")).status_code == 405
    assert (await traced.request("PURGE", "/users")).status_code == 405

    names = [
        (span.name, span.attributes["http.response.status_code"]) for span in requests_of(spans)
    ]
    assert names == [
        ("POST /users", 201),
        ("GET /users/{user_id}", 404),
        ("GET", 404),
        ("DELETE", 405),
        ("HTTP", 405),
    ]
    assert requests_of(spans)[-1].attributes["http.request.method"] == "_OTHER"
    assert "http.route" not in requests_of(spans)[2].attributes


async def test_a_server_error_marks_the_request_span_and_a_4xx_does_not(spans):
    async def answer(scope: Any, receive: Any, send: Any) -> None:
        if scope["path"] == "/boom":
            raise RuntimeError("a message that may quote a value")
        status = int(scope["path"].strip("/"))
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    layer = tracing.configured().around(answer)
    transport = httpx.ASGITransport(app=layer, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://service") as client:
        for path in ("/503", "/404", "/boom"):
            await client.get(path)

    unavailable, missing, failed = requests_of(spans)
    assert unavailable.status.status_code == StatusCode.ERROR
    assert unavailable.attributes["error.type"] == "503"
    assert missing.status.status_code == StatusCode.UNSET
    assert "error.type" not in missing.attributes
    assert failed.status.status_code == StatusCode.ERROR
    assert failed.attributes["error.type"] == "RuntimeError"
    assert "a message" not in everything_recorded(spans)


@pytest.fixture
async def guarded_traced(settings, spans) -> AsyncIterator[httpx.AsyncClient]:
    _, line = auth.new_token("tracer", ["read"])
    guarded = msgspec.structs.replace(settings, auth_disabled=False, api_tokens=line)
    async with app_client(guarded) as client:
        spans.clear()
        yield client


async def test_requests_refused_in_front_of_litestar_get_a_span_in_the_callers_trace(
    guarded_traced, spans
):
    refused = [
        (await guarded_traced.get("/users", headers=TRACEPARENT)).status_code,
        (await guarded_traced.get("/users?" + "a" * 5000, headers=TRACEPARENT)).status_code,
        (
            await guarded_traced.get("/users", headers=TRACEPARENT | {"x-big": "b" * 17_000})
        ).status_code,
    ]
    assert refused == [401, 414, 431]

    requests = requests_of(spans)
    assert [(span.name, span.attributes["http.response.status_code"]) for span in requests] == [
        ("GET", 401),
        ("GET", 414),
        ("GET", 431),
    ]
    assert {hex_trace(span) for span in requests} == {CALLER_TRACE}
    assert all(children_of(spans, span) == [] for span in requests)


async def test_no_value_from_the_request_is_in_any_span(traced, spans):
    email = unique_email()
    body = {"email": email, "name": "Private Person"}
    secret = {"Authorization": "Bearer s3cr3t-token-value", "User-Agent": "agent-of-secrets"}
    assert (await traced.post("/users", json=body, headers=secret)).status_code == 201
    duplicate = await traced.post("/users", json=body, headers=TRACEPARENT)
    assert duplicate.status_code == 409
    assert (await traced.get("/users", params={"email": email})).status_code == 200
    assert (await traced.get(f"/users/{email}")).status_code == 404
    assert (await traced.get("/users", params={"limit": "s3cr3t-limit"})).status_code == 400
    created = (await traced.get("/users", params={"email": email})).json()["items"][0]
    patched = await traced.patch(f"/users/{created['id']}", json={"name": "Other Private"})
    assert patched.status_code == 200

    recorded = everything_recorded(spans)
    for value in (email, "Private Person", "Other Private", "s3cr3t", "agent-of-secrets"):
        assert value not in recorded
    # The refused INSERT's span says what failed, not PostgreSQL's message (which quotes
    # the email): the exception's type survives, its message and stack do not.
    (request,) = [span for span in requests_of(spans) if hex_trace(span) == CALLER_TRACE]
    (insert,) = children_of(spans, request)
    assert insert.status.status_code == StatusCode.ERROR
    assert insert.status.description is None
    (event,) = insert.events
    assert event.name == "exception"
    assert dict(event.attributes or {}) == {
        "exception.type": "asyncpg.exceptions.UniqueViolationError",
        "exception.escaped": "False",
    }


async def test_the_request_log_line_carries_the_trace_and_span_ids(traced, spans, log_lines, user):
    await traced.get(f"/users/{user['id']}", headers=TRACEPARENT)
    await traced.get("/health/live")

    requests = [row for row in log_lines() if row["logger"] == "service.requests"]
    (line, untraced_caller) = [row for row in requests if row["method"] == "GET"]
    (request, fresh) = requests_of(spans)
    assert (line["trace_id"], line["span_id"]) == (CALLER_TRACE, hex_span(request))
    assert (untraced_caller["trace_id"], untraced_caller["span_id"]) == (
        hex_trace(fresh),
        hex_span(fresh),
    )


def asgi_layers(app: Any) -> list[Any]:
    """The app's ASGI handler and every layer it wraps, outermost first."""
    layers, handler, seen = [], app.asgi_handler, set()
    while handler is not None and id(handler) not in seen:
        seen.add(id(handler))
        layers.append(handler)
        handler = getattr(handler, "app", None)
    return layers


def asyncpg_patched() -> bool:
    return hasattr(asyncpg.connection.Connection.fetch, "__wrapped__")


async def test_tracing_off_installs_nothing(settings, client, user, log_lines):
    assert tracing.configured() is None
    app = create_app(settings)
    layers = asgi_layers(app)
    assert isinstance(layers[0], Edge)
    assert layers[0].trace_fields is None
    assert not any(isinstance(layer, tracing.TraceRequests) for layer in layers)
    assert not asyncpg_patched()
    await client.get(f"/users/{user['id']}", headers=TRACEPARENT)
    (line,) = [row for row in log_lines() if row["logger"] == "service.requests"]
    assert "trace_id" not in line
    assert "span_id" not in line


def test_tracing_on_puts_its_layer_outermost_and_off_again_leaves_no_trace(settings):
    provider_before = trace.get_tracer_provider()
    tracing.configure(SimpleSpanProcessor(InMemorySpanExporter()))
    try:
        layers = asgi_layers(create_app(settings))
        assert isinstance(layers[0], tracing.TraceRequests)
        assert isinstance(layers[1], Edge)
        assert layers[1].trace_fields is tracing.log_fields
        assert asyncpg_patched()
    finally:
        tracing.reset()
    assert not asyncpg_patched()
    assert tracing.configured() is None
    assert trace.get_tracer_provider() is provider_before


@pytest.fixture
def otel_environment(monkeypatch) -> Iterator[pytest.MonkeyPatch]:
    """No OTEL_* variable but those the test sets; tracing off again afterwards."""
    for name in list(os.environ):
        if name.startswith("OTEL_"):
            monkeypatch.delenv(name)
    try:
        yield monkeypatch
    finally:
        tracing.reset()


@pytest.mark.parametrize(
    "variables",
    [
        {},
        {"OTEL_SERVICE_NAME": "named-but-no-endpoint"},
        {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318", "OTEL_SDK_DISABLED": "true"},
        {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318", "OTEL_TRACES_EXPORTER": "none"},
    ],
)
def test_without_an_endpoint_or_when_disabled_tracing_stays_off(otel_environment, variables):
    for name, value in variables.items():
        otel_environment.setenv(name, value)
    assert tracing.configure_from_env() is None
    assert tracing.configured() is None
    assert not asyncpg_patched()


@pytest.mark.parametrize(
    ("variables", "service_name"),
    [
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}, "posts-service"),
        (
            {
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:4318/v1/traces",
                "OTEL_SERVICE_NAME": "posts-eu",
                "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
            },
            "posts-eu",
        ),
        (
            {
                "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318",
                "OTEL_RESOURCE_ATTRIBUTES": "service.name=from-attributes,deployment=eu",
            },
            "from-attributes",
        ),
    ],
)
def test_an_otlp_endpoint_turns_tracing_on(otel_environment, variables, service_name):
    for name, value in variables.items():
        otel_environment.setenv(name, value)
    configured = tracing.configure_from_env()
    assert configured is not None
    assert tracing.configured() is configured
    assert configured.provider.resource.attributes["service.name"] == service_name
    assert asyncpg_patched()


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
        ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/json"),
        ("OTEL_TRACES_EXPORTER", "zipkin"),
    ],
)
def test_an_unsupported_exporter_or_protocol_is_logged_by_name_and_leaves_tracing_off(
    otel_environment, caplog, name, value
):
    otel_environment.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318")
    otel_environment.setenv(name, value)
    assert tracing.configure_from_env() is None
    assert tracing.configured() is None
    assert not asyncpg_patched()
    (record,) = [record for record in caplog.records if record.name == "service.tracing"]
    assert record.levelname == "ERROR"
    assert f"{name}={value} is not supported" in record.getMessage()


class OtlpReceiver(http.server.ThreadingHTTPServer):
    """A minimal OTLP/HTTP trace receiver on loopback: keeps every export request."""

    def __init__(self) -> None:
        self.exports: list[ExportTraceServiceRequest] = []
        self.lock = threading.Lock()
        super().__init__(("127.0.0.1", free_port()), _OtlpHandler)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def spans(self) -> list[tuple[dict[str, Any], Any]]:
        """(resource attributes, span) of every span received so far."""
        found = []
        with self.lock:
            for export in self.exports:
                for resource_spans in export.resource_spans:
                    resource = {
                        item.key: item.value.string_value or item.value.int_value
                        for item in resource_spans.resource.attributes
                    }
                    for scope_spans in resource_spans.scope_spans:
                        found += [(resource, span) for span in scope_spans.spans]
        return found


class _OtlpHandler(http.server.BaseHTTPRequestHandler):
    server: OtlpReceiver

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        export = ExportTraceServiceRequest.FromString(body)
        with self.server.lock:
            self.server.exports.append(export)
        reply = ExportTraceServiceResponse().SerializeToString()
        self.send_response(200 if self.path == "/v1/traces" else 404)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet."""


@pytest.fixture
def otlp_receiver() -> Iterator[OtlpReceiver]:
    receiver = OtlpReceiver()
    thread = threading.Thread(target=receiver.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        receiver.shutdown()
        receiver.server_close()


def test_every_worker_exports_its_spans_over_otlp_and_flushes_them_when_stopped(
    data_dir, otlp_receiver
):
    trace_ids = [uuid.uuid4().hex for _ in range(64)]
    with running_service(
        data_dir,
        WORKERS="2",
        OTEL_EXPORTER_OTLP_ENDPOINT=otlp_receiver.endpoint,
        OTEL_SERVICE_NAME="posts-under-test",
        # Nothing leaves before the stop, so every span must come from the flush at stop.
        OTEL_BSP_SCHEDULE_DELAY="600000",
    ) as service:

        def get(trace_id: str) -> int:
            # A new connection each time, so that both workers answer some of them.
            with service.client() as client:
                headers = {"traceparent": f"00-{trace_id}-{CALLER_SPAN}-01"}
                return client.get("/users/9223372036854775807", headers=headers).status_code

        with ThreadPoolExecutor(8) as pool:
            assert set(pool.map(get, trace_ids)) == {404}
        assert otlp_receiver.spans() == []
        assert service.terminate() == 0

    received = otlp_receiver.spans()
    requests = [
        (resource, span) for resource, span in received if span.name == "GET /users/{user_id}"
    ]
    assert sorted(span.trace_id.hex() for _, span in requests) == sorted(trace_ids)
    statements = {span.parent_span_id: span for _, span in received if span.name == "SELECT"}
    for _, request in requests:
        assert request.parent_span_id.hex() == CALLER_SPAN
        assert statements[request.span_id].trace_id == request.trace_id
    assert {resource["service.name"] for resource, _ in received} == {"posts-under-test"}
    workers = {resource["process.pid"] for resource, _ in requests}
    assert service.process.pid not in workers
    assert len(workers) == 2
