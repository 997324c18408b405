"""Every statement about posts; the SQL is in `sql/posts/`, read once at import, and the
dynamic shapes come from `service.database.statements`."""

from __future__ import annotations

from service.database.routing import Session
from service.database.sql import load_queries
from service.database.statements import page_newest_first, update_row
from service.http.concurrency import Versioned, stored, written
from service.http.feed_positions import split_head
from service.http.pagination import FeedPosition
from service.posts.models import Post, PostCreate

SQL = load_queries("posts")
COLUMNS = ("id", "author_id", "title", "body", "published", "created_at", "updated_at", "version")
_PAGE_COLUMNS = COLUMNS[:-1]


async def create_post(session: Session, data: PostCreate) -> Versioned[Post]:
    row = await session.fetchrow(
        SQL["insert"], data.author_id, data.title, data.body, data.published
    )
    return written(Post, row)


async def get_post(session: Session, post_id: int) -> Versioned[Post] | None:
    row = await session.fetchrow(SQL["get_by_id"], post_id)
    return None if row is None else stored(Post, row)


async def list_posts(
    session: Session,
    *,
    before_id: int,
    count: int,
    author_id: int | None = None,
    published: bool | None = None,
) -> tuple[FeedPosition, list[Post]]:
    """Newest first, optionally one author's and/or by `published`; with the feed position
    taken by the same snapshot (its Events-Cursor)."""
    filters = {"author_id": author_id, "published": published}
    present = {column: value for column, value in filters.items() if value is not None}
    statement = page_newest_first("posts", _PAGE_COLUMNS, tuple(present))
    head, page = split_head(await session.fetch(statement, before_id, count, *present.values()))
    return head, [Post(*row[2:]) for row in page]


async def update_post(
    session: Session, post_id: int, changes: dict[str, object], versions: list[int] | None
) -> Versioned[Post] | None:
    row = await update_row(session, "posts", COLUMNS, post_id, changes, versions)
    return None if row is None else written(Post, row)


async def delete_post(session: Session, post_id: int, versions: list[int] | None) -> int | None:
    """The id of the deleting transaction, or None when nothing was deleted."""
    written_by: int | None = await session.fetchval(SQL["delete"], post_id, versions)
    return written_by
