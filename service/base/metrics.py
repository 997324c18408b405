"""Every metric the service exports, defined here, below the code that records them.

Requests are labelled by route template (`/users/{user_id}`, never the raw path: unbounded
series), database figures by the server's name (`primary`, or `replica <host>:<port>`);
never by anything a caller sends. With several workers, `PROMETHEUS_MULTIPROC_DIR` (set by
`python -m service serve`, see `multiprocess_directory`) makes every figure cover all of
them (gauges add up across workers: `livesum`).
"""

from __future__ import annotations

import os
from bisect import bisect_left
from typing import Any

from prometheus_client import Counter, Gauge, Histogram

# Fine below 10 ms, where this service's answers are, to read a p95 from the histogram.
LATENCY_BUCKETS: list[str | float] = [
    0.0005, 0.001, 0.002, 0.003, 0.004, 0.005, 0.0075, 0.01, 0.015, 0.025, 0.05, 0.1,
    0.25, 0.5, 1, 2.5, 5,
]  # fmt: skip

REQUESTS = Counter(
    "service_requests", "Requests answered, by route template", ["method", "path", "status_code"]
)
REQUEST_SECONDS = Histogram(
    "service_request_duration_seconds",
    "Time from the request's arrival to the end of its answer, by route template",
    ["method", "path", "status_code"],
    buckets=LATENCY_BUCKETS,
)
SERVER_ERRORS = Counter(
    "service_requests_error",
    "Answers with a status of 500 or more",
    ["method", "path", "status_code"],
)
IN_FLIGHT = Gauge(
    "service_requests_in_progress",
    "Requests being answered now (sampled every second and at each scrape)",
    ["method"],
    multiprocess_mode="livesum",
)
UNMATCHED = "unmatched"
"""The route label of requests that matched no route (404, 405): never the raw path."""

POOL_SIZE = Gauge(
    "service_db_pool_size", "Open connections in the pool", ["server"], multiprocess_mode="livesum"
)
POOL_IN_USE = Gauge(
    "service_db_pool_in_use",
    "Connections lent to requests",
    ["server"],
    multiprocess_mode="livesum",
)
POOL_IDLE = Gauge(
    "service_db_pool_idle",
    "Open connections waiting for a request",
    ["server"],
    multiprocess_mode="livesum",
)
POOL_MAX = Gauge(
    "service_db_pool_max",
    "Most connections the pool may open",
    ["server"],
    multiprocess_mode="livesum",
)
POOL_ACQUIRE_SECONDS = Histogram(
    "service_db_pool_acquire_seconds",
    "Time a request that found every connection busy waited for one",
    ["server"],
    buckets=LATENCY_BUCKETS,
)
READS = Counter(
    "service_db_reads",
    "Read requests by the kind of server that answered them (replica or primary), when "
    "replicas are configured",
    ["served_by"],
)
READ_FALLBACKS = Counter(
    "service_db_read_fallbacks",
    "Reads that went to the primary although replicas are configured, by reason",
    ["reason"],
)
REPLICA_LAG_SECONDS = Gauge(
    "service_db_replica_lag_seconds",
    "How far behind the primary each replica's replay was when last checked",
    ["server"],
    multiprocess_mode="max",
)
REPLICA_UP = Gauge(
    "service_db_replica_up",
    "1 while the replica answers and is within DB_MAX_REPLICA_LAG_MS, else 0",
    ["server"],
    multiprocess_mode="min",
)

