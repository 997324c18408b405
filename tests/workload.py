"""Checkable writes against the real service over HTTP, recorded in a `History`
(tests/history.py): the load the failover tests (tests/test_chaos.py) run faults under.

- updaters: read a post of a small fixed set, then `PATCH` it with `If-Match` on the version
  read (read-modify-write), so each post's versions form a chain;
- a creator: `POST /posts` with an `Idempotency-Key`, retried with the same key and body
  after every ambiguous answer (timeout, lost connection, 503) until a definite one;
- a deleter: creates a post that way, then `DELETE`s it with `If-Match: "1"`.

Every answer is also checked against the contract: a 500, or a 503 without `Retry-After`,
is noted in `violations` (the test asserts there are none).
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from typing import Any

import httpx

from tests.history import History, Op, Outcome

PAUSE = 0.02  # between one client's operations
RETRY_PAUSE = 0.2  # between attempts of a retried create
UPDATERS = 4


class FeedFollower:
    """Follows `GET /events?types=posts` from the oldest event kept, through the faults
    (an answer other than 200 is retried on the same cursor), keeping the events of the
    run's author: creates and updates by `data.author_id`, deletes by a post seen before."""

    def __init__(self, base_urls: list[str], author_id: int, violations: list[str]) -> None:
        self.base_urls = base_urls
        self.author_id = author_id
        self.violations = violations
        self.events: list[dict[str, Any]] = []
        self._posts: set[int] = set()
        self.cursor: str | None = None

    async def follow(self, stop: asyncio.Event, drain_for: float = 20.0) -> None:
        """Follow until `stop`, then until a page comes back empty (or `drain_for` s)."""
        turn = 0
        drained_by: float | None = None
        async with httpx.AsyncClient(timeout=10) as http:
            while True:
                if stop.is_set() and drained_by is None:
                    drained_by = time.monotonic() + drain_for
                turn += 1
                params: dict[str, Any] = {"types": "posts", "limit": 1000, "wait": 1}
                if self.cursor is not None:
                    params["after"] = self.cursor
                url = self.base_urls[turn % len(self.base_urls)] + "/events"
                try:
                    page = await http.get(url, params=params)
                except httpx.HTTPError:
                    await asyncio.sleep(0.2)
                    continue
                if page.status_code != 200:
                    if page.status_code != 503:
                        self.violations.append(f"feed: {page.status_code} {page.text[:200]}")
                    await asyncio.sleep(0.2)
                    continue
                answer = page.json()
                self._keep(answer["items"])
                self.cursor = answer["next_cursor"]
                if drained_by is not None and (
                    not answer["items"] or time.monotonic() > drained_by
                ):
                    return

    def _keep(self, items: list[dict[str, Any]]) -> None:
        for event in items:
            data = event.get("data") or {}
            if data.get("author_id") == self.author_id:
                self._posts.add(event["resource_id"])
            if event["resource_id"] in self._posts:
                self.events.append(event)


class Workload:
    def __init__(
        self,
        history: History,
        base_urls: list[str],
        author_id: int,
        posts: list[int],
        *,
        timeout: float = 5.0,
        retry_for: float = 15.0,
    ) -> None:
        self.history = history
        self.base_urls = base_urls
        self.author_id = author_id
        self.posts = posts
        self.timeout = timeout
        self.retry_for = retry_for  # how long a create keeps retrying once the load stops
        self.violations: list[str] = []
        self.failed_at: list[float] = []  # every request (read or write) 503'd or unanswered
        self.stop = asyncio.Event()
        self._stopped_at = 0.0
        self._turn = 0

    def url(self, path: str) -> str:
        """The next instance's URL of `path` (round robin over the instances)."""
        self._turn += 1
        return self.base_urls[self._turn % len(self.base_urls)] + path

    def classify(self, response: httpx.Response) -> Outcome:
        status = response.status_code
        if status in {200, 201, 204}:
            return "ok"
        if status == 503:
            self.failed_at.append(time.monotonic())
            if not response.headers.get("retry-after", "").isdigit():
                self.violations.append(f"503 without Retry-After: {response.text[:200]}")
            return "unknown"
        if 400 <= status < 500:
            return "fail"
        self.violations.append(f"{status} on {response.request.method} {response.request.url}")
        return "unknown"

    async def run(self) -> None:
        """Run every client until `finish()`; creates then get `retry_for` seconds more."""
        async with httpx.AsyncClient(timeout=self.timeout) as http:
            clients = [self._updater(http, number) for number in range(UPDATERS)]
            clients += [self._creator(http, UPDATERS), self._deleter(http, UPDATERS + 1)]
            await asyncio.gather(*clients)

    def finish(self) -> None:
        self._stopped_at = time.monotonic()
        self.stop.set()

    async def _updater(self, http: httpx.AsyncClient, client: int) -> None:
        while not self.stop.is_set():
            post = random.choice(self.posts)
            try:
                read = await http.get(self.url(f"/posts/{post}"))
            except httpx.HTTPError:
                self.failed_at.append(time.monotonic())
                await asyncio.sleep(PAUSE)
                continue
            if self.classify(read) != "ok":
                await asyncio.sleep(PAUSE)
                continue
            version = int(read.headers["etag"].strip('"'))
            op = self.history.invoke(client, "update", post=post, if_match=version)
            await self._write(
                op,
                http.patch(
                    self.url(f"/posts/{post}"),
                    json={"title": op.title},
                    headers={"If-Match": f'"{version}"'},
                ),
            )
            await asyncio.sleep(PAUSE)

    async def _write(self, op: Op, request: Any) -> httpx.Response | None:
        try:
            response: httpx.Response = await request
        except httpx.HTTPError as error:
            self.failed_at.append(time.monotonic())
            self.history.complete(op, "unknown", detail=type(error).__name__)
            return None
        outcome = self.classify(response)
        etag = response.headers.get("etag")
        version = int(etag.strip('"')) if outcome == "ok" and etag else None
        self.history.complete(op, outcome, response.status_code, version)
        return response

    async def _create(self, http: httpx.AsyncClient, client: int) -> Op:
        op = self.history.invoke(client, "create", key=uuid.uuid4().hex)
        body = {"author_id": self.author_id, "title": op.title, "body": ""}
        headers = {"Idempotency-Key": op.key or ""}
        op.attempts = 0
        while True:
            op.attempts += 1
            attempt = http.post(self.url("/posts"), json=body, headers=headers)
            response = await self._write(op, attempt)
            if op.outcome != "unknown":
                if op.outcome == "ok" and response is not None:
                    op.post = response.json()["id"]
                return op
            if self.stop.is_set() and time.monotonic() > self._stopped_at + self.retry_for:
                return op  # given up: unknown
            await asyncio.sleep(RETRY_PAUSE)

    async def _creator(self, http: httpx.AsyncClient, client: int) -> None:
        while not self.stop.is_set():
            await self._create(http, client)
            await asyncio.sleep(PAUSE)

    async def _deleter(self, http: httpx.AsyncClient, client: int) -> None:
        while not self.stop.is_set():
            created = await self._create(http, client)
            if created.outcome == "ok" and created.post is not None:
                op = self.history.invoke(client, "delete", post=created.post, if_match=1)
                await self._write(
                    op, http.delete(self.url(f"/posts/{created.post}"), headers={"If-Match": '"1"'})
                )
            await asyncio.sleep(PAUSE)
