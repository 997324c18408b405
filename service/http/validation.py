"""Strict request bodies and the text rules of the contract.

Litestar converts request bodies with msgspec in lax mode (`"1"` would pass as an int), so
handlers take their body through `StrictBody[T]`, a DTO that checks the media type (415
unless `application/json`) and decodes the raw bytes straight into the struct with
`strict=True`, turning msgspec's messages into field errors. The struct still appears in
the OpenAPI document as the request body.

Text rules (`TextRule`, `email`) are checked in the structs' `__post_init__` and written
into the OpenAPI document as `pattern`/`maxLength`, both from one definition: trimming
removes exactly the characters of `WHITESPACE`, and the patterns name that same set
character by character (never the shorthand class for whitespace, which means one set in
Python and another in ECMA-262, the regex dialect of JSON Schema). So a string matches
its pattern exactly when the service accepts it (tests/test_text_rules.py checks that on
generated text).

Query integers (`QueryInt`) are plain ASCII decimal digits and query booleans
(`QueryBool`) are `true` or `false`: Litestar's lax conversion would read `1e2` as 100,
`5.0` as 5 and `null` as no value.
"""

from __future__ import annotations

import abc
import re
from collections.abc import Callable, Generator
from typing import TYPE_CHECKING, Any, ClassVar, Generic, NamedTuple, Self, TypeVar

import msgspec
from litestar._openapi.schema_generation.plugins.struct import StructSchemaPlugin
from litestar.dto import AbstractDTO, DTOConfig, DTOFieldDefinition
from litestar.openapi.spec import OpenAPIType, Schema
from litestar.plugins import OpenAPISchemaPlugin
from litestar.typing import FieldDefinition

from service.base.scope import header
from service.http.errors import FieldError, InvalidInput, problem

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


WHITESPACE = (
    "\t\n\x0b\x0c\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008"
    "\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
)
"""What trimming removes and what an email may not contain: Unicode's White_Space
characters, all 25. Not Python's `str.strip()` default, which also strips U+001C..U+001F,
nor ECMA-262's whitespace class, which leaves U+0085 out and takes U+FEFF in."""

NUL = "\x00"


def _one_of(characters: str, *, negated: bool = False) -> str:
    """A regex character class naming each character as `\\uXXXX` (runs as ranges): read
    the same by ECMA-262, Python's `re` and Rust's `regex`, all characters being in the BMP."""
    codes = sorted(map(ord, characters))
    runs: list[list[int]] = []
    for code in codes:
        if runs and code == runs[-1][-1] + 1:
            runs[-1].append(code)
        else:
            runs.append([code])
    escaped: list[str] = []
    for run in runs:
        if len(run) > 2:
            escaped.append(f"\\u{run[0]:04x}-\\u{run[-1]:04x}")
        else:
            escaped.extend(f"\\u{code:04x}" for code in run)
    return f"[{'^' if negated else ''}{''.join(escaped)}]"


_SPACE = _one_of(WHITESPACE)
_KEPT = _one_of(WHITESPACE + NUL, negated=True)  # a character that trimming keeps
_ANY = _one_of(NUL, negated=True)


def _trimmed_pattern(min_length: int, max_length: int) -> str:
    """Text whose trimmed part (first to last kept character) has min..max characters."""
    if max_length == 0:
        return f"^{_SPACE}*$"
    if max_length == 1:
        core = _KEPT
    elif min_length <= 1:
        core = f"{_KEPT}(?:{_ANY}{{0,{max_length - 2}}}{_KEPT})?"
    else:
        core = f"{_KEPT}{_ANY}{{{min_length - 2},{max_length - 2}}}{_KEPT}"
    if min_length == 0:
        return f"^{_SPACE}*(?:{core}{_SPACE}*)?$"
    return f"^{_SPACE}*{core}{_SPACE}*$"


class TextRule(NamedTuple):
    """The rule of one text field: no NUL, and min..max characters, counted after
    trimming `WHITESPACE` when `trim` (the value is then stored trimmed)."""

    min_length: int
    max_length: int
    trim: bool

    def check(self, field: str, value: str) -> str:
        """The value as it is to be stored, or `InvalidField`."""
        if NUL in value:
            raise InvalidField(field, "must not contain the NUL character")
        if self.trim:
            value = value.strip(WHITESPACE)
        if not self.min_length <= len(value) <= self.max_length:
            after = " after trimming" if self.trim else ""
            raise InvalidField(
                field, f"must be {self.min_length} to {self.max_length} characters{after}"
            )
        return value

    def json_schema(self) -> dict[str, Any]:
        """The same rule in JSON Schema: a pattern, and for untrimmed text the lengths."""
        if self.trim:
            return {"pattern": _trimmed_pattern(self.min_length, self.max_length)}
        lengths = {"minLength": self.min_length} if self.min_length else {}
        return {"pattern": f"^{_ANY}*$", **lengths, "maxLength": self.max_length}


