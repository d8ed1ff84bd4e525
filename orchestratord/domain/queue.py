"""The task queue: bounded, one queue per model with two lanes each; pure (no I/O, the clock
passed in).

`interactive` is always served before `batch`. Within a lane, tasks are served across tenants
by start-time fair queueing (ORCH-350): each task gets a virtual start tag when it is queued,
max(the lane's virtual time, its tenant's last finish tag), and a finish tag that adds its cost
divided by its tenant's weight; the lane serves the smallest start tag first, and a dispatch
moves the lane's virtual time to the start tag it served. A tenant's tasks thus wait behind
its own backlog and behind one turn of each other backlogged tenant's, never behind another
tenant's whole backlog; one tenant's tasks keep their order (FIFO). With the `fifo`
discipline every task is one tenant's, which is plain first come, first served. When full,
`reject` refuses the new task and `drop-lru` evicts the oldest queued task, batch first.

Every operation costs what changed, not the queue's length (ORCH-180): a task is found by id
in a dict, a model's tasks are their own lanes (so a pass over one model never walks another's
work), deadlines are a heap (the next one is its top), reading a lane's head walks a heap of
each tenant's first task (about O(k log k) for k tasks read, whatever the number of tenants),
and a task's place among its model's tasks is a binary search in each of its lane's tenant
queues (ORCH-354).
"""

from __future__ import annotations

import heapq
import math
from bisect import bisect_left, insort
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Literal

from orchestratord.domain.tasks import Priority
from shared.wire import PRIORITIES

LANES: tuple[Priority, ...] = PRIORITIES
FullPolicy = Literal["reject", "drop-lru"]
Discipline = Literal["fifo", "wfq"]
DISCIPLINES: tuple[Discipline, ...] = ("fifo", "wfq")
Weight = Callable[[str | None], float]


def equal_weights(tenant: str | None) -> float:
    return 1.0


def task_cost(max_tokens: int, n: int = 1, embed_inputs: int | None = None) -> int:
    """What a task costs its tenant's share (ORCH-351): the tokens it may decode, `n` choices
    of `max_tokens` each (a slot spends one decoding step per token, while the prompt is taken
    in a few batched steps, so decode bounds the slot time it holds); an embeddings task, which
    decodes nothing, costs one per input. Known at submission and recorded with the task, so a
    replay charges the same."""
    if embed_inputs is not None:
        return max(1, embed_inputs)
    return max(1, max_tokens) * max(1, n)


class QueueFullError(Exception):
    """No room, and the full-queue policy refused to make any."""


@dataclass
class QueueEntry:
    task_id: str
    model: str
    priority: Priority
    enqueued_ms: int
    deadline_ms: int | None  # absolute, same clock as enqueued_ms; None: no deadline
    seq: int = field(default=0, compare=False)  # arrival number, set by the queue
    pin: str | None = None  # "worker:ID" or "pool:NAME": only there (compare runs)
    embed: bool = False  # an embeddings task: only workers whose model can embed (ORCH-231)
    n: int = 1  # slots the task takes: its choices (ORCH-270)
    tenant: str | None = None  # whose share of the lane it is served from (ORCH-350)
    cost: float = 1.0  # task_cost (ORCH-351)
    # Virtual start and finish tags in its lane, set by the queue (ORCH-350).
    vstart: float = field(default=0.0, compare=False)
    vfinish: float = field(default=0.0, compare=False)
    # The prompt's chained token-block hashes, for the cache index (ORCH-402); () unasked.
    blocks: tuple[int, ...] = field(default=(), compare=False)
    block_size: int = 0
    prompt_tokens: int = 0  # as the worker counted them with the hashes
    # Cached tokens the index predicted on the worker it was placed on (ORCH-404).
    predicted: int | None = field(default=None, compare=False)


class _Flow:
    """One tenant's tasks in one lane, in their order (their tags rise with it), with the
    (tag, seq) keys sorted for rank queries; the tenant's next task starts at `finish` or the
    lane's virtual time, whichever is later; `served` is the finish tag of its last dispatched."""

    __slots__ = ("entries", "finish", "keys", "served")

    def __init__(self) -> None:
        self.entries: OrderedDict[str, QueueEntry] = OrderedDict()
        self.keys: list[tuple[float, int]] = []
        self.finish = -math.inf
        self.served = -math.inf


