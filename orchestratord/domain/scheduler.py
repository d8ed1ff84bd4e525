"""One scheduling pass, pure: which queued tasks go to which workers now.

The policy is offered every worker of the task's model that is not dead (POL-025) and picks
among the usable ones; the pass checks the pick (model, liveness, room) before it reserves the
slot, so a policy can delay work but never over-commit a worker. A model with no room anywhere
is skipped without asking the policy. A task pinned to a worker or pool (compare runs) is
offered only those workers, an embeddings task only workers that can embed. A worker's room
is its free slots plus `prefetch` jobs waiting in its own queue (the registry's setting); the
policy sees that capacity as the worker's `slots_total`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from orchestratord.domain.queue import QueueEntry, TaskQueue
from orchestratord.domain.quotas import EMPTY_USAGE
from orchestratord.domain.registry import Registry, Worker
from orchestratord.domain.tasks import TaskRequest
from orchestratord.domain.views import AdmitDecision, ClusterView, TaskView, WorkerView


class Policy(Protocol):
    """What a scheduling pass needs from a policy (orchestratord.policy.PolicyEngine)."""

    def admit(self, task: TaskView, cluster: ClusterView) -> AdmitDecision: ...

    def schedule(
        self, task: TaskView, workers: Sequence[Any], cluster: ClusterView
    ) -> str | None: ...


# A task whose tenant has neither limits nor usage yet (POL-100).
NO_TENANT: tuple[dict[str, Any] | None, dict[str, int | float]] = (None, EMPTY_USAGE)


def task_view(
    task_id: str,
    req: TaskRequest,
    wait_ms: int,
    tenant: tuple[dict[str, Any] | None, dict[str, int | float]] = NO_TENANT,
    failovers: int = 0,
) -> TaskView:
    return {
        # The id its client knows it by (with `tenant`, unique: ORCH-156), as before ids
        # were scoped; the server-made one is orchestratord's own.
        "id": req.task_id or task_id,
        "model": req.model,
        "priority": req.priority,
        "session_id": req.session_id,
        "max_tokens": req.max_tokens,
        "prompt_tokens": req.prompt_tokens_estimate,
        "wait_ms": wait_ms,
        "prefix_hash": req.prefix_hash,
        "tenant": req.tenant,
        "constrained": req.constrained,
        "logprobs": req.logprobs,
        "tools": len(req.tools or ()),
        "n": req.n,
        "tenant_limits": tenant[0],
        "tenant_usage": tenant[1],
        "failovers": failovers,
    }


def cluster_view(
    queue: TaskQueue, registry: Registry, running_by_tenant: Mapping[str, int], now_ms: int
) -> ClusterView:
    depth = queue.depth()
    return {
        "queue_depth": {"interactive": depth["interactive"], "batch": depth["batch"]},
        "now_ms": now_ms,
        "workers": registry.counts(now_ms),
        "running_by_tenant": dict(running_by_tenant),
    }


@dataclass(frozen=True)
class Assignment:
    entry: QueueEntry
    worker_id: str
    cached: int | None = None  # the cache index's prediction there; None: the task has no blocks


# A policy may decline a task (wait for a better worker, cap a tenant); after this many
# declines in a row a pass leaves the model for the next one instead of walking its backlog.
MAX_DECLINED = 64


def pinned(worker: Worker, pin: str) -> bool:
    """Whether `worker` is the task's pinned target ("worker:ID" or "pool:NAME")."""
    kind, _, name = pin.partition(":")
    return worker.id == name if kind == "worker" else worker.pool == name


def offers(worker: Worker, entry: QueueEntry) -> bool:
    """Whether `worker` may take `entry` at all: its pin, and embeddings where asked."""
    if entry.pin is not None and not pinned(worker, entry.pin):
        return False
    return worker.can_embed or not entry.embed


@dataclass(slots=True)  # not frozen: a frozen dataclass costs microseconds to make, per pass
class ModelPass:
    """What one pass may place of one model, taken from the queue and the registry at once:
    the head of its queue, the policy's view of each of its workers (not dead, POL-025), and
    the room of the usable ones (ORCH-041). `offered[i]` names the workers entry i may go to
    when it is pinned or asks for embeddings (None: all)."""

    model: str
    entries: list[QueueEntry]
    offered: list[list[str] | None]
    views: dict[str, WorkerView]
    room: dict[str, int]
    free: dict[str, int]  # free slots (without prefetch): a task of n > 1 needs n (ORCH-270)
    # Per entry, worker id -> prompt tokens the cache index says it holds (ORCH-402); taken
    # here, on the loop that feeds the index, so `decide` may run on another thread.
    cached: list[dict[str, int] | None] | None = None


def snapshot(
    queue: TaskQueue, registry: Registry, now_ms: int, models: Iterable[str] | None = None
) -> list[ModelPass]:
    """The part of the queue and the fleet a pass over `models` (default: every model with
    queued work) looks at. A model whose workers have no room costs one look at its workers
    and is left out; a model with room is read from its head, at most its room plus
    MAX_DECLINED tasks."""
    out: list[ModelPass] = []
    prefetch = registry.prefetch
    for model in list(queue.models() if models is None else models):
        if not queue.model_depth(model):
            continue
        listed = registry.serving(model)
        candidates = registry.candidates(model, now_ms, listed)
        room = {w.id: w.room(prefetch) for w in candidates}
        total = sum(room.values())
        if total <= 0:
            continue
        entries = queue.head(model, total + MAX_DECLINED)
        offered: list[list[str] | None] = [
            None if e.pin is None and not e.embed else [w.id for w in listed if offers(w, e)]
            for e in entries
        ]
        views = {w.id: w.view(now_ms, registry.stale_ms, prefetch) for w in listed}
        free = {w.id: w.free_slots for w in candidates}
        kv = registry.kv
        cached: list[dict[str, int] | None] = [
            kv.lookup(model, e.blocks, e.block_size, e.prompt_tokens) if e.blocks else None
            for e in entries
        ]
        out.append(ModelPass(model, entries, offered, views, room, free, cached))
    return out


