"""A full flow through the client openapi-python-client generated from the live document
(run by `bash clientgen/run.sh`, which puts the generated package on PYTHONPATH and sets
SERVICE_URL and SERVICE_TOKEN).

Every call goes through the generated functions and models, so each step proves that the
document describes what the service answers: bodies parse into the generated models,
problems into `Problem`, feed events' `data` into `User` and `Post`, and the statuses are
ones the generated code knows.
"""

from __future__ import annotations

import os
import uuid
from http import HTTPStatus
from typing import Any

import pytest
from posts_service_client import AuthenticatedClient
from posts_service_client.api.events import list_events
from posts_service_client.api.posts import (
    create_post,
    delete_post,
    get_post,
    list_posts,
    list_user_posts,
)
from posts_service_client.api.users import (
    create_user,
    delete_user,
    get_user,
    list_users,
    patch_user,
)
from posts_service_client.models import (
    Event,
    EventPage,
    EventType,
    Post,
    PostCreate,
    Problem,
    User,
    UserCreate,
    UserPage,
    UserPatch,
)
from posts_service_client.types import UNSET


@pytest.fixture(scope="module")
def client() -> AuthenticatedClient:
    return AuthenticatedClient(
        base_url=os.environ["SERVICE_URL"],
        token=os.environ["SERVICE_TOKEN"],
        raise_on_unexpected_status=True,  # a status the document does not declare fails
    )


def unique_email() -> str:
    return f"client-{uuid.uuid4().hex[:12]}@example.com"


def new_user(client: AuthenticatedClient, name: str = "Ada Lovelace") -> tuple[User, str]:
    response = create_user.sync_detailed(client=client, body=UserCreate(unique_email(), name))
    assert response.status_code == HTTPStatus.CREATED
    assert isinstance(response.parsed, User)
    return response.parsed, response.headers["etag"]


def new_post(client: AuthenticatedClient, author: User, title: str = "Hello") -> Post:
    response = create_post.sync_detailed(
        client=client, body=PostCreate(author_id=author.id, title=title, body="Words.")
    )
    assert response.status_code == HTTPStatus.CREATED
    assert isinstance(response.parsed, Post)
    return response.parsed


def problem(response: Any, status: HTTPStatus) -> Problem:
    assert response.status_code == status, response.content
    assert response.headers["content-type"] == "application/problem+json"
    assert isinstance(response.parsed, Problem), response.parsed
    assert response.parsed.status == status
    return response.parsed


def test_create_answers_the_user_with_location_and_etag(client):
    email = unique_email()
    response = create_user.sync_detailed(
        client=client, body=UserCreate(email=f"  {email.upper()} ", name=" Ada ")
    )

    assert response.status_code == HTTPStatus.CREATED
    user = response.parsed
    assert isinstance(user, User)
    assert (user.email, user.name) == (email, "Ada")
    assert user.created_at == user.updated_at
    assert response.headers["location"] == f"/users/{user.id}"
    assert response.headers["etag"] == '"1"'
    assert response.headers["x-request-id"]


def test_a_duplicate_email_is_a_409_parsed_as_a_problem(client):
    user, _ = new_user(client)

    response = create_user.sync_detailed(
        client=client, body=UserCreate(email=user.email.upper(), name="Someone Else")
    )

    conflict = problem(response, HTTPStatus.CONFLICT)
    assert [(error.field, error.message) for error in conflict.errors] == [
        ("email", "is already taken")
    ]


def test_get_answers_the_user_and_its_etag(client):
    user, etag = new_user(client)

    response = get_user.sync_detailed(user.id, client=client)

    assert response.status_code == HTTPStatus.OK
    assert response.parsed == user
    assert response.headers["etag"] == etag


def test_walking_the_pages_sees_each_row_once(client):
    author, _ = new_user(client)
    posts = [new_post(client, author, title=f"Post {number}") for number in range(5)]
    users = [new_user(client)[0] for _ in range(5)]

    seen_posts: list[int] = []
    cursor: str | Any = UNSET
    while True:
        page = list_user_posts.sync_detailed(author.id, client=client, limit=2, cursor=cursor)
        assert page.status_code == HTTPStatus.OK
        assert len(page.parsed.items) <= 2
        seen_posts += [post.id for post in page.parsed.items]
        if page.parsed.next_cursor is None:
            break
        cursor = page.parsed.next_cursor
    assert seen_posts == sorted((post.id for post in posts), reverse=True)  # newest first

    seen_users: list[int] = []
    cursor = UNSET
    while True:
        page = list_users.sync_detailed(client=client, limit=3, cursor=cursor)
        assert isinstance(page.parsed, UserPage)
        seen_users += [user.id for user in page.parsed.items]
        if page.parsed.next_cursor is None:
            break
        cursor = page.parsed.next_cursor
    assert len(seen_users) == len(set(seen_users))
    assert seen_users == sorted(seen_users)
    assert {user.id for user in users} <= set(seen_users)


