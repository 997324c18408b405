"""/users: every status of API.md, checked on the response and on the rows."""

from __future__ import annotations

import pytest

from tests.helpers import assert_problem, count_rows, unique_email


async def test_create_returns_201_with_location_etag_and_the_stored_user(client, db, email):
    response = await client.post("/users", json={"email": email, "name": "Ada Lovelace"})

    assert response.status_code == 201
    user = response.json()
    assert set(user) == {"id", "email", "name", "created_at", "updated_at"}
    assert response.headers["location"] == f"/users/{user['id']}"
    assert response.headers["etag"] == '"1"'
    assert user["email"] == email
    assert user["created_at"] == user["updated_at"]
    assert user["created_at"].endswith("Z")
    row = await db.fetchrow("SELECT email, name FROM users WHERE id = $1", user["id"])
    assert dict(row) == {"email": email, "name": "Ada Lovelace"}


async def test_email_is_stored_trimmed_and_lower_cased_name_trimmed(client, db, email):
    response = await client.post(
        "/users", json={"email": f"  {email.upper()}\t", "name": "  Grace Hopper "}
    )

    assert response.status_code == 201
    assert response.json()["email"] == email
    assert response.json()["name"] == "Grace Hopper"
    stored = await db.fetchrow("SELECT email, name FROM users WHERE id = $1", response.json()["id"])
    assert tuple(stored) == (email, "Grace Hopper")


async def test_taken_email_is_409_whatever_its_case_and_nothing_is_written(client, db, user):
    before = await count_rows(db, "users")

    response = await client.post(
        "/users", json={"email": user["email"].upper(), "name": "Someone Else"}
    )

    assert_problem(response, 409, field="email")
    assert await count_rows(db, "users") == before


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "No Email"}, "email"),
        ({"email": "x@example.com"}, "name"),
        ({"email": "no-at-sign", "name": "A"}, "email"),
        ({"email": "two@@example.com", "name": "A"}, "email"),
        ({"email": "@example.com", "name": "A"}, "email"),
        ({"email": "ada@", "name": "A"}, "email"),
        ({"email": "a da@example.com", "name": "A"}, "email"),
        ({"email": "a" * 310 + "@example.com", "name": "A"}, "email"),  # 322 characters
        ({"email": "a@" + "\u0130" * 200, "name": "A"}, "email"),  # 202, but 402 lower-cased
        ({"email": "x@example.com", "name": "   "}, "name"),
        ({"email": "x@example.com", "name": "n" * 101}, "name"),
        ({"email": "x@example.com", "name": "Nul\u0000Name"}, "name"),
        ({"email": "nul\u0000@example.com", "name": "A"}, "email"),
        ({"email": 17, "name": "A"}, "email"),
        ({"email": None, "name": "A"}, "email"),
        ({"email": "x@example.com", "name": ["A"]}, "name"),
        ({"email": "x@example.com", "name": "A", "id": 5}, "id"),
        (
            {"email": "x@example.com", "name": "A", "created_at": "2020-01-01T00:00:00Z"},
            "created_at",
        ),
    ],
)
async def test_invalid_body_is_400_naming_the_field_and_nothing_is_written(client, db, body, field):
    before = await count_rows(db, "users")

    response = await client.post("/users", json=body)

    assert_problem(response, 400, field=field)
    assert await count_rows(db, "users") == before


async def test_shortest_email_is_accepted(client):
    # Each session has a database of its own, so this 3-character email is free.
    response = await client.post("/users", json={"email": "A@B", "name": "Shortest"})
    assert response.status_code == 201, response.text
    assert response.json()["email"] == "a@b"


async def test_name_of_100_characters_after_trimming_is_accepted(client, email):
    name = "n" * 100
    response = await client.post("/users", json={"email": email, "name": f"  {name}  "})
    assert response.status_code == 201
    assert response.json()["name"] == name


async def test_get_returns_the_user_with_its_etag(client, user):
    response = await client.get(f"/users/{user['id']}")

    assert response.status_code == 200
    assert response.json() == user
    assert response.headers["etag"] == '"1"'


async def test_get_with_matching_if_none_match_is_304_without_body(client, user):
    response = await client.get(f"/users/{user['id']}", headers={"If-None-Match": '"1"'})

    assert response.status_code == 304
    assert response.content == b""
    assert response.headers["etag"] == '"1"'
    stale = await client.get(f"/users/{user['id']}", headers={"If-None-Match": '"7", "8"'})
    assert stale.status_code == 200
    weak = await client.get(f"/users/{user['id']}", headers={"If-None-Match": 'W/"1"'})
    assert weak.status_code == 304


