"""The Litestar floor for `make bench`: what Litestar itself costs for the service's work.

A minimal Litestar app, written as its documentation shows, serving the endpoints the
benchmark sends with the service's own database work: the query functions of
`service.posts.queries` and `service.users.queries` (the SQL files of `sql/` and the
dynamic statements of `service.database.statements`), the service's msgspec structs and
the service's pool opener (`service.database.pool.open_pool`: no reset query on release;
the bench sizes it as it sizes the bare baseline's). Path and query parameters are typed
and checked by Litestar, bodies decoded by Litestar into the structs, and handlers answer
a `Response` with headers: ETag, and Location on create.

Nothing of the service's own layers is here: no token gate, request limits, request id,
metrics, request log, connection dependency, conditional requests or idempotency keys.
The service's requests/s divided by this app's is what those layers cost on top of the
framework; this app's divided by the bare baseline's (`loadtests.baseline.bare`) is what
Litestar costs on top of no framework at all.

The change feed's page reads the feed as the service does: `service.feed.reader` (the
statements of `sql/events/`), the service's cursor codec for `after` and `next_cursor`,
the feed's id read once at start (the service reads it at its first need and keeps it),
a 410 past retention; no long poll (`wait`: the service's watcher is one of its layers).

    GET /health/ready      GET /posts/{id}      PATCH /posts/{id}      POST /posts
    GET /posts?limit=&cursor=&author_id=&published=
    GET /users/{id}/posts?limit=&cursor=&published=
    GET /events?after=&limit=&types=
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated

import asyncpg
from litestar import Litestar, MediaType, Request, Response, get, patch, post
from litestar.datastructures import State
from litestar.exceptions import HTTPException, NotFoundException
from litestar.params import Parameter

from service.base.settings import Settings, from_env
from service.database import pool as database
from service.feed import reader
from service.feed.controller import DEFAULT_EVENT_LIMIT, EventLimit
from service.feed.models import EventPage
from service.http.concurrency import Versioned
from service.http.errors import InvalidInput
from service.http.pagination import DEFAULT_LIMIT, MAX_LIMIT, CursorCodec, cursor_key, split_page
from service.http.validation import MAX_ID
from service.posts import queries
from service.posts.models import Post, PostCreate, PostPage, PostPatch
from service.users.queries import user_exists

RowId = Annotated[int, Parameter(ge=1, le=MAX_ID)]
Limit = Annotated[int, Parameter(ge=1, le=MAX_LIMIT)]
Cursor = Annotated[str | None, Parameter(max_length=200)]
EventsLimit = Annotated[int, Parameter(ge=EventLimit.minimum, le=EventLimit.maximum)]
After = Annotated[str | None, Parameter(max_length=300)]
Types = Annotated[str | None, Parameter(pattern="^(users|posts|users,posts|posts,users)$")]


def _answer(stored: Versioned[Post] | None, *, created: bool = False) -> Response[Post]:
    if stored is None:
        raise NotFoundException()
    headers = {"ETag": stored.etag}
    if created:
        headers["Location"] = f"/posts/{stored.resource.id}"
    return Response(stored.resource, status_code=201 if created else 200, headers=headers)


@get("/posts/{post_id:int}")
async def get_post(post_id: RowId, state: State) -> Response[Post]:
    async with state.pool.acquire() as connection:
        return _answer(await queries.get_post(connection, post_id))


@post("/posts")
async def create_post(data: PostCreate, state: State) -> Response[Post]:
    async with state.pool.acquire() as connection:
        return _answer(await queries.create_post(connection, data), created=True)


@patch("/posts/{post_id:int}")
async def patch_post(post_id: RowId, data: PostPatch, state: State) -> Response[Post]:
    changes = data.changes()
    async with state.pool.acquire() as connection:
        if not changes:
            return _answer(await queries.get_post(connection, post_id))
        return _answer(await queries.update_post(connection, post_id, changes, None))


async def _page(
    state: State, limit: int, cursor: str | None, author_id: int | None, published: bool | None
) -> PostPage:
    codec: CursorCodec = state.cursors
    before_id = MAX_ID if cursor is None else codec.decode("posts", cursor)
    async with state.pool.acquire() as connection:
        _, rows = await queries.list_posts(
            connection,
            before_id=before_id,
            count=limit + 1,
            author_id=author_id,
            published=published,
        )
        # As the service does: only an empty page of a user's posts asks whether the user
        # exists (404) or has no posts (200).
        if not rows and author_id is not None and not await user_exists(connection, author_id):
            raise NotFoundException()
    items, last_id = split_page(rows, limit, lambda item: item.id)
    next_cursor = None if last_id is None else codec.encode("posts", last_id)
    return PostPage(items=list(items), next_cursor=next_cursor)


@get("/posts")
async def list_posts(
    state: State,
    limit: Limit = DEFAULT_LIMIT,
    cursor: Cursor = None,
    author_id: Annotated[int | None, Parameter(ge=1, le=MAX_ID)] = None,
    published: bool | None = None,
) -> PostPage:
    return await _page(state, limit, cursor, author_id, published)


@get("/users/{user_id:int}/posts")
async def list_user_posts(
    user_id: RowId,
    state: State,
    limit: Limit = DEFAULT_LIMIT,
    cursor: Cursor = None,
    published: bool | None = None,
) -> PostPage:
    return await _page(state, limit, cursor, user_id, published)


@get("/events")
async def list_events(
    state: State,
    after: After = None,
    limit: EventsLimit = int(DEFAULT_EVENT_LIMIT),
    types: Types = None,
) -> EventPage:
    codec: CursorCodec = state.cursors
    feed_id: str = state.feed_id
    position = reader.START if after is None else codec.decode_position(feed_id, after)
    resources = reader.RESOURCES if types is None else tuple(types.split(","))
    async with state.pool.acquire() as connection:
        page = await reader.read(connection, position, limit, resources)
    if after is not None and page.gone(position):
        raise HTTPException(
            status_code=410, detail="This cursor is older than the oldest event kept"
        )
    return EventPage(items=page.events, next_cursor=codec.encode_position(feed_id, page.next))


@get("/health/ready")
async def ready(state: State) -> dict[str, str]:
    async with state.pool.acquire() as connection:
        await connection.fetchval("SELECT 1")
    return {"status": "ready"}


def _bad_request(request: Request[object, object, State], error: InvalidInput) -> Response[str]:
    return Response(str(error), status_code=400, media_type=MediaType.TEXT)


def _no_such_author(
    request: Request[object, object, State], error: asyncpg.ForeignKeyViolationError
) -> Response[str]:
    return Response("author_id names no user", status_code=422, media_type=MediaType.TEXT)


def create_app(settings: Settings) -> Litestar:
    database_url = settings.database_url
    if database_url is None:
        raise ValueError("the Litestar floor needs DATABASE_URL")

    @asynccontextmanager
    async def pool_lifespan(app: Litestar) -> AsyncIterator[None]:
        app.state.pool = await database.open_pool(settings, database_url)
        try:
            async with app.state.pool.acquire() as connection:
                app.state.feed_id = str(await connection.fetchval(reader.SQL["feed_id"]))
            yield
        finally:
            await app.state.pool.close()

    return Litestar(
        route_handlers=[
            get_post,
            create_post,
            patch_post,
            list_posts,
            list_user_posts,
            list_events,
            ready,
        ],
        lifespan=[pool_lifespan],
        state=State(
            {"cursors": CursorCodec(cursor_key(settings.cursor_secret, settings.data_dir))}
        ),
        exception_handlers={
            InvalidInput: _bad_request,
            asyncpg.ForeignKeyViolationError: _no_such_author,
        },
        # The process configures logging (as `python -m loadtests.baseline` does for both).
        logging_config=None,
    )


def app_from_env() -> Litestar:
    """Factory for uvicorn: settings from the same environment variables as the service."""
    return create_app(from_env())
