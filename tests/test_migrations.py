"""Migrations apply, roll back completely, and apply again; the schema is what API.md needs."""

from __future__ import annotations

from service.database import migrations
from tests.helpers import connect


async def _tables(url: str) -> set[str]:
    connection = await connect(url)
    try:
        rows = await connection.fetch(
            "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()"
        )
        return {row[0] for row in rows}
    finally:
        await connection.close()


async def test_apply_rollback_all_and_apply_again(make_database):
    url = await make_database()

    every = sorted(migrations.migration_ids())
    assert every[:2] == ["0001.create-users", "0002.create-posts"]
    assert migrations.apply(url) == every
    assert {"users", "posts", "idempotency_keys"} <= await _tables(url)
    assert migrations.apply(url) == []  # nothing pending the second time

    assert migrations.rollback(url, None) == every[::-1]
    assert not {"users", "posts", "idempotency_keys"} & await _tables(url)
    assert all(not applied for _, applied in migrations.status(url))

    assert migrations.apply(url) == every
    assert all(applied for _, applied in migrations.status(url))


async def test_schema_has_the_columns_indexes_and_cascade(db):
    columns = await db.fetch(
        "SELECT table_name, column_name, data_type FROM information_schema.columns"
        " WHERE table_name IN ('users', 'posts')"
    )
    by_table: dict[str, dict[str, str]] = {}
    for table, column, data_type in columns:
        by_table.setdefault(table, {})[column] = data_type
    assert set(by_table["users"]) == {
        "id",
        "email",
        "name",
        "version",
        "created_at",
        "updated_at",
        "feed_position",
    }
    assert set(by_table["posts"]) == {
        "id",
        "author_id",
        "title",
        "body",
        "published",
        "version",
        "created_at",
        "updated_at",
        "feed_position",
    }
    assert by_table["posts"]["feed_position"] == "xid8"
    assert by_table["posts"]["created_at"] == "timestamp with time zone"
    indexes = {
        row[0]: row[1]
        for row in await db.fetch(
            "SELECT indexname, indexdef FROM pg_indexes WHERE tablename IN ('users', 'posts')"
        )
    }
    assert "lower(email)" in indexes["users_email_key"]
    assert "UNIQUE" in indexes["users_email_key"]
    assert "(author_id, id DESC)" in indexes["posts_author_id_id_idx"]
    cascade = await db.fetchval(
        "SELECT confdeltype::text FROM pg_constraint WHERE conname = 'posts_author_id_fkey'"
    )
    assert cascade == "c"


def test_yoyo_url_names_the_psycopg_driver():
    assert (
        migrations.yoyo_url("postgresql://u:p@h:5432/d?host=/tmp")
        == "postgresql+psycopg://u:p@h:5432/d?host=/tmp"
    )
    assert migrations.yoyo_url("postgres://h/d") == "postgresql+psycopg://h/d"
