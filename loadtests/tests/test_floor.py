"""The Litestar floor and the bare baseline answer as the service does, over real HTTP, on
a database seeded as the bench's (smaller: FEED_DATA_SET), its feed's backlog included."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest

from loadtests import bench
from tests.server import free_port

AUTH = {"Authorization": f"Bearer {bench.BENCH_TOKEN}"}


@pytest.fixture(scope="module")
def servers(
    feed_database: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, bench.Server]]:
    data_dir = tmp_path_factory.mktemp("bench-data")
    with ExitStack() as stack:
        yield {
            target: stack.enter_context(
                bench.running(
                    f"test-{target}",
                    bench.COMMANDS[target],
                    bench.target_environment(target, feed_database, Path(data_dir), port),
                    port,
                )
            )
            for target, port in ((target, free_port()) for target in bench.DEFAULT_TARGETS)
        }


@pytest.fixture(scope="module")
def author_with_posts(servers: dict[str, bench.Server]) -> int:
    with httpx.Client(base_url=servers["service"].base_url, headers=AUTH) as client:
        user = client.post("/users", json={"email": "floor-author@example.com", "name": "Floor"})
        assert user.status_code == 201, user.text
        author_id: int = user.json()["id"]
        for number in range(3):
            post = {"author_id": author_id, "title": f"Post {number}", "body": "x" * 500}
            assert client.post("/posts", json=post).status_code == 201
    return author_id


def test_the_reads_of_the_bench_answer_the_same_bodies(
    servers: dict[str, bench.Server], feed_database: str, author_with_posts: int
) -> None:
    data = bench.read_data_set(feed_database, servers["service"])
    # The seed's 2,100 events and the author's 4, walked in pages of 1,000: the cursors
    # after the first two pages are followed by a full page of 100.
    assert len(data.deep_cursors) > 1
    assert len(data.event_cursors) == 2
    assert bench.compare_answers(servers, data) == []


def test_every_server_answers_the_same_backlog_pages_of_the_feed(
    servers: dict[str, bench.Server], author_with_posts: int
) -> None:
    cursors = bench.event_cursors(servers["service"])
    for cursor in cursors:
        answers = {}
        for target, server in servers.items():
            with httpx.Client(base_url=server.base_url, headers=AUTH) as client:
                answer = client.get(bench.events_path(cursor))
            assert answer.status_code == 200, (target, answer.text)
            assert answer.headers["content-type"] == "application/json", target
            # The service answers neither header on a page of the feed; nor may a baseline.
            assert [answer.headers.get(name) for name in bench.FEED_HEADERS] == [None, None]
            answers[target] = answer.json()
        assert len(answers["service"]["items"]) == bench.EVENTS_PAGE
        assert answers["floor"] == answers["bare"] == answers["service"]


def test_a_feed_cursor_the_service_did_not_issue_is_a_400_everywhere(
    servers: dict[str, bench.Server],
) -> None:
    cursor = bench.event_cursors(servers["service"])[0]
    forged = cursor[:-2] + ("AA" if cursor[-2:] != "AA" else "BB")
    for target, server in servers.items():
        with httpx.Client(base_url=server.base_url, headers=AUTH) as client:
            assert client.get(bench.events_path(forged)).status_code == 400, target
            assert client.get("/events?limit=1001").status_code == 400, target


def test_every_server_creates_and_patches_with_the_same_headers(
    servers: dict[str, bench.Server], author_with_posts: int
) -> None:
    post = {"author_id": author_with_posts, "title": " Same ", "body": "b", "published": True}
    answers = {}
    for target, server in servers.items():
        with httpx.Client(base_url=server.base_url, headers=AUTH) as client:
            created = client.post("/posts", json=post)
            assert created.status_code == 201, (target, created.text)
            post_id = created.json()["id"]
            assert created.headers["location"] == f"/posts/{post_id}", target
            assert created.headers["etag"] == '"1"', target
            patched = client.patch(f"/posts/{post_id}", json={"title": "Changed"})
            assert patched.status_code == 200, (target, patched.text)
            assert patched.headers["etag"] == '"2"', target
            answers[target] = (created.json(), patched.json())
    for target, (created, patched) in answers.items():
        assert created["title"] == "Same", target  # trimmed by the struct, as the service does
        assert set(created) == set(answers["service"][0]), target
        assert patched["title"] == "Changed", target
        assert patched["published"] is True, target


def test_a_missing_post_and_a_missing_author_are_404_everywhere(
    servers: dict[str, bench.Server],
) -> None:
    for target, server in servers.items():
        with httpx.Client(base_url=server.base_url, headers=AUTH) as client:
            assert client.get("/posts/999999999").status_code == 404, target
            assert client.get("/users/999999999/posts").status_code == 404, target
