"""Requests that wait for a database connection are served first come, first served, and
none waits longer than DB_ACQUIRE_TIMEOUT: the pool's FairGate (service/database/pool.py),
on a real pool and, end to end, through the app at many times more callers than
connections."""

from __future__ import annotations

import asyncio
import time

import httpx
import msgspec
import pytest
from prometheus_client import REGISTRY

from service.database.pool import FairGate, ServerPool
from service.database.routing import open_database
from tests.helpers import app_client

WAITS = "service_db_pool_acquire_seconds"


async def test_released_connections_go_to_the_oldest_waiter_not_to_a_newcomer(settings):
    one = msgspec.structs.replace(settings, db_pool_min=1, db_pool_max=1)
    pool = ServerPool("primary", settings.database_url, one)
    await pool.open()
    served: list[str] = []
    try:
        held = await pool.acquire(5)

        async def take(name: str) -> None:
            connection = await pool.acquire(5)
            served.append(name)
            await asyncio.sleep(0)  # hold it for a moment, as a request does
            await pool.release(connection)

        waiters = []
        for number in range(5):
            waiters.append(asyncio.create_task(take(f"waiter-{number}")))
            await asyncio.sleep(0.01)  # arrive in this order
        await pool.release(held)
        # A newcomer arriving right after the release must queue behind every waiter,
        # where asyncpg's own queue would hand it the connection first.
        newcomer = asyncio.create_task(take("newcomer"))
        await asyncio.gather(*waiters, newcomer)
    finally:
        await pool.close()
    assert served == [*(f"waiter-{number}" for number in range(5)), "newcomer"]


async def test_waits_reach_their_histogram_when_the_pool_is_sampled(settings):
    """A wait for a connection is tallied in plain numbers and published with the pool's
    gauges (every second and at each scrape); a request that finds a free one adds none."""
    one = msgspec.structs.replace(settings, db_pool_min=1, db_pool_max=1)
    pool = ServerPool("waits-test", settings.database_url, one)
    labels = {"server": "waits-test"}
    await pool.open()
    try:
        held = await pool.acquire(5)
        waiting = asyncio.create_task(pool.acquire(5))
        await asyncio.sleep(0.05)
        await pool.release(held)
        await pool.release(await waiting)
        assert REGISTRY.get_sample_value(f"{WAITS}_count", labels) == 0  # tallied, not yet out
        pool.sample()
        pool.sample()  # a second sample adds nothing
    finally:
        await pool.close()
    assert REGISTRY.get_sample_value(f"{WAITS}_count", labels) == 1
    assert 0.05 <= (REGISTRY.get_sample_value(f"{WAITS}_sum", labels) or 0) < 5
    assert REGISTRY.get_sample_value(f"{WAITS}_bucket", {**labels, "le": "0.05"}) == 0
    assert REGISTRY.get_sample_value(f"{WAITS}_bucket", {**labels, "le": "+Inf"}) == 1


async def test_a_waiter_gives_up_at_its_deadline_and_passes_nothing_on():
    gate = FairGate(1)
    await gate.enter(1)
    started = time.monotonic()
    try:
        await gate.enter(0.2)
    except TimeoutError:
        pass
    else:
        raise AssertionError("entered a full gate")
    assert 0.15 < time.monotonic() - started < 1
    gate.leave()  # the permit comes back to the gate, not to the waiter that gave up
    await asyncio.wait_for(gate.enter(0.1), 1)


async def test_each_waiter_gives_up_at_its_own_deadline():
    """One timer keeps every waiter's deadline: a later waiter with a shorter wait gives up
    first, and the ones still waiting keep their turn."""
    gate = FairGate(1)
    await gate.enter(1)
    started = time.monotonic()
    patient = asyncio.create_task(gate.enter(5))
    hasty = asyncio.create_task(gate.enter(0.2))
    later = asyncio.create_task(gate.enter(0.4))
    with pytest.raises(TimeoutError):
        await hasty
    assert 0.15 < time.monotonic() - started < 0.35
    with pytest.raises(TimeoutError):
        await later
    assert 0.35 < time.monotonic() - started < 0.6
    assert not patient.done()
    gate.leave()  # to the patient waiter, the only one left
    assert await asyncio.wait_for(patient, 1) is True


