"""Slot accounting: N slots, a bounded FIFO of waiters, nothing else (no I/O, no clock).

`reserve()` answers at once (so an over-full worker can say 503 before it starts a stream);
the returned ticket is awaited for the slot. What runs concurrently is exactly `busy`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque

from shared.problem import Busy


class Ticket:
    """A place in line for a slot. Await `slot()`; call `release()` exactly once when done."""

    __slots__ = ("_extra", "_future", "_pool", "_released", "_slot")

    def __init__(self, pool: SlotPool, slot: int | None, future: asyncio.Future[int] | None):
        self._pool = pool
        self._slot = slot
        self._future = future
        self._released = False
        self._extra: list[Ticket] = []  # the other slots of an n > 1 job (WRK-141)

    async def slot(self) -> int | None:
        """The granted slot, or None when the ticket was released while waiting."""
        if self._slot is None:
            assert self._future is not None
            try:
                self._slot = await asyncio.shield(self._future)
            except asyncio.CancelledError:
                if self._released and self._future.cancelled():
                    return None
                raise
        return self._slot

    def release(self) -> None:
        """Give the slot back, or leave the line if it was never granted. Idempotent."""
        if self._released:
            return
        self._released = True
        for other in self._extra:
            other.release()
        if self._slot is None and self._future is not None and not self._future.done():
            self._pool._leave(self._future)
            return
        if self._slot is None and self._future is not None and self._future.done():
            self._slot = self._future.result()
        if self._slot is not None:
            self._pool._give_back(self._slot)


class SlotPool:
    def __init__(self, slots: int, max_queue: int) -> None:
        self.total = slots
        self.max_queue = max_queue
        self._free: deque[int] = deque(range(slots))
        self._waiters: deque[asyncio.Future[int]] = deque()

    @property
    def busy(self) -> int:
        return self.total - len(self._free)

    @property
    def queued(self) -> int:
        return len(self._waiters)

    def reserve(self) -> Ticket:
        if self._free and not self._waiters:
            return Ticket(self, self._free.popleft(), None)
        if len(self._waiters) >= self.max_queue:
            raise Busy(
                f"all {self.total} slots busy and {self.queued} requests waiting",
                retry_after_ms=1000,
            )
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._waiters.append(future)
        return Ticket(self, None, future)

    def reserve_n(self, n: int) -> Ticket:
        """One ticket for `n` slots, granted now or refused: a job of n choices never waits in
        line (it would hold slots while waiting for more), and is busy when fewer are free
        (WRK-141)."""
        if n == 1:
            return self.reserve()
        if len(self._free) < n or self._waiters:
            raise Busy(
                f"{n} slots asked, {len(self._free)} of {self.total} free",
                retry_after_ms=1000,
            )
        ticket = Ticket(self, self._free.popleft(), None)
        ticket._extra = [Ticket(self, self._free.popleft(), None) for _ in range(n - 1)]
        return ticket

    def _give_back(self, slot: int) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(slot)
                return
        self._free.append(slot)

    def _leave(self, future: asyncio.Future[int]) -> None:
        with contextlib.suppress(ValueError):
            self._waiters.remove(future)
        future.cancel()
