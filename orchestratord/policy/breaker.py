"""The breaker that sets a policy's own functions aside when they keep failing or running long
(specs/policy.md POL-092): after `failures` failed or overrun calls in a row, or as many
scheduling passes in a row that ran out of their time, the built-in policy answers every call
for `cooldown_s`. Then the policy gets one more chance: one more failure trips it again at once.

Thread-safe: the policy's thread records, the event loop asks `closed()` per decision.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from orchestratord.policy.types import FallbackReason

Clock = Callable[[], float]


class Breaker:
    def __init__(
        self,
        failures: int,
        cooldown_s: float,
        *,
        clock: Clock = time.monotonic,
        on_trip: Callable[[str], None] | None = None,
        on_close: Callable[[], None] | None = None,
    ) -> None:
        self.failures = failures
        self.cooldown_s = cooldown_s
        self.clock = clock
        self.trips = 0
        self._on_trip = on_trip
        self._on_close = on_close
        self._lock = threading.Lock()
        self._calls = 0  # failed or overrun calls in a row
        self._passes = 0  # passes in a row that ran out of their time
        self._open_until: float | None = None

    def closed(self) -> bool:
        """Whether the policy's own functions may be called now."""
        if self._open_until is None:
            return True
        with self._lock:
            if self._open_until is None:
                return True
            if self.clock() < self._open_until:
                return False
            self._open_until = None
            # Half open: the policy earned one call, not a fresh count.
            self._calls = self._passes = self.failures - 1
        if self._on_close is not None:
            self._on_close()
        return True

    def reset(self) -> None:
        """A new policy was installed: it starts with a clean record."""
        with self._lock:
            was_open = self._open_until is not None
            self._calls = self._passes = 0
            self._open_until = None
        if was_open and self._on_close is not None:
            self._on_close()

    def call(self, reason: FallbackReason | None) -> None:
        """Record one call of the policy's own function: None when it answered, else why it
        fell back. Inputs we could not encode (bad_input) are ours, not the policy's."""
        if reason == "bad_input":
            return
        with self._lock:
            self._calls = 0 if reason is None else self._calls + 1
            tripped = self._calls >= self.failures and self._trip()
        if tripped:
            self._tripped(f"{self.failures} calls in a row failed ({reason})")

    def scheduling_pass(self, overran: bool) -> None:
        """Record one scheduling pass: whether it ran out of its time budget."""
        with self._lock:
            self._passes = self._passes + 1 if overran else 0
            tripped = self._passes >= self.failures and self._trip()
        if tripped:
            self._tripped(f"{self.failures} scheduling passes in a row ran out of time")

    def _trip(self) -> bool:
        if self._open_until is not None:
            return False
        self._open_until = self.clock() + self.cooldown_s
        self._calls = self._passes = 0
        self.trips += 1
        return True

    def _tripped(self, why: str) -> None:
        if self._on_trip is not None:
            self._on_trip(why)
