"""The named exceptions to schemathesis's checks in `bash fuzz/run.sh`; nothing else.

Every check is on. A failure is dropped here only when the service's answer shows it is
exactly one of these cases, by status, field and message (never by status alone), so any
other refusal of schema-valid data still fails the run. Schemathesis counts what is dropped
("dropped by `filter_failure`") in its summary, and run.sh prints the tally by exception.

Rules of the contract that a JSON Schema cannot state (docs/api.md, "What the schema cannot
say"), so that schemathesis's positive data meets them and a correct service refuses it:

- a cursor the service did not issue: 400 `cursor` (cursors are signed), and likewise a
  feed cursor of `GET /events`: 400 `after`;
- a `Consistency-Token` the service did not issue: 400 `Consistency-Token` (opaque, like a
  cursor: the document bounds its length, not its format);
- an `author_id` that names no existing user: 422 `author_id` (and GET /users/{id} is 404);
- an `Idempotency-Key` already used with another body: 422 `Idempotency-Key`;
- an `If-Match` that does not match the current `ETag`: 412 (checked against a GET of the
  resource: a 412 for its current tag, or for a missing resource, stays a failure);
- an email whose lower-cased form is over 320 characters ('\u0130' becomes two): 400 `email`;
- a body over 1 MiB (JSON Schema counts characters, not bytes): 413;
- an integer written with a fraction or an exponent (`1.0`, `1e0`): JSON Schema's `integer`
  takes those, the contract's strict types do not: 400 naming the field.

And one bound on the requests themselves, not on the checks: `GET /events` holds its answer
up to `wait` seconds (0 to 30) when nothing is new, which along the document's links (the
feed's `next_cursor`, a list's `Events-Cursor`) is nearly always: every such case would sit
in a long poll past the 10 s request timeout, and one pass in dozens of them. `before_call`
sends `wait=0` instead of a valid positive `wait`; invalid ones are sent as generated. The
hold itself is the suite's to test (tests/test_feed.py, the long polls).

A framework bug:

- Litestar 2.x answers `OPTIONS` with an `Allow` header that lists only one route
  handler's methods of a path that has several (litestar-org/litestar#4169, fixed in
  Litestar 3). API.md says nothing about OPTIONS; the 405s, which carry the full list,
  are checked by `unsupported_method`.
"""

from __future__ import annotations

import itertools
import json
import os
import re
from typing import Any
from urllib.parse import urljoin

import requests
import schemathesis
from schemathesis.openapi.checks import AllowHeaderMismatch, RejectedPositiveData

MAX_BODY_BYTES = 1024 * 1024

# What the service accepts as an Idempotency-Key (service/idempotency.py).
_KEY = re.compile(r"[!-~](?:[ -~]{0,253}[!-~])?")
_key_numbers = itertools.count()


@schemathesis.hook
def map_headers(context: Any, headers: dict[str, Any] | None) -> dict[str, Any] | None:
    """Make every valid generated Idempotency-Key unique to its case.

    Hypothesis draws short keys ("0", "A") over and over, so independent cases share one:
    the second is answered the first one's kept 201, as idempotency requires, naming a
    resource the run may have deleted since; schemathesis then reports that resource as
    "created but not found" (ST302). Replays are the suite's to test
    (tests/test_idempotency.py); here each case's key stays valid and becomes its own.
    """
    key = (headers or {}).get("Idempotency-Key")
    if headers is not None and isinstance(key, str) and _KEY.fullmatch(key) and len(key) < 240:
        headers["Idempotency-Key"] = f"{key}~{next(_key_numbers)}"
    return headers


_WAIT_SECONDS = re.compile(r"[0-9]+")


def _holds(wait: Any) -> bool:
    """Whether the service takes `wait` as a long poll of 1 to 30 s."""
    if isinstance(wait, bool):
        return False
    if isinstance(wait, int):
        return 1 <= wait <= 30
    return isinstance(wait, str) and bool(_WAIT_SECONDS.fullmatch(wait)) and 1 <= int(wait) <= 30


