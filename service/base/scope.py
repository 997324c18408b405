"""Reading an ASGI scope: request headers, and the keys the layers leave in its state."""

from __future__ import annotations

from litestar.types import Scope

CALLER_STATE_KEY = "caller"
"""Where the token gate leaves the caller's name (a token's name) in `scope["state"]`."""


def raw_header(scope: Scope, name: bytes) -> bytes | None:
    """The first value of request header `name` (lower-case bytes), as sent."""
    for key, value in scope["headers"]:
        if key == name:
            return value
    return None


def header(scope: Scope, name: bytes) -> str | None:
    """The first value of request header `name` (lower-case bytes), decoded as latin-1."""
    value = raw_header(scope, name)
    return None if value is None else value.decode("latin-1")


def header_list(scope: Scope, name: bytes) -> str | None:
    """Every line of a list-valued header (`If-Match: "1"` twice is `"1", "1"`), joined
    with commas as RFC 9110 §5.3 combines them; None when absent."""
    values = [value.decode("latin-1") for key, value in scope["headers"] if key == name]
    return ", ".join(values) if values else None
