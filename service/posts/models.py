"""The JSON shapes of a post: what callers send and what they get back."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import msgspec

from service.http import validation

AuthorId = Annotated[
    int, msgspec.Meta(ge=1, le=validation.MAX_ID, description="Id of an existing user.")
]
TITLE = validation.TextRule(min_length=1, max_length=200, trim=True)
Title = Annotated[
    str,
    msgspec.Meta(
        description="1 to 200 characters after trimming; stored trimmed.",
        examples=["Hello"],
        extra_json_schema=TITLE.json_schema(),
    ),
]
BODY = validation.TextRule(min_length=0, max_length=100_000, trim=False)
Body = Annotated[
    str,
    msgspec.Meta(
        # Checked by msgspec too, on every occurrence of the key, before the struct is built.
        max_length=BODY.max_length,
        description="0 to 100,000 characters, stored as sent.",
        extra_json_schema=BODY.json_schema(),
    ),
]


def _title(value: str) -> str:
    return TITLE.check("title", value)


def _body(value: str) -> str:
    return BODY.check("body", value)


class PostCreate(msgspec.Struct, forbid_unknown_fields=True):
    author_id: AuthorId
    title: Title
    body: Body
    published: bool = False

    def __post_init__(self) -> None:
        self.title = _title(self.title)
        self.body = _body(self.body)


class PostPatch(msgspec.Struct, forbid_unknown_fields=True):
    """Merge patch: only the fields present change; `null` is not a value. `author_id`
    is not a field here: a post keeps its author."""

    title: Title | msgspec.UnsetType = msgspec.UNSET
    body: Body | msgspec.UnsetType = msgspec.UNSET
    published: bool | msgspec.UnsetType = msgspec.UNSET

    def __post_init__(self) -> None:
        if self.title is not msgspec.UNSET:
            self.title = _title(self.title)
        if self.body is not msgspec.UNSET:
            self.body = _body(self.body)

    def changes(self) -> dict[str, object]:
        return validation.present_fields(self)


class Post(msgspec.Struct):
    id: int
    author_id: int
    title: str
    body: str
    published: bool
    created_at: datetime
    updated_at: datetime


class PostPage(msgspec.Struct):
    items: list[Post]
    next_cursor: str | None