@schemathesis.hook
def before_call(context: Any, case: Any, kwargs: dict[str, Any]) -> None:
    """Send `wait=0` where `GET /events` would hold a long poll (see the module's note)."""
    query = case.query
    if case.operation.path == "/events" and isinstance(query, dict) and _holds(query.get("wait")):
        query["wait"] = 0 if isinstance(query["wait"], int) else "0"


def _problem(response: Any) -> dict[str, Any]:
    try:
        body = json.loads(response.content)
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _names_only(problem: dict[str, Any], field: str, message: str) -> bool:
    return problem.get("errors") == [{"field": field, "message": message}]


def _integral_float_fields(case: Any) -> set[str]:
    body = case.body if isinstance(case.body, dict) else {}
    return {
        field for field, value in body.items() if isinstance(value, float) and value.is_integer()
    }


def _get(response: Any, path: str | None = None) -> requests.Response:
    """GET the request's own URL (or `path` on the same service) with its token."""
    request = response.request
    url = request.url if path is None else urljoin(request.url, path)
    token = request.headers.get("Authorization")
    return requests.get(url, headers={"Authorization": token} if token else {}, timeout=10)


def _if_match_is_stale(response: Any) -> bool:
    """The `If-Match` sent names no tag the resource has now (which the service must
    answer with 412); a 412 for a matching tag, or for a missing resource, stays a failure."""
    sent = response.request.headers.get("If-Match")
    if sent is None or sent.strip() == "*":
        return False
    current = _get(response)
    tags = {tag.strip() for tag in sent.split(",")}
    return current.status_code == 200 and current.headers.get("ETag") not in tags


def _names_no_user(case: Any, response: Any) -> bool:
    author = case.body.get("author_id") if isinstance(case.body, dict) else None
    return isinstance(author, int) and _get(response, f"/users/{author}").status_code == 404


def _rule_no_schema_states(case: Any, response: Any) -> str | None:
    """Which rule of the contract a refusal of schema-valid data is, if it is one."""
    status, problem = response.status_code, _problem(response)
    if status == 400:
        if _names_only(problem, "cursor", "is not a cursor this listing issued"):
            return "a cursor the service issued"
        if _names_only(
            problem, "after", "is not a feed cursor this service issued for this database"
        ):
            return "a feed cursor the service issued"
        if _names_only(problem, "Consistency-Token", "is not a token this service issued"):
            return "a Consistency-Token the service issued"
        if _names_only(problem, "email", "must be at most 320 characters once lower-cased"):
            return "an email within 320 characters once lower-cased"
        if any(
            _names_only(problem, field, "Expected `int`, got `float`")
            for field in _integral_float_fields(case)
        ):
            return "integers without a fraction"
    if status == 422:
        if _names_only(problem, "author_id", "names no user") and _names_no_user(case, response):
            return "an existing author"
        if _names_only(problem, "Idempotency-Key", "was used with another request body"):
            return "an unused Idempotency-Key"
    if status == 412 and _if_match_is_stale(response):
        return "a matching If-Match"
    if status == 413 and len(response.request.body or b"") > MAX_BODY_BYTES:
        return "a body within 1 MiB"
    return None


def _dropped(exception: str, case: Any) -> bool:
    """Note the exception in $FUZZ_DROPPED (run.sh prints the tally), and drop the failure."""
    if path := os.environ.get("FUZZ_DROPPED"):
        with open(path, "a", encoding="utf-8") as tally:
            tally.write(f"{exception}: {case.operation.label}\n")
    return False


@schemathesis.hook
def filter_failure(context: Any, failure: Any, case: Any, response: Any) -> bool:
    """Keep every failure but the named exceptions above."""
    if isinstance(failure, RejectedPositiveData):
        rule = _rule_no_schema_states(case, response)
        return True if rule is None else _dropped(rule, case)
    if isinstance(failure, AllowHeaderMismatch) and response.request.method == "OPTIONS":
        return _dropped("Litestar's OPTIONS Allow (#4169)", case)
    return True
