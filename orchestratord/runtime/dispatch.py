"""The scheduling loop: wake on events, expire deadlines, sweep dead workers, place tasks.

The placement itself is the pure `domain.scheduler.plan`; this module is its async adapter.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable

from orchestratord.domain.queue import QueueEntry
from orchestratord.domain.scheduler import cluster_view, plan, task_view
from orchestratord.policy.types import ClusterView, WorkerView
from orchestratord.runtime.core import Core
from orchestratord.runtime.runner import start_runner

log = logging.getLogger("llorch.orchestratord")
MAX_IDLE_S = 0.5


async def dispatch_loop(core: Core) -> None:
    """Run a scheduling pass whenever woken, and at least every MAX_IDLE_S (deadlines,
    heartbeat sweeps); start a runner for every task a pass placed."""
    while True:
        now = core.clock()
        next_deadline = core.queue.next_deadline()
        timeout = MAX_IDLE_S
        if next_deadline is not None:
            timeout = max(0.0, min(timeout, (next_deadline - now) / 1000))
        models = await core.wait_for_work(timeout)
        try:
            dispatch_pass(core, models)
        except Exception:
            log.exception("scheduling pass failed")
            await asyncio.sleep(0.1)


def dispatch_pass(core: Core, models: Iterable[str] | None = None) -> int:
    """Expire deadlines, sweep dead workers, and start what can run of `models` (default:
    every queued model); returns how many started."""
    now = core.clock()
    for entry in core.queue.expire(now):
        core.fail(
            core.tasks[entry.task_id],
            "DEADLINE_UNMET",
            "no worker could start the task before its deadline",
            retriable=False,
        )
    for w in core.registry.sweep(now):
        log.warning(
            "worker %s missed heartbeats for %d ms; marked dead", w.id, core.registry.dead_ms
        )
        if core.writer:
            core.writer.worker(w, "dead")
    if not core.queue:
        return 0
    cluster: ClusterView | None = None

    def schedule(entry: QueueEntry, workers: list[WorkerView]) -> str | None:
        nonlocal cluster
        if cluster is None:  # built once per pass, and only when a placement is asked for
            cluster = cluster_view(core.queue, core.registry, core.running_by_tenant, now)
        active = core.tasks[entry.task_id]
        view = task_view(entry.task_id, active.req, now - entry.enqueued_ms)
        try:
            return core.policy.schedule(view, workers, cluster)
        except Exception:
            log.exception("policy.schedule raised")
            return None

    def reserve(entry: QueueEntry, worker_id: str) -> None:
        active = core.tasks[entry.task_id]
        active.record.worker_id = worker_id
        # The reservation owns the slot and the tenant's running count from here on.
        start_runner(core, active, core.ledger.reserve(worker_id, entry.task_id, active.req.tenant))

    return len(plan(core.queue, core.registry, now, schedule, reserve, models))
