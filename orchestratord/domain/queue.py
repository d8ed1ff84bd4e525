"""The task queue: bounded, one queue per model with two lanes each, FIFO within a lane; pure
(no I/O, the clock passed in).

`interactive` is always served before `batch`. When full, `reject` refuses the new task and
`drop-lru` evicts the oldest queued task, batch first, to make room.

Every operation costs what changed, not the queue's length (ORCH-180): a task is found by id
in a dict, a model's tasks are their own lanes (so a pass over one model never walks another's
work), deadlines are a heap (the next one is its top), and a task's place among its model's
tasks is a binary search over the live sequence numbers of its lane.
"""

from __future__ import annotations

import heapq
from bisect import bisect_left, insort
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Literal

from orchestratord.domain.tasks import Priority
from shared.wire import PRIORITIES

LANES: tuple[Priority, ...] = PRIORITIES
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
    seq: int = field(default=0, compare=False)  # place in its lane, set by the queue
    pin: str | None = None  # "worker:ID" or "pool:NAME": only there (compare runs)
    embed: bool = False  # an embeddings task: only workers whose model can embed (ORCH-231)
    n: int = 1  # slots the task takes: its choices (ORCH-270)
    # The prompt's chained token-block hashes, for the cache index (ORCH-402); () unasked.
    blocks: tuple[int, ...] = field(default=(), compare=False)
    block_size: int = 0
    prompt_tokens: int = 0  # as the worker counted them with the hashes
    # Cached tokens the index predicted on the worker it was placed on (ORCH-404).
    predicted: int | None = field(default=None, compare=False)


class _Lane:
    """One model's tasks of one priority, in service order, with their sequence numbers
    sorted for rank queries (appends and head removals are the common case)."""

    __slots__ = ("entries", "seqs")

    def __init__(self) -> None:
        self.entries: OrderedDict[str, QueueEntry] = OrderedDict()
        self.seqs: list[int] = []

    def add(self, e: QueueEntry, front: bool) -> None:
        self.entries[e.task_id] = e
        if front:
            self.entries.move_to_end(e.task_id, last=False)
            self.seqs.insert(0, e.seq)
        else:
            insort(self.seqs, e.seq)

    def discard(self, e: QueueEntry) -> None:
        del self.entries[e.task_id]
        i = bisect_left(self.seqs, e.seq)
        del self.seqs[i]

    def rank(self, e: QueueEntry) -> int:
        return bisect_left(self.seqs, e.seq)


class _ModelQueue:
    __slots__ = ("lanes",)

    def __init__(self) -> None:
        self.lanes: dict[Priority, _Lane] = {lane: _Lane() for lane in LANES}

    def __len__(self) -> int:
        return sum(len(lane.entries) for lane in self.lanes.values())


