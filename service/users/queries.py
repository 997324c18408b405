"""Every statement about users; the SQL is in `sql/users/`, read once at import."""

from __future__ import annotations

from typing import Any

from service.concurrency import Versioned
from service.database.pool import Connection
from service.database.sql import load_queries
from service.database.statements import update_row
from service.users.models import User, UserCreate

SQL = load_queries("users")
COLUMNS = ("id", "email", "name", "created_at", "updated_at", "version")


def _stored(row: Any) -> Versioned[User]:
    return Versioned(User(*row[:-1]), row[-1])


async def create_user(connection: Connection, data: UserCreate) -> Versioned[User]:
    return _stored(await connection.fetchrow(SQL["insert"], data.email, data.name))


async def get_user(connection: Connection, user_id: int) -> Versioned[User] | None:
    row = await connection.fetchrow(SQL["get_by_id"], user_id)
    return None if row is None else _stored(row)


async def user_exists(connection: Connection, user_id: int) -> bool:
    return bool(await connection.fetchval(SQL["exists"], user_id))


async def list_users(
    connection: Connection, *, after_id: int, count: int, email: str | None
) -> list[User]:
    if email is None:
        rows = await connection.fetch(SQL["list_page"], after_id, count)
    else:
        rows = await connection.fetch(SQL["list_page_by_email"], email, after_id, count)
    return [_stored(row).resource for row in rows]


async def update_user(
    connection: Connection, user_id: int, changes: dict[str, object], versions: list[int] | None
) -> Versioned[User] | None:
    row = await update_row(connection, "users", COLUMNS, user_id, changes, versions)
    return None if row is None else _stored(row)


async def delete_user(connection: Connection, user_id: int, versions: list[int] | None) -> bool:
    return await connection.fetchval(SQL["delete"], user_id, versions) is not None
