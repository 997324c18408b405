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


def _samples(metric, **labels: str) -> dict[tuple[str, str], float]:
    """A metric's samples with these labels, by name and bucket bound."""
    return {
        (sample.name, sample.labels.get("le", "")): sample.value
        for family in metric.collect()
        for sample in family.samples
        if all(sample.labels.get(key) == value for key, value in labels.items())
        and not sample.name.endswith("_created")
    }


def test_tallied_request_metrics_match_prometheus_clients_own_observations():
    """The observer tallies requests in plain numbers and publishes them: the exported
    count, buckets, sum and errors are what `inc` and `observe` per request would give."""
    from prometheus_client import CollectorRegistry, Histogram

    from service.base.metrics import LATENCY_BUCKETS, REQUEST_SECONDS, REQUESTS, SERVER_ERRORS
    from service.edge.observer import _RouteMetrics

    durations = [0.0004, 0.0005, 0.00051, 0.003, 0.0042, 0.0075, 0.2, 4.9, 5.0, 7.5]
    reference = Histogram("reference", "", buckets=LATENCY_BUCKETS, registry=CollectorRegistry())
    tallied = _RouteMetrics()
    for seconds in durations:
        reference.observe(seconds)
        tallied.observe("GET", "/tally-test", 503, seconds)
    labels = {"method": "GET", "path": "/tally-test", "status_code": "503"}
    assert _samples(REQUESTS, **labels) == {("service_requests_total", ""): 0.0}  # not yet

    tallied.publish()
    tallied.publish()  # a second publish adds nothing
    got = {
        (name.replace("service_request_duration_seconds", "reference"), le): value
        for (name, le), value in _samples(REQUEST_SECONDS, **labels).items()
    }
    want = _samples(reference)
    assert len(want) == len(LATENCY_BUCKETS) + 3  # each bound, +Inf, count and sum
    assert got == pytest.approx(want)
    assert _samples(REQUESTS, **labels) == {("service_requests_total", ""): 10.0}
    assert _samples(SERVER_ERRORS, **labels) == {("service_requests_error_total", ""): 10.0}
