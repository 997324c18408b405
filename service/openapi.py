"""The OpenAPI document: what Litestar derives from the handlers, completed with the rules
that hold for whole groups of operations, so that it declares every response the service
sends and none it does not.

Litestar documents each handler from its signature and decorator: parameters, request
body, its success response and the problems it declares (`errors.problem_responses`).
`complete` adds, once, when the app is built:

- response headers: `X-Request-ID` on every response, some by status (`HEADERS_BY_STATUS`)
  and the headers of a success by the kind of operation (`SUCCESS_HEADERS`; a 304 carries
  those of its 200, as RFC 9110 asks);
- the statuses answered in front of the handlers: 414 and 431 on every operation (limits),
  408, 413 and 415 on every operation with a body, 401 and 403 on every guarded operation
  when tokens are configured, whose open operations say `security: []`;
- `GET /schema/openapi.json` itself;
- links from a created resource to the operations on it and from a page to the next one,
  for callers and for schemathesis's stateful tests.

And it takes out what Litestar adds on its own but the service never sends or reads: its
`ValidationException` shape (`application/json` with `status_code`, `detail`, `extra`), which
it documents as a 400 of every operation with parameters, and the `null` it allows for an
optional parameter (`oneOf: [T, null]`: a query or header value is text, never null; an
absent parameter is how a caller says none).
"""

from __future__ import annotations

import dataclasses
from enum import StrEnum
from typing import NamedTuple

from litestar import Litestar, enums
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import JsonRenderPlugin
from litestar.openapi.spec import (
    Components,
    Link,
    OpenAPI,
    OpenAPIHeader,
    OpenAPIMediaType,
    OpenAPIResponse,
    OpenAPIType,
    Operation,
    Parameter,
    PathItem,
    Reference,
    Schema,
    SecurityScheme,
)

from service.base.settings import Settings
from service.database.replication import TOKEN_HEADER, TOKEN_MAX_LENGTH, TOKEN_PATTERN
from service.edge.auth import open_prefixes
from service.http.errors import MEANINGS
from service.http.feed_positions import EVENTS_CURSOR
from service.http.idempotency import KEY_DESCRIPTION, KEY_HEADER, KEY_PATTERN

SCHEMA_PATH = "/schema"
DOCUMENT_PATH = f"{SCHEMA_PATH}/openapi.json"
PROBLEM = "application/problem+json"
_PROBLEM_SCHEMA = Reference(ref="#/components/schemas/Problem")


class Header(NamedTuple):
    """A response header as the document declares it."""

    name: str
    description: str
    schema: Schema
    required: bool = True

    def spec(self) -> OpenAPIHeader:
        return OpenAPIHeader(
            schema=self.schema, description=self.description, required=self.required
        )


def _text(pattern: str | None = None) -> Schema:
    return Schema(type=OpenAPIType.STRING, pattern=pattern)


ETAG = Header(
    "ETag",
    'The resource\'s version, `"<n>"`: send it back in `If-Match` or `If-None-Match`.',
    _text(r'^"[1-9][0-9]*"$'),
)
LOCATION = Header("Location", "The path of the created resource.", _text(r"^/[a-z]+/[1-9][0-9]*$"))
IDEMPOTENT_REPLAYED = Header(
    "Idempotent-Replayed",
    "`true` when this is the kept answer to an earlier request with this Idempotency-Key.",
    Schema(type=OpenAPIType.STRING, enum=["true"]),
    required=False,
)
REQUEST_ID = Header(
    "X-Request-ID",
    "The caller's `X-Request-ID` when it is 1 to 128 of `A-Z a-z 0-9 . _ : @ / + = -`, "
    "else one the service made; every log line of the request carries it.",
    _text(),
)
RETRY_AFTER = Header("Retry-After", "Seconds to wait before retrying.", _text(r"^[0-9]+$"))
WWW_AUTHENTICATE = Header("WWW-Authenticate", "The scheme to authenticate with: Bearer.", _text())


class Kind(StrEnum):
    """What an operation does, as far as its success headers go (see `_kind`)."""

    CREATE = "create"
    READ = "read"
    LIST = "list"
    UPDATE = "update"
    DELETE = "delete"


