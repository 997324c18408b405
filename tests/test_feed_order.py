"""The feed is gapless and keeps each resource's versions in order, whatever order
concurrent transactions take their place and commit in.

Writers here are direct SQL sessions (an operator's SQL is captured as the service's own
writes are), so that a test can hold a transaction open at will; the follower reads
`GET /events` through the real app. Run on every database of the suite (embedded 18, the
server's 15, and through PgBouncer in transaction mode).
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter, defaultdict
from dataclasses import dataclass, field

import asyncpg
import httpx

from tests.helpers import connect, unique_email
from tests.test_feed import Event, feed_cursor, follow, of


async def insert_user(db: asyncpg.Connection) -> int:
    user_id: int = await db.fetchval(
        "INSERT INTO users (email, name) VALUES ($1, 'Writer') RETURNING id", unique_email()
    )
    return user_id


async def insert_post(db: asyncpg.Connection, author_id: int) -> int:
    post_id: int = await db.fetchval(
        "INSERT INTO posts (author_id, title, body) VALUES ($1, 'T', '') RETURNING id", author_id
    )
    return post_id


async def test_a_change_written_first_and_committed_last_is_not_skipped(
    client: httpx.AsyncClient, database_url: str, db: asyncpg.Connection
) -> None:
    """Session A writes first (its transaction takes the lower id) and commits last; a
    follower reads a later, committed change in between. The follower must not be handed
    a cursor past A's change: once A commits, A's event comes, then the later one."""
    author = await insert_user(db)
    first, later = await insert_post(db, author), await insert_post(db, author)
    cursor = await feed_cursor(client)
    session_a = await connect(database_url)
    try:
        transaction = session_a.transaction()
        await transaction.start()
        await session_a.execute("UPDATE posts SET title = 'A, first' WHERE id = $1", first)
        patched = await client.patch(f"/posts/{later}", json={"title": "B, later"})
        assert patched.status_code == 200
        # B is committed and visible to GET, but A's transaction can still commit an event
        # before it: the feed holds B back rather than pass A.
        assert (await client.get(f"/posts/{later}")).json()["title"] == "B, later"
        seen_meanwhile, cursor_meanwhile = await follow(client, cursor)
        assert of(seen_meanwhile, "post.", later) == []
        assert of(seen_meanwhile, "post.", first) == []
        await transaction.commit()
    finally:
        await session_a.close()
    events, _ = await follow(client, cursor_meanwhile)
    mine = [e for e in events if e["resource_id"] in (first, later) and e["type"] == "post.updated"]
    assert [(e["resource_id"], e["data"]["title"]) for e in mine] == [
        (first, "A, first"),
        (later, "B, later"),
    ]


async def test_a_writer_that_waited_for_a_row_lands_after_the_change_it_waited_for(
    client: httpx.AsyncClient, database_url: str, db: asyncpg.Connection
) -> None:
    """Session L takes its transaction id early (it writes another row), then waits for a
    row that H, a later transaction, holds. H commits version 2, L writes version 3. L's
    id is lower than H's, yet the feed must give version 2 before version 3."""
    author = await insert_user(db)
    post = await insert_post(db, author)
    other = await insert_user(db)
    cursor = await feed_cursor(client)
    low, high = await connect(database_url), await connect(database_url)
    try:
        low_transaction, high_transaction = low.transaction(), high.transaction()
        await low_transaction.start()
        await low.execute("UPDATE users SET name = 'L was here' WHERE id = $1", other)
        await high_transaction.start()
        await high.execute("UPDATE posts SET title = 'by H' WHERE id = $1", post)
        low_write = asyncio.create_task(
            low.execute("UPDATE posts SET title = 'by L' WHERE id = $1", post)
        )
        await asyncio.sleep(0.2)
        assert not low_write.done()  # waiting for H's row lock
        await high_transaction.commit()
        await low_write
        await low_transaction.commit()
    finally:
        await low.close()
        await high.close()
    events, _ = await follow(client, cursor)
    assert [(e["version"], e["data"]["title"]) for e in of(events, "post.", post)] == [
        (2, "by H"),
        (3, "by L"),
    ]


@dataclass
class Ledger:
    """What the writers committed, to hold the feed against."""

    users: list[int]
    posts: dict[int, int]
    """Post id -> author id, for the posts the test made."""
    changes: list[tuple[str, int, int, str]] = field(default_factory=list)
    """(resource, id, version, action) of every committed change."""

    def mine(self, event: Event) -> bool:
        kind = event["type"].split(".")[0]
        return (kind == "user" and event["resource_id"] in self.users) or (
            kind == "post" and event["resource_id"] in self.posts
        )


_RENAME = {
    "post": "UPDATE posts SET title = $2 WHERE id = $1 RETURNING version",
    "user": "UPDATE users SET name = $2 WHERE id = $1 RETURNING version",
}


