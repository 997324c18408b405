"""Load test of the posts service: what its callers do, in the proportions they do it.

`make loadtest` runs it headless against a freshly seeded service (run_loadtest.sh). By
hand: `locust -f loadtests/locustfile.py -H http://127.0.0.1:8000 [UserClass ...]`.

User classes (name them on the command line, or pick them in the web UI's class picker):
- `ReadHeavyMix`: GET /posts/{id} 60%, GET /users/{id}/posts 25%, POST /posts 10%,
  PATCH /posts/{id} 5%. What `make loadtest` runs.
- `GetPost`, `UserPosts`, `CreatePost`, `PatchPost`: one endpoint each.
- `FeedFollower`: one follower of the change feed (`fixed_count = 1`), long-polling
  `GET /events?wait=30&limit=1000` from the feed's end (a list page's `Events-Cursor`),
  beside the writers. In the process it runs in, every post a writer creates or patches is
  tied to its event (post id and version, the ETag): the delay from the write's answer to
  the follower reading that event is a request entry of its own, `FEED write answered ->
  event delivered` (in the stats, the CSV and the HTML report). An event read before its
  write's answer counts 0. A write answered more than UNDELIVERED_SECONDS before the
  follower stops, or while writes go on, whose event it never read is a failed entry
  `FEED event never delivered`.
  In distributed mode (LOADTEST_PROCESSES > 1) the follower runs in one worker and measures
  the writes of that worker only.
Every task is also tagged with its endpoint (`get_post`, `user_posts`, `create_post`,
`patch_post`, `follow_feed`), so `--tags get_post` narrows the mix to one endpoint as well.

Ids are drawn uniformly from 1 to the largest user and post id, read once when the test
starts (LOADTEST_MAX_USER_ID and LOADTEST_MAX_POST_ID override that). After a seed the ids
are 1..N with no gaps, so every drawn id exists.

Gate: when Locust quits, any failed request, or any endpoint whose p95 exceeds
LOADTEST_P95_MS (default 50), or a feed delivery delay whose p99 exceeds
LOADTEST_FEED_P99_MS (default 250), makes the exit code 1. The long poll itself
(`GET /events (long poll)`) is held up to 30 s by design when nothing is new: only its
failures count. Percentiles and rates are Locust's
own (`StatsEntry.get_response_time_percentile`, `total_rps`). In distributed mode
(`--processes N`, LOADTEST_PROCESSES) the gate runs on the master, over the stats it
aggregates from the workers, and the master's exit code is the run's.

LOADTEST_WAIT_MS (default 0) is each simulated caller's pause between two requests,
drawn uniformly between half and one and a half times it; 0 sends the next request as
soon as the previous one is answered (a closed loop at full speed).
"""

from __future__ import annotations

import json
import logging
import os
import random
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode, urlsplit

from locust import FastHttpUser, between, constant, events, tag, task
from locust.env import Environment
from locust.exception import StopUser
from locust.runners import MasterRunner, WorkerRunner
from locust.stats import StatsEntry

logger = logging.getLogger("loadtest")

LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1"}
SETUP_TIMEOUT_SECONDS = 60.0
REQUEST_TIMEOUT_SECONDS = 10.0
PERCENTILES = (0.50, 0.95, 0.99)
LABEL_WIDTH = 38  # "FEED write answered -> event delivered"

# The change feed's follower (FeedFollower).
FEED_WAIT_SECONDS = 30
FEED_LIMIT = 1000
FEED = "FEED"  # the request type of the delivery entries
DELIVERED = "write answered -> event delivered"
NEVER_DELIVERED = "event never delivered"
LONG_POLL = "/events (long poll)"
# A write answered this long before the follower stops must have had its event read.
UNDELIVERED_SECONDS = float(os.environ.get("LOADTEST_FEED_UNDELIVERED_S") or 10)
SWEEP_SECONDS = 0.5  # how often the writers look for writes whose event never came
EARLY_KEPT_SECONDS = 60.0  # events read before any write answered them (others' writes)

BODY_WORDS = (
    "the", "quick", "brown", "fox", "jumps", "over", "a", "lazy", "dog", "while", "the",
    "service", "answers", "in", "time", "under", "load", "and", "every", "caller", "gets",
    "its", "page", "of", "posts", "newest", "first", "without", "sorting",
)  # fmt: skip


@dataclass
class DataSetBounds:
    """The largest ids of the seeded data set; ids are drawn from 1 to these."""

    max_user_id: int = 0
    max_post_id: int = 0


BOUNDS = DataSetBounds()