CONSISTENCY_TOKEN = Header(
    TOKEN_HEADER,
    "Send it back on a GET to read this write (or newer), never an older state: a replica "
    "answers only once it shows the write. Opaque. Absent when nothing was written "
    "(`PATCH {}`).",
    _text(f"^{TOKEN_PATTERN}$"),
    required=False,
)
WRITTEN: tuple[Header, ...] = (CONSISTENCY_TOKEN,)
"""Headers of every successful write (create, update, delete)."""

EVENTS_CURSOR_HEADER = Header(
    EVENTS_CURSOR,
    "A change-feed position taken before this page was read: follow `GET /events?after=` "
    "it to miss no change made during or after a walk of the pages. Opaque.",
    _text(),
)


def _request_header(name: str, description: str, schema: Schema) -> Parameter:
    """An optional request header. The handlers read these from the raw request (a Litestar
    header parameter costs a parse of every header), so the document declares them here."""
    return Parameter(
        name=name, param_in="header", required=False, description=description, schema=schema
    )


_TOKEN_PARAMETER = _request_header(
    TOKEN_HEADER,
    "The Consistency-Token of a write: the answer shows that write or newer. "
    "Opaque, as the write answered it; any other value is a 400.",
    # Opaque like a cursor: only what the service issued is accepted (its format is not a
    # promise to callers, so the schema states a bound, not the format).
    Schema(type=OpenAPIType.STRING, min_length=1, max_length=TOKEN_MAX_LENGTH),
)
_READ_PATHS = ("/users", "/posts")
"""GETs under these read the database and take a Consistency-Token."""


def _described_header(name: str, description: str, pattern: str | None = None) -> Parameter:
    """A header parameter as Litestar documents a `HeaderParameter`: the description in the
    schema too."""
    schema = Schema(type=OpenAPIType.STRING, pattern=pattern, description=description)
    return _request_header(name, description, schema)


_IF_MATCH = _described_header("If-Match", "Write only if the ETag matches.")

REQUEST_HEADERS: dict[Kind, tuple[Parameter, ...]] = {
    Kind.CREATE: (_described_header(KEY_HEADER, KEY_DESCRIPTION, KEY_PATTERN),),
    Kind.READ: (_described_header("If-None-Match", "304 if the ETag matches."),),
    Kind.LIST: (),
    Kind.UPDATE: (_IF_MATCH,),
    Kind.DELETE: (_IF_MATCH,),
}
"""The conditional and idempotency headers an operation takes, by what it does."""

SUCCESS_HEADERS: dict[Kind, tuple[Header, ...]] = {
    Kind.CREATE: (LOCATION, ETAG, IDEMPOTENT_REPLAYED, *WRITTEN),
    Kind.READ: (ETAG,),
    Kind.LIST: (EVENTS_CURSOR_HEADER,),
    Kind.UPDATE: (ETAG, *WRITTEN),
    Kind.DELETE: WRITTEN,
}
"""The headers of a success (2xx, and a read's 304), by what the operation does."""

HEADERS_BY_STATUS: dict[int, tuple[Header, ...]] = {
    401: (WWW_AUTHENTICATE,),
    503: (RETRY_AFTER,),
}
EVERY_RESPONSE: tuple[Header, ...] = (REQUEST_ID,)

EVERY_OPERATION_STATUSES = (414, 431)
BODY_STATUSES = (408, 413, 415)
GUARDED_STATUSES = (401, 403)


_LIST_PATHS = frozenset({"/users", "/posts", "/users/{user_id}/posts"})


def _kind(method: str, path: str) -> Kind | None:
    """API.md's kinds: a POST creates, a PATCH updates, a DELETE deletes, a GET of a path
    that ends with an id reads one resource, a GET of a listing lists; anything else has no
    success headers."""
    if method == "get":
        return Kind.READ if path.endswith("}") else Kind.LIST if path in _LIST_PATHS else None
    return {"post": Kind.CREATE, "patch": Kind.UPDATE, "delete": Kind.DELETE}.get(method)


