"""Every statement about users; the SQL is in `sql/users/`, read once at import."""

from __future__ import annotations

from service.database.routing import Session
from service.database.sql import load_queries
from service.database.statements import update_row
from service.http.concurrency import Versioned, stored, written
from service.http.feed_positions import behind_horizon
from service.http.pagination import FeedPosition
from service.users.models import User, UserCreate

SQL = load_queries("users")
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
        rows = await session.fetch(SQL["list_page"], after_id, count)
    else:
        rows = await session.fetch(SQL["list_page_by_email"], email, after_id, count)
    horizon, page = behind_horizon(rows)
    return horizon, [User(*row[2:-1]) for row in page]


async def update_user(
    session: Session, user_id: int, changes: dict[str, object], versions: list[int] | None
) -> Versioned[User] | None:
    row = await update_row(session, "users", COLUMNS, user_id, changes, versions)
    return None if row is None else written(User, row)


async def delete_user(session: Session, user_id: int, versions: list[int] | None) -> int | None:
    """The id of the deleting transaction, or None when nothing was deleted."""
    written_by: int | None = await session.fetchval(SQL["delete"], user_id, versions)
    return written_by