def _env_number(name: str, default: float) -> float:
    raw = os.environ.get(name, "")
    return float(raw) if raw.strip() else default


def _wait_time() -> Callable[[Any], float]:
    mean_seconds = _env_number("LOADTEST_WAIT_MS", 0) / 1000
    return constant(0) if mean_seconds <= 0 else between(mean_seconds / 2, mean_seconds * 1.5)


def _auth_headers() -> dict[str, str]:
    """`Authorization` for a service that requires tokens (LOADTEST_TOKEN), else none."""
    token = os.environ.get("LOADTEST_TOKEN", "")
    return {"Authorization": f"Bearer {token}"} if token else {}


def _get_json(base_url: str, path: str) -> Any:
    request = urllib.request.Request(f"{base_url}{path}", headers=_auth_headers())
    with urllib.request.urlopen(request, timeout=REQUEST_TIMEOUT_SECONDS) as answer:
        return json.load(answer)


def _max_post_id(base_url: str) -> int:
    """Posts come newest first: the first item of the first page has the largest id."""
    items = _get_json(base_url, "/posts?limit=1")["items"]
    if not items:
        raise RuntimeError("the service has no posts: seed it first (make seed)")
    return int(items[0]["id"])


def _max_user_id(base_url: str, deadline: float) -> int:
    """Users come in ascending id: walk the pages to the last one (50 pages per 10,000)."""
    query: dict[str, str] = {"limit": "200"}
    last_id = 0
    while time.monotonic() < deadline:
        page = _get_json(base_url, f"/users?{urlencode(query)}")
        if page["items"]:
            last_id = int(page["items"][-1]["id"])
        if page["next_cursor"] is None:
            if last_id == 0:
                raise RuntimeError("the service has no users: seed it first (make seed)")
            return last_id
        query["cursor"] = page["next_cursor"]
    raise TimeoutError(f"walking GET /users took over {SETUP_TIMEOUT_SECONDS:.0f} s")


def _loopback_base_url(host: str | None) -> str:
    """The base URL to load; only this machine may be a target, never a server elsewhere."""
    if host is None or urlsplit(host).hostname not in LOOPBACK_HOSTS:
        raise ValueError(f"refusing to load {host!r}: pass -H http://127.0.0.1:PORT")
    return host.rstrip("/")


@events.test_start.add_listener
def read_data_set_bounds(environment: Environment, **_: Any) -> None:
    """Fired before users start on every node that runs users (a single process, or each
    worker; not a master, which has none): each one draws from the same bounds."""
    if isinstance(environment.runner, MasterRunner):
        return
    try:
        base_url = _loopback_base_url(environment.host)
        deadline = time.monotonic() + SETUP_TIMEOUT_SECONDS
        BOUNDS.max_post_id = int(os.environ.get("LOADTEST_MAX_POST_ID") or _max_post_id(base_url))
        BOUNDS.max_user_id = int(
            os.environ.get("LOADTEST_MAX_USER_ID") or _max_user_id(base_url, deadline)
        )
    except Exception as error:
        logger.error("cannot start the load test: %s", error)
        # A failed request in the stats, so that the gate sees it on the master too (a
        # worker's stats reach the master; its exit code does not).
        environment.events.request.fire(
            request_type="SETUP",
            name="read the data set's bounds",
            response_time=0,
            response_length=0,
            exception=error,
            context={},
        )
        environment.process_exit_code = 2
        if environment.runner is not None and not isinstance(environment.runner, WorkerRunner):
            environment.runner.quit()
        return
    logger.info("ids drawn from users 1..%d, posts 1..%d", BOUNDS.max_user_id, BOUNDS.max_post_id)


WriteKey = tuple[str, int, int]
"""(resource, id, version): what ties a write's answer to its event."""


