"""Service tokens: who may call, and whether to read or to write.

Operators configure tokens as lines `name scope-list sha256-hex` (`API_TOKENS_FILE`, or
`API_TOKENS` holding the same lines); only the SHA-256 of a token is ever stored. Callers
send `Authorization: Bearer <token>`. GET needs the `read` scope, POST/PATCH/DELETE the
`write` scope; `/health/*` is always open, `/metrics` and `/schema/*` unless closed by
`METRICS_PUBLIC=0` / `SCHEMA_PUBLIC=0`.

The guard hashes the presented token and compares it with every configured digest in
constant time (`hmac.compare_digest`), so neither a token nor its position leaks through
timing. Tokens are never logged; the token's name is, as the caller.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
from pathlib import Path
from typing import Any, Literal

import msgspec
from litestar.connection import ASGIConnection
from litestar.handlers.base import BaseRouteHandler

from service.errors import problem
from service.settings import Settings, SettingsError

Scope = Literal["read", "write"]
SCOPES: frozenset[str] = frozenset({"read", "write"})
READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
CHALLENGE = {"WWW-Authenticate": 'Bearer realm="posts-service"'}
CALLER_STATE_KEY = "caller"


class Token(msgspec.Struct, frozen=True):
    name: str
    scopes: frozenset[str]
    digest: bytes


def digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def parse_tokens(text: str, source: str) -> list[Token]:
    """Token lines to `Token`s; blank lines and `#` comments are skipped."""
    tokens = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.split()
        where = f"{source} line {number}"
        if len(parts) != 3:
            raise SettingsError(
                f"{where}: expected 'name scopes sha256-hex', got {len(parts)} fields"
            )
        name, scope_list, hex_digest = parts
        scopes = frozenset(scope_list.split(","))
        if not scopes <= SCOPES:
            raise SettingsError(f"{where}: scopes must be read and/or write, got {scope_list!r}")
        try:
            raw_digest = bytes.fromhex(hex_digest)
        except ValueError:
            raw_digest = b""
        if len(raw_digest) != 32:
            raise SettingsError(f"{where}: the third field must be a SHA-256 in hex (64 digits)")
        tokens.append(Token(name, scopes, raw_digest))
    names = [token.name for token in tokens]
    if len(names) != len(set(names)):
        raise SettingsError(f"{source}: token names must be unique")
    return tokens


def load_tokens(settings: Settings) -> list[Token]:
    tokens = []
    if settings.api_tokens_file is not None:
        path = Path(settings.api_tokens_file)
        try:
            text = path.read_text()
        except OSError as error:
            raise SettingsError(f"API_TOKENS_FILE={path}: {error.strerror}") from None
        tokens += parse_tokens(text, f"API_TOKENS_FILE {path}")
    if settings.api_tokens is not None:
        tokens += parse_tokens(settings.api_tokens, "API_TOKENS")
    return tokens


class Authenticator:
    """The guard every route passes: 401 without a known token, 403 without the scope."""

    def __init__(self, tokens: list[Token], *, open_prefixes: tuple[str, ...]) -> None:
        self.tokens = tokens
        self.open_prefixes = open_prefixes

    def identify(self, authorization: str | None) -> Token | None:
        scheme, _, credentials = (authorization or "").partition(" ")
        presented = digest(credentials.strip()) if scheme.lower() == "bearer" else b""
        found = None
        for token in self.tokens:  # every one, so the time does not depend on the match
            if hmac.compare_digest(token.digest, presented):
                found = token
        return found

    async def __call__(
        self, connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler
    ) -> None:
        # async: Litestar runs a sync guard in a worker thread, on every request.
        if connection.scope["path"].startswith(self.open_prefixes):
            return
        token = self.identify(connection.headers.get("authorization"))
        if token is None:
            raise problem(401, "A valid bearer token is required", headers=CHALLENGE)
        method = connection.scope.get("method", "GET")  # this service has no websockets
        needed = "read" if method in READ_METHODS else "write"
        if needed not in token.scopes:
            raise problem(403, f"The token {token.name!r} lacks the {needed!r} scope")
        connection.scope["state"][CALLER_STATE_KEY] = token.name


def guards(settings: Settings) -> list[Authenticator]:
    """The app's guards: none when auth is disabled, else the authenticator."""
    if settings.auth_disabled:
        return []
    tokens = load_tokens(settings)
    if not tokens:
        raise SettingsError(
            "no API tokens are configured (API_TOKENS_FILE or API_TOKENS); "
            "set AUTH_DISABLED=1 to serve without authentication"
        )
    open_prefixes: tuple[str, ...] = ("/health/",)
    if settings.metrics_public:
        open_prefixes += ("/metrics",)
    if settings.schema_public:
        open_prefixes += ("/schema",)
    return [Authenticator(tokens, open_prefixes=open_prefixes)]


def new_token(name: str, scopes: list[str]) -> tuple[str, str]:
    """A fresh random token and the configuration line that admits it."""
    if not name or any(character.isspace() for character in name):
        raise SettingsError("a token name is one word")
    if not scopes or not set(scopes) <= SCOPES:
        raise SettingsError("scopes are read and/or write, e.g. --scopes read,write")
    token = secrets.token_urlsafe(32)
    return token, f"{name} {','.join(sorted(set(scopes)))} {digest(token).hex()}"


def settle(settings: Settings) -> Settings:
    """Secure by default: no tokens is an error on DATABASE_URL unless AUTH_DISABLED=1,
    and allowed, with a warning, on the embedded database (a developer's machine)."""
    if settings.auth_disabled or load_tokens(settings):
        return settings
    if not settings.embedded:
        guards(settings)  # raises the SettingsError that explains what to set
    logging.getLogger(__name__).warning(
        "no API tokens configured: serving WITHOUT authentication on the embedded database"
    )
    return msgspec.structs.replace(settings, auth_disabled=True)
