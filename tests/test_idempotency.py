"""Idempotency keys: replays, another body, races, caller scope, expiry and clean-up."""

from __future__ import annotations

import asyncio
import uuid

import msgspec
import pytest

from service.database.pool import ServerPool
from service.edge import auth
from service.http import idempotency
from tests.helpers import app_client, assert_problem, count_rows, unique_email


def key() -> dict[str, str]:
    return {"Idempotency-Key": f"key-{uuid.uuid4()}"}


async def age(db, headers: dict[str, str], hours: int) -> None:
    """Make the key of `headers` look `hours` old."""
    await db.execute(
        "UPDATE idempotency_keys SET created_at = now() - make_interval(hours => $2)"
        " WHERE key = $1",
        headers["Idempotency-Key"],
        hours,
    )


@pytest.fixture
async def cleanup_pool(settings):
    """A pool of one connection of its own, for calling the clean-up directly."""
    single = msgspec.structs.replace(settings, db_pool_min=1, db_pool_max=1)
    pool = ServerPool("primary", settings.database_url, single)
    await pool.open()
    yield pool
    await pool.close()


async def test_a_repeat_gets_the_first_response_and_writes_nothing(client, db, user):
    headers = key()
    body = {"author_id": user["id"], "title": "Once", "body": "only once"}
    first = await client.post("/posts", json=body, headers=headers)
    assert first.status_code == 201
    await client.patch(first.headers["location"], json={"title": "Changed since"})

    again = await client.post("/posts", json=body, headers=headers)

    assert again.status_code == 201
    assert again.json() == first.json()  # the first response, not the post as it is now
    assert again.headers["location"] == first.headers["location"]
    assert again.headers["etag"] == first.headers["etag"]
    assert again.headers["idempotent-replayed"] == "true"
    assert "idempotent-replayed" not in first.headers
    assert await db.fetchval("SELECT count(*) FROM posts WHERE title = 'Once'") == 0
    assert await db.fetchval("SELECT count(*) FROM posts WHERE author_id = $1", user["id"]) == 1


async def test_same_key_with_another_body_is_422_and_writes_nothing(client, db, user):
    headers = key()
    body = {"author_id": user["id"], "title": "First", "body": ""}
    assert (await client.post("/posts", json=body, headers=headers)).status_code == 201
    before = await count_rows(db, "posts")

    other = await client.post("/posts", json={**body, "title": "Second"}, headers=headers)

    assert_problem(other, 422, field="Idempotency-Key")
    assert await count_rows(db, "posts") == before


async def test_a_differently_written_but_equal_body_is_the_same_request(client, db):
    headers, email = key(), unique_email()
    first = await client.post("/users", json={"email": email, "name": "Same"}, headers=headers)
    again = await client.post(
        "/users", json={"name": "  Same ", "email": email.upper()}, headers=headers
    )
    assert again.status_code == 201
    assert again.json() == first.json()
    assert await db.fetchval("SELECT count(*) FROM users WHERE email = $1", email) == 1


async def test_the_key_is_per_endpoint(client, user):
    headers = key()
    created = await client.post(
        "/users", json={"email": unique_email(), "name": "U"}, headers=headers
    )
    assert created.status_code == 201
    post = await client.post(
        "/posts", json={"author_id": user["id"], "title": "t", "body": ""}, headers=headers
    )
    assert_problem(post, 422, field="Idempotency-Key")


async def test_two_identical_requests_racing_create_one_row_and_get_one_answer(client, db, user):
    for _ in range(5):
        headers = key()
        body = {"author_id": user["id"], "title": f"race {headers['Idempotency-Key']}", "body": ""}

        responses = await asyncio.gather(
            *(client.post("/posts", json=body, headers=headers) for _ in range(4))
        )

        assert {response.status_code for response in responses} == {201}
        assert len({response.content for response in responses}) == 1
        rows = await db.fetchval("SELECT count(*) FROM posts WHERE title = $1", body["title"])
        assert rows == 1


async def test_racing_creations_of_one_user_with_one_key_all_get_the_201(client, db):
    headers, email = key(), unique_email()

    responses = await asyncio.gather(
        *(
            client.post("/users", json={"email": email, "name": "Racer"}, headers=headers)
            for _ in range(4)
        )
    )

    assert [response.status_code for response in responses] == [201] * 4
    assert len({response.content for response in responses}) == 1
    assert await db.fetchval("SELECT count(*) FROM users WHERE email = $1", email) == 1


