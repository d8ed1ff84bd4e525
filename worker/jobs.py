"""Running jobs and the hand-off of tokens from the token-loop thread to the event loop."""

from __future__ import annotations

import asyncio
import threading
import time
import weakref
from collections import deque
from dataclasses import dataclass, field
from typing import Literal

from shared.aio import resolve
from shared.problem import Conflict
from shared.wire import TokenLogprob
from worker.slots import Ticket

JobState = Literal["queued", "running", "finished"]


@dataclass(eq=False)
class Job:
    """One /execute request. `cancelled` is read and written on the event loop only; the thread
    sees `stop` (a threading.Event) instead."""

    id: str
    stop: threading.Event = field(default_factory=threading.Event)
    cancelled: bool = False
    shutdown: bool = False  # cancelled because the worker is stopping, not by its client
    emitted: int = 0  # token events handed to the transport so far
    state: JobState = "queued"
    ticket: Ticket | None = None

    def cancel(self) -> None:
        self.cancelled = True
        self.stop.set()
        if self.state == "queued" and self.ticket is not None:
            self.ticket.release()  # leave the line now rather than when a slot frees


class JobTable:
    def __init__(self) -> None:
        self._jobs: dict[str, Job] = {}

    def __len__(self) -> int:
        return len(self._jobs)

    def add(self, job_id: str) -> Job:
        if job_id in self._jobs:
            raise Conflict(f"job {job_id!r} is already running on this worker")
        job = self._jobs[job_id] = Job(job_id)
        return job

    def get(self, job_id: str) -> Job | None:
        return self._jobs.get(job_id)

    def remove(self, job: Job) -> None:
        if self._jobs.get(job.id) is job:
            del self._jobs[job.id]

    def cancel_all(self, *, shutdown: bool = False) -> None:
        for job in self._jobs.values():
            job.shutdown = job.shutdown or shutdown
            job.cancel()


class Doorbell:
    """One event loop's wake-ups from the decode thread: at most one in flight at a time.

    A wake-up (`call_soon_threadsafe`) costs a syscall and a loop iteration that competes with the
    decode thread for the GIL. One step of the decode loop ends a token for every running stream;
    their channels hand their waiters here, and the first one schedules a single call that
    resolves all that are waiting by the time it runs: one wake-up per step, not one per stream.
    Lock-free: the producer appends then checks `_rung`; the consumer clears `_rung` before it
    takes the waiters, so a waiter appended after the take finds `_rung` clear and rings again.
    """

    __slots__ = ("__weakref__", "_loop", "_ready", "_rung", "rings")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._ready: deque[asyncio.Future[None]] = deque()
        self._rung = False
        self.rings = 0  # calls scheduled so far (for tests and benchmarks)

    def ring(self, waiter: asyncio.Future[None]) -> None:
        """Resolve `waiter` soon, on the loop (any thread)."""
        self._ready.append(waiter)
        if not self._rung:
            self._rung = True
            self.rings += 1
            self._loop.call_soon_threadsafe(self._answer)

    def _answer(self) -> None:
        self._rung = False
        ready = self._ready
        for _ in range(len(ready)):
            resolve(ready.popleft())


_doorbells: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Doorbell] = (
    weakref.WeakKeyDictionary()
)


def doorbell(loop: asyncio.AbstractEventLoop) -> Doorbell:
    """The loop's one `Doorbell` (call on the loop)."""
    bell = _doorbells.get(loop)
    if bell is None:
        bell = _doorbells[loop] = Doorbell(loop)
    return bell


class TokenChannel:
    """Thread -> event loop queue of text pieces that wakes the loop only when it is waiting.

    The producer appends without locking (deque appends are atomic); the consumer takes
    everything available at once. While tokens come faster than one per `coalesce_s` the
    producer wakes the loop for this channel at most once per `coalesce_s` and tokens travel in
    batches. A slow model (a token every few ms or more) is woken on every token: latency is
    unchanged. Wake-ups go through the loop's `Doorbell`, which folds those of all channels that
    come together (one decode step) into one.
    """

    __slots__ = (
        "_bell",
        "_closed",
        "_coalesce_s",
        "_ids",
        "_indexes",
        "_items",
        "_last_wake",
        "_logprobs",
        "_loop",
        "_waiter",
    )

    def __init__(self, loop: asyncio.AbstractEventLoop, coalesce_s: float = 0.001) -> None:
        self._loop = loop
        self._bell = doorbell(loop)
        self._items: deque[str] = deque()
        # Each piece's logprob entries, for jobs that ask (WRK-134): appended before the piece,
        # so a consumer that took n pieces always finds n entries lists here.
        self._logprobs: deque[list[TokenLogprob]] = deque()
        self._indexes: deque[int] = deque()  # each piece's choice, for n > 1 jobs (WRK-140)
        self._ids: deque[list[int]] = deque()  # each piece's token ids, for jobs that ask (WRK-161)
        self._closed = False
        self._waiter: asyncio.Future[None] | None = None
        self._coalesce_s = coalesce_s
        self._last_wake = 0.0

    def token(self, text: str) -> None:
        self._items.append(text)
        if self._waiter is not None:
            now = time.perf_counter()
            if now - self._last_wake >= self._coalesce_s:
                self._last_wake = now
                self._wake()

    def logprobs(self, entries: list[TokenLogprob]) -> None:
        self._logprobs.append(entries)

    def ids(self, tokens: list[int]) -> None:
        self._ids.append(tokens)

    def take_ids(self, n: int) -> list[list[int]]:
        """The token ids of the next `n` pieces `drain` returned, in order."""
        return [self._ids.popleft() for _ in range(n)]

    def index(self, choice: int) -> None:
        self._indexes.append(choice)

    def take_indexes(self, n: int) -> list[int]:
        """The choices of the next `n` pieces `drain` returned, in order."""
        return [self._indexes.popleft() for _ in range(n)]

    def take_logprobs(self, n: int) -> list[list[TokenLogprob]]:
        """The entries of the next `n` pieces `drain` returned, in order."""
        return [self._logprobs.popleft() for _ in range(n)]

    def close(self) -> None:
        self._closed = True
        self._wake()

    def _wake(self) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None:
            self._bell.ring(waiter)

    async def drain(self, patience_s: float | None = None) -> list[str] | None:
        """All pieces available now, waiting for at least one; [] once closed and empty;
        None if `patience_s` passed with nothing."""
        timer: asyncio.TimerHandle | None = None
        while True:
            if self._items:
                items = self._items
                return [items.popleft() for _ in range(len(items))]
            if self._closed:
                return []
            if timer is not None and timer.when() <= self._loop.time():
                return None
            waiter = self._loop.create_future()
            self._waiter = waiter
            if self._items or self._closed:  # raced with the producer: do not sleep
                self._waiter = None
                continue
            if patience_s is not None:
                timer = self._loop.call_later(patience_s, resolve, waiter)
            try:
                await waiter
            finally:
                if timer is not None:
                    timer.cancel()
