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
from orchestratord.domain.registry import Registry, Worker
from orchestratord.domain.tasks import TaskRequest
from orchestratord.policy.types import AdmitDecision, ClusterView, TaskView, WorkerView


class Policy(Protocol):
    """What orchestratord needs from the policy engine (orchestratord.policy.PolicyHolder)."""

    def admit(self, task: TaskView, cluster: ClusterView) -> AdmitDecision: ...

    def schedule(
        self, task: TaskView, workers: Sequence[Any], cluster: ClusterView
    ) -> str | None: ...


def task_view(task_id: str, req: TaskRequest, wait_ms: int) -> TaskView:
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


def plan(
    queue: TaskQueue,
    registry: Registry,
    now_ms: int,
    schedule: Callable[[QueueEntry, list[WorkerView]], str | None],
    reserve: Callable[[QueueEntry, str], object] | None = None,
    models: Iterable[str] | None = None,
) -> list[Assignment]:
    """Assign queued tasks of `models` (default: every model with queued work) to workers;
    removes them from the queue and reserves their slots with `reserve(entry, worker_id)`
    (default: the registry's bare reservation) at once, so the rest of the pass sees the room
    that is left.

    The work is proportional to what can start, not to the queue: a model whose workers have
    no room costs one look at its workers, and a model with room is read from its head, at
    most its room plus MAX_DECLINED tasks.
    """
    out: list[Assignment] = []
    prefetch = registry.prefetch
    for model in list(queue.models() if models is None else models):
        if not queue.model_depth(model):
            continue
        # POL-025: the policy sees every worker of the model that is not dead, in the state it
        # knows (busy, stale, draining); only the usable ones (ORCH-041) may take its pick.
        listed = registry.serving(model)
        candidates = registry.candidates(model, now_ms, listed)
        room = sum(w.room(prefetch) for w in candidates)
        if room <= 0:
            continue
        declined = 0
        for entry in queue.head(model, room + MAX_DECLINED):
            if room <= 0 or declined >= MAX_DECLINED:
                break
            offered, usable = listed, candidates
            if entry.pin is not None or entry.embed:
                # A pinned task (compare runs) waits for its own worker or pool, an embeddings
                # task for a worker that can embed; while none has room it is passed over
                # without asking the policy (counted as a decline).
                offered = [w for w in listed if offers(w, entry)]
                usable = [w for w in candidates if offers(w, entry)]
                if not any(w.room(prefetch) > 0 for w in usable):
                    declined += 1
                    continue
            views = [w.view(now_ms, registry.stale_ms, prefetch) for w in offered]
            pick = schedule(entry, views)
            worker = registry.get(pick) if isinstance(pick, str) else None
            if worker is None or worker not in usable or worker.room(prefetch) == 0:
                declined += 1
                continue
            queue.remove(entry.task_id)
            if reserve is None:
                registry.reserve(worker.id, entry.task_id)
            else:
                reserve(entry, worker.id)
            room -= 1
            out.append(Assignment(entry, worker.id))
    return out
