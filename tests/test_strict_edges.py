"""Strict at the edges (issue 11): a body that is not sent as JSON is a 415 and writes
nothing, on every operation with a body; query integers are plain decimal digits and
`published` is `true` or `false`; and one rule for a bad filter value, the `email` one
included: a 400 naming it, whether malformed or over-long."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest

from tests.helpers import assert_problem, count_rows, unique_email

NOT_JSON = [
    pytest.param({"Content-Type": "text/plain"}, id="text/plain"),
    pytest.param({}, id="no Content-Type"),
    pytest.param({"Content-Type": "application/x-www-form-urlencoded"}, id="form-encoded"),
    pytest.param({"Content-Type": "multipart/form-data; boundary=x"}, id="multipart"),
    pytest.param({"Content-Type": "application/json-patch+json"}, id="json-patch"),
    pytest.param({"Content-Type": "application/merge-patch+json"}, id="merge-patch"),
    pytest.param({"Content-Type": "application/jsonx"}, id="a longer name"),
    pytest.param({"Content-Type": ""}, id="empty Content-Type"),
]
JSON_HEADER = {"Content-Type": "application/json"}
JSON = [
    pytest.param("application/json", id="plain"),
    pytest.param("application/json; charset=utf-8", id="charset"),
    pytest.param("Application/JSON ; Charset=UTF-8", id="any case and spacing"),
]


async def send(
    client: httpx.AsyncClient, method: str, path: str, body: dict[str, Any], headers: dict[str, str]
) -> httpx.Response:
    """`body` as JSON text, labelled only by `headers` (httpx adds no Content-Type)."""
    return await client.request(method, path, content=json.dumps(body).encode(), headers=headers)


# Each operation with a body: what to send, and how to read back what it would change.
Snapshot = Callable[[], Awaitable[Any]]


@pytest.fixture
def writes(client, db, user, post) -> dict[str, tuple[str, str, dict[str, Any], Snapshot]]:
    async def users() -> Any:
        return await db.fetch("SELECT * FROM users ORDER BY id")

    async def posts() -> Any:
        return await db.fetch("SELECT * FROM posts ORDER BY id")

    return {
        "create user": ("POST", "/users", {"email": unique_email(), "name": "Ada"}, users),
        "create post": (
            "POST",
            "/posts",
            {"author_id": user["id"], "title": "T", "body": "B"},
            posts,
        ),
        "patch user": ("PATCH", f"/users/{user['id']}", {"name": "Changed"}, users),
        "patch post": ("PATCH", f"/posts/{post['id']}", {"title": "Changed"}, posts),
    }


OPERATIONS = ["create user", "create post", "patch user", "patch post"]


async def write_with(
    client: httpx.AsyncClient, write: tuple[str, str, dict[str, Any], Snapshot], headers: dict
) -> tuple[httpx.Response, Any, Any]:
    """Send one write labelled by `headers`: the answer, and its rows before and after."""
    method, path, body, snapshot = write
    before = await snapshot()
    response = await send(client, method, path, body, headers)
    return response, before, await snapshot()


@pytest.mark.parametrize("operation", OPERATIONS)
@pytest.mark.parametrize("headers", NOT_JSON)
async def test_a_body_not_sent_as_json_is_415_and_nothing_is_written(
    client, writes, operation, headers
):
    response, before, after = await write_with(client, writes[operation], headers)

    problem = assert_problem(response, 415, field="Content-Type")
    assert "application/json" in problem["detail"]
    assert after == before


@pytest.mark.parametrize("operation", OPERATIONS)
@pytest.mark.parametrize("content_type", JSON)
async def test_a_body_sent_as_json_is_accepted_with_any_parameters(
    client, writes, operation, content_type
):
    headers = {"Content-Type": content_type}
    response, before, after = await write_with(client, writes[operation], headers)

    assert response.status_code == (201 if operation.startswith("create") else 200)
    assert after != before


async def test_an_empty_body_is_a_400_naming_the_body_whatever_its_content_type(client, db):
    before = await count_rows(db, "users")
    for headers in ({}, {"Content-Type": "application/json"}, {"Content-Type": "text/plain"}):
        response = await client.post("/users", content=b"", headers=headers)
        assert_problem(response, 400, field="body")
    assert await count_rows(db, "users") == before


async def test_a_form_encoded_body_holding_json_is_415_even_with_an_idempotency_key(client, db):
    before = await count_rows(db, "users")
    key = f"form-{unique_email()}"
    body = {"email": unique_email(), "name": "Form"}
    headers = {"Content-Type": "application/x-www-form-urlencoded", "Idempotency-Key": key}

    assert_problem(await send(client, "POST", "/users", body, headers), 415)
    # Nothing was kept under the key either: the same key with JSON runs for real.
    retry = await send(client, "POST", "/users", body, {"Idempotency-Key": key} | JSON_HEADER)
    assert retry.status_code == 201
    assert "idempotent-replayed" not in retry.headers
    assert await count_rows(db, "users") == before + 1


# -- query integers ------------------------------------------------------------------------

NOT_PLAIN_DIGITS = [
    *("1e2", "5.0", "+5", "0x10", "-5", " 5", "5 ", "1_0", "", "5a", "null"),
    *("\uff15", "\u0665"),  # FULLWIDTH and ARABIC-INDIC DIGIT FIVE: str.isdigit() says yes
]


@pytest.mark.parametrize("value", NOT_PLAIN_DIGITS)
@pytest.mark.parametrize("path", ["/users", "/posts", "/users/{user_id}/posts"])
async def test_limit_that_is_not_plain_decimal_digits_is_400_naming_it(client, user, path, value):
    response = await client.get(path.format(user_id=user["id"]), params={"limit": value})

    problem = assert_problem(response, 400, field="limit")
    assert problem["errors"] == [{"field": "limit", "message": "must be plain decimal digits"}]


@pytest.mark.parametrize("value", NOT_PLAIN_DIGITS)
async def test_author_id_that_is_not_plain_decimal_digits_is_400_naming_it(client, value):
    response = await client.get("/posts", params={"author_id": value})

    assert_problem(response, 400, field="author_id")


@pytest.mark.parametrize("value", ["0", "9223372036854775808", "9" * 40])
async def test_author_id_out_of_the_id_range_is_400(client, value):
    problem = assert_problem(await client.get("/posts", params={"author_id": value}), 400)
    assert problem["errors"] == [
        {"field": "author_id", "message": "must be 1 to 9223372036854775807"}
    ]


async def test_plain_digits_are_read_as_the_number_they_write(client, user):
    for number in range(3):
        created = await client.post(
            "/posts", json={"author_id": user["id"], "title": f"t{number}", "body": ""}
        )
        assert created.status_code == 201
    for limit, expected in (("2", 2), ("02", 2), ("200", 3)):
        response = await client.get("/posts", params={"limit": limit, "author_id": user["id"]})
        assert response.status_code == 200, response.text
        assert len(response.json()["items"]) == expected
    padded = await client.get("/posts", params={"author_id": f"000{user['id']}"})
    assert {post["author_id"] for post in padded.json()["items"]} == {user["id"]}


@pytest.mark.parametrize("value", ["1", "0", "TRUE", "True", "yes", "null", ""])
async def test_published_that_is_not_true_or_false_is_400_naming_it(client, user, value):
    for path in ("/posts", f"/users/{user['id']}/posts"):
        response = await client.get(path, params={"published": value})
        problem = assert_problem(response, 400, field="published")
        assert problem["errors"] == [{"field": "published", "message": "must be true or false"}]


# -- the email filter ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        pytest.param("no-at-sign", id="malformed"),
        pytest.param("a b@example.com", id="whitespace inside"),
        pytest.param("a@b@c", id="two @"),
        pytest.param("   ", id="blank"),
        pytest.param("a" * 310 + "@example.com", id="over-long (322)"),
        pytest.param("a@" + "\u0130" * 200, id="over-long once lower-cased"),
    ],
)
async def test_an_email_filter_no_user_could_have_is_400_malformed_or_over_long(client, value):
    assert_problem(await client.get("/users", params={"email": value}), 400, field="email")


async def test_a_well_formed_email_filter_that_matches_nobody_is_an_empty_page(client):
    response = await client.get("/users", params={"email": unique_email()})

    assert response.status_code == 200
    assert response.json() == {"items": [], "next_cursor": None}
