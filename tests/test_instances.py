"""Several instances on one database, as production runs them: two `python -m service serve`
processes with two workers each, their own ports, one CURSOR_SECRET, requests spread over
them round-robin (a new connection for each request, so both workers of an instance
answer too). Through TEST_DATABASE_URL, so in CI also through PgBouncer.

What must hold across instances: one winner of two PATCHes with the same If-Match, one row
for racing retries with one Idempotency-Key, a page walk under churn that repeats no row,
and cursors accepted by any instance.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.helpers import unique_email
from tests.server import running_service

CURSOR_SECRET = "instances-test-cursor-secret"


class RoundRobin:
    """Clients of every instance; `next()` hands them out in turn."""

    def __init__(self, clients: list[httpx.AsyncClient]) -> None:
        self.clients = clients
        self._turns = itertools.cycle(clients)

    def next(self) -> httpx.AsyncClient:
        return next(self._turns)


@pytest.fixture(scope="module")
def instance_urls(
    database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[list[str]]:
    environment = {
        "DATABASE_URL": database_url,
        "WORKERS": "2",
        "CURSOR_SECRET": CURSOR_SECRET,
        "AUTH_DISABLED": "1",
        "DB_POOLER": os.environ.get("TEST_DB_POOLER", "none"),
        "DB_POOL_MIN": "1",
        "DB_POOL_MAX": "4",
    }
    with ExitStack() as stack:
        services = [
            stack.enter_context(
                running_service(Path(tmp_path_factory.mktemp(f"instance{number}")), **environment)
            )
            for number in (1, 2)
        ]
        yield [service.base_url for service in services]


@pytest.fixture
async def instances(instance_urls: list[str]) -> AsyncIterator[RoundRobin]:
    no_keepalive = httpx.Limits(max_keepalive_connections=0)
    clients = [
        httpx.AsyncClient(base_url=url, timeout=10, limits=no_keepalive) for url in instance_urls
    ]
    try:
        yield RoundRobin(clients)
    finally:
        for client in clients:
            await client.aclose()


async def _user(instances: RoundRobin) -> dict[str, Any]:
    response = await instances.next().post("/users", json={"email": unique_email(), "name": "Ada"})
    assert response.status_code == 201, response.text
    return response.json()  # type: ignore[no-any-return]


async def test_same_if_match_on_two_instances_gives_one_200_and_one_412(instances, db):
    first, second = instances.clients
    for _ in range(10):
        user = await _user(instances)
        etag = (await first.get(f"/users/{user['id']}")).headers["etag"]
        answers = await asyncio.gather(
            first.patch(f"/users/{user['id']}", json={"name": "First"}, headers={"If-Match": etag}),
            second.patch(
                f"/users/{user['id']}", json={"name": "Second"}, headers={"If-Match": etag}
            ),
        )
        assert sorted(answer.status_code for answer in answers) == [200, 412]
        winner = next(answer for answer in answers if answer.status_code == 200)
        row = await db.fetchrow("SELECT name, version FROM users WHERE id = $1", user["id"])
        assert (row["name"], row["version"]) == (winner.json()["name"], 2)


async def test_racing_retries_with_one_key_on_two_instances_create_one_row(instances, db):
    author = await _user(instances)
    for _ in range(5):
        title = f"once-{uuid.uuid4().hex}"
        body = {"author_id": author["id"], "title": title, "body": "retried"}
        headers = {"Idempotency-Key": uuid.uuid4().hex}
        answers = await asyncio.gather(
            *(instances.next().post("/posts", json=body, headers=headers) for _ in range(4))
        )
        assert [answer.status_code for answer in answers] == [201] * 4, [a.text for a in answers]
        assert len({answer.json()["id"] for answer in answers}) == 1
        assert len({answer.headers["etag"] for answer in answers}) == 1
        assert await db.fetchval("SELECT count(*) FROM posts WHERE title = $1", title) == 1


async def test_page_walk_alternating_instances_under_churn_repeats_no_row(instances, db):
    author = await _user(instances)

    async def create(title: str) -> int:
        body = {"author_id": author["id"], "title": title, "body": ""}
        response = await instances.next().post("/posts", json=body)
        assert response.status_code == 201
        return int(response.json()["id"])

    initial = [await create(f"initial-{number}") for number in range(60)]
    deleted: set[int] = set()
    seen: list[int] = []
    cursor = None
    for page_number in itertools.count():
        params: dict[str, Any] = {"limit": 7} | ({"cursor": cursor} if cursor else {})
        page = await instances.next().get(f"/users/{author['id']}/posts", params=params)
        assert page.status_code == 200, page.text
        seen += [item["id"] for item in page.json()["items"]]
        # Churn between pages: a new post (newer than the walk, may or may not appear) and
        # the deletion of one the walk has not reached yet.
        await create(f"during-{page_number}")
        unseen = [post_id for post_id in initial if post_id not in seen and post_id not in deleted]
        if unseen:
            victim = unseen[len(unseen) // 2]
            assert (await instances.next().delete(f"/posts/{victim}")).status_code == 204
            deleted.add(victim)
        if (cursor := page.json()["next_cursor"]) is None:
            break

    assert len(seen) == len(set(seen)), "a row came twice"
    assert set(initial) - deleted <= set(seen), "a row that stayed was skipped"
    stored = {
        row[0] for row in await db.fetch("SELECT id FROM posts WHERE author_id = $1", author["id"])
    }
    assert set(seen) - deleted <= stored


async def test_a_cursor_of_one_instance_is_accepted_by_the_other(instances):
    first, second = instances.clients
    author = await _user(instances)
    for number in range(5):
        body = {"author_id": author["id"], "title": f"t{number}", "body": ""}
        assert (await first.post("/posts", json=body)).status_code == 201
    page_one = (await first.get(f"/users/{author['id']}/posts", params={"limit": 2})).json()
    page_two = await second.get(
        f"/users/{author['id']}/posts", params={"limit": 2, "cursor": page_one["next_cursor"]}
    )
    assert page_two.status_code == 200, page_two.text
    everything = (await second.get(f"/users/{author['id']}/posts")).json()["items"]
    assert [item["id"] for item in page_one["items"] + page_two.json()["items"]] == [
        item["id"] for item in everything[:4]
    ]
