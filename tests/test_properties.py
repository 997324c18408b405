"""Properties, checked with Hypothesis on generated input: the cursor codec, the text rules,
the strict decoding of request bodies and the matching of ETags; and, through the real app,
POST /users with any body and PATCH /users/{id} under any If-Match.

Every test runs derandomized (its examples follow from its name, not from a clock), keeps
no example database and has no deadline, so a CI run is reproducible and a failure is
reported with the shrunk input that caused it. `@example`s pin inputs at the contract's
edges that random search reaches only rarely.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
from collections.abc import Callable
from datetime import datetime
from typing import Any

import asyncpg
import msgspec
import pytest
from hypothesis import event, example, given, note, settings
from hypothesis import strategies as st
from litestar.testing import AsyncTestClient

from service.http.concurrency import if_match_versions, none_match
from service.http.errors import InvalidInput
from service.http.pagination import CursorCodec
from service.http.validation import MAX_ID, InvalidField, TextRule, decode, email
from service.posts.models import PostCreate, PostPatch
from service.users.models import UserCreate, UserPatch
from tests.helpers import REPRODUCIBLE, unique_email

# -- strategies ----------------------------------------------------------------------------

# Text of any plane (Hypothesis leaves out lone surrogates, which JSON text cannot carry as
# UTF-8), with NUL, whitespace of every kind the service trims, and characters whose
# lower-case form is longer or different in odd ways, mixed in more often than chance would.
EDGE_CHARACTERS = (
    " \t\n\r\x0b\x0c\x1c\x1f\x85\xa0\u1680\u2028\u3000\ufeff\x00@."
    "\u0130"  # LATIN CAPITAL LETTER I WITH DOT ABOVE: lower() makes it two characters
    "\u212a\u1e9e\u01c5\u03a3"  # KELVIN SIGN, CAPITAL SHARP S, Dz, SIGMA
)
characters = st.one_of(st.characters(exclude_categories=("Cs",)), st.sampled_from(EDGE_CHARACTERS))
texts = st.text(characters)
# Long text, built cheaply: a random start, then one character repeated.
long_texts = st.builds(
    lambda head, fill, length: head + fill * length,
    texts,
    characters,
    st.integers(500, 20_000),
)
whitespace = st.text(st.sampled_from(" \t\n\r\x0b\x0c\x1c\x85\xa0\u2028\u3000\ufeff"), max_size=3)

# What the contract trims: Unicode's White_Space characters. Python's str.isspace() says yes
# to those and to the four information separators U+001C..U+001F, which are not White_Space.
WHITE_SPACE = "".join(
    c for c in map(chr, range(0x110000)) if c.isspace() and c not in "\x1c\x1d\x1e\x1f"
)


def sized_text(*lengths: int) -> st.SearchStrategy[str]:
    """Text of exactly one of `lengths` characters, built cheaply (one character repeated,
    a few random ones in front), for the limits of the contract."""
    return st.builds(
        lambda head, fill, length: (head + fill * length)[:length],
        st.text(characters, max_size=5),
        characters.filter(lambda c: c != "\x00"),
        st.sampled_from(lengths),
    )


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | texts,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.text(characters, max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


# An everyday address, in any case, maybe with whitespace around it.
emails_everyday = st.builds(
    lambda before, address, after: before + address + after,
    whitespace,
    st.from_regex(r"[A-Za-z0-9._%+-]{1,24}@[A-Za-z0-9.-]{1,24}", fullmatch=True),
    whitespace,
)


@st.composite
def emails(draw: st.DrawFn) -> str:
    """Mostly email-shaped text, around the limits; sometimes anything."""
    shape = draw(st.integers(0, 5))
    if shape == 0:
        return draw(texts)
    if shape == 5:
        return draw(emails_everyday)
    if shape == 1:
        # At the length limits (3 and 320 characters), split anywhere around an '@'.
        length = draw(st.sampled_from([1, 2, 3, 4, 318, 319, 320, 321, 322]))
        local = draw(st.integers(0, length - 1))
        body = draw(sized_text(length - 1))
        return body[:local] + "@" + body[local:]
    local = draw(st.text(characters, max_size=12))
    domain = draw(st.text(characters, max_size=12))
    at = draw(st.sampled_from(["@", "@", "@", "", "@@", "@x@"]))
    return draw(whitespace) + local + at + domain + draw(whitespace)


names = st.one_of(texts, sized_text(0, 1, 99, 100, 101), st.builds(str.__add__, whitespace, texts))
titles = st.one_of(texts, sized_text(0, 1, 199, 200, 201))
post_bodies = st.one_of(texts, long_texts, sized_text(99_999, 100_000, 100_001))
author_ids = st.one_of(
    st.integers(-2, 3),
    st.integers(MAX_ID - 2, MAX_ID + 2),
    st.integers(),
    st.booleans(),
    st.floats(),
    texts,
)


# -- the contract's rules, written out independently of service.validation ------------------


def stored_text(value: str, *, min_length: int, max_length: int, trim: bool) -> str | None:
    """What a text field is stored as, or None when the contract rejects it."""
    if "\x00" in value:
        return None
    stored = value.strip(WHITE_SPACE) if trim else value
    return stored if min_length <= len(stored) <= max_length else None


def stored_email(value: str) -> str | None:
    """API.md: 3-320 characters, one '@' with text on both sides, no whitespace, stored
    trimmed and lower-cased. The choice in docs/api.md: at most 320 as sent, and as stored."""
    if "\x00" in value or len(value) > 320:
        return None
    stored = value.strip(WHITE_SPACE).lower()
    local, _, domain = stored.partition("@")
    if not local or not domain or "@" in domain or any(c in WHITE_SPACE for c in stored):
        return None
    return stored if 3 <= len(stored) <= 320 else None


class Field(msgspec.Struct, frozen=True):
    """One field of a request struct: the JSON type it takes, the check msgspec makes on
    every occurrence of the key, and the rule `__post_init__` applies to the value kept."""

    kind: type
    required: bool
    each: Callable[[Any], bool] = lambda value: True
    final: Callable[[Any], Any] = lambda value: value
    default: Any = msgspec.UNSET


def _user_fields(required: bool) -> dict[str, Field]:
    return {
        "email": Field(str, required, final=stored_email),
        "name": Field(
            str, required, final=lambda v: stored_text(v, min_length=1, max_length=100, trim=True)
        ),
    }


def _post_fields(create: bool) -> dict[str, Field]:
    fields = {
        "title": Field(
            str, create, final=lambda v: stored_text(v, min_length=1, max_length=200, trim=True)
        ),
        "body": Field(
            str,
            create,
            each=lambda v: len(v) <= 100_000,
            final=lambda v: stored_text(v, min_length=0, max_length=100_000, trim=False),
        ),
        "published": Field(bool, False, default=False if create else msgspec.UNSET),
    }
    if create:
        fields = {"author_id": Field(int, True, each=lambda v: 1 <= v <= MAX_ID), **fields}
    return fields


STRUCTS: dict[type[msgspec.Struct], dict[str, Field]] = {
    UserCreate: _user_fields(required=True),
    UserPatch: _user_fields(required=False),
    PostCreate: _post_fields(create=True),
    PostPatch: _post_fields(create=False),
}
FIELD_VALUES: dict[str, st.SearchStrategy[Any]] = {
    "email": emails(),
    "name": names,
    "title": titles,
    "body": post_bodies,
    "published": st.booleans(),
    "author_id": author_ids,
}

Pairs = list[tuple[str, Any]]


def expected_fields(struct: type[msgspec.Struct], pairs: Pairs) -> dict[str, Any] | None:
    """The struct's field values for a JSON object given as its key/value pairs (a key may
    come twice), or None when decoding must fail. Types and msgspec constraints are checked
    at each occurrence of a key; the struct's own rules apply to the value kept, the last."""
    spec = STRUCTS[struct]
    kept: dict[str, Any] = {}
    for key, value in pairs:
        field = spec.get(key)
        if field is None or type(value) is not field.kind or not field.each(value):
            return None
        kept[key] = value
    result: dict[str, Any] = {}
    for name, field in spec.items():
        if name not in kept:
            if field.required:
                return None
            result[name] = field.default
            continue
        stored = field.final(kept[name])
        if stored is None:
            return None
        result[name] = stored
    return result


