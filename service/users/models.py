"""The JSON shapes of a user: what callers send and what they get back."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import msgspec

from service.http import validation

EMAIL_DESCRIPTION = (
    "At most 320 characters, one '@' with text on both sides and no whitespace (whitespace "
    "around it is trimmed). Stored trimmed and lower-cased; unique across users, ignoring case."
)
Email = Annotated[
    str,
    msgspec.Meta(
        description=EMAIL_DESCRIPTION,
        examples=["ada@example.com"],
        extra_json_schema=validation.EMAIL_SCHEMA,
    ),
]
NAME = validation.TextRule(min_length=1, max_length=100, trim=True)
Name = Annotated[
    str,
    msgspec.Meta(
        description="1 to 100 characters after trimming; stored trimmed.",
        examples=["Ada Lovelace"],
        extra_json_schema=NAME.json_schema(),
    ),
]


def _name(value: str) -> str:
    return NAME.check("name", value)


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
