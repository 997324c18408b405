"""Every listing the service runs is served by an index, in order, touching a page's worth
of buffers: the plans behind "the cost of page 1,000 equals the cost of page 1" (API.md).

The statements are not copied here: each case calls the service's own query function with
a connection stand-in that records the statement and arguments it is given, and then
explains exactly that on a seeded database of its own (the load-test seed, small).

asyncpg prepares every statement, and after five executions on a connection PostgreSQL
may switch a prepared statement to a generic plan, made without the parameter values. So
each statement is explained both ways (`plan_cache_mode`): with its values (custom) and
without them (generic); both must hold.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import asyncpg
import pytest

from loadtests.seed import DataSet, seed
from service.database import migrations
from service.http.validation import MAX_ID
from service.posts.queries import list_posts
from service.users.queries import list_users
from tests.helpers import connect

# Small enough to seed in about a second, large enough that a sequential scan or a sort
# would be the wrong plan (the planner picks indexes here as it does at full size).
DATA_SET = DataSet(users=2_000, posts=40_000)
PAGE_ROWS = 51  # the default page of 50, fetched with one more row to know if there is a next
# A page reads at most one heap block per row (one author's posts are scattered through
# the table), plus the index blocks on the way down and along the leaf level.
MAX_BUFFERS = PAGE_ROWS + 12
PLAN_MODES = ("force_custom_plan", "force_generic_plan")
HEAD_INDEX = "events_pkey"
# The head probe descends events_pkey once from its top: root, inner and leaf pages, and
# the heap page when the visibility map does not answer.
HEAD_BUFFERS = 5
SCANS = {"Index Scan", "Index Only Scan"}


class StatementRecorder:
    """Stands in for a connection: keeps what a query function asks it to fetch."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[Any, ...]]] = []

    async def fetch(self, statement: str, *arguments: Any) -> list[Any]:
        self.calls.append((statement, arguments))
        return [(1, 1, None)]  # as an empty page reads: the feed's head, no row


async def statement_of(query: Callable[[Any], Awaitable[object]]) -> tuple[str, tuple[Any, ...]]:
    """The one statement, with its arguments, that `query(connection)` runs."""
    recorder = StatementRecorder()
    await query(recorder)
    [call] = recorder.calls
    return call


@dataclass(frozen=True)
class Seeded:
    connection: asyncpg.Connection
    prolific_author: int
    newest_post: int


@pytest.fixture(scope="module")
async def seeded(make_database: Callable[[], Awaitable[str]]) -> AsyncIterator[Seeded]:
    url = await make_database()
    migrations.apply(url)
    connection = await connect(url)
    try:
        assert await seed(connection, DATA_SET) == DATA_SET
        # Its listing is long, so only an index that yields rows in order can stop early.
        # (A listing of a few rows may well be read by a bitmap scan and sorted: as cheap.)
        prolific_author = await connection.fetchval(
            "SELECT author_id FROM posts GROUP BY author_id ORDER BY count(*) DESC LIMIT 1"
        )
        newest_post = await connection.fetchval("SELECT max(id) FROM posts")
        yield Seeded(connection, prolific_author, newest_post)
    finally:
        await connection.close()


def nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", []):
        yield from nodes(child)


async def explain(
    connection: asyncpg.Connection, statement: str, arguments: tuple[Any, ...], mode: str
) -> dict[str, Any]:
    """EXPLAIN (ANALYZE, BUFFERS) of the statement prepared and executed as asyncpg does."""
    # EXPLAIN EXECUTE takes no bind parameters: the values go in as literals, quoted by the
    # server and left untyped, so that EXECUTE casts them to the statement's own types.
    literals = [
        await connection.fetchval(
            "SELECT quote_nullable($1::text)", None if value is None else str(value)
        )
        for value in arguments
    ]
    await connection.execute(f"PREPARE listing AS {statement}")
    try:
        # SET LOCAL in a transaction of its own: the plan mode does not outlive the call.
        async with connection.transaction():
            await connection.execute(f"SET LOCAL plan_cache_mode = {mode}")
            raw = await connection.fetchval(
                f"EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) EXECUTE listing({', '.join(literals)})"
            )
    finally:
        await connection.execute("DEALLOCATE listing")
    plan: dict[str, Any] = json.loads(raw)[0]["Plan"]
    return plan


@dataclass(frozen=True)
class Case:
    name: str
    query: Callable[[Seeded], Callable[[Any], Awaitable[object]]]
    indexes: frozenset[str]
    # users_email_key is unique: the sort above it orders at most one row.
    sorts_one_row: bool = False