class _Lane:
    """One model's tasks of one priority: a flow per tenant and the lane's virtual time."""

    __slots__ = ("busy", "count", "flows", "heads", "idle", "vtime")

    def __init__(self) -> None:
        self.flows: dict[str | None, _Flow] = {}
        self.vtime = 0.0
        self.count = 0
        self.busy = 0  # flows with queued tasks
        # Each busy flow's first task as (start tag, seq, flow key), a heap; a flow whose first
        # task changed leaves its old item behind (skipped when read, dropped on a rebuild).
        self.heads: list[tuple[float, int, str | None]] = []
        # Tenants with nothing queued but service ahead of the clock, by that finish tag:
        # forgotten once the clock passes it, so a pass never walks tenants long gone.
        self.idle: list[tuple[float, int, str | None]] = []

    def add(self, e: QueueEntry, flow_key: str | None, weight: float, front: bool) -> None:
        flow = self.flows.get(flow_key)
        if flow is None:
            flow = self.flows[flow_key] = _Flow()
        if not flow.entries:
            self.busy += 1
        flow.entries[e.task_id] = e
        if front:
            # A retry had its turn (and was charged for it then): it goes before every task
            # of the lane and moves neither the lane's clock nor its tenant's tags.
            e.vstart = e.vfinish = -math.inf
            flow.entries.move_to_end(e.task_id, last=False)
            flow.keys.insert(0, (e.vstart, e.seq))
        else:
            e.vstart = max(self.vtime, flow.finish)
            e.vfinish = flow.finish = e.vstart + e.cost / weight
            insort(flow.keys, (e.vstart, e.seq))
        if flow.keys[0] == (e.vstart, e.seq):
            self._push_head(flow, flow_key)
        self.count += 1

    def _push_head(self, flow: _Flow, flow_key: str | None) -> None:
        heads = self.heads
        if len(heads) > 2 * self.busy + 16:
            self.heads = heads = [
                (f.keys[0][0], f.keys[0][1], k) for k, f in self.flows.items() if f.keys
            ]
            heapq.heapify(heads)
        else:
            heapq.heappush(heads, (*flow.keys[0], flow_key))

    def discard(self, e: QueueEntry, flow_key: str | None, served: bool) -> None:
        flow = self.flows[flow_key]
        last = next(reversed(flow.entries)) == e.task_id
        del flow.entries[e.task_id]
        i = bisect_left(flow.keys, (e.vstart, e.seq))
        del flow.keys[i]
        self.count -= 1
        if served:
            self.vtime = max(self.vtime, e.vstart)
            flow.served = max(flow.served, e.vfinish)
        elif last:
            # A task that left unserved (cancelled, expired, evicted) is not charged: the
            # tenant's next task starts from what is still queued or was served.
            tail = next(reversed(flow.entries.values())).vfinish if flow.entries else -math.inf
            flow.finish = max(tail, flow.served)
        if flow.entries:
            if i == 0:
                self._push_head(flow, flow_key)
        else:
            self.busy -= 1
            if flow.finish <= self.vtime:
                del self.flows[flow_key]  # nothing queued and no service ahead: nothing to keep
            else:
                heapq.heappush(self.idle, (flow.finish, id(flow), flow_key))
        idle = self.idle
        while idle and idle[0][0] <= self.vtime:
            key = heapq.heappop(idle)[2]
            gone = self.flows.get(key)
            if gone is not None and not gone.entries and gone.finish <= self.vtime:
                del self.flows[key]

    def _current(self, head: tuple[float, int, str | None]) -> bool:
        flow = self.flows.get(head[2])
        return flow is not None and bool(flow.keys) and flow.keys[0] == head[:2]

    def rank(self, e: QueueEntry) -> int:
        key = (e.vstart, e.seq)
        return sum(bisect_left(flow.keys, key) for flow in self.flows.values() if flow.keys)

    def __iter__(self) -> Iterator[QueueEntry]:
        """The lane's tasks in service order: a best-first walk of the `heads` heap as a tree
        (a node's children are never smaller) merged with the rest of each flow it reaches,
        so reading k tasks costs about O(k log k), whatever the number of tenants. Nothing
        changes but left-behind items dropped from the top of `heads`."""
        heads = self.heads
        flows = self.flows
        while heads and not self._current(heads[0]):
            heapq.heappop(heads)  # left-behind items have the smallest tags: mostly on top
        if self.busy == 1:  # one tenant (or the fifo discipline): its own order
            yield from flows[heads[0][2]].entries.values()
            return
        # (start tag, seq, tiebreak, heads index, or the flow's next entry and the rest)
        todo: list[tuple[float, int, int, int, tuple[QueueEntry, Iterator[QueueEntry]] | None]]
        todo = [(*heads[0][:2], 0, 0, None)] if heads else []
        started: set[str | None] = set()
        n = 0
        while todo:
            *_, i, rest = heapq.heappop(todo)
            if rest is None:
                for c in (2 * i + 1, 2 * i + 2):
                    if c < len(heads):
                        n += 1
                        heapq.heappush(todo, (*heads[c][:2], n, c, None))
                key = heads[i][2]
                if key in started or not self._current(heads[i]):
                    continue  # left behind: that flow's first task changed since
                started.add(key)
                it = iter(flows[key].entries.values())
                entry = next(it)
            else:
                entry, it = rest
            yield entry
            for following in it:
                if todo and (following.vstart, following.seq) > todo[0][:2]:
                    n += 1
                    heapq.heappush(todo, (following.vstart, following.seq, n, -1, (following, it)))
                    break
                yield following  # still before anything else waiting: no heap work