def test_patch_with_if_match_is_200_then_412_with_the_old_etag(client):
    user, etag = new_user(client)

    changed = patch_user.sync_detailed(
        user.id, client=client, body=UserPatch(name="Grace Hopper"), if_match=etag
    )
    assert changed.status_code == HTTPStatus.OK
    assert changed.parsed.name == "Grace Hopper"
    assert changed.headers["etag"] == '"2"'

    stale = patch_user.sync_detailed(
        user.id, client=client, body=UserPatch(name="Lost Update"), if_match=etag
    )
    problem(stale, HTTPStatus.PRECONDITION_FAILED)
    assert get_user.sync_detailed(user.id, client=client).parsed.name == "Grace Hopper"


def test_a_conditional_get_with_the_current_etag_is_304(client):
    user, etag = new_user(client)

    response = get_user.sync_detailed(user.id, client=client, if_none_match=etag)

    assert response.status_code == HTTPStatus.NOT_MODIFIED
    assert response.content == b""
    assert response.headers["etag"] == etag


@pytest.mark.parametrize(
    ("call", "field"),
    [
        (lambda client: list_posts.sync_detailed(client=client, limit=0), "limit"),
        (lambda client: list_posts.sync_detailed(client=client, author_id=0), "author_id"),
        (lambda client: list_users.sync_detailed(client=client, email="no-at-sign"), "email"),
        (lambda client: list_users.sync_detailed(client=client, cursor="forged"), "cursor"),
    ],
)
def test_a_bad_query_is_a_400_parsed_as_a_problem_naming_the_parameter(client, call, field):
    bad = problem(call(client), HTTPStatus.BAD_REQUEST)
    assert field in [error.field for error in bad.errors]


def test_deleting_a_user_deletes_their_posts(client):
    user, etag = new_user(client)
    post = new_post(client, user)

    response = delete_user.sync_detailed(user.id, client=client, if_match=etag)

    assert response.status_code == HTTPStatus.NO_CONTENT
    problem(get_user.sync_detailed(user.id, client=client), HTTPStatus.NOT_FOUND)
    problem(get_post.sync_detailed(post.id, client=client), HTTPStatus.NOT_FOUND)
    empty = list_user_posts.sync_detailed(user.id, client=client)
    problem(empty, HTTPStatus.NOT_FOUND)


def follow(client: AuthenticatedClient, cursor: str, limit: int = 2) -> tuple[list[Event], str]:
    """Every event after `cursor` that is there now, small pages, and the cursor after them."""
    events: list[Event] = []
    while True:
        page = list_events.sync_detailed(client=client, after=cursor, limit=limit)
        assert page.status_code == HTTPStatus.OK
        assert isinstance(page.parsed, EventPage)
        events += page.parsed.items
        cursor = page.parsed.next_cursor
        if len(page.parsed.items) < limit:
            return events, cursor


def test_a_follower_lists_then_follows_the_feed(client):
    listed = list_users.sync_detailed(client=client, limit=1)
    assert listed.status_code == HTTPStatus.OK
    cursor = listed.headers["events-cursor"]
    user, etag = new_user(client)
    post = new_post(client, user)
    renamed = patch_user.sync_detailed(
        user.id, client=client, body=UserPatch(name="Followed"), if_match=etag
    )
    assert renamed.status_code == HTTPStatus.OK
    assert delete_post.sync_detailed(post.id, client=client).status_code == HTTPStatus.NO_CONTENT

    events, end = follow(client, cursor)

    mine = [
        e
        for e in events
        if (e.type_.value.split(".")[0], e.resource_id) in {("user", user.id), ("post", post.id)}
    ]
    assert [(e.type_, e.resource_id, e.version) for e in mine] == [
        (EventType.USER_CREATED, user.id, 1),
        (EventType.POST_CREATED, post.id, 1),
        (EventType.USER_UPDATED, user.id, 2),
        (EventType.POST_DELETED, post.id, 1),
    ]
    # `data` parses into the generated models: the resource as GET shows it after the change.
    assert mine[0].data == user
    assert mine[1].data == post
    assert mine[2].data == renamed.parsed
    assert mine[3].data is None
    assert len({e.id for e in events}) == len(events)
    # Nothing new: a long poll ends empty after `wait`, on the same cursor.
    idle = list_events.sync_detailed(client=client, after=end, wait=1, types="posts")
    assert idle.status_code == HTTPStatus.OK
    assert (idle.parsed.items, idle.parsed.next_cursor) == ([], end)


def test_a_forged_feed_cursor_is_a_400_parsed_as_a_problem(client):
    bad = problem(list_events.sync_detailed(client=client, after="forged"), HTTPStatus.BAD_REQUEST)
    assert [error.field for error in bad.errors] == ["after"]