class TaskQueue:
    def __init__(self, capacity: int, full_policy: FullPolicy = "reject") -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.capacity = capacity
        self.full_policy = full_policy
        self._by_id: dict[str, QueueEntry] = {}
        self._models: dict[str, _ModelQueue] = {}
        # Every lane across models, in arrival order: what drop-lru evicts first.
        self._arrivals: dict[Priority, OrderedDict[str, QueueEntry]] = {
            lane: OrderedDict() for lane in LANES
        }
        self._deadlines: list[tuple[int, int, str]] = []  # (deadline, seq, task_id), lazy
        self._next_seq = 0
        self._front_seq = 0  # push_front takes numbers below every other one

    def __len__(self) -> int:
        return len(self._by_id)

    def __contains__(self, task_id: object) -> bool:
        return task_id in self._by_id

    def get(self, task_id: str) -> QueueEntry | None:
        return self._by_id.get(task_id)

    def depth(self) -> dict[str, int]:
        return {lane: len(q) for lane, q in self._arrivals.items()}

    def models(self) -> list[str]:
        """Models with queued work."""
        return list(self._models)

    def model_depth(self, model: str) -> int:
        mq = self._models.get(model)
        return len(mq) if mq is not None else 0

    def head(self, model: str, limit: int) -> list[QueueEntry]:
        """The first `limit` entries of one model, in service order (a copy: the caller may
        remove them while it goes through them)."""
        mq = self._models.get(model)
        out: list[QueueEntry] = []
        if mq is None:
            return out
        for lane in LANES:
            for entry in mq.lanes[lane].entries.values():
                if len(out) >= limit:
                    return out
                out.append(entry)
        return out

    def push(self, entry: QueueEntry) -> list[QueueEntry]:
        """Enqueue; returns the entries evicted for room (drop-lru), or raises QueueFullError."""
        if entry.task_id in self._by_id:
            raise ValueError(f"task {entry.task_id} is already queued")
        dropped: list[QueueEntry] = []
        if len(self) >= self.capacity:
            victim = self._victim(entry)
            if victim is None:
                raise QueueFullError(f"queue full ({self.capacity} tasks)")
            self._take(victim)
            dropped.append(victim)
        self._next_seq += 1
        entry.seq = self._next_seq
        self._put(entry, front=False)
        return dropped

    def push_front(self, entry: QueueEntry) -> None:
        """Put a task back at the head of its lane (a retry); may exceed capacity by design:
        the task held a place before it was dispatched."""
        self._front_seq -= 1
        entry.seq = self._front_seq
        self._put(entry, front=True)

    def _put(self, entry: QueueEntry, front: bool) -> None:
        self._by_id[entry.task_id] = entry
        mq = self._models.get(entry.model)
        if mq is None:
            mq = self._models[entry.model] = _ModelQueue()
        mq.lanes[entry.priority].add(entry, front)
        arrivals = self._arrivals[entry.priority]
        arrivals[entry.task_id] = entry
        if front:
            arrivals.move_to_end(entry.task_id, last=False)
        if entry.deadline_ms is not None:
            heapq.heappush(self._deadlines, (entry.deadline_ms, entry.seq, entry.task_id))

    def _victim(self, incoming: QueueEntry) -> QueueEntry | None:
        if self.full_policy != "drop-lru":
            return None
        batch = self._arrivals["batch"]
        if batch:
            return next(iter(batch.values()))
        # Only interactive work queued: a batch task never evicts it.
        interactive = self._arrivals["interactive"]
        if incoming.priority == "interactive" and interactive:
            return next(iter(interactive.values()))
        return None

    def _take(self, entry: QueueEntry) -> None:
        del self._by_id[entry.task_id]
        del self._arrivals[entry.priority][entry.task_id]
        mq = self._models[entry.model]
        mq.lanes[entry.priority].discard(entry)
        if not len(mq):
            del self._models[entry.model]
        # Its deadline stays in the heap until it reaches the top (lazy deletion).

    def remove(self, task_id: str) -> QueueEntry | None:
        entry = self._by_id.get(task_id)
        if entry is not None:
            self._take(entry)
            heap = self._deadlines
            if len(heap) > 64 and len(heap) > 2 * len(self._by_id):
                # Mostly removed tasks' deadlines: rebuild (amortised over those removals).
                self._deadlines = [d for d in heap if self._live(d)]
                heapq.heapify(self._deadlines)
        return entry

    def __iter__(self) -> Iterator[QueueEntry]:
        """Entries in service order: interactive, then batch, each oldest first (a snapshot)."""
        for lane in LANES:
            yield from list(self._arrivals[lane].values())

    def position(self, task_id: str) -> int | None:
        """0-based place among the queued tasks of the same model, in service order: how many
        of them start before this one. None when not queued."""
        entry = self._by_id.get(task_id)
        if entry is None:
            return None
        lanes = self._models[entry.model].lanes
        ahead = lanes[entry.priority].rank(entry)
        if entry.priority == "batch":
            ahead += len(lanes["interactive"].entries)
        return ahead

    def _live(self, item: tuple[int, int, str]) -> bool:
        entry = self._by_id.get(item[2])
        return entry is not None and entry.seq == item[1] and entry.deadline_ms == item[0]

    def expire(self, now_ms: int) -> list[QueueEntry]:
        """Remove and return the entries whose deadline has passed."""
        gone: list[QueueEntry] = []
        heap = self._deadlines
        while heap and heap[0][0] <= now_ms:
            item = heapq.heappop(heap)
            if self._live(item):
                entry = self._by_id[item[2]]
                self._take(entry)
                gone.append(entry)
        return gone

    def next_deadline(self) -> int | None:
        heap = self._deadlines
        while heap and not self._live(heap[0]):
            heapq.heappop(heap)
        return heap[0][0] if heap else None
