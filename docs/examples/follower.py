"""A follower of the posts service's change feed: a mirror of every user and post, kept by
listing once and then following `GET /events` by long poll. Standard library only.

    python docs/examples/follower.py http://127.0.0.1:8000 [token]
"""

from __future__ import annotations

import json
import sys
import urllib.error
import urllib.parse
import urllib.request
from email.message import Message
from typing import Any

Mirror = dict[tuple[str, int], tuple[int, dict[str, Any]]]
"""(kind, id) -> (version, resource), kind being "user" or "post"."""


class Gone(Exception):
    """The cursor is older than the events the service keeps (410): list again."""


def get(base: str, path: str, token: str | None, **query: Any) -> tuple[Any, Message]:
    """The JSON answer and its headers (names in any case)."""
    if not base.startswith(("http://", "https://")):
        raise ValueError(f"not an HTTP URL: {base}")
    request = urllib.request.Request(f"{base}{path}?{urllib.parse.urlencode(query)}")  # noqa: S310
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=40) as answer:  # noqa: S310
            return json.load(answer), answer.headers
    except urllib.error.HTTPError as error:
        if error.code == 410:
            raise Gone from error
        raise


def list_everything(base: str, token: str | None = None) -> tuple[Mirror, str]:
    """Every user and post, and the feed cursor to follow from: the Events-Cursor of the
    first page of the walk, taken before anything the walk read."""
    mirror: Mirror = {}
    start = None
    for kind, path in (("user", "/users"), ("post", "/posts")):
        query: dict[str, Any] = {"limit": 200}
        while True:
            page, headers = get(base, path, token, **query)
            start = start or headers["Events-Cursor"]
            for item in page["items"]:
                # A resource's ETag is its version; the listing has no versions, so a
                # listed resource counts as version 0: any event about it is newer.
                mirror.setdefault((kind, item["id"]), (0, item))
            if page["next_cursor"] is None:
                break
            query["cursor"] = page["next_cursor"]
    assert start is not None
    return mirror, start


def apply(mirror: Mirror, event: dict[str, Any]) -> None:
    """Apply one event by version: an event older than what the mirror holds (seen again
    after a list, or a retry) changes nothing."""
    kind = event["type"].split(".")[0]
    key = (kind, event["resource_id"])
    known = mirror.get(key)
    if known is not None and known[0] >= event["version"] and known[0] != 0:
        return
    if event["type"].endswith(".deleted"):
        mirror.pop(key, None)
    else:
        mirror[key] = (event["version"], event["data"])


def follow(base: str, token: str | None = None, *, rounds: int | None = None) -> Mirror:
    """List, then follow for `rounds` long polls (forever when None); list again on 410."""
    mirror, cursor = list_everything(base, token)
    done = 0
    while rounds is None or done < rounds:
        try:
            page, _ = get(base, "/events", token, after=cursor, limit=1000, wait=30)
        except Gone:
            mirror, cursor = list_everything(base, token)
            continue
        for event in page["items"]:
            apply(mirror, event)
        cursor = page["next_cursor"]
        done += 1
    return mirror


if __name__ == "__main__":
    follow(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else None)
