"""The history checker (tests/history.py) on hand-made histories: a good one passes, and each
kind of bad one is caught and named."""

from __future__ import annotations

from collections import Counter

import pytest

from tests.history import History, Op, Row, availability, check, check_feed

POST = 7


def _history() -> History:
    history = History()
    history.initial[POST] = 1
    return history


def _update(history: History, if_match: int, outcome: str, made: int | None = None) -> Op:
    op = history.invoke(1, "update", post=POST, if_match=if_match)
    status = {"ok": 200, "fail": 412, "unknown": None}[outcome]
    history.complete(op, outcome, status, made)  # type: ignore[arg-type]
    return op


def _create(history: History, outcome: str, post: int | None, attempts: int = 1) -> Op:
    op = history.invoke(2, "create", key=f"key-{len(history.ops)}")
    op.post, op.attempts = post, attempts
    status = {"ok": 201, "fail": 422, "unknown": 503}[outcome]
    history.complete(op, outcome, status, 1 if outcome == "ok" else None)  # type: ignore[arg-type]
    return op


def _problems(history: History, final: dict[int, Row], titles: Counter[str] | None = None) -> str:
    verdict = check(history, final, titles or Counter(row.title for row in final.values()))
    print(verdict.report())
    return "\n".join(verdict.problems)


def test_a_good_history_is_valid():
    history = _history()
    _update(history, 1, "ok", 2)
    _update(history, 1, "fail")  # lost the race on version 1: a 412
    _update(history, 2, "unknown")  # a timeout that did commit
    last = _update(history, 3, "ok", 4)
    created = _create(history, "ok", post=9, attempts=3)  # retried after two 503s
    _create(history, "unknown", post=None)  # gave up: made nothing
    final = {POST: Row(4, last.title), 9: Row(1, created.title)}
    verdict = check(history, final, Counter(row.title for row in final.values()))
    print(verdict.report())
    assert verdict.valid, verdict.problems
    assert verdict.outcomes == Counter(
        {"update ok": 2, "update fail": 1, "update unknown": 1, "create ok": 1, "create unknown": 1}
    )


def test_a_lost_write_is_found():
    history = _history()
    first = _update(history, 1, "ok", 2)
    _update(history, 2, "ok", 3)
    # The database ended at version 2: the acknowledged version 3 is gone.
    problems = _problems(history, {POST: Row(2, first.title)})
    assert "lost write: update" in problems
    assert "ended at version 2" in problems


def test_a_lost_create_is_found():
    history = _history()
    _create(history, "ok", post=9)
    assert "lost write: create" in _problems(history, {POST: Row(1, "seed")})


def test_a_fork_is_found():
    history = _history()
    _update(history, 1, "ok", 2)
    second = _update(history, 1, "ok", 2)  # acknowledged on the same If-Match: a fork
    problems = _problems(history, {POST: Row(2, second.title)})
    assert "fork:" in problems
    assert "If-Match 1 of post 7" in problems


def test_a_skipped_version_is_found():
    history = _history()
    op = _update(history, 1, "ok", 3)  # version 2 never existed
    problems = _problems(history, {POST: Row(3, op.title)})
    assert "skipped version: update" in problems
    assert "version 2 of post 7 was made by no write" in problems


def test_a_duplicate_create_from_a_retried_key_is_found():
    history = _history()
    created = _create(history, "ok", post=9, attempts=2)
    final = {POST: Row(1, "seed"), 9: Row(1, created.title), 10: Row(1, created.title)}
    problems = _problems(history, final)
    assert "duplicate create" in problems
    assert "made 2 rows" in problems


def test_a_definitely_failed_write_that_shows_is_found():
    history = _history()
    failed = _update(history, 1, "fail")
    refused = _create(history, "fail", post=None)
    final = {POST: Row(2, failed.title), 11: Row(1, refused.title)}
    problems = _problems(history, final)
    assert f"holds the title of update {failed.id}, which answered 412" in problems
    assert f"create {refused.id} answered 422 but its row is there" in problems


def test_an_acknowledged_delete_that_comes_back_is_found():
    history = _history()
    op = history.invoke(3, "delete", post=POST, if_match=1)
    history.complete(op, "ok", 204)
    assert "lost write: delete" in _problems(history, {POST: Row(1, "seed")})


@pytest.mark.parametrize(("ok_after", "back"), [(0.5, 0.5), (None, None)])
def test_availability_counts_from_the_fault(ok_after, back):
    history = _history()
    history.marks["fault"] = 100.0
    early = history.invoke(1, "update", post=POST, if_match=1)
    # Acknowledged before the last failure: not yet "back".
    early.invoked, early.completed, early.outcome = 100.01, 100.05, "ok"
    if ok_after is not None:
        ok = history.invoke(1, "update", post=POST, if_match=1)
        ok.invoked, ok.completed, ok.outcome = 100.3, 100.0 + ok_after, "ok"
    result = availability(history, failed_at=[99.0, 100.1, 100.2])
    assert result.failed == 2
    assert result.back_after == (None if back is None else pytest.approx(back))


def _event(number: int, kind: str, post: int, version: int, title: str | None = None) -> dict:
    data = None if title is None else {"id": post, "author_id": 1, "title": title}
    return {"id": f"e{number}", "type": kind, "resource_id": post, "version": version, "data": data}


def _feed_history() -> tuple[History, Op, Op]:
    history = _history()
    created = _create(history, "ok", post=9)
    update = _update(history, 1, "ok", 2)
    return history, created, update


def test_a_good_feed_is_valid():
    history, created, update = _feed_history()
    _update(history, 2, "unknown")  # a write that may or may not show: either is fine
    events = [
        _event(1, "post.created", 9, 1, created.title),
        _event(2, "post.updated", POST, 2, update.title),
    ]
    assert check_feed(history, events) == []


def test_a_feed_missing_an_acknowledged_change_or_repeating_one_is_found():
    history, created, update = _feed_history()
    events = [
        _event(1, "post.created", 9, 1, created.title),
        _event(1, "post.created", 9, 1, created.title),
    ]
    problems = "\n".join(check_feed(history, events))
    print(problems)
    assert f"acknowledged update {update.id} (post.updated of post 7 v2) is missing" in problems
    assert "event e1 delivered twice" in problems
    assert "post.created of post 9 v1 appears 2 times" in problems


def test_a_feed_out_of_version_order_or_showing_a_failed_write_is_found():
    history, created, update = _feed_history()
    failed = _update(history, 2, "fail")
    events = [
        _event(1, "post.created", 9, 1, created.title),
        _event(2, "post.updated", POST, 3, failed.title),
        _event(3, "post.updated", POST, 2, update.title),
    ]
    problems = "\n".join(check_feed(history, events))
    print(problems)
    assert "post.updated version 2 of post 7 after version 3" in problems
    assert f"carries update {failed.id}, which answered 412" in problems