def fits(n: int, room: int, free: int) -> bool:
    """Whether a task of `n` choices may go to a worker with this room and these free slots:
    one choice may wait in the worker's queue (prefetch), n > 1 needs n free slots at once, as
    the worker takes them or answers BUSY (WRK-141, ORCH-270)."""
    return room >= n and (n == 1 or free >= n)


def _taken(view: WorkerView, n: int = 1) -> WorkerView:
    """`view` after a task of `n` slots was reserved on the worker (Worker.view's arithmetic,
    and one more start: ORCH-412)."""
    busy = min(view["slots_total"], view["slots_busy"] + n)
    state = view["state"]
    if state == "ready" and busy >= view["slots_total"]:
        state = "busy"
    return {**view, "slots_busy": busy, "state": state, "recent_starts": view["recent_starts"] + 1}


def decide(
    parts: Iterable[ModelPass],
    schedule: Callable[[QueueEntry, list[WorkerView]], str | None],
    stop: Callable[[], bool] | None = None,
) -> tuple[list[Assignment], bool]:
    """Ask `schedule` where each task of the snapshot goes; returns the assignments and
    whether `stop()` cut the pass short (checked before each call). Reads and changes only the
    snapshot (the room and views of the workers it placed on), so it may run away from the
    live queue and registry: `apply` re-checks every assignment against them."""
    out: list[Assignment] = []
    for part in parts:
        room = dict(part.room)
        free = dict(part.free)
        views = dict(part.views)
        left = sum(room.values())
        declined = 0
        cached_by = part.cached or [None] * len(part.entries)
        for entry, offered, cached in zip(part.entries, part.offered, cached_by, strict=True):
            if left <= 0 or declined >= MAX_DECLINED:
                break
            if offered is not None:
                # A pinned task (compare runs) waits for its own worker or pool, an embeddings
                # task for a worker that can embed; while none has room it is passed over
                # without asking the policy (counted as a decline).
                if not any(fits(entry.n, room.get(w, 0), free.get(w, 0)) for w in offered):
                    declined += 1
                    continue
                shown = [views[w] for w in offered]
            else:
                shown = list(views.values())
            if cached:  # the index's answer for this task, beside each worker's load (POL-120)
                shown = [{**v, "cached_tokens": cached.get(v["id"], 0)} for v in shown]
            if stop is not None and stop():
                return out, True
            pick = schedule(entry, shown)
            if (
                not isinstance(pick, str)
                or not fits(entry.n, room.get(pick, 0), free.get(pick, 0))
                or (offered is not None and pick not in offered)
            ):
                declined += 1
                continue
            room[pick] -= entry.n
            free[pick] = max(0, free.get(pick, 0) - entry.n)
            views[pick] = _taken(views[pick], entry.n)
            left -= entry.n
            out.append(Assignment(entry, pick, cached.get(pick, 0) if cached is not None else None))
    return out, False


def apply(
    assignments: Iterable[Assignment],
    queue: TaskQueue,
    registry: Registry,
    now_ms: int,
    reserve: Callable[[QueueEntry, str], object] | None = None,
    *,
    recheck: bool = True,
) -> list[Assignment]:
    """Carry out the assignments that still hold: the task is still queued, the worker still
    usable, with room, and allowed for the task. Each is removed from the queue and its slot
    reserved with `reserve(entry, worker_id)` (default: the registry's bare reservation); the
    others stay queued for the next pass. `recheck=False`: the snapshot was taken in the same
    step (nothing could change since), so the checks `decide` made on it hold."""
    out: list[Assignment] = []
    prefetch = registry.prefetch
    for a in assignments:
        entry = a.entry
        worker = registry.get(a.worker_id)
        if worker is None:
            continue
        if recheck and (
            queue.get(entry.task_id) is not entry
            or worker.model != entry.model
            or not registry.usable(worker, now_ms)
            or not fits(entry.n, worker.room(prefetch), worker.free_slots)
            or not offers(worker, entry)
        ):
            continue
        queue.remove(entry.task_id, served=True)  # charged to its tenant's share (ORCH-350)
        entry.predicted = a.cached
        if reserve is None:
            registry.reserve(worker.id, entry.task_id, entry.n)
        else:
            reserve(entry, worker.id)
        worker.started(now_ms)
        out.append(a)
    return out


def plan(
    queue: TaskQueue,
    registry: Registry,
    now_ms: int,
    schedule: Callable[[QueueEntry, list[WorkerView]], str | None],
    reserve: Callable[[QueueEntry, str], object] | None = None,
    models: Iterable[str] | None = None,
) -> list[Assignment]:
    """One whole pass at once: assign queued tasks of `models` (default: every model with
    queued work) to workers, remove them from the queue and reserve their slots.

    The work is proportional to what can start, not to the queue (see `snapshot`). The
    runtime splits the same three steps when the policy runs on its own thread: `snapshot`
    and `apply` on the event loop, `decide` away from it.
    """
    assignments, _ = decide(snapshot(queue, registry, now_ms, models), schedule)
    return apply(assignments, queue, registry, now_ms, reserve, recheck=False)
