"""One scheduling pass, pure: which queued tasks go to which workers now.

The policy picks among the usable workers of the task's model; the pass checks the pick (model,
liveness, room) before it reserves the slot, so a policy can delay work but never over-commit
a worker. A model with no room anywhere is skipped without asking the policy. A worker's room
is its free slots plus `prefetch` jobs waiting in its own queue (the registry's setting); the
policy sees that capacity as the worker's `slots_total`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from orchestratord.domain.queue import QueueEntry, TaskQueue
from orchestratord.domain.registry import Registry
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
        "id": task_id,
        "model": req.model,
        "priority": req.priority,
        "session_id": req.session_id,
        "max_tokens": req.max_tokens,
        "prompt_tokens": req.prompt_tokens_estimate,
        "wait_ms": wait_ms,
        "prefix_hash": req.prefix_hash,
        "tenant": req.tenant,
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


def plan(
    queue: TaskQueue,
    registry: Registry,
    now_ms: int,
    schedule: Callable[[QueueEntry, list[WorkerView]], str | None],
    reserve: Callable[[QueueEntry, str], object] | None = None,
) -> list[Assignment]:
    """Assign queued tasks to workers; removes them from the queue and reserves their slots
    with `reserve(entry, worker_id)` (default: the registry's bare reservation), at once, so
    the rest of the pass sees the room that is left."""
    out: list[Assignment] = []
    blocked: set[str] = set()
    for entry in queue:
        if entry.model in blocked:
            continue
        candidates = registry.candidates(entry.model, now_ms)
        prefetch = registry.prefetch
        if not any(w.room(prefetch) > 0 for w in candidates):
            blocked.add(entry.model)
            continue
        views = [w.view(now_ms, registry.stale_ms, prefetch) for w in candidates]
        pick = schedule(entry, views)
        worker = registry.get(pick) if isinstance(pick, str) else None
        if worker is None or worker not in candidates or worker.room(prefetch) == 0:
            continue
        queue.remove(entry.task_id)
        if reserve is None:
            registry.reserve(worker.id, entry.task_id)
        else:
            reserve(entry, worker.id)
        out.append(Assignment(entry, worker.id))
    return out