_ID = "$response.body#/id"
_AUTHOR = "$response.body#/author_id"
_ETAG = "$response.header.ETag"
_NEXT = "$response.body#/next_cursor"
_FOLLOW = {
    "FollowFeed": Link(
        operation_id="listEvents", parameters={"after": f"$response.header.{EVENTS_CURSOR}"}
    )
}


def _on_created(resource: str, id_parameter: str) -> dict[str, Link]:
    """From a created resource to reading it, and to changing or deleting it under the
    `ETag` its creation answered (`getUser`, `patchUser`, `deleteUser` for "User")."""
    by_id = {id_parameter: _ID}
    unchanged_since = {**by_id, "header.If-Match": _ETAG}
    return {
        f"Get{resource}": Link(operation_id=f"get{resource}", parameters=by_id),
        f"Patch{resource}": Link(operation_id=f"patch{resource}", parameters=unchanged_since),
        f"Delete{resource}": Link(operation_id=f"delete{resource}", parameters=unchanged_since),
    }


LINKS: dict[tuple[str, str], dict[str, Link]] = {
    ("createUser", "201"): {
        **_on_created("User", "user_id"),
        "ListPostsOfUser": Link(operation_id="listUserPosts", parameters={"user_id": _ID}),
        "FindUserByEmail": Link(
            operation_id="listUsers", parameters={"email": "$response.body#/email"}
        ),
        "CreatePostOfUser": Link(operation_id="createPost", request_body={"author_id": _ID}),
    },
    ("createPost", "201"): {
        **_on_created("Post", "post_id"),
        "GetAuthor": Link(operation_id="getUser", parameters={"user_id": _AUTHOR}),
        "ListPostsOfAuthor": Link(operation_id="listPosts", parameters={"author_id": _AUTHOR}),
    },
    ("listUsers", "200"): {
        "NextPage": Link(operation_id="listUsers", parameters={"cursor": _NEXT}),
        **_FOLLOW,
    },
    ("listPosts", "200"): {
        "NextPage": Link(operation_id="listPosts", parameters={"cursor": _NEXT}),
        **_FOLLOW,
    },
    ("listUserPosts", "200"): {
        "NextPage": Link(
            operation_id="listUserPosts",
            parameters={"user_id": "$request.path.user_id", "cursor": _NEXT},
        ),
        **_FOLLOW,
    },
    ("listEvents", "200"): {
        "NextPage": Link(operation_id="listEvents", parameters={"after": _NEXT}),
    },
}
"""Links by (operation, status): how a caller (or schemathesis) goes on from a response."""


def config(settings: Settings) -> OpenAPIConfig:
    return OpenAPIConfig(
        title="Posts service",
        version="1.0.0",
        description="Users and their posts, as JSON. The contract is API.md.",
        path=SCHEMA_PATH,
        render_plugins=[JsonRenderPlugin()],
        components=Components(
            security_schemes={
                "bearer": SecurityScheme(
                    type="http",
                    scheme="bearer",
                    description="A service token; GET needs scope read, writes need write.",
                )
            }
        ),
        security=None if settings.auth_disabled else [{"bearer": []}],
    )


def complete(app: Litestar, settings: Settings) -> None:
    """Complete the app's document in place (Litestar builds it once and serves that)."""
    document = app.openapi_schema
    document.paths = {**(document.paths or {}), DOCUMENT_PATH: PathItem(get=_document_operation())}
    tokens = not settings.auth_disabled
    open_paths = open_prefixes(settings)
    for path, item in document.paths.items():
        for method in ("get", "post", "patch", "delete"):
            operation: Operation | None = getattr(item, method)
            if operation is None:
                continue
            is_open = path.startswith(open_paths)
            _complete_operation(operation, method, path, guarded=tokens and not is_open)
            if tokens and is_open:
                operation.security = []
    _describe_event_data(document)
    _check_problem_schema(document)


def _describe_event_data(document: OpenAPI) -> None:
    """An event's `data`: the resource as GET shows it, or null for a delete (the struct
    types it `Any`: msgspec cannot describe a union of two untagged structs)."""
    assert document.components is not None
    assert document.components.schemas is not None
    event = document.components.schemas["Event"]
    assert event.properties is not None
    event.properties["data"] = Schema(
        one_of=[
            Reference(ref="#/components/schemas/User"),
            Reference(ref="#/components/schemas/Post"),
            Schema(type=OpenAPIType.NULL),
        ],
        description="The resource as GET shows it after the change; null for a delete.",
    )


