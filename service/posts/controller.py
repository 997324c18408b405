"""HTTP routes of /posts and /users/{id}/posts."""

from __future__ import annotations

from functools import partial
from typing import Annotated, Any

from litestar import Controller, Request, Response, delete, get, patch, post
from litestar.datastructures import State
from litestar.exceptions import NotFoundException
from litestar.params import FromPath, JSONBody, QueryParameter

from service.database.routing import Session
from service.http import idempotency, resources
from service.http.errors import NOT_MODIFIED, problem_responses
from service.http.feed_positions import events_cursor
from service.http.pagination import DEFAULT_LIMIT, Cursor, CursorCodec, Limit, split_page
from service.http.sessions import session_of
from service.http.validation import MAX_ID, PositiveId, QueryBool, StrictBody
from service.posts import queries
from service.posts.models import Post, PostCreate, PostPage, PostPatch
from service.users.queries import user_exists

Published = Annotated[
    QueryBool | None, QueryParameter(description="Only posts with this `published`.")
]
AuthorFilter = Annotated[
    PositiveId | None, QueryParameter(description="Only posts of this author.")
]


async def _page(
    session: Session,
    state: State,
    limit: int,
    cursor: str | None,
    *,
    author_id: int | None,
    published: bool | None,
) -> Response[PostPage]:
    """A page, with the Events-Cursor read by its snapshot."""
    cursors: CursorCodec = state.cursors
    before_id = MAX_ID if cursor is None else cursors.decode("posts", cursor)
    head, rows = await queries.list_posts(
        session, before_id=before_id, count=limit + 1, author_id=author_id, published=published
    )
    items, last_id = split_page(rows, limit, lambda item: item.id)
    next_cursor = None if last_id is None else cursors.encode("posts", last_id)
    return Response(
        PostPage(items=list(items), next_cursor=next_cursor),
        headers=await events_cursor(session, state.feed_identity, cursors, head),
    )


@get(
    "/users/{user_id:int}/posts",
    operation_id="listUserPosts",
    tags=["posts"],
    responses=problem_responses(400, 404),
)
async def list_user_posts(
    user_id: FromPath[int],
    request: Request[Any, Any, Any],
    state: State,
    limit: Limit = DEFAULT_LIMIT,
    cursor: Cursor = None,
    published: Published = None,
) -> Response[PostPage]:
    """A page of one user's posts, newest first."""
    user_id = resources.require_id(user_id)
    session = session_of(request)
    page = await _page(session, state, limit, cursor, author_id=user_id, published=published)
    # Rows prove the author exists (foreign key); only an empty page needs the check.
    if not page.content.items and not await user_exists(session, user_id):
        raise NotFoundException()
    return page


class PostController(Controller):
    path = "/posts"
    tags = ["posts"]

    @post(
        "/",
        operation_id="createPost",
        dto=StrictBody[PostCreate],
        return_dto=None,
        responses=problem_responses(400, 409, 422),
    )
    async def create_post(
        self,
        request: Request[Any, Any, Any],
        data: JSONBody[PostCreate],
    ) -> Response[Post]:
        session = session_of(request)

        async def create() -> Response[Post]:
            stored = await queries.create_post(session, data)
            return resources.with_etag(
                stored, status_code=201, location=f"/posts/{stored.resource.id}"
            )

        return await idempotency.once(session, request, data, create)

    @get("/", operation_id="listPosts", responses=problem_responses(400))
    async def list_posts(
        self,
        request: Request[Any, Any, Any],
        state: State,
        limit: Limit = DEFAULT_LIMIT,
        cursor: Cursor = None,
        author_id: AuthorFilter = None,
        published: Published = None,
    ) -> Response[PostPage]:
        """A page of posts, newest first."""
        return await _page(
            session_of(request),
            state,
            limit,
            cursor,
            author_id=author_id,
            published=published,
        )

    @get(
        "/{post_id:int}",
        operation_id="getPost",
        responses=problem_responses(404) | NOT_MODIFIED,
    )
    async def get_post(
        self,
        post_id: FromPath[int],
        request: Request[Any, Any, Any],
    ) -> Response[Post]:
        stored = await queries.get_post(session_of(request), resources.require_id(post_id))
        return resources.conditional_get(stored, request)

    @patch(
        "/{post_id:int}",
        operation_id="patchPost",
        dto=StrictBody[PostPatch],
        return_dto=None,
        responses=problem_responses(400, 404, 412),
    )
    async def patch_post(
        self,
        post_id: FromPath[int],
        data: JSONBody[PostPatch],
        request: Request[Any, Any, Any],
    ) -> Response[Post]:
        post_id = resources.require_id(post_id)
        session = session_of(request)
        return await resources.patch(
            request,
            data.changes(),
            read=partial(queries.get_post, session, post_id),
            update=partial(queries.update_post, session, post_id),
        )

    @delete("/{post_id:int}", operation_id="deletePost", responses=problem_responses(404, 412))
    async def delete_post(
        self,
        post_id: FromPath[int],
        request: Request[Any, Any, Any],
    ) -> Response[None]:
        post_id = resources.require_id(post_id)
        session = session_of(request)
        return await resources.delete(
            request,
            read=partial(queries.get_post, session, post_id),
            remove=partial(queries.delete_post, session, post_id),
        )
