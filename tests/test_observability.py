"""Request ids and logs: one structured line per request, never a body, email or token."""

from __future__ import annotations

import io
import json
import logging

import pytest

from service.base import logs


async def test_a_valid_request_id_is_kept_and_returned(client):
    response = await client.get("/health/live", headers={"X-Request-ID": "caller-42.a_b"})
    assert response.headers["x-request-id"] == "caller-42.a_b"


@pytest.mark.parametrize("bad", ["", "x" * 129, "has space", "tab\tin", 'quote"d', "é".encode()])
async def test_an_invalid_request_id_is_replaced_by_a_generated_one(client, bad):
    response = await client.get("/health/live", headers={"X-Request-ID": bad})
    generated = response.headers["x-request-id"]
    assert generated != bad
    assert len(generated) == 32
    assert int(generated, 16) >= 0


async def test_missing_request_id_is_generated_and_unique(client):
    first = (await client.get("/health/live")).headers["x-request-id"]
    second = (await client.get("/health/live")).headers["x-request-id"]
    assert first != second


async def test_one_json_line_per_request_with_route_status_and_duration(client, user, log_lines):
    await client.get(f"/users/{user['id']}", headers={"X-Request-ID": "trace-me"})
    await client.get("/no/such/route", headers={"X-Request-ID": "lost"})

    requests = [line for line in log_lines() if line["logger"] == "service.requests"]
    assert len(requests) == 2

    found = next(line for line in requests if line["request_id"] == "trace-me")
    assert found["method"] == "GET"
    assert found["route"] == "/users/{user_id}"
    assert found["status"] == 200
    assert 0 < found["duration_ms"] < 10_000
    assert found["level"] == "INFO"
    assert found["time"].endswith("+00:00")
    assert "remote" in found
    unrouted = next(line for line in requests if line["request_id"] == "lost")
    assert (unrouted["route"], unrouted["status"]) == ("unmatched", 404)


async def test_logs_never_carry_bodies_emails_or_tokens(client, email, log_lines):
    secret = "Bearer s3cr3t-token-value"
    await client.post(
        "/users",
        json={"email": email, "name": "Private Person"},
        headers={"Authorization": secret},
    )
    await client.post("/users", json={"email": email, "name": "Duplicate"})  # a 409
    await client.get("/users", params={"email": email})

    text = json.dumps(log_lines())
    assert email not in text
    assert "Private Person" not in text
    assert "s3cr3t" not in text


def test_other_log_lines_carry_the_request_id_of_their_request():
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logs._JsonFormatter())
    logger = logging.getLogger("test.observability")
    logger.addHandler(handler)
    logger.propagate = False
    token = logs.request_id.set("abc")
    try:
        logger.warning("something happened")
    finally:
        logs.request_id.reset(token)
        logger.removeHandler(handler)
    line = json.loads(stream.getvalue())
    assert line["message"] == "something happened"
    assert line["request_id"] == "abc"
    assert line["level"] == "WARNING"
