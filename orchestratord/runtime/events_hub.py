"""The fleet event hub behind `GET /v2/events`: fan-out of framed events to many subscribers.

Pure (no I/O, no clock): `publish` frames an event once and appends the same bytes to every
subscriber's buffer; it never waits. Each buffer is bounded: when a subscriber falls behind
(a slow browser, a stalled connection) its oldest events are dropped and it is told how many
with one `lagged` event, so a slow reader costs memory it may use, never time to the relay.

    hub = EventHub(buffer=256)
    sub = hub.subscribe(tenant="acme")        # None: sees every task (admin)
    hub.publish("task", {...}, tenant="acme") # fleet-wide events: tenant=None, scope="fleet"
    batch = sub.drain()                       # list[HubEvent], oldest first
    await sub.wait(15.0)                      # until something arrives or the time passed
    hub.unsubscribe(sub)                      # in the SSE response's finally
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from shared.sse import encode_event

Scope = Literal["fleet", "tenant"]
DEFAULT_BUFFER = 256


@dataclass(frozen=True, slots=True)
class HubEvent:
    """One event on the fleet stream; `frame` is its SSE bytes, built once for all readers.

    `scope == "fleet"` events (workers, metrics) reach every subscriber; `"tenant"` events
    (a task's state) reach admins and the subscribers of `tenant` only.
    """

    id: int
    event: str
    scope: Scope
    tenant: str | None
    frame: bytes


class Subscription:
    """One reader's bounded buffer and its wake-up."""

    __slots__ = ("_buffer", "_changed", "admin", "dropped", "tenant")

    def __init__(self, tenant: str | None, admin: bool, size: int) -> None:
        self.tenant = tenant
        self.admin = admin
        self.dropped = 0
        self._buffer: deque[HubEvent] = deque(maxlen=size)
        self._changed: asyncio.Event | None = None

    def sees(self, ev: HubEvent) -> bool:
        return ev.scope == "fleet" or self.admin or ev.tenant == self.tenant

    def offer(self, ev: HubEvent) -> None:
        if len(self._buffer) == self._buffer.maxlen:
            self.dropped += 1  # the deque drops the oldest on append
        self._buffer.append(ev)
        changed = self._changed
        if changed is not None:
            self._changed = None
            changed.set()

    def pending(self) -> int:
        return len(self._buffer)

    def drain(self) -> tuple[list[HubEvent], int]:
        """Everything buffered, oldest first, and how many events were dropped before it."""
        batch = list(self._buffer)
        self._buffer.clear()
        dropped, self.dropped = self.dropped, 0
        return batch, dropped

    async def wait(self, wait_s: float) -> bool:
        """Wait until an event is buffered; False when `wait_s` passed first."""
        if self._buffer:
            return True
        if self._changed is None:
            self._changed = asyncio.Event()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(wait_s):
                await self._changed.wait()
                return True
        return False


class EventHub:
    """Subscribers and the event sequence. One per orchestratord (lifespan state)."""

    def __init__(self, buffer: int = DEFAULT_BUFFER) -> None:
        if buffer < 2:
            raise ValueError("buffer must hold at least 2 events")
        self.buffer = buffer
        self.next_id = 0
        self._subs: set[Subscription] = set()

    def __len__(self) -> int:
        return len(self._subs)

    def subscribe(self, *, tenant: str | None, admin: bool) -> Subscription:
        """A new reader: `admin` sees every task; otherwise only tasks of `tenant`."""
        sub = Subscription(tenant, admin, self.buffer)
        self._subs.add(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        self._subs.discard(sub)

    def frame(self, event: str, data: Mapping[str, Any]) -> tuple[int, bytes]:
        """A new event id and the event's SSE frame (also for events sent to one reader)."""
        ev_id = self.next_id
        self.next_id += 1
        return ev_id, encode_event(event, dict(data), ev_id)

    def publish(
        self, event: str, data: Mapping[str, Any], *, tenant: str | None = None, scope: Scope
    ) -> HubEvent | None:
        """Frame `data` once and offer it to every subscriber that may see it.

        With no subscribers nothing is framed: an orchestratord nobody watches pays nothing.
        """
        if not self._subs:
            return None
        ev_id, frame = self.frame(event, data)
        ev = HubEvent(ev_id, event, scope, tenant, frame)
        for sub in self._subs:
            if sub.sees(ev):
                sub.offer(ev)
        return ev