FEED_REQUESTS = Counter(
    "service_feed_requests",
    "GET /events answered, by whether the follower asked to wait (a long poll) and "
    "whether the answer held events",
    ["long_poll", "outcome"],
)
FEED_EVENTS_DELIVERED = Counter(
    "service_feed_events_delivered", "Events handed to followers by GET /events"
)
FEED_WAITING = Gauge(
    "service_feed_waiting_followers",
    "Long polls waiting for new events now",
    multiprocess_mode="livesum",
)
FEED_EVENTS_WRITTEN = Gauge(
    "service_feed_events_written",
    "Events written to the feed so far: the newest event's sequence number (rolled-back "
    "writes leave gaps in it), read every few seconds",
    multiprocess_mode="max",
)
FEED_UNDELIVERED_AGE_SECONDS = Gauge(
    "service_feed_undelivered_age_seconds",
    "Age of the oldest committed event that no follower can be given yet, because an "
    "older transaction on the database is still open (0 when none)",
    multiprocess_mode="max",
)
FEED_EVENTS_PRUNED = Counter(
    "service_feed_events_pruned", "Events deleted after EVENTS_RETENTION_HOURS"
)


def multiprocess_directory(data_dir: str) -> str:
    """A fresh folder for prometheus-client's multiprocess files of this server run."""
    path = os.path.join(os.path.abspath(data_dir), "metrics")
    os.makedirs(path, exist_ok=True)
    for stale in os.listdir(path):
        os.remove(os.path.join(path, stale))
    return path


# The relay to NATS JetStream (`python -m service relay`): its own process and port.
RELAY_EVENTS_PUBLISHED = Counter(
    "service_relay_events_published",
    "Events JetStream acknowledged from this relay (repeats it dropped as duplicates too)",
)
RELAY_DUPLICATES = Counter(
    "service_relay_duplicates",
    "Events JetStream acknowledged as duplicates (already in the stream: a batch published "
    "again after a crash, a broker restart or a lease takeover)",
)
RELAY_PUBLISH_ERRORS = Counter(
    "service_relay_publish_errors",
    "Batches whose publishing failed (broker unreachable, timeout, refusal), by reason; "
    "the batch is published again",
    ["reason"],
)
RELAY_LAG_EVENTS = Gauge(
    "service_relay_lag_events",
    "Events in the feed after the relay's stored position (not yet in the stream, as far "
    "as the database knows), read every few seconds",
)
RELAY_LAG_SECONDS = Gauge(
    "service_relay_lag_seconds",
    "Age of the oldest event not yet published (0 when caught up), read every few seconds",
)
RELAY_LEASE_HELD = Gauge(
    "service_relay_lease_held", "1 while this relay process holds the lease and publishes"
)


_BOUNDS = tuple(float(bound) for bound in LATENCY_BUCKETS)


class HistogramTally:
    """The observations of one child of a histogram with `LATENCY_BUCKETS` (one set of
    labels), tallied in plain numbers on a hot path and added to the child by `publish`
    (every second and at each scrape: the request metrics with the in-flight sample, the
    pool's with its gauges).

    A child's `observe` takes a lock for each value it touches and walks the bucket bounds
    in Python; an `inc` takes one more. The tally is a bisection in C and two additions:
    together with the request counts, some 18k instructions a request less (`make
    instructions`). It adds to the child's own `_sum` and `_buckets` (prometheus-client is
    pinned, and tests/test_observability.py reads the exported buckets back). With
    several workers (`PROMETHEUS_MULTIPROC_DIR`) a scrape reads every worker's files but
    can publish only its own worker's tallies: there each observation is published at
    once, as the child would.
    """

    def __init__(self, child: Any) -> None:
        self.child = child
        self.total = 0.0
        self.counts = [0] * (len(_BOUNDS) + 1)  # each bucket, then +Inf
        self.deferred = "PROMETHEUS_MULTIPROC_DIR" not in os.environ

    def observe(self, amount: float) -> None:
        self.total += amount
        self.counts[bisect_left(_BOUNDS, amount)] += 1  # amount <= bound, as observe does
        if not self.deferred:
            self.publish()

    def publish(self) -> int:
        """Add what was tallied since the last time to the child; how many observations."""
        observed = sum(self.counts)
        if observed:
            self.child._sum.inc(self.total)
            for index, count in enumerate(self.counts):
                if count:
                    self.child._buckets[index].inc(count)
            self.total = 0.0
            self.counts = [0] * len(self.counts)
        return observed
