"""Metrics and logs: what an operator reads to know what the service is doing.

Metrics: request counts, latencies and requests in flight are kept by `RequestObserver`,
labelled by route template (never the raw path: unbounded series); `/metrics` is
Litestar's Prometheus controller. The pool is sampled every second into gauges, and the
wait for a connection is a histogram. With
several workers, `PROMETHEUS_MULTIPROC_DIR` (set by `python -m service serve`) makes
every figure cover all of them.

Logs: one JSON object a line (or plain text with `LOG_FORMAT=text`), each carrying the
request id of the request it belongs to. `RequestObserver` writes one line per request.
"""

from __future__ import annotations

import contextvars
import io
import logging
import os
import re
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any, Literal

import msgspec
from litestar import Response, get
from litestar.datastructures import State
from litestar.enums import ScopeType
from litestar.plugins.prometheus import PrometheusController
from litestar.types import ASGIApp, Message, Receive, Scope, Send
from prometheus_client import Counter, Gauge, Histogram

from service.background import every
from service.http import header
from service.metrics import LATENCY_BUCKETS

LogFormat = Literal["json", "text"]


REQUESTS = Counter(
    "service_requests", "Requests answered, by route template", ["method", "path", "status_code"]
)
REQUEST_SECONDS = Histogram(
    "service_request_duration_seconds",
    "Time from the request's arrival to the end of its answer, by route template",
    ["method", "path", "status_code"],
    buckets=LATENCY_BUCKETS,
)
SERVER_ERRORS = Counter(
    "service_requests_error",
    "Answers with a status of 500 or more",
    ["method", "path", "status_code"],
)
IN_FLIGHT = Gauge(
    "service_requests_in_progress",
    "Requests being answered now",
    ["method"],
    multiprocess_mode="livesum",
)
UNMATCHED = "unmatched"
"""The route label of requests that matched no route (404, 405): never the raw path."""


class MetricsController(PrometheusController):
    """`/metrics` in Prometheus text, with this worker's pools sampled at the scrape."""

    @get(media_type="text/plain", operation_id="metrics", tags=["operations"])
    async def get(self, state: State) -> Response[bytes]:
        state.database.sample()
        response: Response[bytes] = await PrometheusController.get.fn(self)
        return response


# --- logs -------------------------------------------------------------------------------

request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)

_VALID_REQUEST_ID = re.compile(r"[A-Za-z0-9._:@/+=-]{1,128}")
"""A caller's X-Request-ID is kept when short and made of printable, harmless characters."""