@st.composite
def objects(draw: st.DrawFn, struct: type[msgspec.Struct]) -> Pairs:
    """Key/value pairs of a JSON object shaped like `struct`: its fields (a required one now
    and then missing, a key now and then twice), sometimes with keys it does not have."""
    spec = STRUCTS[struct]
    pairs: Pairs = []
    for name, field in spec.items():
        present = draw(st.integers(0, 9)) > 0 if field.required else draw(st.booleans())
        if present:
            pairs.append((name, draw(FIELD_VALUES[name])))
    if draw(st.integers(0, 3)) == 0:
        extra_keys = st.one_of(st.sampled_from(sorted(spec)), texts)
        extra_values = st.one_of(*(FIELD_VALUES[name] for name in spec), json_values)
        pairs += draw(st.lists(st.tuples(extra_keys, extra_values), min_size=1, max_size=3))
    return draw(st.permutations(pairs))


def render(pairs: Pairs, encoder: str) -> bytes:
    """A JSON object with these pairs in this order (so a key can come twice)."""

    def dump(value: Any) -> str:
        if encoder == "msgspec":
            try:
                return msgspec.json.encode(value).decode()
            except (TypeError, OverflowError, ValueError):
                pass  # an int beyond 64 bits: json writes it
        return json.dumps(value, ensure_ascii=encoder == "json-ascii")

    return ("{" + ",".join(f"{dump(key)}:{dump(value)}" for key, value in pairs) + "}").encode()


