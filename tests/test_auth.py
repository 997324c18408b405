"""Service tokens: none, wrong, read-only writing, right; open routes; configuration."""

from __future__ import annotations

import json
import subprocess
import sys

import msgspec
import pytest

from service.base.settings import SettingsError, from_env
from service.edge import auth
from tests.helpers import app_client, assert_problem, count_rows, refused_start, unique_email

READER, WRITER, BOTH = "reader-token-value", "writer-token-value", "both-token-value"
TOKEN_LINES = "\n".join(
    [
        "# name scopes sha256",
        f"reader read {auth.digest(READER).hex()}",
        f"writer write {auth.digest(WRITER).hex()}  # a comment",
        "",
        f"both read,write {auth.digest(BOTH).hex()}",
    ]
)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture(scope="module")
async def guarded(settings):
    configured = msgspec.structs.replace(settings, auth_disabled=False, api_tokens=TOKEN_LINES)
    async with app_client(configured) as client:
        yield client


@pytest.mark.parametrize(
    "headers",
    [{}, bearer("wrong"), {"Authorization": BOTH}, {"Authorization": f"Basic {BOTH}"}, bearer("")],
)
async def test_missing_or_unknown_token_is_401_with_a_bearer_challenge(guarded, db, headers):
    before = await count_rows(db, "users")
    for response in (
        await guarded.get("/users", headers=headers),
        await guarded.post("/users", json={"email": unique_email(), "name": "n"}, headers=headers),
    ):
        assert_problem(response, 401)
        assert response.headers["www-authenticate"].startswith("Bearer")
    assert await count_rows(db, "users") == before


async def test_read_only_token_reads_but_cannot_write(guarded, db):
    assert (await guarded.get("/posts", headers=bearer(READER))).status_code == 200
    before = await count_rows(db, "users")

    response = await guarded.post(
        "/users", json={"email": unique_email(), "name": "n"}, headers=bearer(READER)
    )

    assert_problem(response, 403)
    assert "write" in response.json()["detail"]
    assert await count_rows(db, "users") == before
    assert_problem(await guarded.delete("/users/1", headers=bearer(READER)), 403)
    assert_problem(await guarded.patch("/users/1", json={}, headers=bearer(READER)), 403)


async def test_write_only_token_writes_but_cannot_read(guarded):
    created = await guarded.post(
        "/users", json={"email": unique_email(), "name": "n"}, headers=bearer(WRITER)
    )
    assert created.status_code == 201
    assert_problem(await guarded.get(created.headers["location"], headers=bearer(WRITER)), 403)


async def test_right_token_reads_and_writes_and_the_scheme_is_case_insensitive(guarded):
    created = await guarded.post(
        "/users",
        json={"email": unique_email(), "name": "n"},
        headers={"Authorization": f"bearer {BOTH}"},
    )
    assert created.status_code == 201
    read = await guarded.get(created.headers["location"], headers=bearer(BOTH))
    assert read.json() == created.json()


async def test_unknown_paths_need_a_token_too(guarded):
    assert_problem(await guarded.get("/no/such/route"), 401)
    assert_problem(await guarded.get("/no/such/route", headers=bearer(READER)), 404)


async def test_health_metrics_and_schema_are_open_by_default(guarded):
    for path in ("/health/live", "/health/ready", "/metrics", "/schema/openapi.json"):
        assert (await guarded.get(path)).status_code == 200, path


async def test_metrics_and_schema_can_be_closed(settings):
    closed = msgspec.structs.replace(
        settings,
        auth_disabled=False,
        api_tokens=TOKEN_LINES,
        metrics_public=False,
        schema_public=False,
    )
    async with app_client(closed) as client:
        for path in ("/metrics", "/schema/openapi.json"):
            assert_problem(await client.get(path), 401)
            assert (await client.get(path, headers=bearer(READER))).status_code == 200
        assert (await client.get("/health/live")).status_code == 200


async def test_the_openapi_document_declares_the_bearer_scheme(guarded):
    document = (await guarded.get("/schema/openapi.json")).json()
    assert document["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    assert document["security"] == [{"bearer": []}]
    assert {"401", "403"} <= set(document["paths"]["/users"]["post"]["responses"])
    assert "401" not in document["paths"]["/health/ready"]["get"]["responses"]


async def test_the_caller_is_logged_by_name_and_the_token_never(guarded, log_lines):
    await guarded.get("/posts", headers=bearer(READER))
    line = next(line for line in log_lines() if line["logger"] == "service.requests")
    assert line["caller"] == "reader"
    assert READER not in json.dumps(log_lines())


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        ("reader read", "expected 'name scopes sha256-hex'"),
        (f"reader admin {'ab' * 32}", "scopes must be read and/or write"),
        ("reader read not-hex", "SHA-256"),
        (f"reader read {'ab' * 16}", "SHA-256"),
        (f"a read {'ab' * 32}\na write {'cd' * 32}", "unique"),
    ],
)
def test_bad_token_lines_stop_start_up_naming_the_line(settings, text, complaint):
    with pytest.raises(SettingsError, match=complaint):
        auth.load_tokens(msgspec.structs.replace(settings, auth_disabled=False, api_tokens=text))


def test_tokens_file_is_read(settings, tmp_path):
    path = tmp_path / "tokens"
    path.write_text(TOKEN_LINES)
    tokens = auth.load_tokens(msgspec.structs.replace(settings, api_tokens_file=str(path)))
    assert [token.name for token in tokens] == ["reader", "writer", "both"]
    missing = msgspec.structs.replace(settings, api_tokens_file=str(tmp_path / "absent"))
    with pytest.raises(SettingsError, match="API_TOKENS_FILE"):
        auth.load_tokens(missing)


def test_secure_by_default():
    external = from_env({"DATABASE_URL": "postgresql://db/app"})
    with pytest.raises(SettingsError, match="AUTH_DISABLED=1"):
        auth.settle(external)
    assert auth.settle(from_env({"DATABASE_URL": "postgresql://db/app", "AUTH_DISABLED": "1"}))
    assert auth.settle(from_env({})).auth_disabled  # embedded: open, with a warning


def test_serve_refuses_to_start_open_on_an_external_database():
    complaint = refused_start({"DATABASE_URL": "postgresql://postgres@127.0.0.1:1/none"})
    assert complaint.startswith("configuration error: no API tokens are configured")


def test_token_command_prints_a_token_and_the_line_that_admits_it():
    result = subprocess.run(
        [sys.executable, "-m", "service", "token", "new", "billing", "--scopes", "read,write"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    token = result.stdout.splitlines()[0].rsplit(" ", 1)[1]
    line = result.stdout.splitlines()[1].split(": ", 1)[1]
    (parsed,) = auth.parse_tokens(line, "test")
    assert (parsed.name, parsed.scopes) == ("billing", frozenset({"read", "write"}))
    assert token not in line
    checker = auth.TokenGate([parsed], open_prefixes=())
    assert checker.identify(f"Bearer {token}") == parsed
    assert checker.identify(f"Bearer {token}x") is None