class Deliveries:
    """The writes of this process and the events its followers read, tied by WriteKey:
    each pair met becomes one `FEED` request entry, its response time the delay (ms) from
    the write's answer to the event's page being read. Kept only while a follower runs."""

    def __init__(self) -> None:
        self.followers = 0
        self.answered: dict[WriteKey, float] = {}
        self.early: dict[WriteKey, float] = {}
        """Events read before their write's answer (or of writes made elsewhere)."""
        self.swept = 0.0

    def write_answered(self, environment: Environment, key: WriteKey, at: float) -> None:
        if not self.followers:
            return
        if self.early.pop(key, None) is not None:
            self._met(environment, 0.0)  # the follower read it before the writer did
        else:
            self.answered[key] = at
        if at - self.swept >= SWEEP_SECONDS:  # while writes go on, not only at the end
            self.swept = at
            self.fail_undelivered(environment, at)

    def event_read(self, environment: Environment, key: WriteKey, at: float) -> None:
        if (answered := self.answered.pop(key, None)) is not None:
            self._met(environment, (at - answered) * 1000)
        else:
            self.early[key] = at

    def forget_early(self, now: float) -> None:
        """Drop events no write of this process answered: the seed's, other workers'."""
        self.early = {k: t for k, t in self.early.items() if now - t < EARLY_KEPT_SECONDS}

    def fail_undelivered(self, environment: Environment, now: float) -> None:
        """A failed entry for each write answered UNDELIVERED_SECONDS ago or more whose event
        was never read, and forget it."""
        late = [key for key, at in self.answered.items() if now - at >= UNDELIVERED_SECONDS]
        for key in late:
            del self.answered[key]
            environment.events.request.fire(
                request_type=FEED,
                name=NEVER_DELIVERED,
                response_time=0,
                response_length=0,
                exception=AssertionError(
                    f"no event read {UNDELIVERED_SECONDS:g} s after the write's answer"
                ),
                context={},
            )

    @staticmethod
    def _met(environment: Environment, delay_ms: float) -> None:
        environment.events.request.fire(
            request_type=FEED,
            name=DELIVERED,
            response_time=delay_ms,
            response_length=0,
            exception=None,
            context={},
        )


DELIVERIES = Deliveries()


def _record_write(user: ServiceUser, response: Any) -> None:
    """Tie a post's create or patch answer to the event a follower will read."""
    if DELIVERIES.followers and (etag := response.headers.get("ETag")):
        key = ("post", int(response.json()["id"]), int(etag.removeprefix("W/").strip('"')))
        DELIVERIES.write_answered(user.environment, key, time.perf_counter())


def _sentence(words: int) -> str:
    return " ".join(random.choices(BODY_WORDS, k=words))


def _expect(response: Any, status: int) -> None:
    """Mark the request failed unless it got exactly `status` (a 304 is no 200 here)."""
    if response.status_code != status:
        response.failure(
            f"expected {status}, got {response.status_code}: {(response.text or '')[:200]}"
        )
    else:
        response.success()


class ServiceUser(FastHttpUser):
    """A caller of the service: draws ids from the seeded data set."""

    abstract = True
    default_headers = _auth_headers()
    wait_time = _wait_time()
    network_timeout = REQUEST_TIMEOUT_SECONDS
    connection_timeout = REQUEST_TIMEOUT_SECONDS

    def on_start(self) -> None:
        if BOUNDS.max_user_id < 1 or BOUNDS.max_post_id < 1:
            raise StopUser()  # test_start could not read the ids; Locust is quitting

    def user_id(self) -> int:
        return random.randint(1, BOUNDS.max_user_id)

    def post_id(self) -> int:
        return random.randint(1, BOUNDS.max_post_id)


@tag("get_post")
def get_post(user: ServiceUser) -> None:
    with user.client.get(
        f"/posts/{user.post_id()}", name="/posts/{id}", catch_response=True
    ) as response:
        _expect(response, 200)


@tag("user_posts")
def user_posts(user: ServiceUser) -> None:
    with user.client.get(
        f"/users/{user.user_id()}/posts", name="/users/{id}/posts", catch_response=True
    ) as response:
        _expect(response, 200)


@tag("create_post")
def create_post(user: ServiceUser) -> None:
    post = {
        "author_id": user.user_id(),
        "title": _sentence(6).capitalize(),
        # About 500 characters, like the seeded posts.
        "body": _sentence(90)[:500],
        "published": random.random() < 0.5,
    }
    with user.client.post("/posts", json=post, name="/posts", catch_response=True) as response:
        _expect(response, 201)
        if response.status_code == 201:
            _record_write(user, response)


@tag("patch_post")
def patch_post(user: ServiceUser) -> None:
    # A merge patch of two fields; no If-Match, so a concurrent edit never makes it a 412.
    changes = {"title": _sentence(5).capitalize(), "published": random.random() < 0.5}
    with user.client.patch(
        f"/posts/{user.post_id()}", json=changes, name="/posts/{id}", catch_response=True
    ) as response:
        _expect(response, 200)
        if response.status_code == 200:
            _record_write(user, response)


class ReadHeavyMix(ServiceUser):
    """What the service's callers do: mostly reads of single posts and authors' pages."""

    tasks = {get_post: 60, user_posts: 25, create_post: 10, patch_post: 5}