encoders = st.sampled_from(["json-ascii", "json-utf8", "msgspec"])


@st.composite
def request_bodies(draw: st.DrawFn, struct: type[msgspec.Struct]) -> tuple[bytes, Pairs | None]:
    """A request body and, when it is a JSON object whose pairs are known, those pairs."""
    shape = draw(st.integers(0, 9))
    if shape <= 5:
        pairs = draw(objects(struct))
        return render(pairs, draw(encoders)), pairs
    if shape <= 7:
        value = draw(json_values)
        encoded = render(list(value.items()), draw(encoders)) if isinstance(value, dict) else None
        if encoded is not None:
            return encoded, list(value.items())
        return json.dumps(value).encode(), None
    if shape == 8:
        return draw(st.binary(max_size=200)), None
    # A well-formed body with bytes spliced in: invalid UTF-8 inside strings, broken syntax.
    raw = render(draw(objects(struct)), draw(encoders))
    at = draw(st.integers(0, len(raw)))
    return raw[:at] + draw(st.binary(min_size=1, max_size=4)) + raw[at:], None


def attempt(function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """What `function` returns, or the InvalidInput or InvalidField it raises (the errors the
    service turns into a 400). Any other exception escapes, and fails the test."""
    try:
        return function(*args, **kwargs)
    except (InvalidInput, InvalidField) as error:
        return error


# -- cursors ---------------------------------------------------------------------------------

CODEC = CursorCodec(b"property-tests-key-0123456789abcdef")
OTHER_KEY = CursorCodec(b"another-key-entirely-0123456789abcdef")

# The service's listings are "users" and "posts"; any name works that does not contain the
# payload's separator ':'.
listings = st.one_of(
    st.sampled_from(["users", "posts"]),
    st.text(st.characters(exclude_categories=("Cs",), exclude_characters=":"), max_size=20),
)
ids = st.integers(0, MAX_ID)
B64URL = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


def segment_bytes(cursor: str) -> list[bytes]:
    """The bytes each '.'-separated segment of a cursor stands for, read as the codec reads
    them (base64url, padding optional)."""
    return [
        base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
        for segment in cursor.split(".")
    ]


@REPRODUCIBLE
@given(listing=listings, last_id=ids)
@example(listing="posts", last_id=MAX_ID)
@example(listing="users", last_id=0)
def test_a_cursor_decodes_to_the_id_it_was_made_for(listing: str, last_id: int) -> None:
    cursor = CODEC.encode(listing, last_id)
    assert CODEC.decode(listing, cursor) == last_id
    assert set(cursor) <= set(B64URL + "."), "cursors travel in query strings unescaped"
    if listing in ("users", "posts"):
        # Every cursor the service hands out fits its own `cursor` parameter.
        assert len(cursor) <= 200


@REPRODUCIBLE
@given(listing=listings, last_id=ids)
def test_a_cursor_is_tagged_with_hmac_sha256_of_its_payload(listing: str, last_id: int) -> None:
    """Cursors stay valid across releases: the tag is HMAC-SHA256 of the payload under the
    key, cut to 16 bytes, however the codec computes it."""
    payload, tag = segment_bytes(CODEC.encode(listing, last_id))
    key = b"property-tests-key-0123456789abcdef"
    assert tag == hmac.new(key, payload, hashlib.sha256).digest()[:16]


@REPRODUCIBLE
@given(
    listing=listings,
    cursor=st.one_of(
        texts,
        long_texts,
        st.from_regex(r"\A[A-Za-z0-9_=-]{0,60}\.[A-Za-z0-9_=-]{0,40}\Z"),
        st.builds("{}.{}".format, texts, texts),
    ),
)
@example(listing="users", cursor="")
@example(listing="users", cursor=".")
@example(listing="users", cursor="\x00.\x00")
@example(listing="users", cursor="dXNlcnM6MQ.")
def test_any_text_as_a_cursor_is_an_id_or_invalid_input(listing: str, cursor: str) -> None:
    value = attempt(CODEC.decode, listing, cursor)
    if isinstance(value, InvalidInput):
        assert [e.field for e in value.errors] == ["cursor"]
    else:
        # Only a cursor signed with the key gets here, but whatever comes back is an id.
        assert type(value) is int
        assert 0 <= value <= MAX_ID


@REPRODUCIBLE
@given(listing=listings, last_id=ids, data=st.data())
def test_a_tampered_cursor_is_invalid_unless_it_reads_as_the_same_bytes(
    listing: str, last_id: int, data: st.DataObject
) -> None:
    cursor = CODEC.encode(listing, last_id)
    characters_to_use = st.one_of(st.sampled_from(B64URL + ".=+/ "), characters)
    edit = data.draw(st.sampled_from(["replace", "truncate", "append", "insert", "delete"]))
    if edit == "truncate":
        tampered = cursor[: data.draw(st.integers(0, len(cursor) - 1))]
    elif edit == "append":
        tampered = cursor + data.draw(st.text(characters_to_use, min_size=1, max_size=8))
    else:
        at = data.draw(st.integers(0, len(cursor) - 1))
        if edit == "delete":
            tampered = cursor[:at] + cursor[at + 1 :]
        else:
            new = data.draw(characters_to_use)
            tampered = cursor[:at] + new + cursor[at + (edit == "replace") :]
    if tampered == cursor:
        return
    note(f"{edit}: {cursor!r} -> {tampered!r}")
    try:
        value = CODEC.decode(listing, tampered)
    except InvalidInput:
        event(f"{edit}: rejected")
        return
    # Accepted: then the edit changed only how the same bytes are spelled (the unused low
    # bits of a segment's last base64 character, or characters base64 decoding skips), so
    # payload and signature are the ones the service made.
    event(f"{edit}: same bytes, accepted")
    assert value == last_id
    assert segment_bytes(tampered) == segment_bytes(cursor)


def test_the_last_character_of_a_cursor_is_checked_down_to_the_bits_that_count() -> None:
    """The 16-byte tag is 22 base64 characters, 132 bits: the low 4 bits of the last
    character are no part of the tag. The 15 other characters with the same high 2 bits
    spell the same tag, so the codec may take them (as the same cursor) or refuse them;
    the 48 that change a bit of the tag must be refused."""
    cursor = CODEC.encode("users", 12345)
    last = B64URL.index(cursor[-1])
    same_tag = 0
    for index, character in enumerate(B64URL):
        if index == last:
            continue
        tampered = cursor[:-1] + character
        outcome = attempt(CODEC.decode, "users", tampered)
        if index >> 4 == last >> 4:
            same_tag += 1
            assert segment_bytes(tampered) == segment_bytes(cursor)
            assert outcome == 12345 or isinstance(outcome, InvalidInput)
        else:
            assert isinstance(outcome, InvalidInput), tampered
    assert same_tag == 15


@REPRODUCIBLE
@given(pair=st.lists(listings, min_size=2, max_size=2, unique=True), last_id=ids)
@example(pair=["users", "posts"], last_id=1)
@example(pair=["posts", "users"], last_id=1)
@example(pair=["users", ""], last_id=1)
def test_a_cursor_of_another_listing_is_invalid(pair: list[str], last_id: int) -> None:
    issued_for, used_on = pair
    with pytest.raises(InvalidInput):
        CODEC.decode(used_on, CODEC.encode(issued_for, last_id))


@REPRODUCIBLE
@given(listing=listings, last_id=ids)
def test_a_cursor_signed_with_another_key_is_invalid(listing: str, last_id: int) -> None:
    with pytest.raises(InvalidInput):
        CODEC.decode(listing, OTHER_KEY.encode(listing, last_id))


# -- text rules ------------------------------------------------------------------------------


@REPRODUCIBLE
@given(
    field=st.sampled_from(["name", "title", "body", "email"]),
    value=st.one_of(texts, st.builds(str.__add__, whitespace, texts), sized_text(0, 1, 2, 3)),
    bounds=st.lists(st.integers(0, 12), min_size=2, max_size=2).map(sorted),
    trim=st.booleans(),
)
def test_text_keeps_exactly_what_its_rule_allows(
    field: str, value: str, bounds: list[int], trim: bool
) -> None:
    min_length, max_length = bounds
    expected = stored_text(value, min_length=min_length, max_length=max_length, trim=trim)
    stored = attempt(TextRule(min_length, max_length, trim).check, field, value)
    if isinstance(stored, InvalidField):
        assert expected is None
        assert stored.error.field == field
        assert stored.error.message
    else:
        assert stored == expected


@REPRODUCIBLE
@given(value=emails())
@example(value="a@b")
@example(value="  Ada@Example.COM\n")
@example(value="a@" + "b" * 318)
@example(value="a@" + "b" * 319)
# 320 characters as sent, but lower() turns each U+0130 into two: 638 characters stored.
@example(value="a@" + "\u0130" * 318)
def test_email_stores_a_trimmed_lower_case_address_within_the_limits(value: str) -> None:
    expected = stored_email(value)
    stored = attempt(email, value)
    if isinstance(stored, InvalidField):
        assert expected is None, f"{value!r} is a valid email, stored as {expected!r}"
        assert stored.error.field == "email"
    else:
        assert stored == expected, f"{value!r} was stored as {stored!r} ({len(stored)} chars)"


# -- request bodies --------------------------------------------------------------------------


def assert_user_fields(email: Any, name: Any) -> None:
    """What the contract promises of a user's fields as stored (UNSET: not given)."""
    if email is not msgspec.UNSET:
        assert type(email) is str
        assert email == email.strip(WHITE_SPACE) == email.lower()
        assert 3 <= len(email) <= 320
        assert email.count("@") == 1
        local, _, domain = email.partition("@")
        assert local
        assert domain
        assert not any(c in WHITE_SPACE for c in email)
        assert "\x00" not in email
    if name is not msgspec.UNSET:
        assert type(name) is str
        assert name == name.strip(WHITE_SPACE)
        assert 1 <= len(name) <= 100
        assert "\x00" not in name


def assert_post_fields(post: PostCreate | PostPatch) -> None:
    if isinstance(post, PostCreate):
        assert type(post.author_id) is int
        assert 1 <= post.author_id <= MAX_ID
    if post.title is not msgspec.UNSET:
        assert post.title == post.title.strip(WHITE_SPACE)
        assert 1 <= len(post.title) <= 200
        assert "\x00" not in post.title
    if post.body is not msgspec.UNSET:
        assert len(post.body) <= 100_000
        assert "\x00" not in post.body
    if post.published is not msgspec.UNSET:
        assert type(post.published) is bool


def check_decoding(struct: type[msgspec.Struct], body: bytes, pairs: Pairs | None) -> None:
    """`decode` returns the struct the contract expects, or raises InvalidInput naming
    fields, and nothing else."""
    note(f"body: {body[:300]!r}{'...' if len(body) > 300 else ''}")
    expected = None if pairs is None else expected_fields(struct, pairs)
    decoded = attempt(decode, body, struct)
    if isinstance(decoded, InvalidInput):
        assert decoded.errors
        known = {*STRUCTS[struct], "body", *(key for key, _ in pairs or [])}
        for field_error in decoded.errors:
            assert isinstance(field_error.field, str)
            assert field_error.field
            assert field_error.message
            if pairs is not None:
                assert field_error.field in known, field_error
        assert expected is None, f"rejected {decoded.errors}, but the contract expects {expected}"
        event(f"{struct.__name__}: invalid")
        return
    assert isinstance(decoded, struct)
    if isinstance(decoded, UserCreate | UserPatch):
        assert_user_fields(decoded.email, decoded.name)
    else:
        assert_post_fields(decoded)
    if pairs is not None:
        assert expected is not None, f"accepted {decoded}, which the contract rejects"
        assert msgspec.structs.asdict(decoded) == expected
    event(f"{struct.__name__}: decoded")


INVALID_UTF8_IN_A_STRING = b'{"email": "a\xed\xa0\x80@example.com", "name": "x"}'


@REPRODUCIBLE
@given(body=request_bodies(UserCreate))
@example(body=(INVALID_UTF8_IN_A_STRING, None))
@example(body=(b'{"email": "a@' + "\u0130".encode() * 318 + b'", "name": "x"}', None))
@example(body=(b'{"email": "bad", "email": "a@b", "name": "x"}', None))
@example(body=(b'{"email": 1, "email": "a@b", "name": "x"}', None))
def test_decoding_user_create(body: tuple[bytes, Pairs | None]) -> None:
    check_decoding(UserCreate, *body)


@REPRODUCIBLE
@given(body=request_bodies(UserPatch))
@example(body=(b"{}", []))
@example(body=(b'{"email": null}', [("email", None)]))
def test_decoding_user_patch(body: tuple[bytes, Pairs | None]) -> None:
    check_decoding(UserPatch, *body)


@REPRODUCIBLE
@given(body=request_bodies(PostCreate))
@example(body=(b'{"author_id": true, "title": "t", "body": ""}', None))
@example(body=(b'{"author_id": 9223372036854775808, "title": "t", "body": ""}', None))
@example(body=(b'{"author_id": 1, "title": "t", "body": "\xff"}', None))
def test_decoding_post_create(body: tuple[bytes, Pairs | None]) -> None:
    check_decoding(PostCreate, *body)


@REPRODUCIBLE
@given(body=request_bodies(PostPatch))
@example(body=(b'{"author_id": 1}', [("author_id", 1)]))
@example(body=(b'{"published": "true"}', [("published", "true")]))
def test_decoding_post_patch(body: tuple[bytes, Pairs | None]) -> None:
    check_decoding(PostPatch, *body)


# -- conditional requests ------------------------------------------------------------------

# Header values arrive as latin-1 text: any character but controls. Tags like the service's
# own ("7"), weak ones, ones with leading zeros or other digits, and anything else.
header_characters = st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f")
entity_tags = st.one_of(
    st.builds(
        '{}"{}"'.format,
        st.sampled_from(["", "", "W/"]),
        st.one_of(
            st.integers(0, 2**32).map(str),
            st.from_regex(r"0[0-9]{1,3}", fullmatch=True),
            st.text(header_characters, max_size=4),
        ),
    ),
    st.text(header_characters, max_size=6),
    st.just("*"),
)
conditions = st.builds(
    lambda tags, separator: separator.join(tags),
    st.lists(entity_tags, max_size=4),
    st.sampled_from([",", ", ", " , "]),
)


def strong_versions(header: str) -> list[int] | None:
    """RFC 9110: `*` matches any version; otherwise a version matches only a tag equal to
    its ETag character for character: `"7"` for version 7, not `"07"` nor `W/"7"`."""
    if header.strip() == "*":
        return None
    tags = (tag.strip() for tag in header.split(","))
    return [
        int(tag[1:-1])
        for tag in tags
        if re.fullmatch(r'"(0|[1-9][0-9]*)"', tag) and int(tag[1:-1]) < 2**31
    ]


@REPRODUCIBLE
@given(header=conditions, version=st.integers(1, 2**31 - 1))
@example(header='"\u00b2"', version=2)  # SUPERSCRIPT TWO: str.isdigit() says yes, int() no
@example(header='"01"', version=1)
@example(header='W/"1"', version=1)
def test_conditional_headers_match_etags_as_rfc_9110_says(header: str, version: int) -> None:
    expected = strong_versions(header)
    versions = if_match_versions(header)
    assert (versions is None) == (expected is None), versions
    if versions is not None and expected is not None:
        # Versions start at 1: whether a tag "0" is kept or dropped changes nothing.
        for candidate in {version, *versions, *expected} - {0}:
            assert (candidate in versions) == (candidate in expected), candidate
    tags = [tag.strip() for tag in header.split(",")]
    etag = f'"{version}"'
    weak_match = header.strip() == "*" or any(tag.removeprefix("W/") == etag for tag in tags)
    assert none_match(header, etag) is not weak_match


@st.composite
def renames(draw: st.DrawFn) -> tuple[str, bytes]:
    header = draw(st.one_of(conditions, st.sampled_from(["*", '"1"', '"2", "1"', 'W/"1"'])))
    name = draw(st.one_of(names, st.sampled_from(["Renamed", "  Ada  "])))
    return header, render([("name", name)], "json-utf8")


@settings(REPRODUCIBLE, max_examples=40)
@given(request=renames())
@example(request=('"\u00b2"', b'{"name": "x"}'))
@example(request=('"01"', b'{"name": "x"}'))
async def test_patch_with_any_if_match_answers_200_or_412(
    client: AsyncTestClient,  # type: ignore[type-arg]
    db: asyncpg.Connection,
    request: tuple[str, bytes],
) -> None:
    """A user at version 1, patched under any `If-Match`: 200 only when the header allows
    version 1, otherwise 412 and nothing changed (or 400 for a bad body); never a 500."""
    if_match, body = request
    created = await client.post("/users", json={"email": unique_email(), "name": "Before"})
    assert created.status_code == 201, created.text
    user_id = created.json()["id"]
    try:
        response = await client.patch(
            f"/users/{user_id}",
            content=body,
            headers={"If-Match": if_match.encode("latin-1"), "Content-Type": "application/json"},
        )
        note(f"If-Match: {if_match!r} -> {response.status_code} {response.text[:200]}")
        event(f"PATCH /users/{{id}}: {response.status_code}")
        assert response.status_code in (200, 400, 412), response.text
        allowed = strong_versions(if_match)
        if response.status_code != 400:
            assert response.status_code == (200 if allowed is None or 1 in allowed else 412)
        if response.status_code != 200:
            row = await db.fetchrow("SELECT name, version FROM users WHERE id = $1", user_id)
            assert row is not None
            assert (row["name"], row["version"]) == ("Before", 1)
    finally:
        await db.execute("DELETE FROM users WHERE id = $1", user_id)


# -- POST /users through the app -------------------------------------------------------------


def assert_timestamp(value: object) -> None:
    assert isinstance(value, str)
    assert value.endswith("Z"), value
    assert datetime.fromisoformat(value).utcoffset() is not None


@st.composite
def everyday_users(draw: st.DrawFn) -> tuple[bytes, Pairs]:
    """A body most likely valid, so that creation is exercised as much as rejection."""
    pairs = [("email", draw(emails_everyday)), ("name", draw(names))]
    return render(draw(st.permutations(pairs)), draw(encoders)), pairs


@settings(REPRODUCIBLE, max_examples=60)
@given(body=st.one_of(request_bodies(UserCreate), everyday_users()))
@example(body=(INVALID_UTF8_IN_A_STRING, None))
@example(body=(b'{"email": "a@' + "\u0130".encode() * 318 + b'", "name": "x"}', None))
async def test_post_users_answers_by_the_contract(
    client: AsyncTestClient,  # type: ignore[type-arg]
    db: asyncpg.Connection,
    body: tuple[bytes, Pairs | None],
) -> None:
    """Never a 500; a 201 only for a body the contract accepts, with the user as stored; a
    4xx writes nothing, and a 400 names the bad fields."""
    raw, pairs = body
    note(f"body: {raw[:300]!r}")
    expected = None if pairs is None else expected_fields(UserCreate, pairs)
    users_before = await db.fetchval("SELECT count(*) FROM users")
    taken = expected is not None and bool(
        await db.fetchval("SELECT count(*) FROM users WHERE lower(email) = $1", expected["email"])
    )

    response = await client.post(
        "/users", content=raw, headers={"Content-Type": "application/json"}
    )
    status = response.status_code
    note(f"answer: {status} {response.text[:300]}")
    event(f"POST /users: {status}")
    assert status in (201, 400, 409, 413), response.text

    if status == 201:
        user = response.json()
        try:
            assert set(user) == {"id", "email", "name", "created_at", "updated_at"}
            assert type(user["id"]) is int
            assert 1 <= user["id"] <= MAX_ID
            assert_user_fields(user["email"], user["name"])
            assert_timestamp(user["created_at"])
            assert_timestamp(user["updated_at"])
            assert response.headers["location"] == f"/users/{user['id']}"
            assert response.headers["etag"]
            if pairs is not None:
                assert expected is not None, "created a user the contract rejects"
                assert not taken
                assert {"email": user["email"], "name": user["name"]} == expected
            row = await db.fetchrow("SELECT email, name FROM users WHERE id = $1", user["id"])
            assert row is not None
            assert dict(row) == {"email": user["email"], "name": user["name"]}
        finally:
            # Leave no row behind: other tests may create any email.
            await db.execute("DELETE FROM users WHERE id = $1", user["id"])
        return

    assert response.headers["content-type"].startswith("application/problem+json")
    problem = response.json()
    assert problem["status"] == status
    if status in (400, 409):
        # API.md: a 400 names each bad field in `errors` (and the 409 names `email`).
        assert problem.get("errors"), problem
        assert all(isinstance(e["field"], str) and e["field"] for e in problem["errors"])
    assert await db.fetchval("SELECT count(*) FROM users") == users_before
    if pairs is not None:
        if status == 409:
            assert expected is not None
            assert taken
        else:
            assert expected is None, f"{status} for a body the contract accepts: {expected}"
