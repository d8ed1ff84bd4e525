"""Where the policy's own functions run: on one thread of their own, never on the event loop
(specs/policy.md POL-090..POL-093).

A policy's admit and schedule may each take up to their budget, and a pass may ask schedule
up to room + 64 times per model: on the event loop that would hold every token relay. So the
policy's own code runs on a dedicated thread. The built-in functions (ours, and cheap) and an
admit known to accept everything still answer inline: the common case pays no thread hop.

    calls = PolicyCalls(holder, settings, metrics)
    decision = await calls.admit(view, lambda: cluster)        # before the task is queued
    engine, own = calls.engine("schedule")                     # once per pass
    assignments, cut = await calls.schedule_pass(engine, parts, tasks, cluster)
    decision = await calls.plan(hook, fleet, cluster)          # GET /v2/fleet/plan

A pass is decided in ONE hop from a snapshot (domain.scheduler.snapshot) and applied back on
the loop (domain.scheduler.apply), which re-checks every assignment; it stops asking the
policy once its `--policy-pass-budget-ms` is spent (the rest waits for the next pass). Calls
that keep failing or overrunning, or passes that keep running out of time, trip the breaker
(orchestratord.policy.breaker): the built-in policy answers for a cool-down.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, TypeVar

from orchestratord.domain.queue import QueueEntry
from orchestratord.domain.scheduler import Assignment, ModelPass, decide
from orchestratord.domain.views import AdmitDecision, ClusterView, TaskView, WorkerView
from orchestratord.metrics import Metrics
from orchestratord.policy import PolicyEngine, PolicyHolder
from orchestratord.policy.breaker import Breaker
from orchestratord.policy.fleet_plan import ClusterInput, FleetInput, PlanDecision
from orchestratord.policy.types import PolicyFunction
from orchestratord.settings import Settings

if TYPE_CHECKING:
    from orchestratord.fleet.plan_hook import PlanHook

log = logging.getLogger("llorch.policy")
T = TypeVar("T")


class PolicyCalls:
    def __init__(self, holder: PolicyHolder, settings: Settings, metrics: Metrics) -> None:
        self.holder = holder
        self.pass_budget_s = settings.policy_pass_budget_ms / 1000
        self.metrics = metrics
        self.breaker = Breaker(
            settings.policy_breaker_failures,
            settings.policy_breaker_cooldown_s,
            on_trip=self._tripped,
            on_close=self._closed,
        )
        self._engine = holder.engine
        self._executor: ThreadPoolExecutor | None = None
        # Admissions take turns (POL-093): each sees the queue its predecessor left.
        self._admitting = asyncio.Lock()

    def engine(self, fn: PolicyFunction) -> tuple[PolicyEngine, bool]:
        """The running engine, taken once per decision or pass, and whether `fn` should run
        the policy's own code (it defines it and the breaker is closed) off the loop."""
        engine = self.holder.engine
        if engine is not self._engine:  # reloaded: the new policy starts with a clean record
            self._engine = engine
            self.breaker.reset()
        return engine, engine.own(fn) and self.breaker.closed()

    async def admit(self, task: TaskView, cluster: Callable[[], ClusterView]) -> AdmitDecision:
        """The admission decision. `cluster()` is read just before the policy is asked; the
        caller queues the task without awaiting after this returns, so a burst of submissions
        is decided one at a time, each on the queue the one before left."""
        engine, own = self.engine("admit")
        if not own and not self._admitting.locked():
            # The built-in admit answers inline (POL-041: one known to accept everything is
            # not even called); `builtin` makes it stand in for the policy's while the
            # breaker is open.
            return engine.admit_checked(task, cluster(), builtin=engine.own("admit"))[0]
        async with self._admitting:
            engine, own = self.engine("admit")
            view = cluster()
            if not own:
                return engine.admit_checked(task, view, builtin=engine.own("admit"))[0]
            decision, reason = await self._run(engine.admit_checked, task, view)
            self.breaker.call(reason)
            return decision

    async def schedule_pass(
        self,
        engine: PolicyEngine,
        parts: Sequence[ModelPass],
        tasks: Mapping[str, TaskView],
        cluster: ClusterView,
    ) -> tuple[list[Assignment], bool]:
        """Decide a pass on the policy's thread: the assignments (to apply on the loop) and
        whether the pass was cut short (its time ran out, or the breaker tripped)."""
        breaker = self.breaker

        def schedule(entry: QueueEntry, workers: list[WorkerView]) -> str | None:
            pick, reason = engine.schedule_checked(tasks[entry.task_id], workers, cluster)
            breaker.call(reason)
            return pick

        def run() -> tuple[list[Assignment], bool]:
            deadline = time.perf_counter() + self.pass_budget_s
            out, cut = decide(
                parts, schedule, lambda: time.perf_counter() > deadline or not breaker.closed()
            )
            breaker.scheduling_pass(cut)
            return out, cut

        return await self._run(run)

    async def plan(self, hook: PlanHook, fleet: FleetInput, cluster: ClusterInput) -> PlanDecision:
        """The fleet's plan() (FLT-081): a policy's own on the policy's thread, like its admit
        and schedule (it may take its whole budget); the built-in one answers inline."""
        if not hook.own:
            return hook.plan(fleet, cluster)
        return await self._run(hook.plan, fleet, cluster)

    async def _run(self, fn: Callable[..., T], *args: object) -> T:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(1, thread_name_prefix="llorch-policy")
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None

    def _tripped(self, why: str) -> None:
        self.metrics.policy_breaker_trips.inc()
        self.metrics.policy_breaker_open.set(1)
        log.warning(
            "policy %s: %s; the built-in policy stands in for %g s",
            self.holder.engine.name,
            why,
            self.breaker.cooldown_s,
        )

    def _closed(self) -> None:
        self.metrics.policy_breaker_open.set(0)
