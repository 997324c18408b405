"""Histories of writes made through faults, and the checker that proves what they must keep.

Jepsen's method, small: every write a client makes is an `Op` recorded with its
invocation, completion and outcome, and once the run is over the history is checked
against the state the database ends in (and, when a feed follower ran, against the feed).

Outcomes:
- `ok`: acknowledged (200, 201, 204): it happened, and must stay visible.
- `fail`: definitely not done: a 4xx (412 version mismatch, 404 gone, 409, 422).
- `unknown`: it may or may not have happened: a timeout, a lost connection, and a 503.
  API.md promises a 503 with `Retry-After`, not that nothing was written: a COMMIT whose
  connection dies, or whose wait for the synchronous standby is cut off, may have
  committed, and the service cannot tell. The checker therefore never counts on a 503
  having written nothing (the choice the issue left open; a stricter reading would flag
  correct behaviour as a violation).

Every write carries a title of its own (`u-<op id>`, `c-<op id>`), so the state names the
write that made it. Each post's `version` (its ETag) goes up by one per change.

What `check` proves, per post of the run:
- no acknowledged write lost: an acknowledged create is there (unless a delete that may have
  happened took it), an acknowledged update's version is at most the post's final one, an
  acknowledged delete's post is gone;
- the versions form one line: no two acknowledged writes on the same `If-Match` (a fork),
  every acknowledged update made exactly `If-Match + 1` (nothing skipped), and every version
  between the first and the final one was made by a write that may have happened;
- the final title was written by a write that may have happened, never by one that failed;
- every create (one Idempotency-Key, retried after ambiguous answers) made at most one row,
  exactly one when acknowledged and not deleted since, none when it definitely failed.
"""

from __future__ import annotations

import itertools
import statistics
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Literal, NamedTuple

Kind = Literal["create", "update", "delete"]
Outcome = Literal["ok", "fail", "unknown"]
MAY_HAVE_HAPPENED: frozenset[str] = frozenset({"ok", "unknown"})


@dataclass
class Op:
    """One write: what was asked (`kind` on `post` with `if_match`, or a create under
    `key`), when, and how it ended. `post` of a create is the id its answer named."""

    id: int
    client: int
    kind: Kind
    invoked: float
    post: int | None = None
    if_match: int | None = None
    key: str | None = None
    completed: float | None = None
    outcome: Outcome | None = None
    status: int | None = None  # the last HTTP status, None for a timeout or lost connection
    version: int | None = None  # the version an acknowledged create or update reported
    attempts: int = 1
    detail: str = ""

    @property
    def title(self) -> str:
        """The title this op writes: it names the op in the database's state."""
        return f"{self.kind[0]}-{self.id}"


class Row(NamedTuple):
    """A post as the database holds it at the end."""

    version: int
    title: str


@dataclass
class History:
    """The ops of one run, recorded by concurrent clients (one event loop: no locks)."""

    ops: list[Op] = field(default_factory=list)
    # Post id -> its version when the run began (posts made before the load).
    initial: dict[int, int] = field(default_factory=dict)
    marks: dict[str, float] = field(default_factory=dict)  # "fault" -> when it was made
    _ids: Iterator[int] = field(default_factory=lambda: itertools.count(1))

    def invoke(self, client: int, kind: Kind, **what: object) -> Op:
        op = Op(next(self._ids), client, kind, time.monotonic(), **what)  # type: ignore[arg-type]
        self.ops.append(op)
        return op

    @staticmethod
    def complete(
        op: Op,
        outcome: Outcome,
        status: int | None = None,
        version: int | None = None,
        detail: str = "",
    ) -> None:
        op.completed = time.monotonic()
        op.outcome = outcome
        op.status = status
        op.version = version
        op.detail = detail

    def mark(self, name: str) -> None:
        self.marks[name] = time.monotonic()


@dataclass
class Verdict:
    problems: list[str]
    outcomes: Counter[str]
    statuses: Counter[str]

    @property
    def valid(self) -> bool:
        return not self.problems

    def report(self) -> str:
        head = "valid" if self.valid else f"INVALID: {len(self.problems)} problem(s)"
        lines = [
            f"history {head}; outcomes {dict(self.outcomes)}; statuses {dict(self.statuses)}",
            *(f"  - {problem}" for problem in self.problems[:50]),
        ]
        if len(self.problems) > 50:
            lines.append(f"  ... and {len(self.problems) - 50} more")
        return "\n".join(lines)


