"""The text rules and their JSON Schema agree exactly: a string matches the `pattern` (and
lengths) the OpenAPI document gives a field when, and only when, the service accepts it.
The one exception is the rule no schema can state (an email that lower-casing makes longer
than 320 characters), and it is checked to be the only one.

Patterns are matched here with Python's `re`; they are written with nothing that ECMA-262
(the dialect of JSON Schema) or Rust's `regex` (schemathesis's validator) would read
otherwise: no shorthand classes, no `.`, only `\\uXXXX` escapes, classes, groups and counts.
"""

from __future__ import annotations

import re
import sys
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from service.http.validation import (
    EMAIL_MAX_LENGTH,
    EMAIL_SCHEMA,
    WHITESPACE,
    InvalidField,
    TextRule,
    email,
)
from service.posts.models import BODY, TITLE
from service.users.models import NAME
from tests.helpers import REPRODUCIBLE as PROPERTY_TESTS

REPRODUCIBLE = settings(PROPERTY_TESTS, max_examples=400)

# Where Python's str.strip(), ECMA-262's \s and Unicode's White_Space disagree, and what is
# near the rules' edges: NUL, '@', a character lower() makes two, one outside the BMP.
TRICKY = "\x1c\x1d\x1e\x1f\x85\ufeff\u200b\x00@\u0130\U0001f600a"
characters = st.one_of(
    st.sampled_from(WHITESPACE),
    st.sampled_from(TRICKY),
    st.characters(exclude_categories=("Cs",)),
)


def around(length: int) -> st.SearchStrategy[str]:
    """Text of about `length` characters between optional runs of whitespace."""
    padding = st.text(st.sampled_from(WHITESPACE + "\x1c\ufeff"), max_size=3)
    core = st.builds(
        lambda head, fill, size: (head + fill * size)[: max(size, 0)],
        st.text(characters, max_size=4),
        characters,
        st.integers(length - 2, length + 2),
    )
    return st.builds(lambda a, b, c: a + b + c, padding, core, padding)


def matches(schema: dict[str, Any], value: str) -> bool:
    """Whether `value` is valid for a JSON Schema string of `pattern`/`minLength`/`maxLength`
    (lengths count characters, as JSON Schema does: code points)."""
    return (
        re.fullmatch(schema["pattern"], value) is not None
        and len(value) >= schema.get("minLength", 0)
        and len(value) <= schema.get("maxLength", sys.maxsize)
    )


def accepts(check: Any, *args: Any) -> bool:
    try:
        check(*args)
    except InvalidField:
        return False
    return True


def test_trimming_removes_exactly_unicodes_white_space():
    # Python's str.isspace() is White_Space plus the information separators U+001C..U+001F.
    white_space = {chr(code) for code in range(sys.maxunicode + 1) if chr(code).isspace()} - set(
        "\x1c\x1d\x1e\x1f"
    )
    assert set(WHITESPACE) == white_space
    assert len(WHITESPACE) == len(white_space) == 25
    rule = TextRule(min_length=1, max_length=10, trim=True)
    assert rule.check("f", "\x85 a\u3000") == "a"  # NEXT LINE is trimmed (not by ECMA's \s)
    assert rule.check("f", "\ufeffa\x1c") == "\ufeffa\x1c"  # not White_Space: kept


@pytest.mark.parametrize(
    "pattern",
    [NAME.json_schema()["pattern"], BODY.json_schema()["pattern"], EMAIL_SCHEMA["pattern"]],
)
def test_patterns_use_nothing_that_regex_dialects_read_differently(pattern):
    assert pattern.startswith("^")
    assert pattern.endswith("$")
    assert not re.search(r"\\[sSdDwWbBpPxX]", pattern)  # no shorthand class, no \x escape
    assert "." not in pattern
    assert not re.search(r"[^\x20-\x7e]", pattern)  # every other character as \uXXXX


@REPRODUCIBLE
@given(value=st.one_of(around(1), around(100), around(200), st.text(characters, max_size=8)))
@example(value=" " * 3)
@example(value="\x1c")
@example(value="\ufeff")
@example(value="\x85a\x85")
@example(value="a" * 100 + " \n")
@example(value="\U0001f600" * 100)
@example(value="a\x00")
def test_name_and_title_match_their_pattern_exactly_when_accepted(value):
    for rule in (NAME, TITLE):
        assert matches(rule.json_schema(), value) == accepts(rule.check, "field", value), rule


@REPRODUCIBLE
@given(value=st.one_of(around(100_000), st.text(characters, max_size=8)))
@example(value="a" * 100_000)
@example(value="a" * 100_001)
@example(value="\x00")
def test_body_matches_its_schema_exactly_when_accepted(value):
    assert matches(BODY.json_schema(), value) == accepts(BODY.check, "body", value)


@REPRODUCIBLE
@given(
    value=st.one_of(around(0), around(1), around(3), around(12), st.text(characters, max_size=8)),
    bounds=st.lists(st.integers(0, 12), min_size=2, max_size=2).map(sorted),
    trim=st.booleans(),
)
def test_any_rule_matches_its_schema_exactly_when_accepted(value, bounds, trim):
    rule = TextRule(bounds[0], bounds[1], trim)
    assert matches(rule.json_schema(), value) == accepts(rule.check, "field", value), rule


@st.composite
def emails(draw: st.DrawFn) -> str:
    """Email-shaped text near the limits, with whitespace around and inside, and junk."""
    local = draw(
        st.one_of(st.text(characters, max_size=6), around(draw(st.sampled_from([159, 317]))))
    )
    domain = draw(st.text(characters, max_size=6))
    at = draw(st.sampled_from(["@", "@", "", "@@"]))
    padding = draw(st.text(st.sampled_from(WHITESPACE), max_size=2))
    return padding + local + at + domain + padding


@REPRODUCIBLE
@given(value=emails())
@example(value="a@b")
@example(value=" a@b\x85")
@example(value="a@b\x1c")
@example(value="a\ufeff@b")
@example(value="a@" + "b" * 318)
@example(value=" a@" + "b" * 318)  # 321 as sent
@example(value="a@" + "\u0130" * 318)  # 320 as sent, 638 once lower-cased
def test_an_email_matches_its_schema_exactly_when_accepted_but_for_lower_casing(value):
    valid_by_schema = matches(EMAIL_SCHEMA, value)
    accepted = accepts(email, value)
    if valid_by_schema and not accepted:
        # The rule docs/api.md lists as one no schema can state, and only that one.
        assert len(value.strip(WHITESPACE).lower()) > EMAIL_MAX_LENGTH
        with pytest.raises(InvalidField, match="once lower-cased"):
            email(value)
    else:
        assert valid_by_schema == accepted
