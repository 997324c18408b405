"""Service tokens: who may call, and whether to read or to write.

Operators configure tokens as lines `name scope-list sha256-hex` (`API_TOKENS_FILE`, or
`API_TOKENS` holding the same lines); only the SHA-256 of a token is ever stored. Callers
send `Authorization: Bearer <token>`. GET needs the `read` scope, POST/PATCH/DELETE the
`write` scope; `/health/*` is always open, `/metrics` and `/schema/*` unless closed by
`METRICS_PUBLIC=0` / `SCHEMA_PUBLIC=0`.

The gate hashes the presented token and compares it with every configured digest in
constant time (`hmac.compare_digest`), so neither a token nor its position leaks through
timing. Tokens are never logged; the token's name is, as the caller.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
from pathlib import Path

import msgspec
from litestar.types import HTTPScope

from service.base.scope import CALLER_STATE_KEY
from service.base.settings import Settings, SettingsError
from service.http.errors import Refusal

SCOPES: frozenset[str] = frozenset({"read", "write"})
READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
CHALLENGE = ((b"www-authenticate", b'Bearer realm="posts-service"'),)
NO_TOKENS = (
    "no API tokens are configured (API_TOKENS_FILE or API_TOKENS); "
    "set AUTH_DISABLED=1 to serve without authentication"
)


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


class TokenGate:
    """Who may call: a 401 without a known token, a 403 without the scope. Applied by the
    edge layer in front of routing, not as a Litestar guard: a guard costs a copy of the
    route handler per request, about a tenth of a request's time here. So an unknown path
    without a token is a 401 too, which tells a stranger nothing about the routes."""

    ACCEPTED_KEPT = 64

    def __init__(self, tokens: list[Token], *, open_prefixes: tuple[str, ...]):
        self.tokens = tokens
        self.open_prefixes = open_prefixes
        # Authorization values already accepted, so that a caller's token is hashed and
        # compared once, not on every request (a tenth of the gate's work was SHA-256).
        # Only accepted values are kept: anything else takes the constant-time path.
        self._accepted: dict[bytes, Token] = {}

    def identify(self, authorization: str | None) -> Token | None:
        scheme, _, credentials = (authorization or "").partition(" ")
        presented = digest(credentials.strip()) if scheme.lower() == "bearer" else b""
        found = None
        for token in self.tokens:  # every one, so the time does not depend on the match
            if hmac.compare_digest(token.digest, presented):
                found = token
        return found

    def refusal(self, scope: HTTPScope, authorization: bytes | None) -> Refusal | None:
        """The 401 or 403 of a request (its `Authorization` header as sent), or None with
        the caller's name left in the scope's state."""
        if scope["path"].startswith(self.open_prefixes):
            return None
        token = self._accepted.get(authorization) if authorization is not None else None
        if token is None:
            token = self.identify(authorization.decode("latin-1") if authorization else None)
            if token is None:
                return Refusal(401, "A valid bearer token is required", CHALLENGE)
            if authorization is not None:
                if len(self._accepted) >= self.ACCEPTED_KEPT:
                    self._accepted.clear()
                self._accepted[authorization] = token
        needed = "read" if scope["method"] in READ_METHODS else "write"
        if needed not in token.scopes:
            return Refusal(403, f"The token {token.name!r} lacks the {needed!r} scope")
        scope["state"][CALLER_STATE_KEY] = token.name
        return None


def open_prefixes(settings: Settings) -> tuple[str, ...]:
    """The path prefixes the token gate lets through without a token (the OpenAPI
    document marks their operations `security: []`)."""
    prefixes: tuple[str, ...] = ("/health/",)
    if settings.metrics_public:
        prefixes += ("/metrics",)
    if settings.schema_public:
        prefixes += ("/schema",)
    return prefixes


def gate(settings: Settings) -> TokenGate | None:
    """The token gate of `settings`; None when auth is disabled."""
    if settings.auth_disabled:
        return None
    tokens = load_tokens(settings)
    if not tokens:
        raise SettingsError(NO_TOKENS)
    return TokenGate(tokens, open_prefixes=open_prefixes(settings))


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
        raise SettingsError(NO_TOKENS)
    logging.getLogger("service.auth").warning(  # its name from before the layers
        "no API tokens configured: serving WITHOUT authentication on the embedded database"
    )
    return msgspec.structs.replace(settings, auth_disabled=True)
