"""HTTP routes of /users: thin handlers over `queries`, rules shared in `service.resources`."""

from __future__ import annotations

from functools import partial
from typing import Annotated, Any

from litestar import Controller, Request, Response, delete, get, patch, post
from litestar.datastructures import State
from litestar.params import FromPath, JSONBody, QueryParameter

from service.http import idempotency, resources
from service.http.errors import NOT_MODIFIED, problem_responses
from service.http.feed_positions import events_cursor
from service.http.pagination import DEFAULT_LIMIT, Cursor, Limit, split_page
from service.http.sessions import session_of
from service.http.validation import EMAIL_SCHEMA, StrictBody, query_email
from service.users import queries
from service.users.models import User, UserCreate, UserPage, UserPatch


class UserController(Controller):
    path = "/users"
    tags = ["users"]

    @post(
        "/",
        operation_id="createUser",
        dto=StrictBody[UserCreate],
        return_dto=None,
        responses=problem_responses(400, 409, 422),
    )
    async def create_user(
        self,
        request: Request[Any, Any, Any],
        data: JSONBody[UserCreate],
    ) -> Response[User]:
        session = session_of(request)

        async def create() -> Response[User]:
            stored = await queries.create_user(session, data)
            return resources.with_etag(
                stored, status_code=201, location=f"/users/{stored.resource.id}"
            )

        return await idempotency.once(session, request, data, create)

    @get("/", operation_id="listUsers", responses=problem_responses(400))
    async def list_users(
        self,
        request: Request[Any, Any, Any],
        state: State,
        limit: Limit = DEFAULT_LIMIT,
        cursor: Cursor = None,
        email: Annotated[
            str | None,
            QueryParameter(
                description="Exact email, ignoring case and surrounding whitespace; one that "
                "no user could have (the rule of a user's email) is a 400.",
                schema_extra=EMAIL_SCHEMA,
            ),
        ] = None,
    ) -> Response[UserPage]:
        after_id = 0 if cursor is None else state.cursors.decode("users", cursor)
        if email is not None:
            email = query_email(email)
        session = session_of(request)
        head, rows = await queries.list_users(
            session, after_id=after_id, count=limit + 1, email=email
        )
        items, last_id = split_page(rows, limit, lambda user: user.id)
        next_cursor = None if last_id is None else state.cursors.encode("users", last_id)
        return Response(
            UserPage(items=list(items), next_cursor=next_cursor),
            headers=await events_cursor(session, state.feed_identity, state.cursors, head),
        )

    @get(
        "/{user_id:int}",
        operation_id="getUser",
        responses=problem_responses(404) | NOT_MODIFIED,
    )
    async def get_user(
        self,
        user_id: FromPath[int],
        request: Request[Any, Any, Any],
    ) -> Response[User]:
        stored = await queries.get_user(session_of(request), resources.require_id(user_id))
        return resources.conditional_get(stored, request)

    @patch(
        "/{user_id:int}",
        operation_id="patchUser",
        dto=StrictBody[UserPatch],
        return_dto=None,
        responses=problem_responses(400, 404, 409, 412),
    )
    async def patch_user(
        self,
        user_id: FromPath[int],
        data: JSONBody[UserPatch],
        request: Request[Any, Any, Any],
    ) -> Response[User]:
        user_id = resources.require_id(user_id)
        session = session_of(request)
        return await resources.patch(
            request,
            data.changes(),
            read=partial(queries.get_user, session, user_id),
            update=partial(queries.update_user, session, user_id),
        )

    @delete("/{user_id:int}", operation_id="deleteUser", responses=problem_responses(404, 412))
    async def delete_user(
        self,
        user_id: FromPath[int],
        request: Request[Any, Any, Any],
    ) -> Response[None]:
        user_id = resources.require_id(user_id)
        session = session_of(request)
        return await resources.delete(
            request,
            read=partial(queries.get_user, session, user_id),
            remove=partial(queries.delete_user, session, user_id),
        )
