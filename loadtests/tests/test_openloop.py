"""The open-loop generator against a real HTTP server that stalls on demand."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import msgspec
import pytest

from loadtests import openloop
from service.posts.models import PostCreate, PostPatch

RATE = 200
SECONDS = 2.0
STALL_AT, STALL_SECONDS = 0.8, 0.3


@dataclass
class StallingServer:
    """HTTP/1.1 keep-alive on 127.0.0.1: answers 200 at once, except that every answer
    waits while a stall is on, and /fail answers 503."""

    port: int = 0
    stall_until: float = 0.0
    requests: int = 0
    loop: asyncio.AbstractEventLoop = field(default_factory=asyncio.new_event_loop)

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while head := await reader.readuntil(b"\r\n\r\n"):
                self.requests += 1
                if (wait := self.stall_until - time.perf_counter()) > 0:
                    await asyncio.sleep(wait)
                status = b"503 Service Unavailable" if b" /fail " in head else b"200 OK"
                writer.write(b"HTTP/1.1 " + status + b"\r\nContent-Length: 2\r\n\r\nok")
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    def start(self) -> None:
        ready = threading.Event()

        async def serve() -> None:
            server = await asyncio.start_server(self._answer, "127.0.0.1", 0)
            self.port = server.sockets[0].getsockname()[1]
            ready.set()
            async with server:
                await server.serve_forever()

        threading.Thread(target=self.loop.run_until_complete, args=(serve(),), daemon=True).start()
        assert ready.wait(5)


@pytest.fixture
def server() -> StallingServer:
    stalling = StallingServer()
    stalling.start()
    return stalling


def requests(path: str = "/") -> Iterator[bytes]:
    while True:
        yield f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode()


def test_a_stall_shows_in_every_request_that_fell_due_during_it(server: StallingServer) -> None:
    def stall() -> None:
        time.sleep(STALL_AT)
        server.stall_until = time.perf_counter() + STALL_SECONDS

    threading.Thread(target=stall, daemon=True).start()
    load = openloop.Load("127.0.0.1", server.port, RATE, SECONDS, connections=4)
    result = openloop.run(load, requests())

    assert result["sent"] == result["requests"] == RATE * SECONDS == server.requests
    assert result["status_errors"] == result["timeouts"] == result["read_errors"] == 0
    # A closed loop of 4 connections would have measured 4 slow requests; from their due
    # times, each of the ~60 that fell due during the stall waited for its end.
    assert result["max_us"] >= (STALL_SECONDS - 0.02) * 1e6
    assert result["p95_us"] >= 100_000  # more than 5% of the requests waited >= 100 ms
    assert result["p50_us"] < 20_000
    assert result["lag_p99_us"] < 20_000  # the generator itself kept time
    assert result["wait_p99_us"] >= 100_000  # the wait for a connection is counted
    assert result["requests"] / (result["duration_us"] / 1e6) == pytest.approx(RATE, rel=0.1)


def test_error_answers_are_counted(server: StallingServer) -> None:
    load = openloop.Load("127.0.0.1", server.port, 100, 0.5, connections=2)
    result = openloop.run(load, requests("/fail"))
    assert result["status_errors"] == result["requests"] == 50


def test_only_this_machine_is_a_target() -> None:
    with pytest.raises(ValueError, match="only this machine"):
        openloop.Load("192.0.2.1", 80, 10, 1, 1)


def test_the_mix_is_the_wrk_mix_with_bodies_the_service_accepts() -> None:
    mix = openloop.MixedRequests("127.0.0.1:1", max_user_id=100, max_post_id=1000, token="t")
    counts = {"GET /posts/": 0, "GET /users/": 0, "POST /posts": 0, "PATCH /posts/": 0}
    for _ in range(10_000):
        request = next(mix)
        head, _, body = request.partition(b"\r\n\r\n")
        kind = next(k for k in counts if request.startswith(k.encode()))
        counts[kind] += 1
        assert b"\r\nAuthorization: Bearer t" in head
        if kind == "POST /posts":
            created = msgspec.json.decode(body, type=PostCreate, strict=True)
            assert 1 <= created.author_id <= 100
            assert len(created.body) == 500
        elif kind == "PATCH /posts/":
            assert msgspec.json.decode(body, type=PostPatch, strict=True).changes()
        if body:
            assert f"\r\nContent-Length: {len(body)}".encode() in head
    shares = {kind: count / 10_000 for kind, count in counts.items()}
    expected = {
        "GET /posts/": 0.60,
        "GET /users/": 0.25,
        "POST /posts": 0.10,
        "PATCH /posts/": 0.05,
    }
    assert shares == pytest.approx(expected, abs=0.02)
    again = openloop.MixedRequests("127.0.0.1:1", max_user_id=100, max_post_id=1000, token="t")
    first = openloop.MixedRequests("127.0.0.1:1", max_user_id=100, max_post_id=1000, token="t")
    assert [next(again) for _ in range(50)] == [next(first) for _ in range(50)]  # seeded
