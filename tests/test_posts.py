"""/posts and /users/{id}/posts: statuses, strict types, references, filters."""

from __future__ import annotations

import pytest

from tests.helpers import assert_problem, count_rows


async def test_create_returns_201_with_location_etag_and_defaults(client, db, user):
    response = await client.post(
        "/posts", json={"author_id": user["id"], "title": "  Hello  ", "body": "  spaced  "}
    )

    assert response.status_code == 201
    created = response.json()
    assert set(created) == {
        "id",
        "author_id",
        "title",
        "body",
        "published",
        "created_at",
        "updated_at",
    }
    assert response.headers["location"] == f"/posts/{created['id']}"
    assert response.headers["etag"] == '"1"'
    assert created["title"] == "Hello"
    assert created["body"] == "  spaced  "  # bodies are stored as sent
    assert created["published"] is False
    row = await db.fetchrow(
        "SELECT author_id, title, body, published FROM posts WHERE id = $1", created["id"]
    )
    assert tuple(row) == (user["id"], "Hello", "  spaced  ", False)


async def test_author_that_does_not_exist_is_422_and_nothing_is_written(client, db):
    before = await count_rows(db, "posts")

    response = await client.post(
        "/posts", json={"author_id": 9223372036854775807, "title": "t", "body": "b"}
    )

    assert_problem(response, 422, field="author_id")
    assert await count_rows(db, "posts") == before


async def test_body_of_100000_characters_is_accepted_and_one_more_is_not(client, db, user):
    longest = "b" * 100_000
    accepted = await client.post(
        "/posts", json={"author_id": user["id"], "title": "long", "body": longest}
    )
    assert accepted.status_code == 201
    stored = await db.fetchval("SELECT body FROM posts WHERE id = $1", accepted.json()["id"])
    assert stored == longest

    before = await count_rows(db, "posts")
    refused = await client.post(
        "/posts", json={"author_id": user["id"], "title": "long", "body": longest + "b"}
    )
    assert_problem(refused, 400, field="body")
    assert await count_rows(db, "posts") == before


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"author_id": "1"}, "author_id"),
        ({"author_id": 1.0}, "author_id"),
        ({"author_id": True}, "author_id"),
        ({"author_id": 0}, "author_id"),
        ({"author_id": -4}, "author_id"),
        ({"author_id": 9223372036854775808}, "author_id"),
        ({"author_id": 99999999999999999999999999}, "author_id"),
        ({"published": "true"}, "published"),
        ({"published": 1}, "published"),
        ({"published": None}, "published"),
        ({"title": ""}, "title"),
        ({"title": " \t "}, "title"),
        ({"title": "t" * 201}, "title"),
        ({"title": "nul\u0000"}, "title"),
        ({"body": "nul\u0000"}, "body"),
        ({"body": None}, "body"),
        ({"title": None}, "title"),
        ({"version": 2}, "version"),
    ],
)
async def test_invalid_create_is_400_naming_the_field(client, db, user, changes, field):
    body = {"author_id": user["id"], "title": "Title", "body": "Body", **changes}
    before = await count_rows(db, "posts")

    response = await client.post("/posts", json=body)

    assert_problem(response, 400, field=field)
    assert await count_rows(db, "posts") == before


@pytest.mark.parametrize("missing", ["author_id", "title", "body"])
async def test_missing_required_field_is_400(client, user, missing):
    body = {"author_id": user["id"], "title": "Title", "body": "Body"}
    del body[missing]
    assert_problem(await client.post("/posts", json=body), 400, field=missing)


async def test_get_and_conditional_get(client, post):
    response = await client.get(f"/posts/{post['id']}")
    assert response.status_code == 200
    assert response.json() == post
    assert response.headers["etag"] == '"1"'

    not_modified = await client.get(f"/posts/{post['id']}", headers={"If-None-Match": '"1"'})
    assert not_modified.status_code == 304
    assert not_modified.content == b""

    assert_problem(await client.get("/posts/9223372036854775807"), 404)
    assert_problem(await client.get("/posts/9223372036854775808"), 404)


