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


async def test_one_timer_keeps_every_body_deadline(monkeypatch: pytest.MonkeyPatch):
    """Two bodies that never finish get their 408 each, at their own deadline, while a body
    that arrives at once between them is answered; a cancellation from outside stays one."""
    monkeypatch.setattr(limits, "BODY_TIMEOUT_SECONDS", 0.3)
    loop = asyncio.get_running_loop()

    async def app(scope, receive, send) -> None:  # reads the body, as the edge layer gives it
        receive = limits.body_in_time(receive)
        while (await receive()).get("more_body"):
            pass
        await send({"type": "http.response.start", "status": 200, "headers": []})

    answered: dict[str, tuple[object, float]] = {}

    async def call(name: str, slow: bool) -> None:
        sent: list[int] = []

        async def receive() -> dict:
            if slow and sent:
                await asyncio.sleep(3600)
            sent.append(1)
            return {"type": "http.request", "body": b"{", "more_body": slow}

        async def send(message: dict) -> None:
            answered[name] = (message["status"], loop.time() - started)

        scope = {"type": "http", "method": "POST", "query_string": b"", "headers": []}
        try:
            await app(scope, receive, send)
        except Exception as error:  # the app's exception handler turns this into a 408
            answered[name] = (type(error).__name__, loop.time() - started)

    started = loop.time()
    first = asyncio.create_task(call("first", slow=True))
    await asyncio.sleep(0.1)
    await call("fast", slow=False)
    second = asyncio.create_task(call("second", slow=True))
    outside = asyncio.create_task(call("cancelled", slow=True))
    await asyncio.sleep(0.05)
    outside.cancel()
    await asyncio.gather(first, second)
    with pytest.raises(asyncio.CancelledError):
        await outside

    assert answered["fast"][0] == 200
    assert answered["first"][0] == "SlowBody"
    assert answered["second"][0] == "SlowBody"
    assert 0.28 <= answered["first"][1] < 0.39
    assert 0.38 <= answered["second"][1] < 0.5
    assert "cancelled" not in answered
