"""Run a trace through the real admission, queue and scheduling code on a virtual clock (FLT-052).

What the daemon does on a submit (policy admit() with the cluster view, then the bounded
two-lane TaskQueue, fair across tenants) and on a scheduling pass (scheduler.plan with the
policy's schedule()) happens here on the same objects, with the clock advanced from event to
event instead of waiting: arrivals at their recorded times, completions at start + the
measured service time. The recorded workers are ready throughout (no heartbeat is missed on a
virtual clock). Pure and deterministic: events are ordered by (time, kind, sequence),
completions before arrivals at the same millisecond, so the same trace and policy give the
same numbers.

The workers' prefix caches are simulated from the recorded prompt sizes and sessions and fed
to the daemon's cache index (orchestratord.replay.cache, ORCH-405), so a policy sees
`cached_tokens` as in the daemon; with `prefill_tokens_per_s`, a task's service time is
shortened by the prefill its cached tokens save.
"""

from __future__ import annotations

import heapq
from collections import Counter
from dataclasses import dataclass, field

from orchestratord.domain.queue import (
    Discipline,
    FullPolicy,
    QueueEntry,
    QueueFullError,
    TaskQueue,
    task_cost,
)
from orchestratord.domain.registry import Registry, Worker, WorkerView
from orchestratord.domain.reservations import Ledger, Reservation
from orchestratord.domain.scheduler import Policy, cluster_view, plan
from orchestratord.policy import PolicyEngine
from orchestratord.policy.types import TaskView
from orchestratord.replay.cache import SimCaches, task_blocks
from orchestratord.replay.trace import RecordedTask, Trace

_NEVER = 2**62  # a virtual clock never misses a heartbeat


@dataclass
class Outcome:
    """Per task: None until it starts; the rejection code when it was refused."""

    waits_ms: dict[str, int] = field(default_factory=dict)
    rejected: Counter[str] = field(default_factory=Counter)
    unserved: int = 0
    busy_ms: Counter[str] = field(default_factory=Counter)  # worker id -> slot-milliseconds
    served_by_tenant: Counter[str] = field(default_factory=Counter)
    service_by_tenant: Counter[str] = field(default_factory=Counter)
    start_ms: int = 0
    end_ms: int = 0
    fallbacks: Counter[str] = field(default_factory=Counter)
    prompt_tokens: int = 0  # of the tasks served
    cached_tokens: int = 0  # of those, found in the worker's simulated cache (ORCH-405)


class _CountFallbacks:
    def __init__(self, into: Counter[str]) -> None:
        self.into = into

    def observe(self, fn: str, seconds: float) -> None:
        pass

    def fallback(self, fn: str, reason: str) -> None:
        self.into[f"{fn}:{reason}"] += 1


def _view(t: RecordedTask, wait_ms: int) -> TaskView:
    return {
        "id": t.id,
        "model": t.model,
        "priority": t.priority,
        "session_id": t.session_id,
        "max_tokens": t.max_tokens,
        "prompt_tokens": t.prompt_tokens,
        "wait_ms": wait_ms,
        "prefix_hash": "",
        "tenant": t.tenant,
        # Not recorded: a replayed task asks for neither.
        "constrained": False,
        "logprobs": False,
        "tools": 0,
        "n": 1,
        "tenant_limits": None,
        "tenant_usage": {},
        "failovers": 0,
    }


