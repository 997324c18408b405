"""Keyset pages: limits, opaque cursors, and a walk that sees each row exactly once while
rows come and go."""

from __future__ import annotations

import asyncio
import base64

import pytest

from tests.helpers import assert_problem, unique_email


async def _authors_posts(client, author_id: int, count: int) -> list[int]:
    ids = []
    for index in range(count):
        response = await client.post(
            "/posts", json={"author_id": author_id, "title": f"t{index}", "body": "b"}
        )
        ids.append(response.json()["id"])
    return ids


async def _walk(client, path: str, params: dict, on_page=None) -> list[int]:
    seen: list[int] = []
    cursor = None
    for _ in range(1000):  # bounded: a walk that never ends is a failure
        page = await client.get(path, params={**params, **({"cursor": cursor} if cursor else {})})
        assert page.status_code == 200, page.text
        body = page.json()
        seen.extend(item["id"] for item in body["items"])
        if on_page is not None:
            await on_page()
        cursor = body["next_cursor"]
        if cursor is None:
            return seen
    raise AssertionError("the walk did not end")


async def test_limit_bounds_the_page_and_the_cursor_continues(client, user):
    ids = await _authors_posts(client, user["id"], 5)

    first = (await client.get("/posts", params={"author_id": user["id"], "limit": 2})).json()
    assert [item["id"] for item in first["items"]] == ids[::-1][:2]
    assert isinstance(first["next_cursor"], str)

    walked = await _walk(client, "/posts", {"author_id": user["id"], "limit": 2})
    assert walked == ids[::-1]


async def test_exact_multiple_of_limit_ends_without_an_empty_page(client, user):
    await _authors_posts(client, user["id"], 4)

    first = (await client.get(f"/users/{user['id']}/posts", params={"limit": 2})).json()
    second = (
        await client.get(
            f"/users/{user['id']}/posts", params={"limit": 2, "cursor": first["next_cursor"]}
        )
    ).json()

    assert len(second["items"]) == 2
    assert second["next_cursor"] is None


async def test_default_limit_is_50_and_users_come_in_ascending_id(client):
    existing = (await client.get("/users", params={"limit": 200})).json()["items"]
    for _ in range(51 - len(existing)):
        await client.post("/users", json={"email": unique_email(), "name": "n"})

    page = (await client.get("/users")).json()

    ids = [item["id"] for item in page["items"]]
    assert len(ids) == 50
    assert ids == sorted(ids)
    assert page["next_cursor"] is not None


async def test_walk_returns_every_row_once_while_rows_are_inserted_and_deleted(client, user):
    original = await _authors_posts(client, user["id"], 30)
    deleted: set[int] = set()
    inserted: list[int] = []
    victims = iter(original[::-3])

    async def churn() -> None:
        # Between pages: delete rows not yet reached and ones already seen, insert new ones.
        victim = next(victims, None)
        if victim is not None:
            assert (await client.delete(f"/posts/{victim}")).status_code == 204
            deleted.add(victim)
        inserted.extend(await _authors_posts(client, user["id"], 2))

    seen = await _walk(client, f"/users/{user['id']}/posts", {"limit": 4}, on_page=churn)

    assert len(seen) == len(set(seen)), "a row came twice"
    assert seen == sorted(seen, reverse=True)
    survivors = set(original) - deleted
    assert survivors <= set(seen), "a row present throughout the walk was missed"
    assert set(seen) - survivors <= set(inserted) | deleted


async def test_walk_of_users_while_users_are_created_sees_each_once(client):
    async def create_one() -> None:
        await client.post("/users", json={"email": unique_email(), "name": "Walker"})

    before = [
        item["id"] for item in (await client.get("/users", params={"limit": 200})).json()["items"]
    ]
    seen = await _walk(client, "/users", {"limit": 7}, on_page=create_one)

    assert len(seen) == len(set(seen))
    assert seen == sorted(seen)
    assert set(before) <= set(seen)


@pytest.mark.parametrize("limit", ["0", "201", "-1", "abc", "1.5"])
async def test_limit_out_of_range_is_400(client, limit):
    assert_problem(await client.get("/posts", params={"limit": limit}), 400, field="limit")
    assert_problem(await client.get("/users", params={"limit": limit}), 400, field="limit")


async def test_limit_bounds_are_accepted(client):
    for limit in ("1", "200"):
        assert (await client.get("/posts", params={"limit": limit})).status_code == 200


async def _a_real_cursor(client, path: str) -> str:
    for _ in range(2):
        response = await client.post("/users", json={"email": unique_email(), "name": "c"})
        user_id = response.json()["id"]
        await client.post("/posts", json={"author_id": user_id, "title": "t", "body": "b"})
    cursor = (await client.get(path, params={"limit": 1})).json()["next_cursor"]
    assert cursor
    return cursor


def _flip_a_tag_character(cursor: str) -> str:
    # Not the last one: base64 ignores some low bits of the final character.
    position = len(cursor) - 5
    return cursor[:position] + ("A" if cursor[position] != "A" else "B") + cursor[position + 1 :]


async def test_cursors_not_issued_by_the_service_are_400(client):
    users_cursor = await _a_real_cursor(client, "/users")
    posts_cursor = await _a_real_cursor(client, "/posts")
    tag = posts_cursor.split(".")[1]
    forged_payload = base64.urlsafe_b64encode(b"posts:1").rstrip(b"=").decode()
    bad = [
        "garbage",
        "",
        ".",
        "a.b.c",
        "%%%",
        "\u0000",
        _flip_a_tag_character(posts_cursor),
        f"{forged_payload}.{tag}",
        users_cursor,  # a users cursor on the posts listing
        "x" * 201,
        "💥.💥",
    ]
    for cursor in bad:
        response = await client.get("/posts", params={"cursor": cursor})
        assert_problem(response, 400, field="cursor")
    assert_problem(await client.get("/users", params={"cursor": posts_cursor}), 400, field="cursor")


async def test_pages_are_served_concurrently(client, user):
    await _authors_posts(client, user["id"], 3)
    responses = await asyncio.gather(
        *(client.get(f"/users/{user['id']}/posts", params={"limit": 1}) for _ in range(10))
    )
    assert {response.status_code for response in responses} == {200}
