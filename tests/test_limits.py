"""Limits a caller cannot exceed: query string, headers, a body that never finishes."""

from __future__ import annotations

import asyncio

import pytest

from service.edge import limits
from tests.helpers import assert_problem, count_rows


async def test_query_string_over_4_kib_is_414(client):
    response = await client.get("/users", params={"email": "a" * 4100})
    assert_problem(response, 414)


async def test_too_many_or_too_large_headers_are_431(client):
    many = {f"x-filler-{number}": "1" for number in range(120)}
    assert_problem(await client.get("/health/live", headers=many), 431)
    large = {"x-filler": "a" * (17 * 1024)}
    assert_problem(await client.get("/health/live", headers=large), 431)


async def test_ordinary_requests_are_well_within_the_limits(client):
    response = await client.get("/posts", params={"limit": 200, "published": "true"})
    assert response.status_code == 200


async def test_a_body_that_does_not_arrive_in_time_is_408_and_writes_nothing(
    client, db, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setattr(limits, "BODY_TIMEOUT_SECONDS", 0.3)
    app = client._transport.app  # the ASGI app behind the test client
    before = await count_rows(db, "users")
    sent: list[dict] = []

    async def never_finishing_body() -> dict:
        if not sent:
            sent.append({})
            return {"type": "http.request", "body": b'{"email": "slow@', "more_body": True}
        await asyncio.sleep(3600)
        raise AssertionError("unreachable")

    answer: list[dict] = []

    async def send(message: dict) -> None:
        answer.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/users",
        "raw_path": b"/users",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"content-type", b"application/json"), (b"host", b"service")],
        "client": ("127.0.0.1", 1),
        "server": ("service", 80),
    }
    await asyncio.wait_for(app(scope, never_finishing_body, send), timeout=5)

    assert answer[0]["status"] == 408
    assert (b"content-type", b"application/problem+json") in answer[0]["headers"]
    assert await count_rows(db, "users") == before
