"""The async side of `GET /v2/events`: a 1-second ticker that publishes worker changes and the
metrics snapshot, the task hooks, and each reader's batches for the SSE response.

The hub, the windows and the snapshot are pure (orchestratord.runtime.events_hub, fleet_snapshot);
this adapter reads the live objects through the callables it is given, so it depends on
nothing else in orchestratord. It lives in the lifespan state as `request.state.events`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator, Callable, Iterable, Mapping, Sequence
from typing import Any

from orchestratord.domain.fleet_snapshot import (
    LatencyWindow,
    Queued,
    ThroughputMeter,
    WorkerWatch,
    lanes,
    snapshot,
)
from orchestratord.domain.tasks import TaskRecord
from orchestratord.runtime.events_hub import EventHub, Subscription

log = logging.getLogger("llorch.orchestratord")
TICK_S = 1.0
IDLE_WAIT_S = 3600.0
LANES = ("interactive", "batch")


class EventsFeed:
    def __init__(
        self,
        *,
        clock: Callable[[], int],
        workers: Callable[[], Sequence[Mapping[str, Any]]],
        queued: Callable[[], Iterable[Queued]],
        token_totals: Callable[[], Mapping[str, int]],
        policy: Callable[[], Mapping[str, Any]],
        buffer: int = 256,
        cache_index: Callable[[], Mapping[str, int]] | None = None,
    ) -> None:
        self._cache_index = cache_index
        self.hub = EventHub(buffer)
        self.clock = clock
        self._workers = workers
        self._queued = queued
        self._token_totals = token_totals
        self._policy = policy
        self.ttft = LatencyWindow()
        self.queue_time = LatencyWindow()
        self._meter = ThroughputMeter()
        self._watch = WorkerWatch()
        self._task: asyncio.Task[None] | None = None
        self._last: dict[str, Any] | None = None

    # --- hooks the task service calls (cheap: nothing is framed without readers) -------------

    def task_changed(self, record: TaskRecord) -> None:
        """A task was queued, started or ended (the service's observer). Its latencies go to
        the windows whether or not anyone reads: a new reader sees the last minutes."""
        if record.status == "running" and record.attempts == 1 and record.started_ms:
            self.queue_time.add(record.started_ms, float(record.started_ms - record.created_ms))
        elif record.status == "succeeded" and record.ttft_ms is not None:
            self.ttft.add(record.finished_ms or self.clock(), record.ttft_ms)
        if len(self.hub):
            self.hub.publish("task", record.to_json(), tenant=record.tenant, scope="tenant")

    # --- the ticker ------------------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="events-ticker")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(TICK_S)
            try:
                self.tick()
            except Exception:
                log.exception("events tick failed")

    def snapshot(self) -> dict[str, Any]:
        """A new snapshot (it advances the tok/s meter: call it once per tick)."""
        now = self.clock()
        workers = self._workers()
        rates = self._meter.rates(now, self._token_totals())
        self._last = snapshot(
            now,
            workers,
            rates,
            lanes(self._queued(), LANES, now),
            self.ttft.percentiles(now),
            self.queue_time.percentiles(now),
            self._policy(),
            self._cache_index() if self._cache_index is not None else None,
        )
        return self._last

    def tick(self) -> None:
        """Publish worker changes and the metrics snapshot; with no reader, only keep the
        change watch's baseline current (so a later reader is not sent stale changes)."""
        if not len(self.hub):
            self._watch.changes(self._workers())
            self._last = None
            return
        snap = self.snapshot()
        for change in self._watch.changes(snap["workers"]):
            self.hub.publish("worker", change, scope="fleet")
        self.hub.publish("metrics", snap, scope="fleet")

    # --- readers ---------------------------------------------------------------------------

    def subscribe(self, *, tenant: str | None, admin: bool) -> tuple[Subscription, bytes]:
        """A new reader and its `hello` frame (role, tenant and the current snapshot)."""
        sub = self.hub.subscribe(tenant=tenant, admin=admin)
        hello = {
            "role": "admin" if admin else "client",
            "tenant": tenant,
            "now_ms": self.clock(),
            # The last tick's snapshot: a fresh one would measure tok/s over a sliver of time.
            "snapshot": self._last if self._last is not None else self.snapshot(),
        }
        return sub, self.hub.frame("hello", hello)[1]

    async def chunks(self, sub: Subscription, hello: bytes) -> AsyncGenerator[bytes, None]:
        """The reader's body for the SSE response: `hello`, then one chunk per wake-up with
        whatever is buffered (the response sends keep-alives; its on_close unsubscribes)."""
        yield hello
        while True:
            if not await sub.wait(IDLE_WAIT_S):
                continue
            batch, dropped = sub.drain()
            lagged = [self.hub.frame("lagged", {"dropped": dropped})[1]] if dropped else []
            yield b"".join([*lagged, *(ev.frame for ev in batch)])
