"""The few statements that are truly dynamic, built with pypika and cached by shape.

pypika renders Python values into the SQL text, so no value ever goes through it: every
value is an explicit `$n` placeholder and callers keep the argument list in the same
order. Each distinct shape is built once (`lru_cache`) and asyncpg prepares it once per
connection, so the hot path only binds values.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import asyncpg
from pypika import CustomFunction, Field, Order, Parameter, PostgreSQLQuery, Table, functions
from pypika.terms import PseudoColumn

from service.database.routing import Session

_any = CustomFunction("ANY", ["values"])
# The id of the writing transaction, for the answer's Consistency-Token.
_WRITTEN_BY = PseudoColumn("pg_current_xact_id()::text::bigint")


@lru_cache(maxsize=64)
def update_by_id(
    table: str, columns: tuple[str, ...], returning: tuple[str, ...], check_version: bool
) -> str:
    """UPDATE one row by id: `$1` id, `$2…` the new values of `columns` in order, then the
    acceptable versions when `check_version` (the `If-Match` of the request). Returns
    `returning`, then the writing transaction's id."""
    target = Table(table)
    # Any: pypika annotates its builders as the base QueryBuilder, which has no RETURNING.
    query: Any = PostgreSQLQuery.update(target)
    for position, column in enumerate(columns, start=2):
        query = query.set(Field(column, table=target), Parameter(f"${position}"))
    query = (
        query.set(target.version, target.version + 1)
        .set(target.updated_at, functions.Now())
        .where(target.id == Parameter("$1"))
    )
    if check_version:
        versions = Parameter(f"${len(columns) + 2}::integer[]")
        query = query.where(target.version == _any(versions))
    columns_back = (Field(column, table=target) for column in returning)
    return str(query.returning(*columns_back, _WRITTEN_BY))


@lru_cache(maxsize=64)
def page_newest_first(table: str, columns: tuple[str, ...], filters: tuple[str, ...]) -> str:
    """A keyset page in descending id: `$1` the id to continue before, `$2` the row count,
    then one value per equality filter in `filters`, in order; behind the feed's horizon
    (`behind_horizon`)."""
    target = Table(table)
    query = (
        PostgreSQLQuery.from_(target)
        .select(*(Field(column, table=target) for column in columns))
        .where(target.id < Parameter("$1"))
    )
    for position, column in enumerate(filters, start=3):
        query = query.where(Field(column, table=target) == Parameter(f"${position}"))
    # pypika types LIMIT as an int, but renders any term: here the placeholder.
    page = query.orderby(target.id, order=Order.desc).limit(Parameter("$2"))  # type: ignore[arg-type]
    return behind_horizon(str(page))


def behind_horizon(page: str) -> str:
    """A page statement that also returns, first, the change feed's head as the statement's
    snapshot sees it: the position of the newest event below the horizon, or the pruned
    position when every event was pruned (the page's Events-Cursor, see
    `service.http.feed_positions`); one row with
    NULL page columns when the page is empty. pypika has no LATERAL; the page is a statement
    of its own, so this is text around text, never a value. A nested loop over the one
    horizon row yields the page's rows in the order of its index scan. Every list page is
    read so: the posts' pages built here, the users' pages from their SQL files."""
    # Statement text around statement text: no value goes in.
    return (
        "SELECT head.position, head.seq, page.* "  # noqa: S608
        "FROM (SELECT pg_snapshot_xmin(pg_current_snapshot()) AS xmin) AS horizon "
        "LEFT JOIN LATERAL ((SELECT position, seq FROM events WHERE position < horizon.xmin "
        "ORDER BY position DESC, seq DESC LIMIT 1) "
        "UNION ALL (SELECT pruned_position, pruned_seq FROM feed_state) "
        "ORDER BY position DESC, seq DESC LIMIT 1) AS head ON true "
        f"LEFT JOIN LATERAL ({page}) AS page ON true"
    )


async def update_row(
    session: Session,
    table: str,
    returning: tuple[str, ...],
    row_id: int,
    changes: dict[str, object],
    versions: list[int] | None,
) -> asyncpg.Record | None:
    """Run `update_by_id` for these changes; the row as updated, or None when no row had
    that id (and one of `versions`, when given)."""
    statement = update_by_id(table, tuple(changes), returning, versions is not None)
    arguments = [row_id, *changes.values()] + ([versions] if versions is not None else [])
    return await session.fetchrow(statement, *arguments)