async def _write_once(connection: asyncpg.Connection, ledger: Ledger, rng: random.Random) -> None:
    """One random transaction with pauses inside it; its changes go to the ledger only
    when it commits."""
    made: list[tuple[str, int, int, str]] = []
    roll_back = rng.random() < 0.15
    transaction = connection.transaction()
    await transaction.start()
    try:
        for _ in range(rng.randint(1, 3)):
            await asyncio.sleep(rng.random() * 0.02)
            choice = rng.random()
            if choice < 0.7:
                kind = "post" if choice < 0.5 else "user"
                resource = rng.choice(list(ledger.posts) if kind == "post" else ledger.users)
                version = await connection.fetchval(_RENAME[kind], resource, f"{rng.random()}")
                if version is not None:
                    made.append((kind, resource, version, "updated"))
            elif choice < 0.8:
                # Within a savepoint that is rolled back: leaves nothing.
                savepoint = connection.transaction()
                await savepoint.start()
                await connection.execute(
                    "UPDATE posts SET title = 'undone' WHERE id = $1",
                    rng.choice(list(ledger.posts)),
                )
                await savepoint.rollback()
            elif choice < 0.93:
                post = rng.choice(list(ledger.posts))
                version = await connection.fetchval(
                    "DELETE FROM posts WHERE id = $1 RETURNING version", post
                )
                if version is not None:
                    made.append(("post", post, version, "deleted"))
            else:
                # A user's delete cascades to its posts: lock the user first, so that no
                # post of theirs can be added meanwhile, then note the posts that go.
                user = rng.choice(ledger.users)
                if await connection.fetchval("SELECT id FROM users WHERE id = $1 FOR UPDATE", user):
                    going = await connection.fetch(
                        "SELECT id, version FROM posts WHERE author_id = $1 FOR UPDATE", user
                    )
                    version = await connection.fetchval(
                        "DELETE FROM users WHERE id = $1 RETURNING version", user
                    )
                    made += [("post", row[0], row[1], "deleted") for row in going]
                    made.append(("user", user, version, "deleted"))
        await asyncio.sleep(rng.random() * 0.02)
    except asyncpg.DeadlockDetectedError:
        await transaction.rollback()
        return
    except BaseException:
        await transaction.rollback()
        raise
    if roll_back:
        await transaction.rollback()
    else:
        await transaction.commit()
        ledger.changes += made


async def test_sixteen_concurrent_writers_and_a_follower_of_small_pages(
    client: httpx.AsyncClient, database_url: str, db: asyncpg.Connection
) -> None:
    """Randomized: exactly once, per-resource version order, nothing rolled back."""
    rng = random.Random(18)
    users = [await insert_user(db) for _ in range(12)]
    posts = {}
    for user in users:
        for _ in range(4):
            posts[await insert_post(db, user)] = user
    ledger = Ledger(users=users, posts=posts)
    cursor = await feed_cursor(client)
    stop = asyncio.Event()
    delivered: list[Event] = []

    async def writer(seed: int) -> int:
        own_rng = random.Random(seed)
        connection = await connect(database_url)
        transactions = 0
        try:
            while not stop.is_set():
                await _write_once(connection, ledger, own_rng)
                transactions += 1
        finally:
            await connection.close()
        return transactions

    async def follower() -> None:
        nonlocal cursor
        while True:
            finished = stop.is_set()
            response = await client.get("/events", params={"after": cursor, "limit": 7})
            assert response.status_code == 200, response.text
            page = response.json()
            delivered.extend(page["items"])
            cursor = page["next_cursor"]
            if finished and not page["items"]:
                return
            await asyncio.sleep(0.005)

    writers = [asyncio.create_task(writer(rng.randrange(2**32))) for _ in range(16)]
    following = asyncio.create_task(follower())
    await asyncio.sleep(8)
    stop.set()
    transactions = sum(await asyncio.gather(*writers))
    await following
    # Anything committed is deliverable now: a last read finds no more.
    rest, _ = await follow(client, cursor)
    delivered += rest

    mine = [e for e in delivered if ledger.mine(e)]
    seen = Counter(_key(e) for e in mine)
    duplicates = [change for change, count in seen.items() if count > 1]
    assert duplicates == []
    expected = Counter(ledger.changes)
    assert transactions > 100, transactions
    assert len(ledger.changes) > 100, len(ledger.changes)
    missing = expected - seen
    extra = seen - expected
    assert not missing, f"{len(missing)} committed changes missing, e.g. {list(missing)[:5]}"
    assert not extra, f"{len(extra)} events of no committed change, e.g. {list(extra)[:5]}"
    # Each resource's events: creates before the test began are not in the window, then
    # versions strictly increase, and a delete carries the version right before it.
    by_resource: dict[tuple[str, int], list[Event]] = defaultdict(list)
    for event in mine:
        by_resource[event["type"].split(".")[0], event["resource_id"]].append(event)
    for events in by_resource.values():
        versions = [e["version"] for e in events if not e["type"].endswith(".deleted")]
        assert versions == sorted(set(versions)), events
        deletes = [i for i, e in enumerate(events) if e["type"].endswith(".deleted")]
        assert deletes in ([], [len(events) - 1]), events
        if deletes and len(events) > 1:
            assert events[-1]["version"] == events[-2]["version"], events


def _key(event: Event) -> tuple[str, int, int, str]:
    kind, action = event["type"].split(".")
    return kind, event["resource_id"], event["version"], action