def check(history: History, final: dict[int, Row], titles: Counter[str]) -> Verdict:
    """Check `history` against the `final` posts (id -> row) of the run's author, and the
    count of rows under each title among them (`titles`)."""
    ops = [op for op in history.ops if op.outcome is not None]
    problems: list[str] = []
    by_title = {op.title: op for op in ops}
    may_delete: set[int] = {
        op.post
        for op in ops
        if op.kind == "delete" and op.outcome in MAY_HAVE_HAPPENED and op.post is not None
    }
    updates: dict[int, list[Op]] = defaultdict(list)
    for op in ops:
        if op.kind == "update" and op.post is not None:
            updates[op.post].append(op)

    for op in ops:
        if op.outcome != "ok":
            continue
        if op.kind == "create":
            if op.post not in final and op.post not in may_delete:
                problems.append(f"lost write: create {op.id} (post {op.post}) is not there")
        elif op.kind == "update":
            assert op.post is not None
            assert op.version is not None
            assert op.if_match is not None
            if op.version != op.if_match + 1:
                problems.append(
                    f"skipped version: update {op.id} of post {op.post} on If-Match "
                    f"{op.if_match} made version {op.version}"
                )
            row = final.get(op.post)
            if row is None and op.post not in may_delete:
                problems.append(f"lost write: post {op.post} of update {op.id} is gone")
            elif row is not None and row.version < op.version:
                problems.append(
                    f"lost write: update {op.id} made version {op.version} of post "
                    f"{op.post}, which ended at version {row.version}"
                )
        elif op.post in final:
            problems.append(f"lost write: delete {op.id} of post {op.post}, which is there")

    # Forks: two acknowledged writes on the same version of one post.
    on_version: dict[tuple[int, int], list[Op]] = defaultdict(list)
    for op in ops:
        if op.kind != "create" and op.outcome == "ok" and op.post is not None:
            on_version[(op.post, op.if_match or 0)].append(op)
    for (post, version), writers in sorted(on_version.items()):
        if len(writers) > 1:
            names = ", ".join(f"{op.kind} {op.id}" for op in writers)
            problems.append(f"fork: {names} all acknowledged on If-Match {version} of post {post}")

    # The line of versions: each one made by a write that may have happened.
    created = {op.post: op for op in ops if op.kind == "create" and op.outcome == "ok"}
    for post, row in sorted(final.items()):
        start = history.initial.get(post, 1 if post in created else None)
        if start is None:
            continue  # a post of an ambiguous create: its first version is unknown
        possible = {
            op.if_match + 1
            for op in updates.get(post, [])
            if op.outcome == "unknown" and op.if_match is not None
        } | {op.version for op in updates.get(post, []) if op.outcome == "ok" and op.version}
        if row.version < start:
            problems.append(f"post {post} went back from version {start} to {row.version}")
        for version in range(start + 1, row.version + 1):
            if version not in possible:
                problems.append(
                    f"skipped version: version {version} of post {post} was made by no "
                    f"write that may have happened"
                )
        writer = by_title.get(row.title)
        if writer is not None and writer.outcome == "fail":
            problems.append(
                f"failed write visible: post {post} holds the title of {writer.kind} "
                f"{writer.id}, which answered {writer.status}"
            )

    # Creates under one Idempotency-Key: one row at most, one when acknowledged.
    for op in ops:
        if op.kind != "create":
            continue
        rows = titles.get(op.title, 0)
        if rows > 1:
            problems.append(f"duplicate create: {op.key} ({op.attempts} attempts) made {rows} rows")
        elif op.outcome == "fail" and rows:
            problems.append(
                f"failed write visible: create {op.id} answered {op.status} but its row is there"
            )
        elif op.outcome == "ok" and not rows and op.post not in may_delete:
            problems.append(f"lost write: create {op.id} ({op.key}) made no row")

    return Verdict(
        problems,
        Counter(f"{op.kind} {op.outcome}" for op in ops),
        Counter(str(op.status) for op in ops),
    )


def check_feed(history: History, events: list[dict[str, object]]) -> list[str]:
    """What the feed (API.md, "The change feed") must hold of the run, from a follower's
    `events` of the run's posts in feed order: every acknowledged create, update and
    delete exactly once; each post's events in version order; nothing of a write that
    definitely failed. The problems found."""
    problems: list[str] = []
    seen_ids: set[object] = set()
    seen: Counter[tuple[object, object, object]] = Counter()
    last_version: dict[object, int] = {}
    failed_titles = {op.title: op for op in history.ops if op.outcome == "fail"}
    for event in events:
        if event["id"] in seen_ids:
            problems.append(f"feed: event {event['id']} delivered twice")
        seen_ids.add(event["id"])
        key = (event["type"], event["resource_id"], event["version"])
        seen[key] += 1
        version = int(str(event["version"]))
        previous = last_version.get(event["resource_id"], 0)
        if version < previous or (version == previous and event["type"] != "post.deleted"):
            problems.append(
                f"feed: {event['type']} version {version} of post {event['resource_id']} "
                f"after version {previous}"
            )
        last_version[event["resource_id"]] = version
        data = event.get("data")
        title = data.get("title") if isinstance(data, dict) else None
        if isinstance(title, str) and title in failed_titles:
            op = failed_titles[title]
            problems.append(
                f"feed: {event['type']} of post {event['resource_id']} carries {op.kind} "
                f"{op.id}, which answered {op.status}"
            )
    problems += [
        f"feed: {kind} of post {post} v{version} appears {count} times"
        for (kind, post, version), count in seen.items()
        if count > 1
    ]
    for op in history.ops:
        if op.outcome != "ok":
            continue
        key = {
            "create": ("post.created", op.post, 1),
            "update": ("post.updated", op.post, op.version),
            "delete": ("post.deleted", op.post, op.if_match),
        }[op.kind]
        if not seen[key]:
            problems.append(
                f"feed: acknowledged {op.kind} {op.id} ({key[0]} of post {op.post} "
                f"v{key[2]}) is missing"
            )
    return problems


class Availability(NamedTuple):
    """How writes fared around a fault: `back_after` seconds from the fault to the first
    acknowledged write invoked after the last failed request (None: never back), and
    `failed` requests (reads, writes and each retry of a create) answered 503 or not at
    all since the fault. A 412 or 404 is the workload's own race, not a failure."""

    back_after: float | None
    failed: int


def availability(history: History, failed_at: list[float], fault: str = "fault") -> Availability:
    started = history.marks[fault]
    failures = [at for at in failed_at if at >= started]
    last_failure = max(failures, default=started)
    back = [
        op.completed
        for op in history.ops
        if op.outcome == "ok" and op.invoked >= last_failure and op.completed is not None
    ]
    return Availability(min(back) - started if back else None, len(failures))


def summary(seconds: list[float]) -> str:
    """Median and worst of several trials' times."""
    if not seconds:
        return "no trial"
    return f"median {statistics.median(seconds):.1f} s, worst {max(seconds):.1f} s"
