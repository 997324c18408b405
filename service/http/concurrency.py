"""ETags and conditional requests (RFC 9110 §13) over the `version` column of each row.

The ETag of a resource is its row's `version` in quotes: `"3"`. Every write bumps the
version in the same statement, so the tag changes whenever the resource does. `If-Match` is
turned into the list of versions an `UPDATE`/`DELETE` may touch, and the statement itself
checks it (`WHERE id = $1 AND version = ANY($2)`): no read-then-write race.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, Generic, NamedTuple, TypeVar

T = TypeVar("T")


class Versioned(NamedTuple, Generic[T]):
    """A resource as stored, with the row version its ETag is made of, and, when this
    request wrote it, the id of the transaction that did (its Consistency-Token)."""

    resource: T
    version: int
    written_by: int | None = None

    @property
    def etag(self) -> str:
        return f'"{self.version}"'


def stored(model: Callable[..., T], row: Any) -> Versioned[T]:
    """A row read back: the resource's columns, then its version."""
    return Versioned(model(*row[:-1]), row[-1])


def written(model: Callable[..., T], row: Any) -> Versioned[T]:
    """A row as a write returned it: the columns, the version, the writing transaction."""
    return Versioned(model(*row[:-2]), row[-2], row[-1])


def _tags(header: str) -> list[str]:
    return [tag.strip() for tag in header.split(",") if tag.strip()]


_OUR_TAG = re.compile(r'"([1-9][0-9]{0,9})"')
"""Exactly the tags we issue: ASCII digits, no leading zero (tags compare character by
character, so `"01"` is not `"1"`), within PostgreSQL's integer."""


def _version(tag: str) -> int | None:
    """The version a strong tag of ours names, or None for any other tag."""
    match = _OUR_TAG.fullmatch(tag)
    if match is None:
        return None
    version = int(match[1])
    return version if version < 2**31 else None


def if_match_versions(header: str | None) -> list[int] | None:
    """Versions a write may apply to: None when any will do (no header, or `*`).

    An `If-Match` with only foreign or weak tags gives `[]`, which matches no row: 412.
    """
    if header is None or header.strip() == "*":
        return None
    return [version for tag in _tags(header) if (version := _version(tag)) is not None]


def none_match(header: str | None, etag: str) -> bool:
    """Whether `If-None-Match` lets a GET answer in full (False means 304).

    Weak comparison, as RFC 9110 asks for `If-None-Match`.
    """
    if header is None:
        return True
    if header.strip() == "*":
        return False
    return all(tag.removeprefix("W/") != etag for tag in _tags(header))
