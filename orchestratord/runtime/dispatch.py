"""The scheduling loop: wake on events, expire deadlines, sweep dead workers, place tasks.

The placement itself is the pure `domain.scheduler` (snapshot, decide, apply); this module is
its async adapter. The built-in schedule runs the whole pass inline; a policy's own schedule
decides on its thread (runtime.policy_calls) while the loop keeps relaying tokens.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from functools import partial

from orchestratord.domain.queue import QueueEntry
from orchestratord.domain.scheduler import apply, cluster_view, plan, snapshot, task_view
from orchestratord.domain.views import ClusterView, TaskView, WorkerView
from orchestratord.policy import PolicyEngine
from orchestratord.runtime.core import Core
from orchestratord.runtime.runner import break_streams, start_runner

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
            await dispatch_pass(core, models)
        except Exception:
            log.exception("scheduling pass failed")
            await asyncio.sleep(0.1)


async def dispatch_pass(core: Core, models: Iterable[str] | None = None) -> int:
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
        break_streams(core, w.id)
    if not core.queue:
        return 0
    engine, own = core.policy_calls.engine("schedule")
    if own:
        return await _pass_off_loop(core, engine, now, models)
    cluster: ClusterView | None = None
    # The built-in schedule answers inline; `builtin` makes it stand in for the policy's own
    # while the breaker is open.
    builtin = engine.own("schedule")

    def schedule(entry: QueueEntry, workers: list[WorkerView]) -> str | None:
        nonlocal cluster
        if cluster is None:  # built once per pass, and only when a placement is asked for
            cluster = cluster_view(core.queue, core.registry, core.running_by_tenant, now)
        active = core.tasks[entry.task_id]
        wait = now - entry.enqueued_ms
        view = task_view(entry.task_id, active.req, wait, failovers=active.failovers)
        return engine.schedule_checked(view, workers, cluster, builtin=builtin)[0]

    return len(plan(core.queue, core.registry, now, schedule, partial(_reserve, core), models))


async def _pass_off_loop(
    core: Core, engine: PolicyEngine, now: int, models: Iterable[str] | None
) -> int:
    """A pass whose decisions the policy's own schedule makes on its thread (POL-090): the
    snapshot is taken and the assignments applied here, on the loop, where the queue, the
    registry and the ledger change; the policy sees only the snapshot."""
    parts = snapshot(core.queue, core.registry, now, models)
    if not parts:
        return 0
    cluster = cluster_view(core.queue, core.registry, core.running_by_tenant, now)
    tenants = core.tenants

    def view(e: QueueEntry) -> TaskView:
        active = core.tasks[e.task_id]
        req = active.req
        wait = now - e.enqueued_ms
        return task_view(e.task_id, req, wait, tenants.view(req.tenant, now), active.failovers)

    # The built-in schedule (inline, above) reads no tenant; a policy's own sees its tenant's
    # limits and usage (POL-100).
    tasks = {e.task_id: view(e) for part in parts for e in part.entries}
    assignments, cut = await core.policy_calls.schedule_pass(engine, parts, tasks, cluster)
    started = apply(assignments, core.queue, core.registry, core.clock(), partial(_reserve, core))
    if cut or len(started) < len(assignments):
        for part in parts:  # what this pass left undecided gets the next one
            core.wake(part.model)
    return len(started)


def _reserve(core: Core, entry: QueueEntry, worker_id: str) -> None:
    active = core.tasks[entry.task_id]
    active.record.worker_id = worker_id
    # The reservation owns the slot and the tenant's running count from here on.
    start_runner(
        core, active, core.ledger.reserve(worker_id, entry.task_id, active.req.tenant, entry.n)
    )