class _JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, request id, extra fields."""

    _encoder = msgspec.json.Encoder()

    def format(self, record: logging.LogRecord) -> str:
        exception = self.formatException(record.exc_info) if record.exc_info else None
        fields = getattr(record, "fields", None)
        message = record.getMessage()
        return self.render(
            record.created, record.levelname, record.name, message, fields, exception
        )

    def render(
        self,
        created: float,
        level: str,
        name: str,
        message: str,
        fields: dict[str, Any] | None,
        exception: str | None = None,
    ) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(created, UTC).isoformat(timespec="milliseconds"),
            "level": level,
            "logger": name,
            "message": message,
        }
        if (current := request_id.get()) is not None:
            entry["request_id"] = current
        if fields:
            entry.update(fields)
        if exception:
            entry["exception"] = exception
        return self._encoder.encode(entry).decode()


class _TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        return self._with_fields(super().format(record), getattr(record, "fields", None))

    def render(
        self, created: float, level: str, name: str, message: str, fields: dict[str, Any] | None
    ) -> str:
        record = logging.makeLogRecord({"created": created, "msecs": (created % 1) * 1000})
        line = f"{self.formatTime(record)} {level} {name} {message}"
        return self._with_fields(line, fields)

    @staticmethod
    def _with_fields(line: str, fields: dict[str, Any] | None) -> str:
        if fields:
            line += " " + " ".join(f"{key}={value}" for key, value in fields.items())
        if (current := request_id.get()) is not None:
            line += f" request_id={current}"
        return line


class _BufferedStderr(logging.StreamHandler):  # type: ignore[type-arg]
    """stderr through a 64 KiB buffer instead of one write(2) per line.

    A request log line costs a system call otherwise, a good part of a request's time.
    The buffer is written when full, at once for WARNING and above, every
    `LOG_FLUSH_SECONDS` by the app (`flushing_logs`), and when logging shuts down at exit.
    """

    def __init__(self) -> None:
        raw = io.FileIO(os.dup(sys.stderr.fileno()), "w")
        super().__init__(io.TextIOWrapper(io.BufferedWriter(raw, 65536), encoding="utf-8"))

    def flush(self) -> None:
        """No-op: StreamHandler calls it after every record; `write_out` flushes."""

    def emit(self, record: logging.LogRecord) -> None:
        super().emit(record)
        if record.levelno >= logging.WARNING:
            self.write_out()

    def write_out(self) -> None:
        with self.lock:  # type: ignore[union-attr]
            self.stream.flush()

    def close(self) -> None:
        self.write_out()
        super().close()


LOG_FLUSH_SECONDS = 0.5


def write_out_logs() -> None:
    for handler in logging.getLogger().handlers:
        if isinstance(handler, _BufferedStderr):
            handler.write_out()


@asynccontextmanager
async def flushing_logs() -> AsyncIterator[None]:
    """Write buffered log lines out every half second while the app runs, and at its end."""

    async def write_out() -> None:
        write_out_logs()

    async with every(LOG_FLUSH_SECONDS, write_out):
        yield
    write_out_logs()


def configure_logging(
    level: str, log_format: LogFormat = "json", stream: io.TextIOBase | None = None
) -> None:
    """Every log line of the process, ours and the libraries', through one handler (on
    buffered stderr, or on `stream`, which tests pass)."""
    handler = _BufferedStderr() if stream is None else logging.StreamHandler(stream)
    handler.setFormatter(_JsonFormatter() if log_format == "json" else _TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    REQUEST_LOG.handler = handler if root.isEnabledFor(logging.INFO) else None
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    # RequestObserver writes the one line per request; uvicorn's access lines would repeat it.
    logging.getLogger("uvicorn.access").disabled = True


class RequestLog:
    """The one line per request, written straight to the log handler.

    Same format, same stream as every other line, but without building a LogRecord: that
    machinery cost about 35 µs a request here, a tenth of a request's whole time. Off
    until `configure_logging` (so at `LOG_LEVEL` WARNING and above).
    """

    def __init__(self) -> None:
        self.handler: logging.Handler | None = None

    def write(self, fields: dict[str, Any]) -> None:
        handler = self.handler
        if handler is None:
            return
        formatter: Any = handler.formatter
        line = formatter.render(time.time(), "INFO", "service.requests", "request", fields)
        with handler.lock:  # type: ignore[union-attr]
            handler.stream.write(line + "\n")  # type: ignore[attr-defined]


REQUEST_LOG = RequestLog()


class _RouteMetrics:
    """The labelled children of one (method, route, status), looked up once and kept:
    prometheus-client's `labels()` takes a lock and builds a tuple on every call."""

    def __init__(self) -> None:
        self._children: dict[tuple[str, str, int], tuple[Any, Any, Any]] = {}

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        key = (method, route, status)
        children = self._children.get(key)
        if children is None:
            labels = (method, route, str(status))
            children = (
                REQUESTS.labels(*labels),
                REQUEST_SECONDS.labels(*labels),
                SERVER_ERRORS.labels(*labels) if status >= 500 else None,
            )
            self._children[key] = children
        count, duration, errors = children
        count.inc()
        duration.observe(seconds)
        if errors is not None:
            errors.inc()


class RequestObserver:
    """ASGI middleware around the whole app: request id, metrics and one log line a request.

    It wraps Litestar's handler (not a route), so unrouted requests (404, 405) count too,
    and reads the route template Litestar leaves in the scope: metrics and logs name
    `/users/{user_id}`, never the raw path. It logs the method, route, status, duration,
    client address and caller (a token's name): never bodies, query strings or headers,
    which can carry emails or tokens.
    """

    def __init__(
        self, app: ASGIApp, trace_fields: Callable[[], dict[str, str]] | None = None
    ) -> None:
        self.app = app
        self.trace_fields = trace_fields  # the trace and span ids, when tracing is on
        self.metrics = _RouteMetrics()
        self.in_flight = {method: IN_FLIGHT.labels(method) for method in _METHODS}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP:
            await self.app(scope, receive, send)
            return
        incoming = header(scope, b"x-request-id")
        current = incoming if incoming and _VALID_REQUEST_ID.fullmatch(incoming) else None
        current = current or uuid.uuid4().hex
        token = request_id.set(current)
        started = time.perf_counter()
        status = 500
        encoded_id = current.encode()
        method = scope["method"]
        in_flight = self.in_flight.get(method) or IN_FLIGHT.labels("other")

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), (b"x-request-id", encoded_id)]
            await send(message)

        in_flight.inc()
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            in_flight.dec()
            seconds = time.perf_counter() - started
            route = scope.get("path_template", UNMATCHED)
            self.metrics.observe(method, route, status, seconds)
            if REQUEST_LOG.handler is not None:
                client = scope.get("client")
                fields = {
                    "method": method,
                    "route": route,
                    "status": status,
                    "duration_ms": round(seconds * 1000, 3),
                    "remote": client[0] if client else None,
                    "caller": scope.get("state", {}).get("caller"),
                }
                if self.trace_fields is not None:
                    fields |= self.trace_fields()
                REQUEST_LOG.write(fields)
            request_id.reset(token)


_METHODS = ("GET", "HEAD", "POST", "PATCH", "PUT", "DELETE", "OPTIONS")


def multiprocess_directory(data_dir: str) -> str:
    """A fresh folder for prometheus-client's multiprocess files of this server run."""
    path = os.path.join(os.path.abspath(data_dir), "metrics")
    os.makedirs(path, exist_ok=True)
    for stale in os.listdir(path):
        os.remove(os.path.join(path, stale))
    return path
