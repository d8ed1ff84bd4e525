"""A task's event log: its events in memory, so an SSE reader that reconnects with
`Last-Event-ID` gets everything it missed (event ids are the index in the log), and the wake-up
of readers waiting for the next event.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Mapping
from typing import Any

from shared.aio import resolve
from shared.sse import dumps
from shared.wire import TERMINAL_EVENTS

EVENT_OVERHEAD = 160


class TaskEvent:
    """One event of a task's stream. `raw` is the JSON data as received, passed through as is.

    Token events relayed from a worker are never decoded: `data` decodes lazily for the few
    consumers (the OpenAI adapter) that need a dict, and `frame` is built once per event.
    """

    __slots__ = ("_data", "_frame", "event", "id", "raw")

    def __init__(
        self, id: int, event: str, data: Mapping[str, Any] | None = None, raw: bytes | None = None
    ) -> None:
        self.id = id
        self.event = event
        self._data: dict[str, Any] | None = dict(data) if data is not None else None
        self.raw = raw if raw is not None else dumps(self._data or {}).encode()
        self._frame: bytes | None = None

    @property
    def data(self) -> dict[str, Any]:
        if self._data is None:
            self._data = json.loads(self.raw)
        return self._data

    @property
    def frame(self) -> bytes:
        """The SSE frame: `id`, `event`, one `data` line."""
        if self._frame is None:
            self._frame = b"".join(
                (b"id: %d\nevent: " % self.id, self.event.encode(), b"\ndata: ", self.raw, b"\n\n")
            )
        return self._frame

    def __repr__(self) -> str:
        return f"TaskEvent({self.id}, {self.event!r}, {self.raw!r})"


class TaskLog:
    """A task's events in order, plus a wake-up for readers waiting on the next one.

    The wake-up event is made only when a reader waits, and dropped when set, so appending
    a token costs no allocation while readers are busy sending.
    """

    __slots__ = ("_changed", "_lingering", "closed", "events", "nbytes", "readers")

    def __init__(self) -> None:
        self.events: list[TaskEvent] = []
        self.nbytes = 0  # what the events hold in memory, about: the retention bound counts it
        self.closed = False
        self.readers = 0
        self._changed: asyncio.Event | None = None
        self._lingering: list[asyncio.Future[None]] = []  # readers in `linger`

    def append(
        self, event: str, data: Mapping[str, Any] | None = None, raw: bytes | None = None
    ) -> TaskEvent:
        if self.closed:
            raise RuntimeError("task log is closed")
        ev = TaskEvent(len(self.events), event, data, raw)
        self.events.append(ev)
        # The data, its SSE frame (built once, about as large) and the objects around them.
        self.nbytes += 2 * len(ev.raw) + EVENT_OVERHEAD
        if event in TERMINAL_EVENTS:
            self.closed = True
            for waiter in self._lingering:
                resolve(waiter)
            self._lingering.clear()
        changed = self._changed
        if changed is not None:
            self._changed = None
            changed.set()
        return ev

    async def linger(self, wait_s: float) -> None:
        """Sleep up to `wait_s`, waking early when the log closes (readers batching tokens
        must not hold back the final event). A reader runs this once per batch it sends: one
        future and one timer, no timeout context or event object."""
        if self.closed:
            return
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[None] = loop.create_future()
        self._lingering.append(waiter)
        timer = loop.call_later(wait_s, resolve, waiter)
        try:
            await waiter
        finally:
            timer.cancel()
            with contextlib.suppress(ValueError):  # already gone when the log closed
                self._lingering.remove(waiter)

    async def wait(self, index: int, wait_s: float | None = None) -> bool:
        """Wait until an event with id >= `index` exists or the log closed; False on timeout."""
        if index < len(self.events) or self.closed:
            return True
        if self._changed is None:
            self._changed = asyncio.Event()
        try:
            async with asyncio.timeout(wait_s):
                await self._changed.wait()
        except TimeoutError:
            return False
        return True
