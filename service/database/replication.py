"""Streaming replicas: how far behind each one is, and read-your-writes tokens.

**Lag, in time, from WAL positions.** Every `REPLICA_CHECK_SECONDS` the service reads the
primary's current WAL position and each replica's replayed position. The primary's
samples, each with the time it was read, turn a replica's position into a lag in time:
the replica is as far behind as the oldest primary sample it has not replayed yet. Why
positions rather than `pg_last_xact_replay_timestamp()`: that timestamp only moves when a
commit is replayed, so on a quiet primary a perfectly current replica would look ever more
behind; and the replayed position (not the received one) is what queries on the replica
see. While the primary cannot be reached no new samples come, so a replica that has
replayed everything the service saw stays current: replica reads go on during a failover.

**Consistency tokens.** A write answers its transaction id (`pg_current_xact_id()`, read in
the write's own statement: no extra round trip) as the token. A replica shows the write
once it has replayed that transaction's commit record, which is exactly when the id is
visible in the replica's snapshot (`shows_transaction.sql`). A WAL position read inside the
statement would not do: the commit record is written after it.
"""

from __future__ import annotations

import re
import time
from collections import deque
from dataclasses import dataclass, field

from prometheus_client import Gauge

from service.base.metrics import REPLICA_LAG_SECONDS, REPLICA_UP
from service.database.pool import Connection, ServerPool
from service.database.sql import load_queries

SQL = load_queries("replication")

REPLICA_CHECK_SECONDS = 0.2
# A replica that does not answer its check within this is down until it does.
REPLICA_CHECK_TIMEOUT_SECONDS = 1.0
# Primary samples kept: enough to measure any lag up to this long; older is "at least".
HISTORY_SECONDS = 60.0

TOKEN_HEADER = "Consistency-Token"  # noqa: S105 (a header name, not a secret)
TOKEN_PATTERN = r"1\.([0-9]{1,18})"  # noqa: S105 (a format, not a secret)
"""A format version, then a transaction id of up to 18 digits (ids are far smaller)."""
_TOKEN = re.compile(TOKEN_PATTERN)
TOKEN_MAX_LENGTH = 20


class InvalidToken(ValueError):
    """A `Consistency-Token` the service did not issue."""


def encode_token(transaction_id: int) -> str:
    """The token of a write: a format version, then the transaction id."""
    return f"1.{transaction_id}"


def decode_token(token: str) -> int:
    match = _TOKEN.fullmatch(token)
    if match is None:
        raise InvalidToken(token)
    return int(match[1])


class WalHistory:
    """The primary's WAL positions with the times they were read, oldest first."""

    def __init__(self) -> None:
        self._samples: deque[tuple[float, int]] = deque()

    def record(self, position: int, at: float) -> None:
        self._samples.append((at, position))
        while self._samples and self._samples[0][0] < at - HISTORY_SECONDS:
            self._samples.popleft()

    def lag_seconds(self, replayed: int, now: float) -> float:
        """How long ago the primary first stood past `replayed` (0: nothing missing)."""
        for at, position in self._samples:
            if position > replayed:
                return max(0.0, now - at)
        return 0.0


@dataclass
class Replica:
    """A replica's pool and what the last check found."""

    server: ServerPool
    up: bool = False
    lag_seconds: float | None = None
    in_recovery: bool = True
    problem: str = "not checked yet"
    _lag_gauge: Gauge = field(init=False, repr=False)
    _up_gauge: Gauge = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._lag_gauge = REPLICA_LAG_SECONDS.labels(self.server.name)
        self._up_gauge = REPLICA_UP.labels(self.server.name)

    def usable(self, max_lag_seconds: float) -> bool:
        return self.up and self.lag_seconds is not None and self.lag_seconds <= max_lag_seconds

    def mark_down(self, problem: str) -> None:
        self.up = False
        self.problem = problem
        self._up_gauge.set(0)

    async def check(self, history: WalHistory, max_lag_seconds: float) -> None:
        """Ask the replica where it is; mark it up (with its lag) or down."""
        try:
            async with self.server.connection(REPLICA_CHECK_TIMEOUT_SECONDS) as connection:
                row = await connection.fetchrow(
                    SQL["replica_position"], timeout=REPLICA_CHECK_TIMEOUT_SECONDS
                )
        except Exception as error:  # whatever failed, reads must not come here for now
            self.mark_down(type(error).__name__)
            return
        assert row is not None
        self.in_recovery = row["in_recovery"]
        self.lag_seconds = history.lag_seconds(row["position"], time.monotonic())
        self.up = True
        self.problem = "" if self.lag_seconds <= max_lag_seconds else "lagging"
        self._lag_gauge.set(self.lag_seconds)
        self._up_gauge.set(0 if self.problem else 1)


async def shows_transaction(connection: Connection, transaction_id: int) -> bool:
    """Whether the server behind `connection` has replayed that transaction's commit."""
    return bool(await connection.fetchval(SQL["shows_transaction"], str(transaction_id)))
