"""Strict request bodies and the text rules of the contract.

Litestar converts request bodies with msgspec in lax mode (`"1"` would pass as an int), so
handlers take their body through `StrictBody[T]`, a DTO that decodes the raw bytes straight
into the struct with `strict=True` and turns msgspec's messages into field errors. The
struct still appears in the OpenAPI document as the request body.

Structs check what msgspec constraints cannot say (lengths after trimming, NUL characters,
email shape) in `__post_init__`, raising `FieldError`s through `InvalidField`.
"""

from __future__ import annotations

import re
from collections.abc import Generator
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar

import msgspec
from litestar._openapi.schema_generation.plugins.struct import StructSchemaPlugin
from litestar.dto import AbstractDTO, DTOConfig, DTOFieldDefinition
from litestar.openapi.spec import Schema
from litestar.typing import FieldDefinition

from service.errors import FieldError, InvalidInput

if TYPE_CHECKING:
    from litestar._openapi.schema_generation import SchemaCreator
    from litestar.dto._backend import DTOBackend
    from litestar.openapi.spec import Reference

T = TypeVar("T")

MAX_ID = 2**63 - 1
"""Ids are PostgreSQL bigints; anything outside 1..MAX_ID names no row."""


class InvalidField(ValueError):
    """Raised from a struct's `__post_init__`; msgspec keeps it as the error's cause."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.error = FieldError(field, message)


def text(field: str, value: str, *, min_length: int, max_length: int, trim: bool) -> str:
    """Check one text field of the contract; return it as it is to be stored."""
    if "\x00" in value:
        raise InvalidField(field, "must not contain the NUL character")
    if trim:
        value = value.strip()
    if not min_length <= len(value) <= max_length:
        after = " after trimming" if trim else ""
        raise InvalidField(field, f"must be {min_length} to {max_length} characters{after}")
    return value


_EMAIL = re.compile(r"[^@\s]+@[^@\s]+")


def email(value: str) -> str:
    # Lower-cased before the length check: lower() can lengthen a string ('İ' becomes 2).
    value = text("email", value.lower(), min_length=3, max_length=320, trim=True)
    if _EMAIL.fullmatch(value) is None:
        raise InvalidField("email", "must be one '@' with text on both sides and no whitespace")
    return value


_AT_PATH = re.compile(r"^(?P<message>.*) - at `\$\.(?P<field>[^`.\[]+)[^`]*`$")
_NAMED_FIELD = re.compile(
    r"^Object (?:contains unknown|missing required) field `(?P<field>[^`]+)`$"
)


def field_error(error: msgspec.ValidationError) -> FieldError:
    """The field a msgspec validation error is about, with its message."""
    if isinstance(error.__cause__, InvalidField):
        return error.__cause__.error
    message = str(error)
    if match := _AT_PATH.match(message):
        return FieldError(match["field"], match["message"])
    if match := _NAMED_FIELD.match(message):
        unknown = "unknown" in message
        return FieldError(
            match["field"], "is not a field of this resource" if unknown else "is required"
        )
    return FieldError("body", message)


def decode(body: bytes, type_: type[T]) -> T:
    """Decode a JSON body strictly into `type_`, or raise `InvalidInput` naming the field."""
    try:
        return msgspec.json.decode(body, type=type_, strict=True)
    except msgspec.ValidationError as error:
        raise InvalidInput([field_error(error)]) from None
    except (msgspec.DecodeError, UnicodeDecodeError):
        # msgspec reports invalid UTF-8 inside a string as a UnicodeDecodeError.
        raise InvalidInput([FieldError("body", "is not valid JSON in UTF-8")]) from None


class StrictBody(AbstractDTO[T], Generic[T]):
    """A data DTO that only decodes: strict msgspec from the raw body, nothing else."""

    config: ClassVar[DTOConfig] = DTOConfig()

    def decode_bytes(self, value: bytes) -> Any:
        return decode(value, self.model_type)

    def decode_builtins(self, value: dict[str, Any]) -> Any:
        return decode(msgspec.json.encode(value), self.model_type)

    @classmethod
    def generate_field_definitions(
        cls, model_type: type[Any]
    ) -> Generator[DTOFieldDefinition, None, None]:
        yield from ()

    @classmethod
    def detect_nested_field(cls, field_definition: FieldDefinition) -> bool:
        return False

    @classmethod
    def create_for_field_definition(
        cls,
        field_definition: FieldDefinition,
        handler_id: str,
        backend_cls: type[DTOBackend] | None = None,
    ) -> None:
        """Nothing to build: decoding needs only `model_type`."""

    @classmethod
    def create_openapi_schema(
        cls, field_definition: FieldDefinition, handler_id: str, schema_creator: SchemaCreator
    ) -> Reference | Schema:
        return schema_creator.for_field_definition(FieldDefinition.from_annotation(cls.model_type))


def present_fields(patch: msgspec.Struct) -> dict[str, object]:
    """The fields a merge patch names, in declaration order, with their new values."""
    return {
        field: value
        for field in patch.__struct_fields__
        if (value := getattr(patch, field)) is not msgspec.UNSET
    }


def query_text(field: str, value: str, *, max_length: int) -> str:
    """A free-text query parameter, trimmed; 400 naming it when it cannot be stored text."""
    try:
        return text(field, value, min_length=0, max_length=max_length, trim=True)
    except InvalidField as error:
        raise InvalidInput([error.error]) from None


class ClosedStructSchemaPlugin(StructSchemaPlugin):
    """Documents `forbid_unknown_fields=True` structs as `additionalProperties: false`, which
    Litestar's own struct plugin leaves out: an unknown field is a 400 here."""

    def to_openapi_schema(
        self, field_definition: FieldDefinition, schema_creator: SchemaCreator
    ) -> Schema:
        schema = super().to_openapi_schema(field_definition, schema_creator)
        if field_definition.type_.__struct_config__.forbid_unknown_fields:
            schema.additional_properties = False
        return schema
