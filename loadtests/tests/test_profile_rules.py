"""The buckets of `make profile`, on stacks as py-spy writes them."""

from __future__ import annotations

from loadtests.profile import Bucket, classify, fold, parse_frame

# What every sample of the service starts with, down to the event loop (native frames on).
START = [
    "_run_module_as_main (<frozen runpy>)",
    "<module> (service/__main__.py)",
    "serve (service/__main__.py)",
    "Server.run (uvicorn/server.py)",
    "Runner.run (asyncio/runners.py)",
    "run_until_complete (loop.c)",
    "run_forever (loop.c)",
    "uv_run (core.c)",
    "task_step (_asynciomodule.c)",
]
LAYERS = [
    "RequestResponseCycle.run_asgi (uvicorn/protocols/http/httptools_impl.py)",
    "Litestar.__call__ (litestar/app.py)",
    "Edge.__call__ (service/edge/layer.py)",
    "ASGIRouter.__call__ (litestar/_asgi/asgi_router.py)",
    "HTTPRoute._call_handler_function (litestar/routes/http.py)",
]


def bucket(*leaf: str) -> Bucket:
    return classify([*START, *LAYERS, *leaf])[0]


def test_the_innermost_named_frame_decides() -> None:
    handler = "PostController.get_post (service/posts/controller.py)"
    assert bucket() == Bucket.LITESTAR_ROUTING
    assert bucket(handler) == Bucket.HANDLERS
    assert bucket(handler, "Connection.fetchrow (asyncpg/connection.py)") == Bucket.ASYNCPG
    assert (
        bucket(handler, "BaseProtocol__write (protocol.c)", "write (libc.so.6)") == Bucket.ASYNCPG
    )
    assert (
        bucket(
            "SignatureModel.parse (litestar/_signature/model.py)",
            "msgspec_convert (msgspec/_core.so)",
        )
        == Bucket.LITESTAR_ROUTING
    )
    assert bucket("ASGIResponse.__init__ (litestar/response/base.py)") == Bucket.LITESTAR_RESPONSE
    assert bucket("encode_json (litestar/serialization/msgspec_hooks.py)") == Bucket.JSON
    assert (
        bucket(
            "encode_json (litestar/serialization/msgspec_hooks.py)",
            "JSONEncoder_encode (msgspec/_core.so)",
        )
        == Bucket.JSON
    )
    assert bucket("header (service/http.py)") == Bucket.LITESTAR_ROUTING  # a helper: its caller's


def test_our_layers_own_only_their_own_lines() -> None:
    top = [*START, *LAYERS[:3]]
    assert classify(top)[0] == Bucket.OBSERVER
    assert (
        classify([*top, "uuid4 (uuid.py)", "os_urandom (libpython3.11.so.1.0)"])[0]
        == Bucket.OBSERVER
    )
    assert classify([*top, "refusal (service/edge/limits.py)"])[0] == Bucket.LIMITS
    gate = ["TokenGate.refusal (service/edge/auth.py)", "digest (service/edge/auth.py)"]
    assert classify([*top, *gate])[0] == Bucket.TOKEN_GATE


def test_whole_rules_claim_what_they_call() -> None:
    log = [
        "RequestLog.write (service/observability.py)",
        "_JsonFormatter.render (service/observability.py)",
    ]
    assert (
        classify([*START, *LAYERS[:3], *log, "JSONEncoder_encode (msgspec/_core.so)"])[0]
        == Bucket.REQUEST_LOG
    )
    metrics = [
        "_RouteMetrics.observe (service/observability.py)",
        "MutexValue.inc (prometheus_client/values.py)",
    ]
    assert classify([*START, *LAYERS[:3], *metrics])[0] == Bucket.METRICS
    dependency = [
        "resolve_dependency (litestar/_kwargs/dependencies.py)",
        "session_of (service/sessions.py)",
        "Pool.acquire (asyncpg/pool.py)",
    ]
    assert bucket(*dependency) == Bucket.DEPENDENCY
    assert (
        bucket(*dependency[:2], "Histogram.observe (prometheus_client/metrics.py)")
        == Bucket.METRICS
    )
    assert (
        bucket("create (service/posts/queries.py)", "gc_collect_main (libpython3.11.so.1.0)")
        == Bucket.GC
    )


def test_the_rules_survive_modules_moving_into_sub_packages() -> None:
    assert bucket("RequestLog.write (service/observability/logs.py)") == Bucket.REQUEST_LOG
    assert bucket("emit (service/observability/logs.py)") == Bucket.REQUEST_LOG
    assert bucket("observe (service/observability/metrics.py)") == Bucket.METRICS
    assert bucket("TokenGate.refusal (service/security/gate.py)") == Bucket.TOKEN_GATE
    assert bucket("check (service/security/tokens.py)") == Bucket.TOKEN_GATE
    assert bucket("refusal (service/edge/guards.py)") == Bucket.LIMITS
    assert bucket("Edge.__call__ (service/front.py)") == Bucket.OBSERVER
    assert bucket("session_of (service/http/sessions.py)") == Bucket.DEPENDENCY


def test_the_event_loop_is_the_fallback() -> None:
    assert (
        classify([*START, "uv__io_poll (linux.c)", "epoll_pwait (libc.so.6)"])[0]
        == Bucket.EVENT_LOOP
    )
    # Without native frames a callback into C shows as the loop's entry frame alone.
    assert classify(START[:5])[0] == Bucket.EVENT_LOOP
    assert classify(["something (elsewhere.py)"])[0] == Bucket.OTHER


def test_fold_adds_up_counts_and_reads_line_numbers() -> None:
    assert parse_frame("Connection.fetchrow (asyncpg/connection.py:712)") == (
        "Connection.fetchrow",
        "asyncpg/connection.py",
    )
    asyncpg = ";".join([*START, *LAYERS, "Connection.fetchrow (asyncpg/connection.py:712)"])
    loop = ";".join([*START, "uv__io_poll (linux.c)"])
    folded = fold(f"{asyncpg} 7\n{loop} 3\n{asyncpg} 2\n\n")
    assert folded.total == 12
    assert folded.samples == {Bucket.ASYNCPG: 9, Bucket.EVENT_LOOP: 3}
    assert folded.deciding[Bucket.ASYNCPG] == {"Connection.fetchrow (asyncpg/connection.py:712)": 9}