async def test_a_cancelled_waiter_hands_its_permit_on():
    gate = FairGate(1)
    await gate.enter(1)
    cancelled = asyncio.create_task(gate.enter(5))
    after = asyncio.create_task(gate.enter(5))
    await asyncio.sleep(0.01)
    gate.leave()  # hands the permit to `cancelled`, which is cancelled before it runs
    cancelled.cancel()
    await asyncio.wait_for(after, 1)  # so it went on to the next waiter


async def test_two_hundred_callers_on_four_connections_are_served_fairly(settings, post):
    small = msgspec.structs.replace(settings, db_pool_min=4, db_pool_max=4, db_acquire_timeout=10.0)
    async with app_client(small) as client:

        async def timed() -> tuple[int, float]:
            started = time.monotonic()
            response = await client.get(f"/posts/{post['id']}")
            return response.status_code, time.monotonic() - started

        for _ in range(20):  # warm: every connection open, statements prepared
            await timed()
        results = await asyncio.gather(*(timed() for _ in range(200)))
    statuses = [status for status, _ in results]
    durations = sorted(seconds for _, seconds in results)
    assert statuses == [200] * 200
    # Everyone waited its turn: the slowest caller took about as long as the whole batch
    # needed, not many times the median (which barging newcomers would cause).
    median = durations[len(durations) // 2]
    assert durations[-1] < 2.5 * median + 0.05, (median, durations[-1])


async def test_a_request_that_cannot_get_a_connection_in_time_is_503_not_a_hang(settings, post):
    single = msgspec.structs.replace(settings, db_pool_min=1, db_pool_max=1, db_acquire_timeout=0.3)
    async with app_client(single) as client:
        primary = client._transport.app.state.database.primary  # type: ignore[attr-defined]
        async with primary.connection():
            started = time.monotonic()
            answers: list[httpx.Response] = await asyncio.gather(
                *(client.get(f"/posts/{post['id']}") for _ in range(5))
            )
            elapsed = time.monotonic() - started
        assert [answer.status_code for answer in answers] == [503] * 5
        assert elapsed < 1.5
        assert (await client.get(f"/posts/{post['id']}")).status_code == 200


async def test_a_request_that_fails_after_its_statements_gives_its_connection_back(settings, post):
    """The session is closed whatever the handler did: on one connection, a 404 and a 412
    (each raised after a statement) leave it free for the next request."""
    single = msgspec.structs.replace(settings, db_pool_min=1, db_pool_max=1, db_acquire_timeout=0.5)
    async with app_client(single) as client:
        primary = client._transport.app.state.database.primary  # type: ignore[attr-defined]
        for _ in range(3):
            assert (await client.get("/posts/999999999")).status_code == 404
            stale = {"If-Match": '"999"'}
            changed = await client.patch(f"/posts/{post['id']}", json={"title": "x"}, headers=stale)
            assert changed.status_code == 412
            assert primary.pool.get_idle_size() == primary.pool.get_size() == 1
        assert (await client.get(f"/posts/{post['id']}")).status_code == 200


async def test_a_write_gives_its_connection_back_after_each_statement_a_read_at_the_end(
    settings,
):
    """A write outside a transaction holds a connection only for its statement: the next
    write waits for no answer to be encoded and sent. A read keeps its connection (its
    statements see one server), and so does a transaction."""
    two = msgspec.structs.replace(settings, db_pool_min=2, db_pool_max=2)
    database = await open_database(two, two.database_url)
    pool = database.primary.pool
    write, read = database.session(read_only=False), database.session(read_only=True)

    def in_use() -> int:
        return pool.get_size() - pool.get_idle_size()

    try:
        assert await write.fetchval("SELECT 1") == 1
        assert in_use() == 0
        async with write.transaction():
            await write.fetchval("SELECT 1")
            await write.fetchval("SELECT 2")
            assert in_use() == 1
        await write.close()
        assert in_use() == 0
        await read.fetchval("SELECT 1")
        assert in_use() == 1
        await read.close()
        assert in_use() == 0
    finally:
        await write.close()
        await read.close()
        await database.close()