async def test_patch_changes_named_fields_only(client, db, post):
    response = await client.patch(f"/posts/{post['id']}", json={"published": True})

    assert response.status_code == 200
    patched = response.json()
    assert patched == {**post, "published": True, "updated_at": patched["updated_at"]}
    assert patched["updated_at"] > post["updated_at"]
    assert response.headers["etag"] == '"2"'
    row = await db.fetchrow("SELECT published, title, version FROM posts WHERE id = $1", post["id"])
    assert tuple(row) == (True, post["title"], 2)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"author_id": 1}, "author_id"),
        ({"id": 1}, "id"),
        ({"title": None}, "title"),
        ({"published": "false"}, "published"),
        ({"body": 3}, "body"),
        ({"created_at": "2026-01-01T00:00:00Z"}, "created_at"),
    ],
)
async def test_invalid_patch_is_400_and_changes_nothing(client, db, post, body, field):
    response = await client.patch(f"/posts/{post['id']}", json=body)

    assert_problem(response, 400, field=field)
    assert await db.fetchval("SELECT version FROM posts WHERE id = $1", post["id"]) == 1


async def test_delete(client, db, post):
    assert (await client.delete(f"/posts/{post['id']}")).status_code == 204
    assert await db.fetchval("SELECT count(*) FROM posts WHERE id = $1", post["id"]) == 0
    assert_problem(await client.delete(f"/posts/{post['id']}"), 404)
    assert_problem(await client.patch(f"/posts/{post['id']}", json={"title": "x"}), 404)


async def _write_posts(client, author_id: int, published: list[bool]) -> list[dict]:
    posts = []
    for index, flag in enumerate(published):
        response = await client.post(
            "/posts",
            json={"author_id": author_id, "title": f"p{index}", "body": "", "published": flag},
        )
        assert response.status_code == 201
        posts.append(response.json())
    return posts


async def test_users_posts_newest_first_with_published_filter(client, user):
    posts = await _write_posts(client, user["id"], [True, False, True])

    everything = await client.get(f"/users/{user['id']}/posts")
    assert everything.status_code == 200
    assert everything.json() == {"items": posts[::-1], "next_cursor": None}

    published = await client.get(f"/users/{user['id']}/posts", params={"published": "true"})
    assert [item["id"] for item in published.json()["items"]] == [posts[2]["id"], posts[0]["id"]]
    drafts = await client.get(f"/users/{user['id']}/posts", params={"published": "false"})
    assert [item["id"] for item in drafts.json()["items"]] == [posts[1]["id"]]


async def test_users_posts_of_user_without_posts_is_empty_and_of_absent_user_404(client, user):
    empty = await client.get(f"/users/{user['id']}/posts")
    assert empty.json() == {"items": [], "next_cursor": None}
    assert_problem(await client.get("/users/9223372036854775807/posts"), 404)


async def test_posts_filters_by_author_and_published(client, user):
    posts = await _write_posts(client, user["id"], [False, True])

    by_author = await client.get("/posts", params={"author_id": user["id"]})
    assert by_author.json()["items"] == posts[::-1]
    both = await client.get("/posts", params={"author_id": user["id"], "published": "true"})
    assert both.json()["items"] == [posts[1]]
    nobody = await client.get("/posts", params={"author_id": 9223372036854775807})
    assert nobody.json() == {"items": [], "next_cursor": None}


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"author_id": "abc"}, "author_id"),
        ({"author_id": "0"}, "author_id"),
        ({"author_id": "9223372036854775808"}, "author_id"),
        ({"published": "maybe"}, "published"),
    ],
)
async def test_bad_filter_is_400_naming_it(client, params, field):
    assert_problem(await client.get("/posts", params=params), 400, field=field)
