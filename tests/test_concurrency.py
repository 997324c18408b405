"""Optimistic concurrency: ETags, If-Match on PATCH and DELETE, and two racing writers."""

from __future__ import annotations

import asyncio

import pytest

from tests.helpers import assert_problem


@pytest.mark.parametrize("resource", ["users", "posts"])
async def test_patch_with_stale_if_match_is_412_and_changes_nothing(client, db, post, resource):
    path = f"/users/{post['author_id']}" if resource == "users" else f"/posts/{post['id']}"
    change = {"name": "New"} if resource == "users" else {"title": "New"}
    first = await client.patch(path, json=change, headers={"If-Match": '"1"'})
    assert first.status_code == 200
    assert first.headers["etag"] == '"2"'

    stale = await client.patch(path, json=change, headers={"If-Match": '"1"'})

    assert_problem(stale, 412)
    table = resource
    row_id = int(path.rsplit("/", 1)[1])
    assert await db.fetchval(f"SELECT version FROM {table} WHERE id = $1", row_id) == 2


@pytest.mark.parametrize(
    ("if_match", "status"),
    [('"1"', 200), ('"9", "1"', 200), ("*", 200), ('W/"1"', 412), ('"2"', 412), ("junk", 412)],
)
async def test_if_match_forms(client, user, if_match, status):
    response = await client.patch(
        f"/users/{user['id']}", json={"name": "Changed"}, headers={"If-Match": if_match}
    )
    assert response.status_code == status, response.text


async def test_empty_patch_honours_if_match(client, user):
    assert_problem(
        await client.patch(f"/users/{user['id']}", json={}, headers={"If-Match": '"5"'}), 412
    )
    ok = await client.patch(f"/users/{user['id']}", json={}, headers={"If-Match": '"1"'})
    assert ok.status_code == 200


async def test_delete_with_stale_if_match_is_412_and_keeps_the_row(client, db, post):
    await client.patch(f"/posts/{post['id']}", json={"body": "edited"})

    stale = await client.delete(f"/posts/{post['id']}", headers={"If-Match": '"1"'})

    assert_problem(stale, 412)
    assert await db.fetchval("SELECT count(*) FROM posts WHERE id = $1", post["id"]) == 1
    current = await client.delete(f"/posts/{post['id']}", headers={"If-Match": '"2"'})
    assert current.status_code == 204


async def test_if_match_on_absent_resource_is_404(client):
    response = await client.patch(
        "/posts/9223372036854775807", json={"title": "x"}, headers={"If-Match": '"1"'}
    )
    assert_problem(response, 404)


async def test_two_writers_with_the_same_if_match_get_one_200_and_one_412(client, db, user):
    for round_number in range(10):
        etag = (await client.get(f"/users/{user['id']}")).headers["etag"]

        responses = await asyncio.gather(
            client.patch(
                f"/users/{user['id']}",
                json={"name": f"A{round_number}"},
                headers={"If-Match": etag},
            ),
            client.patch(
                f"/users/{user['id']}",
                json={"name": f"B{round_number}"},
                headers={"If-Match": etag},
            ),
        )

        assert sorted(response.status_code for response in responses) == [200, 412]
        winner = next(response for response in responses if response.status_code == 200)
        row = await db.fetchrow("SELECT name, version FROM users WHERE id = $1", user["id"])
        assert row["name"] == winner.json()["name"]
        assert f'"{row["version"]}"' == winner.headers["etag"]