def simulate(
    trace: Trace,
    engine: PolicyEngine,
    *,
    queue_capacity: int = 1024,
    full_policy: FullPolicy = "reject",
    prefetch: int = 0,
    discipline: Discipline = "wfq",
    weights: dict[str, float] | None = None,
    prefill_tokens_per_s: float = 0.0,
) -> Outcome:
    """Replay `trace` under `engine`'s admit() and schedule(); returns what happened. The
    queue orders tenants as the daemon's does (`discipline`, `weights`: ORCH-350, ORCH-353)."""
    out = Outcome()
    engine.observer = _CountFallbacks(out.fallbacks)
    policy: Policy = engine  # called as the daemon calls it
    registry = Registry(stale_ms=_NEVER - 1, dead_ms=_NEVER, prefetch=prefetch)
    caches = SimCaches(registry.kv)
    shares = dict(weights or {})
    queue = TaskQueue(
        queue_capacity,
        full_policy,
        discipline=discipline,
        weight=lambda tenant: shares.get(tenant, 1.0) if tenant is not None else 1.0,
    )
    ledger = Ledger(registry)  # the daemon's reservations: slot and tenant count, released once
    running_by_tenant = ledger.running_by_tenant
    tasks = trace.tasks
    if not tasks:
        return out
    start = tasks[0].arrival_ms
    for w in trace.workers:
        worker = Worker(
            w.id,
            url="",
            model=w.model,
            backend=w.backend,
            pool=w.pool,
            slots_total=w.slots,
            tokens_per_s=w.tokens_per_s,
        )
        registry.register(worker, start)
        worker.tokens_per_s = w.tokens_per_s
        caches.add_worker(w.id, w.model)
    slots = {w.id: w.slots for w in trace.workers}
    by_id = {t.id: t for t in tasks}
    # (finish time, seq, what the task holds, its worker, its entry): seq is unique, so the
    # heap never compares the rest.
    done: list[tuple[int, int, Reservation, str, QueueEntry]] = []
    seq = 0
    i = 0
    now = start
    end = start

    def schedule(entry: QueueEntry, workers: list[WorkerView]) -> str | None:
        return policy.schedule(
            _view(by_id[entry.task_id], now - entry.enqueued_ms), workers, cluster
        )

    started: list[Reservation] = []

    def reserve(entry: QueueEntry, worker_id: str) -> None:
        started.append(ledger.reserve(worker_id, entry.task_id, by_id[entry.task_id].tenant))

    while i < len(tasks) or done:
        next_arrival = tasks[i].arrival_ms if i < len(tasks) else _NEVER
        now = min(next_arrival, done[0][0] if done else _NEVER)
        while done and done[0][0] <= now:
            _, _, held, worker_id, finished = heapq.heappop(done)
            held.release()
            caches.finished(worker_id, finished.model, slots[worker_id], finished.blocks)
        while i < len(tasks) and tasks[i].arrival_ms <= now:
            t = tasks[i]
            i += 1
            cluster = cluster_view(queue, registry, running_by_tenant, now)
            if not policy.admit(_view(t, 0), cluster).accept:
                out.rejected["ADMISSION_REJECT"] += 1
                continue
            try:
                entry = QueueEntry(
                    t.id,
                    t.model,
                    t.priority,
                    now,
                    None,
                    tenant=t.tenant,
                    cost=task_cost(t.max_tokens),
                )
                entry.blocks, entry.block_size = task_blocks(t), caches.block_size
                entry.prompt_tokens = t.prompt_tokens
                dropped = queue.push(entry)
            except QueueFullError:
                out.rejected["QUEUE_FULL"] += 1
                continue
            if dropped:
                out.rejected["QUEUE_FULL"] += len(dropped)
        if queue:
            cluster = cluster_view(queue, registry, running_by_tenant, now)
            started.clear()
            for a, held in zip(plan(queue, registry, now, schedule, reserve), started, strict=True):
                t = by_id[a.entry.task_id]
                out.waits_ms[t.id] = now - a.entry.enqueued_ms
                out.served_by_tenant[t.tenant or ""] += 1
                out.service_by_tenant[t.tenant or ""] += t.service_ms
                cached = a.entry.predicted or 0
                out.prompt_tokens += t.prompt_tokens
                out.cached_tokens += cached
                service = t.service_ms
                if prefill_tokens_per_s > 0:  # the prefill the cache saves (at least 1 ms left)
                    service = max(1, service - round(cached * 1000 / prefill_tokens_per_s))
                out.busy_ms[a.worker_id] += service
                finish = now + service
                end = max(end, finish)
                seq += 1
                heapq.heappush(done, (finish, seq, held, a.worker_id, a.entry))
        if not done and i >= len(tasks):
            break  # what is still queued can never run: no worker serves its model
    out.unserved = len(queue)
    out.start_ms, out.end_ms = start, max(end, now)
    return out