EMAIL_MAX_LENGTH = 320
_EMAIL_PART = f"{_one_of(WHITESPACE + NUL + '@', negated=True)}+"
EMAIL_SCHEMA: dict[str, Any] = {
    "pattern": f"^{_SPACE}*{_EMAIL_PART}@{_EMAIL_PART}{_SPACE}*$",
    "maxLength": EMAIL_MAX_LENGTH,
}
"""An email as sent: at most 320 characters, one '@' with text and no whitespace on both
sides, whitespace allowed around it (trimmed away)."""
_EMAIL = re.compile(EMAIL_SCHEMA["pattern"])


def email(value: str) -> str:
    """An email as it is to be stored (trimmed, lower-cased), or `InvalidField`."""
    if NUL in value:
        raise InvalidField("email", "must not contain the NUL character")
    if len(value) > EMAIL_MAX_LENGTH:
        raise InvalidField("email", f"must be at most {EMAIL_MAX_LENGTH} characters")
    if _EMAIL.fullmatch(value) is None:
        raise InvalidField("email", "must be one '@' with text on both sides and no whitespace")
    stored = value.strip(WHITESPACE).lower()
    # A rule no schema can state: lower() can lengthen a string ('\u0130' becomes two
    # characters), and the stored email must fit in 320 too.
    if len(stored) > EMAIL_MAX_LENGTH:
        raise InvalidField(
            "email", f"must be at most {EMAIL_MAX_LENGTH} characters once lower-cased"
        )
    return stored


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


def is_json(content_type: str | None) -> bool:
    """Whether a `Content-Type` names JSON: `application/json` in any case, with any
    parameters (`; charset=utf-8`). None (no header) is not JSON."""
    if content_type is None:
        return False
    return content_type.partition(";")[0].strip().lower() == "application/json"


UNSUPPORTED_MEDIA_TYPE = [FieldError("Content-Type", "must be application/json")]


class StrictBody(AbstractDTO[T], Generic[T]):
    """A data DTO that only decodes: strict msgspec from the raw body, nothing else.

    Litestar calls it for every non-empty body (an empty one is a missing body, 400), so
    every operation with a body refuses one not sent as JSON here, before it is parsed.
    """

    config: ClassVar[DTOConfig] = DTOConfig()

    def decode_bytes(self, value: bytes) -> Any:
        if not is_json(header(self.asgi_connection.scope, b"content-type")):
            raise problem(
                415, "The body must be sent as application/json", errors=UNSUPPORTED_MEDIA_TYPE
            )
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


def query_email(value: str) -> str:
    """The `email` filter: the same rule as an email in a body (a value no user can have
    is a 400, not an empty page), and compared as stored."""
    try:
        return email(value)
    except InvalidField as error:
        raise InvalidInput([error.error]) from None


class QueryInt(int):
    """An integer query parameter: plain ASCII decimal digits, within `minimum..maximum`.

    Declared as a subclass (`PageSize`, `PositiveId`) so that `parse` runs as Litestar's
    type decoder (`QUERY_INT_DECODER`, registered on the app) instead of msgspec's lax
    conversion, and documented as an integer by `QueryIntSchemaPlugin`.
    """

    minimum: ClassVar[int] = 0
    maximum: ClassVar[int] = MAX_ID

    @classmethod
    def parse(cls, value: object) -> Self:
        if isinstance(value, int):  # a handler's default: query values arrive as text
            number = value
        elif isinstance(value, str) and value.isascii() and value.isdigit():
            # More digits than any bigint has are out of range, however many there are.
            number = int(value) if len(value) <= 20 else cls.maximum + 1
        else:
            raise ValueError("must be plain decimal digits")
        if not cls.minimum <= number <= cls.maximum:
            raise ValueError(f"must be {cls.minimum} to {cls.maximum}")
        return cls(number)


class PositiveId(QueryInt):
    """An id as a filter: 1 to 2^63-1."""

    minimum = 1


