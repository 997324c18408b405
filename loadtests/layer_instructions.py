"""Instructions per request of the service's own ASGI layers alone, over a trivial app.

`make instructions` counts whole requests (Litestar, asyncpg, the database); this counts
only the edge layer (`service.edge.layer`: request id, limits, token gate, metrics, log
line), in front of an ASGI app that answers at once (reading the body of a POST), with no
database: quick to repeat while tuning it. Each request runs in its own task, as
under uvicorn. Log lines go to the service's buffered stderr handler, at INFO.

    python -m loadtests.layer_instructions [LAYER[-post] ...]

LAYER is none (the app alone), edge, or the edge without one of its parts, to count what
that part costs (its line less the edge's): edge_no_log (`LOG_LEVEL=WARNING`: no request
log line), edge_no_gate (auth disabled), edge_no_metrics and edge_no_id (the route
metrics' tally and the request id's generation replaced by nothing and by a constant: the
service has no switch for these). Default: every one, GET and POST. Each is run under
`valgrind --tool=callgrind` with 500 and 1,500 requests; the difference divided by 1,000
is one request. The edge layer's cost is its line less the line of `none`.
"""

from __future__ import annotations

import asyncio
import gc
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

LAYERS = ("none", "edge", "edge_no_log", "edge_no_gate", "edge_no_metrics", "edge_no_id")
TOKEN = "layer-token"
FEW, MANY = 500, 1500


def drive(which: str, count: int) -> None:
    import uvloop

    from service.base.logs import configure_logging
    from service.edge import layer as edge_layer
    from service.edge.auth import TokenGate, digest, parse_tokens
    from service.edge.layer import Edge
    from service.edge.observer import ROUTE_METRICS

    layer, _, post = which.partition("-")
    configure_logging("WARNING" if layer == "edge_no_log" else "INFO", "json")
    # What a part costs, by taking it out: the service has no switch for these two.
    if layer == "edge_no_metrics":
        ROUTE_METRICS.observe = lambda *observed: None  # type: ignore[method-assign]
    if layer == "edge_no_id":
        edge_layer.new_request_id = lambda sent: "0123456789abcdef0123456789abcdef"  # type: ignore[attr-defined]
    tokens = parse_tokens(f"layers read,write {digest(TOKEN).hex()}", "layers")

    async def answer(scope: Any, receive: Any, send: Any) -> None:
        if scope["method"] != "GET":
            await receive()
        scope["path_template"] = "/posts/{post_id}"
        headers = [(b"content-type", b"application/json"), (b"etag", b'"1"')]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"{}"})

    gate = TokenGate(tokens, open_prefixes=("/health/",))
    app: Any = (
        answer if layer == "none" else Edge(answer, gate if layer != "edge_no_gate" else None)
    )
    method = "POST" if post else "GET"
    headers = [
        (b"host", b"127.0.0.1:8101"),
        (b"authorization", f"Bearer {TOKEN}".encode()),
        (b"content-type", b"application/json"),
        (b"user-agent", b"wrk"),
        (b"content-length", b"2"),
    ]

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"{}", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        pass

    async def one() -> None:
        scope = {
            "type": "http",
            "method": method,
            "path": "/posts/1",
            "query_string": b"",
            "headers": headers,
            "client": ("127.0.0.1", 5000),
            "state": {},
        }
        await app(scope, receive, send)

    async def run() -> None:
        loop = asyncio.get_running_loop()
        for _ in range(200):
            await loop.create_task(one())
        gc.collect()
        gc.freeze()
        for _ in range(count):
            await loop.create_task(one())

    uvloop.run(run())


def instructions(which: str, count: int) -> int:
    with tempfile.TemporaryDirectory(prefix="posts-layers-") as folder:
        out = Path(folder) / "callgrind.out"
        subprocess.run(
            ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", sys.executable,
             "-m", "loadtests.layer_instructions", "drive", which, str(count)],
            check=True, capture_output=True,
        )  # fmt: skip
        for line in out.read_text().splitlines():
            if line.startswith(("summary:", "totals:")):
                return int(line.split()[1])
    raise RuntimeError(f"no total in callgrind's output for {which}")


def main() -> int:
    if sys.argv[1:2] == ["drive"]:
        drive(sys.argv[2], int(sys.argv[3]))
        return 0
    chosen = sys.argv[1:] or [f"{layer}{post}" for post in ("", "-post") for layer in LAYERS]
    for which in chosen:
        if which.partition("-")[0] not in LAYERS:
            print(f"unknown layer {which!r}; known: {LAYERS} (with -post for a POST)")
            return 2
        per_request = (instructions(which, MANY) - instructions(which, FEW)) / (MANY - FEW)
        print(f"{which:<14} {per_request:>9,.0f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
