"""The change feed's contract (API.md, "The change feed"), over the real app and database.

The suite shares one database, so a test follows the feed from a cursor it took itself
(an `Events-Cursor`) and looks only at the events of the rows it made.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import asyncpg
import httpx
import pytest

from service.base.settings import Settings
from service.database import migrations
from service.database.pool import ServerPool
from service.feed import reader, retention
from tests.helpers import app_client, assert_problem, unique_email

Event = dict[str, Any]


async def feed_cursor(client: httpx.AsyncClient) -> str:
    """Where the feed stands now: the Events-Cursor of a list page."""
    response = await client.get("/users", params={"limit": 1})
    assert response.status_code == 200, response.text
    cursor: str = response.headers["events-cursor"]
    return cursor


async def follow(
    client: httpx.AsyncClient, cursor: str, *, limit: int = 1000, **params: Any
) -> tuple[list[Event], str]:
    """Every event after `cursor` that can be delivered now, and the cursor after them."""
    events: list[Event] = []
    while True:
        response = await client.get("/events", params={"after": cursor, "limit": limit, **params})
        assert response.status_code == 200, response.text
        page = response.json()
        assert page["next_cursor"]
        events += page["items"]
        cursor = page["next_cursor"]
        if len(page["items"]) < limit:
            return events, cursor


def of(events: list[Event], kind: str, resource_id: int) -> list[Event]:
    return [e for e in events if e["type"].startswith(kind) and e["resource_id"] == resource_id]


async def create_user(client: httpx.AsyncClient) -> Event:
    response = await client.post("/users", json={"email": unique_email(), "name": "Ada"})
    assert response.status_code == 201, response.text
    return response.json()  # type: ignore[no-any-return]


async def create_post(client: httpx.AsyncClient, author_id: int, title: str = "Hello") -> Event:
    response = await client.post(
        "/posts", json={"author_id": author_id, "title": title, "body": "Words."}
    )
    assert response.status_code == 201, response.text
    return response.json()  # type: ignore[no-any-return]


async def test_each_change_is_one_event_with_the_resource_as_get_shows_it(client):
    cursor = await feed_cursor(client)
    user = await create_user(client)
    post = await create_post(client, user["id"])
    patched = await client.patch(f"/posts/{post['id']}", json={"published": True})
    assert patched.status_code == 200
    renamed = await client.patch(f"/users/{user['id']}", json={"name": "Ada L."})
    assert renamed.status_code == 200
    post_now = await client.get(f"/posts/{post['id']}")
    user_now = await client.get(f"/users/{user['id']}")
    deleted = await client.delete(f"/posts/{post['id']}")
    assert deleted.status_code == 204

    events, _ = await follow(client, cursor)
    post_events = of(events, "post.", post["id"])
    user_events = of(events, "user.", user["id"])
    assert [e["type"] for e in post_events] == ["post.created", "post.updated", "post.deleted"]
    assert [e["version"] for e in post_events] == [1, 2, 2]
    assert post_events[0]["data"] == post
    assert post_events[1]["data"] == post_now.json()
    assert post_events[1]["version"] == int(post_now.headers["etag"].strip('"'))
    assert post_events[1]["occurred_at"] == post_now.json()["updated_at"]
    assert post_events[2]["data"] is None
    assert post_events[2]["occurred_at"] >= post_events[1]["occurred_at"]
    assert [e["type"] for e in user_events] == ["user.created", "user.updated"]
    assert user_events[0]["data"] == user
    assert user_events[1]["data"] == user_now.json()
    assert user_events[1]["occurred_at"] == user_now.json()["updated_at"]
    # Ids are unique; the same event has the same id on a second read.
    assert len({e["id"] for e in events}) == len(events)
    again, _ = await follow(client, cursor)
    assert [e["id"] for e in again[: len(events)]] == [e["id"] for e in events]


async def test_deleting_a_user_yields_its_posts_deletes_and_its_own(client, db):
    cursor = await feed_cursor(client)
    user = await create_user(client)
    posts = [await create_post(client, user["id"], f"Post {n}") for n in range(3)]
    assert (await client.delete(f"/users/{user['id']}")).status_code == 204
    events, _ = await follow(client, cursor)
    for post in posts:
        assert [e["type"] for e in of(events, "post.", post["id"])] == [
            "post.created",
            "post.deleted",
        ]
    assert [e["type"] for e in of(events, "user.", user["id"])] == [
        "user.created",
        "user.deleted",
    ]
    assert (
        await db.fetchval(
            "SELECT count(*) FROM posts WHERE id = ANY($1::bigint[])", [p["id"] for p in posts]
        )
        == 0
    )


async def test_an_operators_sql_is_captured_and_its_version_corrected(client, db):
    user = await create_user(client)
    post = await create_post(client, user["id"])
    cursor = await feed_cursor(client)
    # An UPDATE that forgets version and updated_at: the database moves both.
    await db.execute("UPDATE posts SET title = 'Edited by hand' WHERE id = $1", post["id"])
    after = await client.get(f"/posts/{post['id']}")
    assert after.headers["etag"] == '"2"'
    assert after.json()["updated_at"] > post["updated_at"]
    # One that sets a version of its own is corrected too: every change is version + 1.
    await db.execute("UPDATE posts SET version = 1 WHERE id = $1", post["id"])
    assert (await client.get(f"/posts/{post['id']}")).headers["etag"] == '"3"'
    events, _ = await follow(client, cursor)
    mine = of(events, "post.", post["id"])
    assert [(e["type"], e["version"]) for e in mine] == [("post.updated", 2), ("post.updated", 3)]
    assert mine[0]["data"] == after.json()


async def test_a_rolled_back_change_and_an_idempotent_replay_add_no_event(client, db):
    user = await create_user(client)
    cursor = await feed_cursor(client)

    async def change_then_fail() -> None:
        async with db.transaction():
            await db.execute("UPDATE users SET name = 'Rolled back' WHERE id = $1", user["id"])
            await db.execute("UPDATE users SET name = '' WHERE id = $1", user["id"])

    # A transaction that changes the user, then fails: rolled back whole.
    with pytest.raises(asyncpg.CheckViolationError):
        await change_then_fail()
    body = {"author_id": user["id"], "title": "Replayed, not repeated", "body": ""}
    headers = {"Idempotency-Key": f"feed-{user['id']}"}
    first = await client.post("/posts", json=body, headers=headers)
    replay = await client.post("/posts", json=body, headers=headers)
    assert first.status_code == replay.status_code == 201
    assert replay.headers["idempotent-replayed"] == "true"
    events, _ = await follow(client, cursor)
    assert of(events, "user.", user["id"]) == []
    assert [e["type"] for e in of(events, "post.", first.json()["id"])] == ["post.created"]


async def test_types_filters_and_the_cursor_passes_the_other_type(client):
    cursor = await feed_cursor(client)
    user = await create_user(client)
    post = await create_post(client, user["id"])
    posts_only, posts_cursor = await follow(client, cursor, types="posts")
    assert all(e["type"].startswith("post.") for e in posts_only)
    assert of(posts_only, "post.", post["id"])
    users_only, users_cursor = await follow(client, cursor, types="users")
    assert all(e["type"].startswith("user.") for e in users_only)
    assert of(users_only, "user.", user["id"])
    both, _ = await follow(client, cursor, types="users,posts")
    # The same events in the same order, less the other type.
    assert [e["id"] for e in both if e["type"].startswith("post.")] == [e["id"] for e in posts_only]
    # A users-only follower's cursor moved past the post's event: from it, nothing.
    rest, _ = await follow(client, users_cursor, types="users")
    assert of(rest, "user.", user["id"]) == []
    rest, _ = await follow(client, posts_cursor)
    assert of(rest, "post.", post["id"]) == []


async def test_small_pages_walk_every_event_once_in_order(client):
    cursor = await feed_cursor(client)
    user = await create_user(client)
    for n in range(7):
        await client.patch(f"/users/{user['id']}", json={"name": f"Name {n}"})
    everything, _ = await follow(client, cursor)
    paged, _ = await follow(client, cursor, limit=2)
    assert [e["id"] for e in paged] == [e["id"] for e in everything]
    assert [e["version"] for e in of(paged, "user.", user["id"])] == list(range(1, 9))


async def test_next_cursor_is_never_null_and_stays_put_with_nothing_new(client):
    response = await client.get("/events", params={"limit": 1})
    assert response.status_code == 200
    assert response.json()["next_cursor"]
    _, end = await follow(client, await feed_cursor(client))
    response = await client.get("/events", params={"after": end})
    assert response.json() == {"items": [], "next_cursor": end}


async def test_every_list_page_carries_an_events_cursor_taken_before_it(client):
    user = await create_user(client)
    for path in ("/users", "/posts", f"/users/{user['id']}/posts", "/posts?author_id=1"):
        response = await client.get(path)
        assert response.status_code == 200
        assert response.headers["events-cursor"], path
    # List, then follow from the first page's cursor: a change made after the walk began
    # is followed.
    first_page = await client.get("/users", params={"limit": 1})
    cursor = first_page.headers["events-cursor"]
    await client.patch(f"/users/{user['id']}", json={"name": "Changed during the walk"})
    events, _ = await follow(client, cursor)
    assert [e["version"] for e in of(events, "user.", user["id"])] == [2]


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"limit": "0"}, "limit"),
        ({"limit": "1001"}, "limit"),
        ({"limit": "1e2"}, "limit"),
        ({"types": "users,users"}, "types"),
        ({"types": "comments"}, "types"),
        ({"types": "users, posts"}, "types"),
        ({"wait": "31"}, "wait"),
        ({"wait": "1.5"}, "wait"),
        ({"wait": "-1"}, "wait"),
        ({"after": "not-a-cursor"}, "after"),
    ],
)
async def test_bad_parameters_are_a_400_naming_them(client, params, field):
    assert_problem(await client.get("/events", params=params), 400, field=field)


async def test_a_cursor_of_a_listing_is_not_a_feed_cursor(client):
    await create_user(client)
    await create_user(client)
    users_cursor = (await client.get("/users", params={"limit": 1})).json()["next_cursor"]
    assert users_cursor
    assert_problem(await client.get("/events", params={"after": users_cursor}), 400, field="after")


@pytest.fixture
async def own_database(make_database) -> str:  # type: ignore[no-untyped-def]
    url: str = await make_database()
    migrations.apply(url)
    return url


async def test_a_cursor_of_another_database_is_a_400(client, settings, own_database):
    other = Settings(**{**_fields(settings), "database_url": own_database})
    async with app_client(other) as other_client:
        foreign = await feed_cursor(other_client)
    assert_problem(await client.get("/events", params={"after": foreign}), 400, field="after")


def _fields(settings: Settings) -> dict[str, Any]:
    return {name: getattr(settings, name) for name in settings.__struct_fields__}


async def test_a_cursor_behind_retention_is_a_410_and_listing_again_recovers(
    settings, own_database
):
    own = Settings(**{**_fields(settings), "database_url": own_database})
    async with app_client(own) as client:
        old_cursor = await feed_cursor(client)
        user = await create_user(client)
        for n in range(3):
            await client.patch(f"/users/{user['id']}", json={"name": f"N{n}"})
        events, _ = await follow(client, old_cursor)
        assert len(events) == 4
        primary = ServerPool("primary", own_database, own)
        await primary.open()
        try:
            # The app's own pruning may hold the round (a pruner skips it then): again.
            pruned, deadline = 0, time.monotonic() + 10
            while pruned < 4 and time.monotonic() < deadline:
                pruned += await retention.prune(primary, retention_seconds=0)
            assert pruned == 4
        finally:
            await primary.close()
        gone = await client.get("/events", params={"after": old_cursor})
        assert_problem(gone, 410)
        # From the oldest kept (no cursor) is never a 410, and a new list's cursor works.
        assert (await client.get("/events")).status_code == 200
        fresh = await feed_cursor(client)
        await client.patch(f"/users/{user['id']}", json={"name": "After the prune"})
        events, _ = await follow(client, fresh)
        assert [e["version"] for e in events] == [5]


async def test_a_long_poll_is_answered_when_an_event_arrives(client):
    user = await create_user(client)
    _, end = await follow(client, await feed_cursor(client))

    async def change_soon() -> None:
        await asyncio.sleep(0.3)
        await client.patch(f"/users/{user['id']}", json={"name": "Woken"})

    started = time.monotonic()
    changing = asyncio.create_task(change_soon())
    response = await client.get("/events", params={"after": end, "wait": 10})
    waited = time.monotonic() - started
    await changing
    assert response.status_code == 200
    assert of(response.json()["items"], "user.", user["id"])[0]["data"]["name"] == "Woken"
    assert 0.3 <= waited < 3, waited


async def test_a_long_poll_with_nothing_new_ends_empty_after_wait(client):
    _, end = await follow(client, await feed_cursor(client))
    started = time.monotonic()
    response = await client.get("/events", params={"after": end, "wait": 1, "types": "users"})
    waited = time.monotonic() - started
    assert response.status_code == 200
    # Other tests write nothing meanwhile (the suite runs one test at a time).
    assert response.json() == {"items": [], "next_cursor": end}
    assert 1 <= waited < 3, waited


async def test_many_waiting_followers_hold_no_connection_and_all_wake(client, settings):
    """300 long polls on a pool of 8 connections: waiting holds none, one write wakes all."""
    assert settings.db_pool_max == 8
    user = await create_user(client)
    _, end = await follow(client, await feed_cursor(client))
    followers = [
        asyncio.create_task(client.get("/events", params={"after": end, "wait": 15}))
        for _ in range(300)
    ]
    await asyncio.sleep(1.5)  # all of them read once and are waiting now
    assert not any(task.done() for task in followers)
    # Meanwhile the service answers other requests: the pool is free.
    assert (await client.get(f"/users/{user['id']}")).status_code == 200
    started = time.monotonic()
    await client.patch(f"/users/{user['id']}", json={"name": "Everyone wakes"})
    answers = await asyncio.gather(*followers)
    woke_within = time.monotonic() - started
    for answer in answers:
        assert answer.status_code == 200, answer.text
        assert of(answer.json()["items"], "user.", user["id"])[0]["version"] == 2
    assert woke_within < 5, woke_within


async def test_metrics_count_the_feed(client):
    await client.get("/events", params={"limit": 1})
    text = (await client.get("/metrics")).text
    for name in (
        "service_feed_requests_total",
        "service_feed_events_delivered_total",
        "service_feed_waiting_followers",
        "service_feed_events_written",
        "service_feed_undelivered_age_seconds",
    ):
        assert name in text, name


async def test_the_openapi_document_describes_the_feed(client):
    document = (await client.get("/schema/openapi.json")).json()
    operation = document["paths"]["/events"]["get"]
    assert {p["name"] for p in operation["parameters"]} >= {"after", "limit", "types", "wait"}
    assert operation["responses"]["200"]["links"]["NextPage"]["parameters"] == {
        "after": "$response.body#/next_cursor"
    }
    event = document["components"]["schemas"]["Event"]
    assert event["properties"]["data"]["oneOf"] == [
        {"$ref": "#/components/schemas/User"},
        {"$ref": "#/components/schemas/Post"},
        {"type": "null"},
    ]
    assert set(event["properties"]["type"]["enum"]) == {
        f"{kind}.{action}"
        for kind in ("user", "post")
        for action in ("created", "updated", "deleted")
    }
    listing = document["paths"]["/posts"]["get"]["responses"]["200"]
    assert "Events-Cursor" in listing["headers"]
    assert listing["links"]["FollowFeed"]["operationId"] == "listEvents"


# -- Confirmations shared by followers -------------------------------------------------------


class _CountingPrimary:
    """The primary as the feed's confirmation is given it (a `Fetcher`): a real pool that
    counts the statements sent and ended, and can hold the first one until told."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool
        self.sent = 0
        self.ended = 0
        self.hold_first: asyncio.Event | None = None

    async def fetch(self, query: str, *args: Any) -> list[Any]:
        self.sent += 1
        if self.sent == 1 and self.hold_first is not None:
            await self.hold_first.wait()
        async with self.pool.acquire() as connection:
            rows = await connection.fetch(query, *args)
        self.ended += 1
        return rows  # type: ignore[no-any-return]


