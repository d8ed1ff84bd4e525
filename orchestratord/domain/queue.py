"""The task queue: bounded, two lanes, FIFO within a lane; pure (no I/O, the clock passed in).

`interactive` is always served before `batch`. When full, `reject` refuses the new task and
`drop-lru` evicts the oldest queued task, batch first, to make room.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

from orchestratord.domain.tasks import Priority

LANES: tuple[Priority, ...] = ("interactive", "batch")
FullPolicy = Literal["reject", "drop-lru"]


class QueueFullError(Exception):
    """No room, and the full-queue policy refused to make any."""


@dataclass
class QueueEntry:
    task_id: str
    model: str
    priority: Priority
    enqueued_ms: int
    deadline_ms: int | None  # absolute, same clock as enqueued_ms; None: no deadline


class TaskQueue:
    def __init__(self, capacity: int, full_policy: FullPolicy = "reject") -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.capacity = capacity
        self.full_policy = full_policy
        self._lanes: dict[Priority, OrderedDict[str, QueueEntry]] = {
            lane: OrderedDict() for lane in LANES
        }

    def __len__(self) -> int:
        return sum(len(q) for q in self._lanes.values())

    def __contains__(self, task_id: object) -> bool:
        return any(task_id in q for q in self._lanes.values())

    def depth(self) -> dict[str, int]:
        return {lane: len(q) for lane, q in self._lanes.items()}

    def push(self, entry: QueueEntry) -> list[QueueEntry]:
        """Enqueue; returns the entries evicted for room (drop-lru), or raises QueueFullError."""
        if entry.task_id in self:
            raise ValueError(f"task {entry.task_id} is already queued")
        dropped: list[QueueEntry] = []
        if len(self) >= self.capacity:
            victim = self._victim(entry)
            if victim is None:
                raise QueueFullError(f"queue full ({self.capacity} tasks)")
            dropped.append(self._lanes[victim.priority].pop(victim.task_id))
        self._lanes[entry.priority][entry.task_id] = entry
        return dropped

    def push_front(self, entry: QueueEntry) -> None:
        """Put a task back at the head of its lane (a retry); may exceed capacity by design:
        the task held a place before it was dispatched."""
        lane = self._lanes[entry.priority]
        lane[entry.task_id] = entry
        lane.move_to_end(entry.task_id, last=False)

    def _victim(self, incoming: QueueEntry) -> QueueEntry | None:
        if self.full_policy != "drop-lru":
            return None
        batch = self._lanes["batch"]
        if batch:
            return next(iter(batch.values()))
        # Only interactive work queued: a batch task never evicts it.
        interactive = self._lanes["interactive"]
        if incoming.priority == "interactive" and interactive:
            return next(iter(interactive.values()))
        return None

    def remove(self, task_id: str) -> QueueEntry | None:
        for q in self._lanes.values():
            entry = q.pop(task_id, None)
            if entry is not None:
                return entry
        return None

    def __iter__(self) -> Iterator[QueueEntry]:
        """Entries in service order: interactive FIFO, then batch FIFO (a snapshot)."""
        for lane in LANES:
            yield from list(self._lanes[lane].values())

    def position(self, task_id: str) -> int | None:
        """0-based place in service order, or None when not queued."""
        for n, entry in enumerate(self):
            if entry.task_id == task_id:
                return n
        return None

    def expire(self, now_ms: int) -> list[QueueEntry]:
        """Remove and return the entries whose deadline has passed."""
        gone = [e for e in self if e.deadline_ms is not None and e.deadline_ms <= now_ms]
        for e in gone:
            self.remove(e.task_id)
        return gone

    def next_deadline(self) -> int | None:
        deadlines = [e.deadline_ms for e in self if e.deadline_ms is not None]
        return min(deadlines) if deadlines else None
