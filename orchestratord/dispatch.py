"""The scheduling loop: wake on events, expire deadlines, sweep dead workers, place tasks.

The placement itself is the pure `scheduler.plan`; this module is its async adapter.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from orchestratord.queue import QueueEntry
from orchestratord.registry import WorkerView
from orchestratord.runner import run_task
from orchestratord.scheduler import cluster_view, plan, task_view

if TYPE_CHECKING:
    from orchestratord.service import ActiveTask, TaskService

log = logging.getLogger("llorch.orchestratord")
MAX_IDLE_S = 0.5


async def dispatch_loop(service: TaskService) -> None:
    """Run a scheduling pass whenever woken, and at least every MAX_IDLE_S (deadlines,
    heartbeat sweeps); start a runner for every task a pass placed."""
    while True:
        now = service.clock()
        next_deadline = service.queue.next_deadline()
        timeout = MAX_IDLE_S
        if next_deadline is not None:
            timeout = max(0.0, min(timeout, (next_deadline - now) / 1000))
        await service.wait_for_work(timeout)
        try:
            for active in dispatch_pass(service):
                active.runner = asyncio.create_task(run_task(service, active))
        except Exception:
            log.exception("scheduling pass failed")
            await asyncio.sleep(0.1)


def dispatch_pass(service: TaskService) -> list[ActiveTask]:
    """Expire deadlines, sweep dead workers, and assign what can run; returns the tasks
    whose slots were reserved (their runners are started by the caller)."""
    now = service.clock()
    for entry in service.queue.expire(now):
        service.fail(
            service.tasks[entry.task_id],
            "DEADLINE_UNMET",
            "no worker could start the task before its deadline",
            retriable=False,
        )
    for w in service.registry.sweep(now):
        log.warning(
            "worker %s missed heartbeats for %d ms; marked dead", w.id, service.registry.dead_ms
        )
        if service.writer:
            service.writer.worker(w, "dead")
    if not service.queue:
        return []
    cluster = cluster_view(service.queue, service.registry, service.running_by_tenant, now)

    def schedule(entry: QueueEntry, workers: list[WorkerView]) -> str | None:
        active = service.tasks[entry.task_id]
        view = task_view(entry.task_id, active.req, now - entry.enqueued_ms)
        try:
            return service.policy.schedule(view, workers, cluster)
        except Exception:
            log.exception("policy.schedule raised")
            return None

    started = []
    for a in plan(service.queue, service.registry, now, schedule):
        active = service.tasks[a.entry.task_id]
        active.record.worker_id = a.worker_id
        service.running_by_tenant[active.req.tenant or ""] += 1
        started.append(active)
    return started
