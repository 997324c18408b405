"""Malformed requests of every kind get a clear 4xx problem, never a 500, and write nothing."""

from __future__ import annotations

import pytest

from tests.helpers import assert_problem, count_rows


@pytest.mark.parametrize(
    "raw",
    [
        b"{",
        b"not json",
        b'{"email": "a@b.c", "name": "x",}',
        b"[]",
        b"null",
        b"17",
        b'"a string"',
        b'{"email": "a@b.c", "name": "x"} trailing',
        b"\xff\xfe",
        b'{"email": "\xff@example.com", "name": "x"}',
        b'{"email": "a@example.com", "name": "\xed\xa0\x80"}',
        b'{"email": "a@b.c", "name": "\\ud800"}',
    ],
)
@pytest.mark.parametrize("path", ["/users", "/posts"])
async def test_malformed_or_non_object_json_is_400(client, db, raw, path):
    before = await count_rows(db, path.strip("/"))

    response = await client.post(path, content=raw, headers={"Content-Type": "application/json"})

    assert_problem(response, 400)
    assert await count_rows(db, path.strip("/")) == before


async def test_empty_body_is_400(client, db):
    before = await count_rows(db, "users")
    response = await client.post(
        "/users", content=b"", headers={"Content-Type": "application/json"}
    )
    assert_problem(response, 400)
    assert await count_rows(db, "users") == before


async def test_patch_with_malformed_json_is_400(client, user):
    response = await client.patch(
        f"/users/{user['id']}", content=b"{", headers={"Content-Type": "application/json"}
    )
    assert_problem(response, 400)


async def test_body_over_one_mebibyte_is_413_and_nothing_is_written(client, db, user):
    before = await count_rows(db, "posts")
    huge = b'{"author_id": %d, "title": "t", "body": "%s"}' % (user["id"], b"x" * (1024 * 1024))

    response = await client.post(
        "/posts", content=huge, headers={"Content-Type": "application/json"}
    )

    assert_problem(response, 413)
    assert await count_rows(db, "posts") == before


async def test_every_occurrence_of_a_duplicated_key_is_validated(client, db, email):
    raw = f'{{"email": "{email}", "name": 1, "name": "Dup"}}'.encode()
    response = await client.post(
        "/users", content=raw, headers={"Content-Type": "application/json"}
    )
    assert_problem(response, 400, field="name")
    assert await db.fetchval("SELECT count(*) FROM users WHERE email = $1", email) == 0


async def test_unsupported_method_is_a_problem_too(client):
    response = await client.put("/users/1", json={})
    assert response.status_code == 405
    assert response.headers["content-type"].startswith("application/problem+json")


async def test_no_error_body_shows_sql_or_driver_messages(client, user):
    responses = [
        await client.post("/users", json={"email": user["email"], "name": "dup"}),
        await client.post(
            "/posts", json={"author_id": 9223372036854775807, "title": "t", "body": ""}
        ),
        await client.post("/users", json={"email": "x@y.z", "name": "a\u0000"}),
    ]
    for response in responses:
        text = response.text.lower()
        for leak in (
            "violates",
            "constraint",
            "select",
            "insert",
            "asyncpg",
            "traceback",
            "sqlstate",
        ):
            assert leak not in text, response.text
