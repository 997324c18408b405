"""Every statement about users; the SQL is in `sql/users/`, read once at import."""

from __future__ import annotations

from service.database.routing import Session
from service.database.sql import load_queries
from service.database.statements import behind_horizon, update_row
from service.http.concurrency import Versioned, stored, written
from service.http.feed_positions import split_head
from service.http.pagination import FeedPosition
from service.users.models import User, UserCreate

SQL = load_queries("users")
# List pages return the feed's head first (their Events-Cursor), as every list page does.
_LIST_PAGE = behind_horizon(SQL["list_page"])
_LIST_PAGE_BY_EMAIL = behind_horizon(SQL["list_page_by_email"])
COLUMNS = ("id", "email", "name", "created_at", "updated_at", "version")


async def create_user(session: Session, data: UserCreate) -> Versioned[User]:
    return written(User, await session.fetchrow(SQL["insert"], data.email, data.name))


async def get_user(session: Session, user_id: int) -> Versioned[User] | None:
    row = await session.fetchrow(SQL["get_by_id"], user_id)
    return None if row is None else stored(User, row)


async def user_exists(session: Session, user_id: int) -> bool:
    return bool(await session.fetchval(SQL["exists"], user_id))


async def list_users(
    session: Session, *, after_id: int, count: int, email: str | None
) -> tuple[FeedPosition, list[User]]:
    """A page, and the feed position taken by the same snapshot (its Events-Cursor)."""
    if email is None:
        rows = await session.fetch(_LIST_PAGE, after_id, count)
    else:
        rows = await session.fetch(_LIST_PAGE_BY_EMAIL, email, after_id, count)
    head, page = split_head(rows)
    return head, [User(*row[2:-1]) for row in page]


async def update_user(
    session: Session, user_id: int, changes: dict[str, object], versions: list[int] | None
) -> Versioned[User] | None:
    row = await update_row(session, "users", COLUMNS, user_id, changes, versions)
    return None if row is None else written(User, row)


async def delete_user(session: Session, user_id: int, versions: list[int] | None) -> int | None:
    """The id of the deleting transaction, or None when nothing was deleted."""
    written_by: int | None = await session.fetchval(SQL["delete"], user_id, versions)
    return written_by