@pytest.mark.parametrize(
    "path_id", ["0", "-1", "9223372036854775808", "99999999999999999999", "abc", "1.5"]
)
async def test_id_that_names_no_row_is_404(client, path_id):
    assert_problem(await client.get(f"/users/{path_id}"), 404)
    assert_problem(await client.patch(f"/users/{path_id}", json={"name": "x"}), 404)
    assert_problem(await client.delete(f"/users/{path_id}"), 404)
    assert_problem(await client.get(f"/users/{path_id}/posts"), 404)


async def test_absent_user_is_404(client):
    assert_problem(await client.get("/users/9223372036854775807"), 404)


async def test_patch_changes_only_the_named_fields_and_moves_etag_and_updated_at(client, db, user):
    response = await client.patch(f"/users/{user['id']}", json={"name": "  Ada King  "})

    assert response.status_code == 200
    patched = response.json()
    assert patched["name"] == "Ada King"
    assert patched["email"] == user["email"]
    assert patched["created_at"] == user["created_at"]
    assert patched["updated_at"] > user["updated_at"]
    assert response.headers["etag"] == '"2"'
    row = await db.fetchrow("SELECT name, version FROM users WHERE id = $1", user["id"])
    assert tuple(row) == ("Ada King", 2)


async def test_patch_email_is_normalised_and_409_when_taken(client, db, user):
    email = unique_email()
    other = (await client.post("/users", json={"email": email, "name": "Other"})).json()

    taken = await client.patch(f"/users/{other['id']}", json={"email": user["email"].upper()})
    assert_problem(taken, 409, field="email")
    assert await db.fetchval("SELECT email FROM users WHERE id = $1", other["id"]) == email

    fresh = "  NEW-" + email.upper()
    moved = await client.patch(f"/users/{other['id']}", json={"email": fresh})
    assert moved.status_code == 200
    assert moved.json()["email"] == "new-" + email


async def test_empty_patch_changes_nothing(client, db, user):
    response = await client.patch(f"/users/{user['id']}", json={})

    assert response.status_code == 200
    assert response.json() == user
    assert response.headers["etag"] == '"1"'
    assert await db.fetchval("SELECT version FROM users WHERE id = $1", user["id"]) == 1


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": None}, "name"),
        ({"email": None}, "email"),
        ({"id": 3}, "id"),
        ({"created_at": "2026-01-01T00:00:00Z"}, "created_at"),
        ({"updated_at": "2026-01-01T00:00:00Z"}, "updated_at"),
        ({"name": ""}, "name"),
        ({"name": 5}, "name"),
        ({"email": "not-an-email"}, "email"),
    ],
)
async def test_invalid_patch_is_400_and_changes_nothing(client, db, user, body, field):
    response = await client.patch(f"/users/{user['id']}", json=body)

    assert_problem(response, 400, field=field)
    row = await db.fetchrow("SELECT name, version FROM users WHERE id = $1", user["id"])
    assert tuple(row) == (user["name"], 1)


async def test_delete_is_204_and_removes_the_row(client, db, user):
    response = await client.delete(f"/users/{user['id']}")

    assert response.status_code == 204
    assert response.content == b""
    assert await db.fetchval("SELECT count(*) FROM users WHERE id = $1", user["id"]) == 0
    assert_problem(await client.get(f"/users/{user['id']}"), 404)
    assert_problem(await client.delete(f"/users/{user['id']}"), 404)


async def test_delete_removes_the_users_posts_in_the_same_transaction(client, db, user):
    for title in ("one", "two", "three"):
        created = await client.post(
            "/posts", json={"author_id": user["id"], "title": title, "body": ""}
        )
        assert created.status_code == 201

    assert (await client.delete(f"/users/{user['id']}")).status_code == 204

    assert await db.fetchval("SELECT count(*) FROM posts WHERE author_id = $1", user["id"]) == 0


async def test_list_filters_by_email_exactly_ignoring_case(client, user):
    response = await client.get("/users", params={"email": f"  {user['email'].upper()} "})

    assert response.status_code == 200
    assert response.json() == {"items": [user], "next_cursor": None}
    prefix = await client.get("/users", params={"email": user["email"][:-1]})
    assert prefix.json() == {"items": [], "next_cursor": None}


async def test_list_email_filter_with_nul_is_400(client):
    assert_problem(await client.get("/users", params={"email": "a\u0000@b.c"}), 400, field="email")