def _document_operation() -> Operation:
    return Operation(
        tags=["operations"],
        summary="OpenAPI",
        description="This document.",
        operation_id="openapi",
        responses={
            "200": OpenAPIResponse(
                description="The OpenAPI 3.1 document",
                # As Litestar's JSON render plugin serves it.
                content={
                    enums.OpenAPIMediaType.OPENAPI_JSON.value: OpenAPIMediaType(
                        schema=Schema(type=OpenAPIType.OBJECT)
                    )
                },
            )
        },
    )


def _complete_operation(operation: Operation, method: str, path: str, *, guarded: bool) -> None:
    for parameter in operation.parameters or ():
        if isinstance(parameter, Parameter) and isinstance(parameter.schema, Schema):
            parameter.schema = _without_null(parameter.schema)
    responses = {
        status: response
        for status, response in (operation.responses or {}).items()
        if not _is_litestar_validation_shape(status, response)
    }
    kind = _kind(method, path)
    if kind is not None:
        operation.parameters = [*(operation.parameters or ()), *REQUEST_HEADERS[kind]]
    added = [*EVERY_OPERATION_STATUSES]
    if method == "get" and path.startswith(_READ_PATHS):
        operation.parameters = [*(operation.parameters or ()), _TOKEN_PARAMETER]
        added.append(400)  # a Consistency-Token the service did not issue
    if operation.request_body is not None:
        added += BODY_STATUSES
    if guarded:
        added += GUARDED_STATUSES
    for code in added:
        responses.setdefault(str(code), _problem(code))

    for status, response in responses.items():
        if isinstance(response, OpenAPIResponse):
            if status == "204":
                # A handler answering `Response[None]` (a delete with its headers) makes
                # Litestar document a null body; a 204 has none.
                response.content = None
            headers = _headers(int(status), kind)
            response.headers = {**(response.headers or {}), **headers}
            if links := LINKS.get((operation.operation_id or "", status)):
                response.links = dict(links)
    operation.responses = dict(sorted(responses.items()))


def _headers(status: int, kind: Kind | None) -> dict[str, OpenAPIHeader]:
    """The headers a response of this status carries, for an operation of this kind."""
    headers = [*EVERY_RESPONSE, *HEADERS_BY_STATUS.get(status, ())]
    if kind is not None and (200 <= status < 300 or status == 304):
        headers += SUCCESS_HEADERS[kind]
    return {header.name: header.spec() for header in headers}


def _without_null(schema: Schema) -> Schema:
    """`oneOf: [T, null]` (with the constraints beside it) as `T` with those constraints."""
    members = [
        member
        for member in schema.one_of or ()
        if not (isinstance(member, Schema) and member.type == OpenAPIType.NULL)
    ]
    if schema.one_of is None or len(members) != 1 or not isinstance(members[0], Schema):
        return schema
    beside = {
        field.name: value
        for field in dataclasses.fields(Schema)
        if field.name != "one_of" and (value := getattr(schema, field.name)) is not None
    }
    return dataclasses.replace(members[0], **beside)


def _problem(status: int) -> OpenAPIResponse:
    return OpenAPIResponse(
        description=MEANINGS[status],
        content={PROBLEM: OpenAPIMediaType(schema=_PROBLEM_SCHEMA)},
    )


def _is_litestar_validation_shape(status: str, response: OpenAPIResponse | Reference) -> bool:
    """An error response Litestar generated itself: every problem the service declares is
    `application/problem+json`, Litestar's own exception shape is `application/json`."""
    return (
        int(status) >= 400
        and isinstance(response, OpenAPIResponse)
        and PROBLEM not in (response.content or {})
    )


def _check_problem_schema(document: OpenAPI) -> None:
    schemas = document.components.schemas if document.components else None
    if not schemas or "Problem" not in schemas:
        raise RuntimeError("the Problem schema is missing: no handler declares a problem")
