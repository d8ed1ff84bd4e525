"""Reservations: what a dispatched task holds while it runs, and the one object that gives it back.

A task placed on a worker holds one of the worker's slots and one unit of its tenant's running
count. Both are taken when the `Reservation` is made and released by `Reservation.release`,
exactly once, however the task ends: the runtime calls it from `__exit__` and from the done
callback of the task's runner (which runs even when the runner was cancelled before its first
step, where a `finally` inside it never would). Pure: no I/O.
"""

from __future__ import annotations

from collections import Counter
from types import TracebackType

from orchestratord.domain.registry import Registry


class Ledger:
    """The running count of every tenant, kept by the reservations themselves."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self.running_by_tenant: Counter[str] = Counter()

    def reserve(
        self, worker_id: str, task_id: str, tenant: str | None, slots: int = 1
    ) -> Reservation:
        return Reservation(self, worker_id, task_id, tenant or "", slots)

    @property
    def running(self) -> int:
        return sum(self.running_by_tenant.values())


class Reservation:
    """One task's slot on one worker and its tenant's running count; released exactly once."""

    __slots__ = ("_ledger", "released", "task_id", "tenant", "worker_id")

    def __init__(
        self, ledger: Ledger, worker_id: str, task_id: str, tenant: str, slots: int = 1
    ) -> None:
        self._ledger = ledger
        self.worker_id, self.task_id, self.tenant = worker_id, task_id, tenant
        # A task of n choices holds n slots (ORCH-270); the tenant's running count is one task.
        ledger.registry.reserve(worker_id, task_id, slots)
        ledger.running_by_tenant[tenant] += 1
        self.released = False

    def release(self) -> bool:
        """Give the slot and the running count back; False when already released."""
        if self.released:
            return False
        self.released = True
        self._ledger.registry.release(self.worker_id, self.task_id)
        counts = self._ledger.running_by_tenant
        counts[self.tenant] -= 1
        if counts[self.tenant] <= 0:
            del counts[self.tenant]
        return True

    def __enter__(self) -> Reservation:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()
