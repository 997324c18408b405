"""Many deadlines on one event-loop timer (`Deadlines`).

Arming and cancelling a timer of its own for every wait (`call_later` and `cancel`, or an
`asyncio.timeout` scope) was the largest part of two features' cost per request: a body's
deadline in the edge layer (`service.edge.limits`) and a wait for a database connection
(`service.database.pool.FairGate`). Each keeps its own waiters; this keeps the one timer.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable


class Deadlines:
    """One timer, armed for the earliest deadline included. When it fires it calls
    `expire(now)`, which ends whatever is due and returns the earliest deadline left (None:
    nothing left), and arms itself for that."""

    __slots__ = ("_expire", "_timer", "armed_for", "loop")

    def __init__(
        self, loop: asyncio.AbstractEventLoop, expire: Callable[[float], float | None]
    ) -> None:
        self.loop = loop
        self._expire = expire
        self._timer: asyncio.TimerHandle | None = None
        self.armed_for = math.inf

    def include(self, deadline: float) -> None:
        """Fire no later than `deadline` (loop time)."""
        if deadline < self.armed_for:
            if self._timer is not None:
                self._timer.cancel()
            self.armed_for = deadline
            self._timer = self.loop.call_at(deadline, self._fire)

    def _fire(self) -> None:
        self._timer, self.armed_for = None, math.inf
        earliest_left = self._expire(self.loop.time())
        if earliest_left is not None:
            self.include(earliest_left)
