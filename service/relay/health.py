"""The relay's own HTTP port (`RELAY_METRICS_PORT`): `/metrics` (Prometheus text, every
`service_relay_*` figure) and `/health/ready` (200 when the relay can do its part, else
503; a JSON body says whether this process holds the lease). Served from a thread by the
standard library's WSGI server, as prometheus-client's own `start_http_server` does.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from typing import Any
from wsgiref.simple_server import WSGIServer, make_server

import msgspec
from prometheus_client import make_wsgi_app
from prometheus_client.exposition import ThreadingWSGIServer, _SilentHandler


class Readiness(msgspec.Struct):
    """What `/health/ready` reports; written by the relay's loop, read by the server."""

    ready: bool = False
    lease: bool = False
    reason: str = "starting"


StartResponse = Callable[[str, list[tuple[str, str]]], Any]


def application(readiness: Readiness) -> Callable[[dict[str, Any], StartResponse], Iterable[bytes]]:
    metrics = make_wsgi_app()

    def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == "/health/ready":
            body = msgspec.json.encode(readiness)
            status = "200 OK" if readiness.ready else "503 Service Unavailable"
            start_response(status, [("Content-Type", "application/json")])
            return [body]
        if path == "/metrics":
            return metrics(environ, start_response)  # type: ignore[no-any-return]
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"not found: /metrics, /health/ready\n"]

    return app


def serve(host: str, port: int, readiness: Readiness) -> WSGIServer:
    """Serve from a daemon thread; `shutdown()` on the result stops it."""
    server = make_server(
        host, port, application(readiness), ThreadingWSGIServer, handler_class=_SilentHandler
    )
    threading.Thread(target=server.serve_forever, name="relay-http", daemon=True).start()
    return server