class GetPost(ServiceUser):
    tasks = [get_post]


class UserPosts(ServiceUser):
    tasks = [user_posts]


class CreatePost(ServiceUser):
    tasks = [create_post]


class PatchPost(ServiceUser):
    tasks = [patch_post]


class FeedFollower(ServiceUser):
    """One follower of the change feed beside the writers: long polls from the feed's end,
    and reports how long after a write's answer its event reached the follower."""

    fixed_count = 1
    wait_time = constant(0)
    network_timeout = FEED_WAIT_SECONDS + REQUEST_TIMEOUT_SECONDS  # a long poll is held

    def on_start(self) -> None:
        super().on_start()
        self.cursor: str | None = None
        with self.client.get(
            "/posts?limit=1", name="/posts?limit=1 (Events-Cursor)", catch_response=True
        ) as response:
            _expect(response, 200)
            self.cursor = response.headers.get("Events-Cursor")
        if self.cursor is None:
            raise StopUser()  # the failure is in the stats: the gate sees it
        DELIVERIES.followers += 1

    def on_stop(self) -> None:
        if getattr(self, "cursor", None) is None:
            return
        DELIVERIES.followers -= 1
        DELIVERIES.fail_undelivered(self.environment, time.perf_counter())
        DELIVERIES.answered.clear()

    @tag("follow_feed")
    @task
    def follow(self) -> None:
        query = urlencode({"after": self.cursor, "limit": FEED_LIMIT, "wait": FEED_WAIT_SECONDS})
        with self.client.get(f"/events?{query}", name=LONG_POLL, catch_response=True) as response:
            _expect(response, 200)
            if response.status_code != 200:
                return
            read = time.perf_counter()
            page = response.json()
        for event in page["items"]:
            resource = event["type"].partition(".")[0]
            key = (resource, int(event["resource_id"]), int(event["version"]))
            DELIVERIES.event_read(self.environment, key, read)
        DELIVERIES.forget_early(read)
        self.cursor = page["next_cursor"]


def _row(entry: StatsEntry, label: str) -> str:
    p50, p95, p99 = (entry.get_response_time_percentile(p) for p in PERCENTILES)
    return (
        f"{label:<{LABEL_WIDTH}} {entry.num_requests:>9} {entry.num_failures:>7} "
        f"{p50:>7.0f} {p95:>7.0f} {p99:>7.0f} {entry.total_rps:>9.1f}"
    )


@events.quitting.add_listener
def gate(environment: Environment, **_: Any) -> None:
    """Print p50/p95/p99 and requests/s per endpoint; fail the run when the goal is missed."""
    if isinstance(environment.runner, WorkerRunner) or environment.stats is None:
        return
    limit_ms = _env_number("LOADTEST_P95_MS", 50)
    feed_limit_ms = _env_number("LOADTEST_FEED_P99_MS", 250)
    stats = environment.stats
    entries = sorted(stats.entries.values(), key=lambda entry: (entry.name, entry.method or ""))
    problems: list[str] = []
    lines = [
        f"{'endpoint':<{LABEL_WIDTH}} {'requests':>9} {'failed':>7} "
        f"{'p50 ms':>7} {'p95 ms':>7} {'p99 ms':>7} {'req/s':>9}",
    ]
    for entry in entries:
        lines.append(_row(entry, f"{entry.method} {entry.name}"))
        if entry.num_failures:
            problems.append(f"{entry.method} {entry.name}: {entry.num_failures} failed")
        if entry.method == FEED:
            p99 = entry.get_response_time_percentile(0.99)
            if entry.name == DELIVERED and p99 > feed_limit_ms:
                problems.append(f"feed delivery: p99 {p99:.0f} ms > {feed_limit_ms:g} ms")
            continue
        p95 = entry.get_response_time_percentile(0.95)
        if entry.name != LONG_POLL and p95 > limit_ms:
            problems.append(f"{entry.method} {entry.name}: p95 {p95:.0f} ms > {limit_ms:g} ms")
    lines.append(_row(stats.total, "all"))
    if stats.total.num_requests == 0:
        problems.append("no request was made")
    verdict = "PASS" if not problems else "FAIL: " + "; ".join(problems)
    goals = (
        f"p95 goal {limit_ms:g} ms ({LONG_POLL} excepted), feed delivery p99 goal "
        f"{feed_limit_ms:g} ms, no failures"
    )
    print("\n".join(["", f"== load test: {goals}", *lines, verdict]))
    if problems:
        environment.process_exit_code = environment.process_exit_code or 1
