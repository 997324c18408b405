"""Health, readiness, metrics and the OpenAPI document."""

from __future__ import annotations

import re
from pathlib import Path

import msgspec

from service.database import migrations
from tests.helpers import app_client, assert_problem


async def test_live_touches_no_database_and_ready_checks_it(client):
    live = await client.get("/health/live")
    assert live.status_code == 200
    assert live.json() == {"status": "ok"}
    ready = await client.get("/health/ready")
    assert ready.status_code == 200


async def test_ready_is_503_while_migrations_are_pending(make_database, settings):
    url = await make_database()
    pending_settings = msgspec.structs.replace(settings, database_url=url)
    async with app_client(pending_settings) as pending_client:
        none_applied = await pending_client.get("/health/ready")
        assert_problem(none_applied, 503)
        assert none_applied.headers["retry-after"]
        assert (await pending_client.get("/health/live")).status_code == 200

        migrations.apply(url)
        migrations.rollback(url, 1)
        one_pending = await pending_client.get("/health/ready")
        newest = max(migrations.migration_ids())
        assert newest in assert_problem(one_pending, 503)["detail"]

        migrations.apply(url)
        assert (await pending_client.get("/health/ready")).status_code == 200


async def test_unreachable_database_is_503_with_retry_after_and_live_stays_200(settings):
    # Port 1 on loopback: nothing listens there, the connection is refused at once.
    down = msgspec.structs.replace(
        settings, database_url="postgresql://postgres@127.0.0.1:1/none", db_pool_min=0
    )
    async with app_client(down) as down_client:
        assert (await down_client.get("/health/live")).status_code == 200
        for response in (
            await down_client.get("/health/ready"),
            await down_client.get("/users/1"),
            await down_client.post("/users", json={"email": "a@b.c", "name": "n"}),
            await down_client.get("/posts"),
        ):
            assert_problem(response, 503)
            assert response.headers["retry-after"] == "1"


async def test_metrics_count_requests_by_route_template_and_status(client, user):
    await client.get(f"/users/{user['id']}")
    await client.get("/users/9223372036854775807")

    text = (await client.get("/metrics")).text

    assert re.search(
        r'service_requests_total\{[^}]*method="GET",path="/users/\{user_id\}",'
        r'status_code="200"\} [1-9]',
        text,
    )
    assert 'path="/users/{user_id}",status_code="404"' in text
    assert f'/users/{user["id"]}"' not in text  # raw paths would be unbounded series
    assert re.search(r'service_request_duration_seconds_bucket\{[^}]*le="0.005"', text)
    assert re.search(r'^service_db_pool_size\{server="primary"\} [1-9]', text, re.MULTILINE)
    assert "service_db_pool_in_use" in text


API_ROUTES = {
    ("post", "/users"),
    ("get", "/users"),
    ("get", "/users/{user_id}"),
    ("patch", "/users/{user_id}"),
    ("delete", "/users/{user_id}"),
    ("get", "/users/{user_id}/posts"),
    ("post", "/posts"),
    ("get", "/posts"),
    ("get", "/posts/{post_id}"),
    ("patch", "/posts/{post_id}"),
    ("delete", "/posts/{post_id}"),
    ("get", "/health/live"),
    ("get", "/health/ready"),
    ("get", "/metrics"),
}


async def test_openapi_document_describes_every_route_truthfully(client):
    response = await client.get("/schema/openapi.json")
    assert response.status_code == 200
    document = response.json()
    assert document["openapi"].startswith("3.1")

    operations = {
        (method, path)
        for path, item in document["paths"].items()
        for method in item
        if method in {"get", "post", "patch", "delete"}
    }
    assert operations >= API_ROUTES
    schemas = document["components"]["schemas"]
    for method, path, body, statuses in [
        ("post", "/users", "UserCreate", {"201", "400", "409", "413", "503"}),
        ("patch", "/users/{user_id}", "UserPatch", {"200", "400", "404", "409", "412"}),
        ("post", "/posts", "PostCreate", {"201", "400", "413", "422", "503"}),
        ("patch", "/posts/{post_id}", "PostPatch", {"200", "400", "404", "412"}),
    ]:
        operation = document["paths"][path][method]
        reference = operation["requestBody"]["content"]["application/json"]["schema"]["$ref"]
        assert reference.endswith(f"/{body}")
        assert statuses <= set(operation["responses"])
        problem = operation["responses"]["400"]["content"]["application/problem+json"]
        assert problem["schema"]["$ref"].endswith("/Problem")
    assert set(schemas["UserPatch"].get("required", [])) == set()
    assert set(schemas["PostCreate"]["required"]) == {"author_id", "title", "body"}
    assert schemas["PostCreate"]["additionalProperties"] is False
    get_user = document["paths"]["/users/{user_id}"]["get"]
    assert {"200", "404"} <= set(get_user["responses"])
    headers = {p["name"] for p in get_user["parameters"] if p["in"] == "header"}
    assert "If-None-Match" in headers


def test_every_shipped_query_file_is_loaded(repo_root: Path):
    from service.posts.queries import SQL as POSTS_SQL
    from service.users.queries import SQL as USERS_SQL

    for resource, loaded in (("users", USERS_SQL), ("posts", POSTS_SQL)):
        files = {path.stem for path in (repo_root / "sql" / resource).glob("*.sql")}
        assert files == set(loaded)
