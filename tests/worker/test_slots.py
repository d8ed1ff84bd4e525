from __future__ import annotations

import asyncio

import pytest

from shared.problem import Busy
from worker.slots import SlotPool


@pytest.mark.anyio
async def test_free_slots_are_granted_at_once_then_waiters_queue_in_order() -> None:
    """WRK-040, WRK-041: at most --slots run; waiters queue FIFO up to --max-queue; beyond, Busy
    with retry_after_ms."""
    pool = SlotPool(2, max_queue=2)
    a, b = pool.reserve(), pool.reserve()
    assert {await a.slot(), await b.slot()} == {0, 1}
    assert pool.busy == 2
    c, d = pool.reserve(), pool.reserve()
    assert pool.queued == 2
    with pytest.raises(Busy) as exc:
        pool.reserve()
    assert exc.value.retry_after_ms == 1000
    a.release()
    assert await asyncio.wait_for(c.slot(), 1) in (0, 1)
    assert pool.queued == 1 and pool.busy == 2
    b.release()
    await asyncio.wait_for(d.slot(), 1)
    c.release()
    d.release()
    assert pool.busy == 0 and pool.queued == 0


@pytest.mark.anyio
async def test_a_waiter_that_leaves_gives_its_place_back() -> None:
    pool = SlotPool(1, max_queue=1)
    a = pool.reserve()
    waiting = pool.reserve()
    waiting.release()  # the client went away before its turn
    assert pool.queued == 0
    a.release()
    assert pool.busy == 0
    fresh = pool.reserve()
    assert await fresh.slot() == 0


@pytest.mark.anyio
async def test_release_is_idempotent() -> None:
    pool = SlotPool(1, max_queue=0)
    t = pool.reserve()
    t.release()
    t.release()
    assert pool.busy == 0 and len(pool._free) == 1
