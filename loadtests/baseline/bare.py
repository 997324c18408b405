"""The bare baseline of `make bench`: the service's benchmarked endpoints with no framework.

A plain ASGI callable that does the database work the service does for the same requests
(the same SQL texts, imported from the service; the same asyncpg pool settings, via
`service.database.open_pool`; the same msgspec structs to decode and encode), and nothing
else: no routing tables, dependency injection, DTOs, middleware or metrics. The service's
requests/s divided by this one's is what the framework and the service's own extras cost.

It answers only what the benchmark sends, correctly, and every other request with a small
problem body; it is not a second implementation of the contract. The change feed's page
is read with the service's own reader (`service.feed.reader`) and cursor codec, the feed's
id read once at start; no long poll.

    GET /health/ready            GET /posts?limit=&cursor=      GET /users/{id}/posts
    GET /posts/{id}              PATCH /posts/{id}              POST /posts
    GET /events?after=&limit=&types=
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import parse_qs

import asyncpg
import msgspec

from service.base.settings import Settings, from_env
from service.database import pool as database
from service.database.statements import page_newest_first, update_by_id
from service.feed import reader
from service.feed.controller import DEFAULT_EVENT_LIMIT, EventLimit
from service.feed.models import EventPage
from service.http.concurrency import Versioned, stored, written
from service.http.errors import InvalidInput
from service.http.feed_positions import split_head
from service.http.pagination import DEFAULT_LIMIT, MAX_LIMIT, CursorCodec, cursor_key, split_page
from service.http.validation import MAX_ID
from service.posts.models import Post, PostCreate, PostPage, PostPatch
from service.posts.queries import _PAGE_COLUMNS as PAGE_COLUMNS  # what a page selects
from service.posts.queries import COLUMNS as POST_COLUMNS
from service.posts.queries import SQL as POSTS_SQL
from service.users.queries import SQL as USERS_SQL

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

logger = logging.getLogger("baseline")

MAX_BODY_BYTES = 1024 * 1024
JSON = b"application/json"
PROBLEM = b"application/problem+json"
encode = msgspec.json.Encoder().encode


class HTTPError(Exception):
    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status


class Answer(msgspec.Struct):
    status: int
    body: bytes
    content_type: bytes = JSON
    headers: list[tuple[bytes, bytes]] = msgspec.field(default_factory=list)


def _post_answer(post: Versioned[Post], status: int = 200) -> Answer:
    headers = [(b"etag", post.etag.encode())]
    if status == 201:
        headers.append((b"location", f"/posts/{post.resource.id}".encode()))
    return Answer(status, encode(post.resource), headers=headers)


def _path_id(text: str) -> int:
    if not text.isdigit() or not 0 < int(text) <= MAX_ID:
        raise HTTPError(404, "No such resource")
    return int(text)


def _limit(query: dict[str, list[str]], default: int = DEFAULT_LIMIT, most: int = MAX_LIMIT) -> int:
    raw = query.get("limit", [str(default)])[-1]
    if not raw.isdigit() or not 1 <= int(raw) <= most:
        raise HTTPError(400, f"limit must be 1 to {most}")
    return int(raw)


def _resources(query: dict[str, list[str]]) -> tuple[str, ...]:
    types = query.get("types", [None])[-1]
    if types is None:
        return reader.RESOURCES
    if types not in ("users", "posts", "users,posts", "posts,users"):
        raise HTTPError(400, "types must be a subset of users,posts")
    return tuple(types.split(","))


class Baseline:
    """The ASGI app: state is the pool (opened at lifespan start) and the cursor codec."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.cursors = CursorCodec(cursor_key(settings.cursor_secret, settings.data_dir))
        self.pool: database.Pool | None = None
        self.feed_id = ""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
        elif scope["type"] == "http":
            answer = await self._answer(scope, receive)
            headers = [(b"content-type", answer.content_type), *answer.headers]
            await send({"type": "http.response.start", "status": answer.status, "headers": headers})
            await send({"type": "http.response.body", "body": answer.body})

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                assert self.settings.database_url is not None
                self.pool = await database.open_pool(self.settings, self.settings.database_url)
                async with self._connection() as connection:
                    self.feed_id = str(await connection.fetchval(reader.SQL["feed_id"]))
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self.pool is not None:
                    await self.pool.close()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _answer(self, scope: Scope, receive: Receive) -> Answer:
        try:
            return await self._route(scope, receive)
        except HTTPError as error:
            problem = {"type": "about:blank", "status": error.status, "detail": str(error)}
            return Answer(error.status, encode(problem), PROBLEM)
        except (msgspec.ValidationError, msgspec.DecodeError, InvalidInput) as error:
            problem = {"type": "about:blank", "status": 400, "detail": str(error)}
            return Answer(400, encode(problem), PROBLEM)
        except asyncpg.ForeignKeyViolationError:
            problem = {"type": "about:blank", "status": 422, "detail": "author_id names no user"}
            return Answer(422, encode(problem), PROBLEM)
        except Exception:
            logger.exception("unexpected error")
            return Answer(500, encode({"type": "about:blank", "status": 500}), PROBLEM)

    async def _route(self, scope: Scope, receive: Receive) -> Answer:
        method: str = scope["method"]
        parts = scope["path"].strip("/").split("/")
        query = parse_qs(scope["query_string"].decode())
        match method, parts:
            case "GET", ["posts", post_id]:
                return await self.get_post(_path_id(post_id))
            case "PATCH", ["posts", post_id]:
                return await self.patch_post(_path_id(post_id), await _body(receive))
            case "POST", ["posts"]:
                return await self.create_post(await _body(receive))
            case "GET", ["posts"]:
                return await self.list_posts(query, author_id=None)
            case "GET", ["users", user_id, "posts"]:
                return await self.list_posts(query, author_id=_path_id(user_id))
            case "GET", ["events"]:
                return await self.list_events(query)
            case "GET", ["health", "ready"]:
                async with self._connection() as connection:
                    await connection.fetchval("SELECT 1")
                return Answer(200, b'{"status":"ready"}')
        raise HTTPError(404, "No such resource")

    def _connection(self) -> Any:
        assert self.pool is not None
        return self.pool.acquire(timeout=self.settings.db_acquire_timeout)

    async def get_post(self, post_id: int) -> Answer:
        async with self._connection() as connection:
            row = await connection.fetchrow(POSTS_SQL["get_by_id"], post_id)
        if row is None:
            raise HTTPError(404, "No such resource")
        return _post_answer(stored(Post, row))

    async def create_post(self, body: bytes) -> Answer:
        data = msgspec.json.decode(body, type=PostCreate, strict=True)
        async with self._connection() as connection:
            row = await connection.fetchrow(
                POSTS_SQL["insert"], data.author_id, data.title, data.body, data.published
            )
        return _post_answer(written(Post, row), status=201)

    async def patch_post(self, post_id: int, body: bytes) -> Answer:
        changes = msgspec.json.decode(body, type=PostPatch, strict=True).changes()
        async with self._connection() as connection:
            if changes:
                statement = update_by_id("posts", tuple(changes), POST_COLUMNS, False)
                row = await connection.fetchrow(statement, post_id, *changes.values())
            else:
                row = await connection.fetchrow(POSTS_SQL["get_by_id"], post_id)
        if row is None:
            raise HTTPError(404, "No such resource")
        return _post_answer(written(Post, row) if changes else stored(Post, row))

    async def list_posts(self, query: dict[str, list[str]], *, author_id: int | None) -> Answer:
        limit = _limit(query)
        cursor = query.get("cursor", [None])[-1]
        before_id = MAX_ID if cursor is None else self.cursors.decode("posts", cursor)
        filters = () if author_id is None else ("author_id",)
        statement = page_newest_first("posts", PAGE_COLUMNS, filters)
        arguments = () if author_id is None else (author_id,)
        async with self._connection() as connection:
            _, rows = split_head(
                await connection.fetch(statement, before_id, limit + 1, *arguments)
            )
            # Only an empty page needs to tell "no posts" from "no such user", as the
            # service does.
            if (
                not rows
                and author_id is not None
                and not await connection.fetchval(USERS_SQL["exists"], author_id)
            ):
                raise HTTPError(404, "No such resource")
        items, last_id = split_page([Post(*row[2:]) for row in rows], limit, lambda post: post.id)
        next_cursor = None if last_id is None else self.cursors.encode("posts", last_id)
        return Answer(200, encode(PostPage(items=list(items), next_cursor=next_cursor)))

    async def list_events(self, query: dict[str, list[str]]) -> Answer:
        after = query.get("after", [None])[-1]
        limit = _limit(query, int(DEFAULT_EVENT_LIMIT), EventLimit.maximum)
        resources = _resources(query)
        position = (
            reader.START if after is None else self.cursors.decode_position(self.feed_id, after)
        )
        async with self._connection() as connection:
            page = await reader.read(connection, position, limit, resources)
        if after is not None and page.gone(position):
            raise HTTPError(410, "This cursor is older than the oldest event kept")
        next_cursor = self.cursors.encode_position(self.feed_id, page.next)
        return Answer(200, encode(EventPage(items=page.events, next_cursor=next_cursor)))


async def _body(receive: Receive) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise HTTPError(413, "The request body is larger than the service accepts")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def app_from_env() -> Baseline:
    """Factory for uvicorn: settings from the same environment variables as the service."""
    return Baseline(from_env())