async def _two_pages(pool: asyncpg.Pool) -> tuple[reader.FeedPage, reader.FeedPage]:
    """A page of the feed, then a change, then the page after the first one's head: it
    hands out that change, beyond what confirming the first page confirms."""
    async with pool.acquire() as connection:
        before = await reader.read(connection, reader.START, 1000)
        await connection.execute(
            "INSERT INTO users (email, name) VALUES ($1, 'Confirmed')", unique_email()
        )
        after = await reader.read(connection, before.head, 1000)
    assert after.events
    assert after.next == after.head > before.head
    return before, after


async def test_followers_needing_a_confirmation_together_share_one(database_url):
    """One follower's confirmation is out when fifty more come with pages read later: they
    wait for it to end and share the next one, sent after their pages were read. Two
    statements, not fifty-one."""
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=4, statement_cache_size=0)
    try:
        first_page, later_page = await _two_pages(pool)
        primary = _CountingPrimary(pool)
        confirmation = reader.Confirmation()
        confirmed_by: list[int] = []  # how many statements had ended when each returned

        async def follower(page: reader.FeedPage) -> None:
            await confirmation.confirm(primary, page)
            confirmed_by.append(primary.ended)

        await asyncio.gather(follower(first_page), *(follower(later_page) for _ in range(50)))
    finally:
        await pool.close()
    assert primary.sent == 2
    assert sorted(confirmed_by) == [1] + [2] * 50, "a later page returned on an earlier statement"
    assert confirmation.confirmed == later_page.head


async def test_a_follower_gone_while_its_confirmation_is_out_leaves_the_others_confirmed(
    database_url,
):
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=4, statement_cache_size=0)
    try:
        first_page, later_page = await _two_pages(pool)
        primary = _CountingPrimary(pool)
        primary.hold_first = asyncio.Event()  # never set: the first statement never runs
        confirmation = reader.Confirmation()
        gone = asyncio.create_task(confirmation.confirm(primary, first_page))
        await asyncio.sleep(0.01)
        others = [asyncio.create_task(confirmation.confirm(primary, later_page)) for _ in range(10)]
        await asyncio.sleep(0.01)
        gone.cancel()  # its client went away
        await asyncio.wait_for(asyncio.gather(*others), 10)
    finally:
        await pool.close()
    assert gone.cancelled()
    assert (primary.sent, primary.ended) == (2, 1)
    assert confirmation.confirmed == later_page.head
