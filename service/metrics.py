"""Definitions of the database layer's metrics, below the code that records them.

Labelled by the server's name (`primary`, or `replica <host>:<port>`), never by anything a
caller sends. With several workers, `PROMETHEUS_MULTIPROC_DIR` makes every figure cover
all of them (gauges add up across workers: `livesum`).
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

# Fine below 10 ms, where this service's answers are, to read a p95 from the histogram.
LATENCY_BUCKETS: list[str | float] = [
    0.0005, 0.001, 0.002, 0.003, 0.004, 0.005, 0.0075, 0.01, 0.015, 0.025, 0.05, 0.1,
    0.25, 0.5, 1, 2.5, 5,
]  # fmt: skip

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
    "Time a request waited for a database connection",
    ["server"],
    buckets=LATENCY_BUCKETS,
)
READS = Counter(
    "service_db_reads",
    "Read requests by the kind of server that answered them (replica or primary)",
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