async def test_a_failed_request_keeps_no_key_so_a_retry_runs(client, db, email):
    headers = key()
    missing_author = {"author_id": 9223372036854775807, "title": "t", "body": ""}
    assert_problem(await client.post("/posts", json=missing_author, headers=headers), 422)
    assert (
        await db.fetchval(
            "SELECT count(*) FROM idempotency_keys WHERE key = $1", headers["Idempotency-Key"]
        )
        == 0
    )
    user = await client.post("/users", json={"email": email, "name": "n"})
    retry = await client.post(
        "/posts", json={**missing_author, "author_id": user.json()["id"]}, headers=headers
    )
    assert retry.status_code == 201


@pytest.mark.parametrize("bad", ["", "x" * 256, "tab\there", "caf\u00e9".encode()])
async def test_invalid_key_is_400_and_writes_nothing(client, db, bad):
    before = await count_rows(db, "users")
    response = await client.post(
        "/users", json={"email": unique_email(), "name": "n"}, headers={"Idempotency-Key": bad}
    )
    assert_problem(response, 400, field="Idempotency-Key")
    assert await count_rows(db, "users") == before


async def test_keys_belong_to_their_caller(settings, db):
    alpha, beta = "alpha-token", "beta-token"
    tokens = "\n".join(
        f"{name} read,write {auth.digest(token).hex()}"
        for name, token in (("alpha", alpha), ("beta", beta))
    )
    configured = msgspec.structs.replace(settings, auth_disabled=False, api_tokens=tokens)
    headers = key()
    async with app_client(configured) as client:
        first = await client.post(
            "/users",
            json={"email": unique_email(), "name": "A"},
            headers=headers | {"Authorization": f"Bearer {alpha}"},
        )
        second = await client.post(
            "/users",
            json={"email": unique_email(), "name": "B"},
            headers=headers | {"Authorization": f"Bearer {beta}"},
        )
    assert (first.status_code, second.status_code) == (201, 201)
    assert first.json()["id"] != second.json()["id"]
    callers = await db.fetch(
        "SELECT caller FROM idempotency_keys WHERE key = $1 ORDER BY caller",
        headers["Idempotency-Key"],
    )
    assert [row[0] for row in callers] == ["alpha", "beta"]


async def test_an_expired_key_is_forgotten_and_may_be_used_again(client, db, user, settings):
    headers = key()
    body = {"author_id": user["id"], "title": "old", "body": ""}
    first = await client.post("/posts", json=body, headers=headers)
    await age(db, headers, 25)

    again = await client.post("/posts", json={**body, "title": "new"}, headers=headers)

    assert again.status_code == 201
    assert again.json()["id"] != first.json()["id"]
    assert "idempotent-replayed" not in again.headers


async def test_clean_up_deletes_only_expired_keys(client, db, user, settings, cleanup_pool):
    fresh, stale = key(), key()
    for headers in (fresh, stale):
        await client.post(
            "/posts", json={"author_id": user["id"], "title": "t", "body": ""}, headers=headers
        )
    await age(db, stale, 30)
    assert await idempotency.forget_expired(cleanup_pool, settings.idempotency_ttl_hours) >= 1
    remaining = {row[0] for row in await db.fetch("SELECT key FROM idempotency_keys")}
    assert fresh["Idempotency-Key"] in remaining
    assert stale["Idempotency-Key"] not in remaining


async def test_clean_up_never_waits_for_a_key_another_transaction_holds(
    client, db, user, settings, cleanup_pool
):
    held = key()
    await client.post(
        "/posts", json={"author_id": user["id"], "title": "t", "body": ""}, headers=held
    )
    await age(db, held, 30)
    async with db.transaction():
        await db.execute(
            "SELECT 1 FROM idempotency_keys WHERE key = $1 FOR UPDATE", held["Idempotency-Key"]
        )
        forgetting = idempotency.forget_expired(cleanup_pool, settings.idempotency_ttl_hours)
        await asyncio.wait_for(forgetting, timeout=5)  # skipped, not waited for
    assert (
        await db.fetchval(
            "SELECT count(*) FROM idempotency_keys WHERE key = $1", held["Idempotency-Key"]
        )
        == 1
    )