CASES = [
    Case(
        "users: first page",
        lambda s: lambda c: list_users(c, after_id=0, count=PAGE_ROWS, email=None),
        frozenset({"users_pkey"}),
    ),
    Case(
        "users: a page deep in the table",
        lambda s: (
            lambda c: list_users(c, after_id=DATA_SET.users - 300, count=PAGE_ROWS, email=None)
        ),
        frozenset({"users_pkey"}),
    ),
    Case(
        "users: by email",
        lambda s: lambda c: list_users(c, after_id=0, count=PAGE_ROWS, email="user17@example.com"),
        frozenset({"users_email_key"}),
        sorts_one_row=True,
    ),
    Case(
        "posts: first page",
        lambda s: lambda c: list_posts(c, before_id=MAX_ID, count=PAGE_ROWS),
        frozenset({"posts_pkey"}),
    ),
    Case(
        "posts: a page deep in the table",
        lambda s: lambda c: list_posts(c, before_id=s.newest_post - 30_000, count=PAGE_ROWS),
        frozenset({"posts_pkey"}),
    ),
    Case(
        "posts: by author",
        lambda s: (
            lambda c: list_posts(c, before_id=MAX_ID, count=PAGE_ROWS, author_id=s.prolific_author)
        ),
        frozenset({"posts_author_id_id_idx"}),
    ),
    Case(
        "posts: by author, deep in the listing",
        lambda s: (
            lambda c: list_posts(
                c, before_id=s.newest_post // 3, count=PAGE_ROWS, author_id=s.prolific_author
            )
        ),
        frozenset({"posts_author_id_id_idx"}),
    ),
    Case(
        "posts: published",
        lambda s: lambda c: list_posts(c, before_id=MAX_ID, count=PAGE_ROWS, published=True),
        # Half the posts are published: walking the primary key and skipping the other
        # half reads about as few blocks as the published index, and the planner may take
        # either; both give the rows in order.
        frozenset({"posts_published_id_idx", "posts_pkey"}),
    ),
    Case(
        "posts: by author and published",
        lambda s: (
            lambda c: list_posts(
                c, before_id=MAX_ID, count=PAGE_ROWS, author_id=s.prolific_author, published=False
            )
        ),
        frozenset({"posts_author_id_published_id_idx"}),
    ),
]


@pytest.mark.parametrize("mode", PLAN_MODES)
@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
async def test_listing_is_an_ordered_index_scan(seeded: Seeded, case: Case, mode: str) -> None:
    statement, arguments = await statement_of(case.query(seeded))
    plan = await explain(seeded.connection, statement, arguments, mode)
    every_node = list(nodes(plan))
    described = " -> ".join(
        f"{node['Node Type']}{' on ' + node['Index Name'] if 'Index Name' in node else ''}"
        for node in every_node
    )

    # The feed's head (the page's Events-Cursor): one probe from the top of events_pkey,
    # and feed_state's one row (sorted with it: one row each).
    heads = [node for node in every_node if node.get("Index Name") == HEAD_INDEX]
    assert len(heads) == 1, f"expected one probe for the feed's head: {described}"
    assert heads[0]["Node Type"] in SCANS
    assert heads[0]["Actual Rows"] <= 1
    assert heads[0]["Shared Hit Blocks"] + heads[0]["Shared Read Blocks"] <= HEAD_BUFFERS
    state = [node for node in every_node if node.get("Relation Name") == "feed_state"]
    state += [
        node for node in every_node if node["Node Type"] == "Sort" and state[0] in node["Plans"]
    ]
    assert all(node["Actual Rows"] <= 1 for node in state), described
    every_node = [node for node in every_node if node not in heads and node not in state]
    scans = [node for node in every_node if node["Node Type"] in SCANS]
    assert len(scans) == 1, f"expected one index scan: {described}"
    assert scans[0]["Index Name"] in case.indexes, f"expected {sorted(case.indexes)}: {described}"
    assert not any(
        "Bitmap" in node["Node Type"] or "Seq" in node["Node Type"] for node in every_node
    ), described

    sorts = [node for node in every_node if "Sort" in node["Node Type"]]
    if case.sorts_one_row:
        assert all(sort["Actual Rows"] <= 1 for sort in sorts), described
    else:
        assert not sorts, f"the index should give the order: {described}"

    buffers = plan["Shared Hit Blocks"] + plan["Shared Read Blocks"]
    assert buffers <= MAX_BUFFERS + HEAD_BUFFERS, f"{buffers} buffers for one page: {described}"
    assert plan["Actual Rows"] <= PAGE_ROWS