class _ModelQueue:
    __slots__ = ("lanes",)

    def __init__(self) -> None:
        self.lanes: dict[Priority, _Lane] = {lane: _Lane() for lane in LANES}

    def __len__(self) -> int:
        return sum(lane.count for lane in self.lanes.values())


class TaskQueue:
    """The queue; `weight(tenant)` is the tenant's share weight (default 1.0 for all), asked
    when a task is queued, so it must be cheap (a dict lookup) and may change at any time:
    a new weight counts for the tasks queued after it."""

    def __init__(
        self,
        capacity: int,
        full_policy: FullPolicy = "reject",
        *,
        discipline: Discipline = "wfq",
        weight: Weight = equal_weights,
    ) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        if discipline not in DISCIPLINES:
            raise ValueError(f"discipline must be one of {', '.join(DISCIPLINES)}")
        self.capacity = capacity
        self.full_policy = full_policy
        self.discipline = discipline
        self.weight = weight
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
            for entry in mq.lanes[lane]:
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
            self._take(victim, served=False)
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

    def _flow_key(self, entry: QueueEntry) -> str | None:
        return entry.tenant if self.discipline == "wfq" else None

    def _weight(self, entry: QueueEntry) -> float:
        if self.discipline != "wfq":
            return 1.0
        w = self.weight(entry.tenant)
        # A weight that is not a positive finite number counts as the default, not as a
        # tenant that is never served (0) or always first (inf).
        return w if isinstance(w, int | float) and 0 < w < math.inf else 1.0

    def _put(self, entry: QueueEntry, front: bool) -> None:
        self._by_id[entry.task_id] = entry
        mq = self._models.get(entry.model)
        if mq is None:
            mq = self._models[entry.model] = _ModelQueue()
        lane = mq.lanes[entry.priority]
        lane.add(entry, self._flow_key(entry), self._weight(entry), front)
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

    def _take(self, entry: QueueEntry, served: bool) -> None:
        del self._by_id[entry.task_id]
        del self._arrivals[entry.priority][entry.task_id]
        mq = self._models[entry.model]
        mq.lanes[entry.priority].discard(entry, self._flow_key(entry), served)
        if not len(mq):
            # Nothing of the model waits: its lanes' virtual clocks start again with the next
            # task (no tenant carries credit or debt into a new backlog).
            del self._models[entry.model]
        # Its deadline stays in the heap until it reaches the top (lazy deletion).

    def remove(self, task_id: str, *, served: bool = False) -> QueueEntry | None:
        """Take a task out of the queue: `served` when it is being dispatched (its tenant is
        charged and the lane's virtual time moves on), else it left unserved (cancelled,
        failed) and is not charged."""
        entry = self._by_id.get(task_id)
        if entry is not None:
            self._take(entry, served)
            heap = self._deadlines
            if len(heap) > 64 and len(heap) > 2 * len(self._by_id):
                # Mostly removed tasks' deadlines: rebuild (amortised over those removals).
                self._deadlines = [d for d in heap if self._live(d)]
                heapq.heapify(self._deadlines)
        return entry

    def __iter__(self) -> Iterator[QueueEntry]:
        """Entries lane by lane (interactive, then batch), each in arrival order across models
        and tenants, a retried task first (a snapshot)."""
        for lane in LANES:
            yield from list(self._arrivals[lane].values())

    def position(self, task_id: str) -> int | None:
        """0-based place among the queued tasks of the same model, in service order: how many
        of them start before this one (as the queue stands: a tenant's task that arrives later
        may still go before it, ORCH-350). None when not queued."""
        entry = self._by_id.get(task_id)
        if entry is None:
            return None
        lanes = self._models[entry.model].lanes
        ahead = lanes[entry.priority].rank(entry)
        if entry.priority == "batch":
            ahead += lanes["interactive"].count
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
                self._take(entry, served=False)
                gone.append(entry)
        return gone

    def next_deadline(self) -> int | None:
        heap = self._deadlines
        while heap and not self._live(heap[0]):
            heapq.heappop(heap)
        return heap[0][0] if heap else None
