"""The OpenAPI document tells the truth (issue 10): walked operation by operation and
response by response, with tokens off and on, and compared with what the service sends."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import msgspec
import pytest

from service.edge import auth
from service.http.validation import EMAIL_SCHEMA
from service.openapi import LINKS
from service.posts.models import BODY, TITLE
from service.users.models import NAME
from tests.helpers import app_client, unique_email

TOKEN = "openapi-test-token"
PROBLEM = {"schema": {"$ref": "#/components/schemas/Problem"}}
METHODS = ("get", "post", "put", "patch", "delete", "head", "options", "trace")


def operations(document: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in document["paths"].items():
        for method in METHODS:
            if method in item:
                yield path, method, item[method]


def keys_anywhere(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            yield key
            yield from keys_anywhere(value)
    elif isinstance(node, list):
        for value in node:
            yield from keys_anywhere(value)


@pytest.fixture(scope="module")
async def documents(settings) -> dict[str, dict[str, Any]]:
    """The document as served: tokens off, tokens on, and tokens on with /metrics and
    /schema closed."""
    line = f"openapi read,write {auth.digest(TOKEN).hex()}"
    variants = {
        "open": settings,
        "tokens": msgspec.structs.replace(settings, auth_disabled=False, api_tokens=line),
        "closed": msgspec.structs.replace(
            settings,
            auth_disabled=False,
            api_tokens=line,
            metrics_public=False,
            schema_public=False,
        ),
    }
    served = {}
    for name, variant in variants.items():
        async with app_client(variant) as client:
            response = await client.get(
                "/schema/openapi.json", headers={"Authorization": f"Bearer {TOKEN}"}
            )
            assert response.status_code == 200
            served[name] = response.json()
    return served


# Every status each operation can answer with tokens on: its own, the limits' 414 and 431,
# the body checks' 408, 413 and 415, and the token gate's 401 and 403.
LAYERS = {"414", "431"}
BODY_CHECKS = {"408", "413", "415"}
TOKEN_GATE = {"401", "403"}
LISTINGS = {"/users", "/posts", "/users/{user_id}/posts"}
"""Every page of these carries the feed position read before it."""

STATUSES = {
    ("post", "/users"): {"201", "400", "409", "422", "503"} | BODY_CHECKS | TOKEN_GATE,
    ("get", "/users"): {"200", "400", "503"} | TOKEN_GATE,
    # 400 for a Consistency-Token the service did not issue.
    ("get", "/users/{user_id}"): {"200", "304", "400", "404", "503"} | TOKEN_GATE,
    ("patch", "/users/{user_id}"): {"200", "400", "404", "409", "412", "503"}
    | BODY_CHECKS
    | TOKEN_GATE,
    ("delete", "/users/{user_id}"): {"204", "404", "412", "503"} | TOKEN_GATE,
    ("get", "/users/{user_id}/posts"): {"200", "400", "404", "503"} | TOKEN_GATE,
    ("post", "/posts"): {"201", "400", "409", "422", "503"} | BODY_CHECKS | TOKEN_GATE,
    ("get", "/posts"): {"200", "400", "503"} | TOKEN_GATE,
    ("get", "/posts/{post_id}"): {"200", "304", "400", "404", "503"} | TOKEN_GATE,
    ("patch", "/posts/{post_id}"): {"200", "400", "404", "412", "503"} | BODY_CHECKS | TOKEN_GATE,
    ("delete", "/posts/{post_id}"): {"204", "404", "412", "503"} | TOKEN_GATE,
    ("get", "/events"): {"200", "400", "410", "503"} | TOKEN_GATE,
    ("get", "/health/live"): {"200"},
    ("get", "/health/ready"): {"200", "503"},
    ("get", "/metrics"): {"200"},
    ("get", "/schema/openapi.json"): {"200"},
}


def test_every_operation_declares_exactly_the_statuses_it_can_answer(documents):
    found = {
        (method, path): set(operation["responses"])
        for path, method, operation in operations(documents["tokens"])
    }
    assert found == {operation: statuses | LAYERS for operation, statuses in STATUSES.items()}


@pytest.mark.parametrize("variant", ["open", "tokens", "closed"])
def test_every_error_is_a_problem_and_litestars_own_shape_is_nowhere(documents, variant):
    document = documents[variant]
    for path, method, operation in operations(document):
        for status, response in operation["responses"].items():
            if int(status) >= 400:
                assert response["content"] == {"application/problem+json": PROBLEM}, (
                    method,
                    path,
                    status,
                )
                assert response["description"]
    # Litestar's ValidationException shape: {status_code, detail, extra}, as JSON.
    assert not {"status_code", "extra"} & set(keys_anywhere(document))


@pytest.mark.parametrize("variant", ["open", "tokens", "closed"])
def test_every_response_declares_its_headers(documents, variant):
    for path, method, operation in operations(documents[variant]):
        for status, response in operation["responses"].items():
            headers = response["headers"]
            assert headers["X-Request-ID"]["required"] is True, (method, path, status)
            expected = {"X-Request-ID"}
            if status == "503":
                expected.add("Retry-After")
            if status == "401":
                expected.add("WWW-Authenticate")
            if method == "post" and status == "201":
                expected |= {"Location", "ETag", "Idempotent-Replayed", "Consistency-Token"}
            if method == "patch" and status == "200":
                expected |= {"ETag", "Consistency-Token"}
            if method == "delete" and status == "204":
                expected.add("Consistency-Token")
            if method == "get" and path.endswith("}") and status in {"200", "304"}:
                expected.add("ETag")
            if method == "get" and path in LISTINGS and status == "200":
                expected.add("Events-Cursor")
            assert set(headers) == expected, (method, path, status)
            for name, header in headers.items():
                assert header["schema"]["type"] == "string"
                optional = {"Idempotent-Replayed", "Consistency-Token"}
                assert header["required"] is (name not in optional), (method, path, name)


def test_without_tokens_nothing_is_guarded(documents):
    document = documents["open"]
    assert "security" not in document
    for path, method, operation in operations(document):
        assert "security" not in operation, (method, path)
        assert not TOKEN_GATE & set(operation["responses"]), (method, path)


@pytest.mark.parametrize(
    ("variant", "open_paths"),
    [
        ("tokens", {"/health/live", "/health/ready", "/metrics", "/schema/openapi.json"}),
        ("closed", {"/health/live", "/health/ready"}),
    ],
)
def test_with_tokens_the_open_operations_say_security_none(documents, variant, open_paths):
    document = documents[variant]
    assert document["security"] == [{"bearer": []}]
    for path, method, operation in operations(document):
        statuses = set(operation["responses"])
        if path in open_paths:
            assert operation["security"] == [], path
            assert not TOKEN_GATE & statuses, path
        else:
            assert "security" not in operation, path  # the document's: bearer
            assert statuses >= TOKEN_GATE, (method, path)


def test_string_rules_are_in_the_schemas(documents):
    document = documents["open"]
    schemas = document["components"]["schemas"]
    for struct in ("UserCreate", "UserPatch"):
        email = schemas[struct]["properties"]["email"]
        assert email["pattern"] == EMAIL_SCHEMA["pattern"]
        assert email["maxLength"] == 320
        assert schemas[struct]["properties"]["name"]["pattern"] == NAME.json_schema()["pattern"]
    for struct in ("PostCreate", "PostPatch"):
        properties = schemas[struct]["properties"]
        assert properties["title"]["pattern"] == TITLE.json_schema()["pattern"]
        assert properties["body"]["pattern"] == BODY.json_schema()["pattern"]
        assert properties["body"]["maxLength"] == 100_000
    assert schemas["PostCreate"]["properties"]["author_id"]["minimum"] == 1

    parameters = {
        (path, parameter["name"]): parameter["schema"]
        for path, _, operation in operations(document)
        for parameter in operation.get("parameters", [])
    }
    assert parameters[("/users", "email")]["pattern"] == EMAIL_SCHEMA["pattern"]
    assert parameters[("/users", "email")]["maxLength"] == 320
    for path in ("/users", "/posts", "/users/{user_id}/posts"):
        assert parameters[(path, "limit")] | {"description": ""} == {
            "type": "integer",
            "minimum": 1,
            "maximum": 200,
            "default": 50,
            "description": "",
        }
    author = parameters[("/posts", "author_id")]
    assert (author["type"], author["minimum"], author["maximum"]) == ("integer", 1, 2**63 - 1)
    # A query or header value is text: none of them says it could be JSON null.
    assert not any("oneOf" in schema or schema["type"] == "null" for schema in parameters.values())
    for path in ("/users", "/posts"):
        key = parameters[(path, "Idempotency-Key")]
        assert key["pattern"] == "^[!-~](?:[ -~]{0,253}[!-~])?$"


def test_links_name_operations_and_parameters_that_exist(documents):
    document = documents["open"]
    by_id = {operation["operationId"]: operation for _, _, operation in operations(document)}
    declared = 0
    for path, method, operation in operations(document):
        for status, response in operation["responses"].items():
            for name, link in response.get("links", {}).items():
                declared += 1
                target = by_id[link["operationId"]]
                names = {parameter["name"] for parameter in target.get("parameters", [])}
                for parameter in link.get("parameters", {}):
                    assert parameter.removeprefix("header.") in names, (name, parameter)
                if "requestBody" in link:
                    assert "requestBody" in target, name
                assert (operation["operationId"], status) in LINKS, (method, path)
    assert declared == sum(len(links) for links in LINKS.values())


async def test_the_service_sends_what_the_document_declares(client, documents, user, post):
    """A few requests of each kind, each checked against its operation in the document:
    the status is declared, and so is every header that is required."""
    document = documents["open"]
    user_path, post_path = f"/users/{user['id']}", f"/posts/{post['id']}"
    etag = (await client.get(post_path)).headers["etag"]
    json_header = {"Content-Type": "application/json"}
    requests: list[tuple[str, str, str, dict[str, Any]]] = [
        ("post", "/users", "/users", {"json": {"email": unique_email(), "name": "A"}}),
        ("post", "/users", "/users", {"content": b"{}", "headers": {"Content-Type": "text/x"}}),
        ("post", "/users", "/users", {"content": b"{", "headers": json_header}),
        ("post", "/users", "/users", {"json": {"email": user["email"], "name": "Again"}}),
        ("get", "/users", "/users", {"params": {"limit": "1e2"}}),
        ("get", "/users", "/users", {"params": {"email": user["email"]}}),
        ("get", "/users/{user_id}", user_path, {}),
        ("get", "/users/{user_id}", "/users/0", {}),
        ("get", "/posts/{post_id}", post_path, {"headers": {"If-None-Match": etag}}),
        ("patch", "/posts/{post_id}", post_path, {"json": {}, "headers": {"If-Match": '"9"'}}),
        ("patch", "/posts/{post_id}", post_path, {"json": {"title": "New"}}),
        ("get", "/posts", "/posts", {"params": {"author_id": str(user["id"])}}),
        ("get", "/users/{user_id}/posts", user_path + "/posts", {"params": {"cursor": "x"}}),
        ("delete", "/posts/{post_id}", post_path, {}),
        ("get", "/health/live", "/health/live", {}),
        ("get", "/metrics", "/metrics", {}),
        ("get", "/schema/openapi.json", "/schema/openapi.json", {}),
    ]
    statuses_seen = set()
    for method, template, path, options in requests:
        response: httpx.Response = await client.request(method.upper(), path, **options)
        declared = document["paths"][template][method]["responses"]
        status = str(response.status_code)
        assert status in declared, (method, path, status, response.text)
        statuses_seen.add(status)
        for name, header in declared[status]["headers"].items():
            if header["required"]:
                assert name.lower() in response.headers, (method, path, status, name)
        content = declared[status].get("content")
        if content:
            media_type = response.headers["content-type"].split(";")[0]
            assert media_type in content, (method, path, status, media_type)
    assert statuses_seen == {"200", "201", "204", "304", "400", "404", "409", "412", "415"}