class _QueryBool(abc.ABC):  # noqa: B024 (a marker: its one member is bool, registered)
    """A boolean query parameter: exactly `true` or `false` (msgspec's lax conversion would
    also take `1`, `TRUE`, and `null` as none). Its values are real bools: bool cannot be
    subclassed and asyncpg binds only real bools, so `bool` is registered as a virtual
    subclass, which is what msgspec checks a decoder's result against."""


_QueryBool.register(bool)
if TYPE_CHECKING:
    QueryBool = bool
else:
    QueryBool = _QueryBool


def _parse_bool(value: object) -> bool:
    if isinstance(value, bool):  # a handler's default
        return value
    if value in ("true", "false"):
        return value == "true"
    raise ValueError("must be true or false")


def _is_query_int(type_: Any) -> bool:
    return isinstance(type_, type) and issubclass(type_, QueryInt)


QUERY_DECODERS: list[tuple[Callable[[Any], bool], Callable[[Any, Any], Any]]] = [
    (_is_query_int, lambda type_, value: type_.parse(value)),
    (lambda type_: type_ is _QueryBool, lambda _, value: _parse_bool(value)),
]
"""For `Litestar(type_decoders=...)`: the query values' own parsing."""


class QuerySchemaPlugin(OpenAPISchemaPlugin):
    """Documents a `QueryInt` as the integer it is, with its bounds, and a `QueryBool` as
    a boolean."""

    @staticmethod
    def is_plugin_supported_type(value: Any) -> bool:
        return _is_query_int(value) or value is _QueryBool

    def to_openapi_schema(
        self, field_definition: FieldDefinition, schema_creator: SchemaCreator
    ) -> Schema:
        if field_definition.annotation is _QueryBool:
            return Schema(type=OpenAPIType.BOOLEAN)
        query_int: type[QueryInt] = field_definition.annotation
        return Schema(
            type=OpenAPIType.INTEGER, minimum=query_int.minimum, maximum=query_int.maximum
        )


class ClosedStructSchemaPlugin(StructSchemaPlugin):
    """Litestar's struct schemas, completed with what its own plugin leaves out or bends:
    `additionalProperties: false` for `forbid_unknown_fields=True` (an unknown field is a
    400 here); the keywords of each field's `Meta(extra_json_schema=...)` beyond title,
    description and examples (the text rules' `pattern`, `minLength`, `maxLength`); and
    integer bounds as the exact integers they are (Litestar writes them as floats, and
    2^63-1 as a float is 2^63, one past the largest id)."""

    def to_openapi_schema(
        self, field_definition: FieldDefinition, schema_creator: SchemaCreator
    ) -> Schema:
        schema = super().to_openapi_schema(field_definition, schema_creator)
        struct_type = field_definition.type_
        if struct_type.__struct_config__.forbid_unknown_fields:
            schema.additional_properties = False
        struct_info = msgspec.inspect.type_info(struct_type)
        assert isinstance(struct_info, msgspec.inspect.StructType)
        aliases = Schema.field_aliases()
        for field in struct_info.fields:
            property_schema = (schema.properties or {}).get(field.encode_name)
            if not isinstance(property_schema, Schema):
                continue
            extra, kind = _metadata(field.type)
            for keyword, value in extra.items():
                if keyword not in _CARRIED_BY_LITESTAR:
                    setattr(property_schema, aliases.get(keyword, keyword), value)
            if isinstance(kind, msgspec.inspect.IntType):
                for bound, schema_field in _INT_BOUNDS.items():
                    if (limit := getattr(kind, bound)) is not None:
                        setattr(property_schema, schema_field, limit)
        return schema


_CARRIED_BY_LITESTAR = frozenset({"title", "description", "examples"})
_INT_BOUNDS = {
    "ge": "minimum",
    "le": "maximum",
    "gt": "exclusive_minimum",
    "lt": "exclusive_maximum",
}


def _metadata(type_info: msgspec.inspect.Type) -> tuple[dict[str, Any], msgspec.inspect.Type]:
    """A field's `Meta(extra_json_schema=...)` and the type it annotates. (msgspec leaves
    `UnsetType` out of a field's type, so `T | UnsetType` comes here as `T`.)"""
    if isinstance(type_info, msgspec.inspect.Metadata):
        return dict(type_info.extra_json_schema or {}), type_info.type
    return {}, type_info
