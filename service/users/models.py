"""The JSON shapes of a user: what callers send and what they get back."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import msgspec

from service import validation

Email = Annotated[
    str,
    msgspec.Meta(
        description="3 to 320 characters after trimming, one '@' with text on both sides, no "
        "whitespace. Stored trimmed and lower-cased; unique across users, ignoring case.",
        examples=["ada@example.com"],
    ),
]
Name = Annotated[
    str,
    msgspec.Meta(
        description="1 to 100 characters after trimming; stored trimmed.", examples=["Ada Lovelace"]
    ),
]


def _name(value: str) -> str:
    return validation.text("name", value, min_length=1, max_length=100, trim=True)


class UserCreate(msgspec.Struct, forbid_unknown_fields=True):
    email: Email
    name: Name

    def __post_init__(self) -> None:
        self.email = validation.email(self.email)
        self.name = _name(self.name)


class UserPatch(msgspec.Struct, forbid_unknown_fields=True):
    """Merge patch: only the fields present change; `null` is not a value."""

    email: Email | msgspec.UnsetType = msgspec.UNSET
    name: Name | msgspec.UnsetType = msgspec.UNSET

    def __post_init__(self) -> None:
        if self.email is not msgspec.UNSET:
            self.email = validation.email(self.email)
        if self.name is not msgspec.UNSET:
            self.name = _name(self.name)

    def changes(self) -> dict[str, object]:
        return validation.present_fields(self)


class User(msgspec.Struct):
    id: int
    email: str
    name: str
    created_at: datetime
    updated_at: datetime


class UserPage(msgspec.Struct):
    items: list[User]
    next_cursor: str | None
