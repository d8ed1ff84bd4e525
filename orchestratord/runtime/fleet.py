"""The fleet controller's view of the running daemon (specs/fleet.md FLT-010, FLT-020, FLT-030):
the FleetSource that orchestratord.http.fleet reads, over the task service.

Demand per model: the queued tasks and their `max_tokens`, the running tasks and the tokens
they have yet to generate, and a TTFT figure: the mean time to first token of the tasks created
in the last minute, or the longest wait of a task still queued when that is longer (a queue
that does not move has no TTFT to show yet, and is the strongest sign of too few replicas).
"""

from __future__ import annotations

from orchestratord.fleet.actions import ActualWorker
from orchestratord.fleet.control import Demand, PlanView
from orchestratord.fleet.plan_hook import ClusterInput, FleetInput, PlanDecision, PlanHook
from orchestratord.runtime.service import TaskService
from shared.problem import NotFound
from shared.wire import QueuedData, WaitingFor

TTFT_WINDOW_MS = 60_000


class ServiceFleetSource:
    def __init__(self, service: TaskService) -> None:
        self.service = service
        self._told: dict[str, str] = {}  # queued task id -> the spawn it was told it waits for

    def clock(self) -> int:
        return self.service.clock()

    def fleet_snapshot(self, now_ms: int) -> tuple[dict[str, Demand], list[ActualWorker]]:
        s = self.service
        demand: dict[str, Demand] = {}
        oldest: dict[str, int] = {}
        ttfts: dict[str, list[float]] = {}

        def entry(model: str) -> Demand:
            return demand.setdefault(
                model,
                {
                    "queued_tasks": 0,
                    "running_tasks": 0,
                    "queued_tokens": 0,
                    "running_tokens": 0,
                    "ttft_ms": 0.0,
                },
            )

        for q in s.queue:
            active = s.tasks.get(q.task_id)
            if active is None:
                continue
            d = entry(q.model)
            d["queued_tasks"] += 1
            d["queued_tokens"] += active.req.max_tokens
            oldest[q.model] = max(oldest.get(q.model, 0), now_ms - q.enqueued_ms)
        for active in s.tasks.values():
            rec = active.record
            if rec.status == "running":
                d = entry(rec.model)
                d["running_tasks"] += 1
                d["running_tokens"] += max(0, active.req.max_tokens - active.tokens)
            if rec.ttft_ms is not None and now_ms - rec.created_ms <= TTFT_WINDOW_MS:
                ttfts.setdefault(rec.model, []).append(rec.ttft_ms)
        for model in set(oldest) | set(ttfts):
            seen = ttfts.get(model, [])
            mean = sum(seen) / len(seen) if seen else 0.0
            entry(model)["ttft_ms"] = round(max(mean, float(oldest.get(model, 0))), 3)
        stale = s.registry.stale_ms
        workers = [
            ActualWorker(
                w.id,
                w.model,
                w.pool,
                w.state(now_ms, stale),
                len(w.inflight),
                w.registered_ms,
                slots=w.slots_total,
                tokens_per_s=w.tokens_per_s,
                last_used_ms=w.last_used_ms,
            )
            for w in s.registry.workers.values()
        ]
        return demand, workers

    async def decide_plan(
        self, hook: PlanHook, fleet: FleetInput, cluster: ClusterInput
    ) -> PlanDecision:
        return await self.service.policy_calls.plan(hook, fleet, cluster)

    def drain(self, worker_id: str, migrate: bool = False) -> dict[str, object]:
        try:
            return dict(self.service.drain_worker(worker_id, migrate=migrate))
        except KeyError:
            raise NotFound(f"worker {worker_id} is not registered") from None

    def note_waiting(self, view: PlanView) -> None:
        """Tell each queued task of a model with no ready replica which spawn of the plan it
        waits for: one more `queued` event, with `waiting_for` (ORCH-361), once per spawn."""
        s = self.service
        spawns: dict[str, WaitingFor] = {}
        for a in view["actions"]:
            if a["kind"] == "spawn" and a["model"] not in spawns:
                spawns[a["model"]] = {
                    "action_id": a["id"],
                    "pool": a["pool"],
                    "reason": a["reason"],
                }
        serving = {m["model"] for m in view["models"] if m["load"]["replicas"] > 0}
        queued: set[str] = set()
        for q in s.queue:
            queued.add(q.task_id)
            waiting_for = spawns.get(q.model)
            active = s.tasks.get(q.task_id)
            if waiting_for is None or q.model in serving or active is None or active.log.closed:
                continue
            if self._told.get(q.task_id) == waiting_for["action_id"]:
                continue
            self._told[q.task_id] = waiting_for["action_id"]
            data: QueuedData = {
                "queue_position": s.queue.position(q.task_id),
                "waiting_for": waiting_for,
            }
            active.log.append("queued", data)
        for task_id in [t for t in self._told if t not in queued]:
            del self._told[task_id]

    def undrain(self, worker_id: str) -> dict[str, object]:
        try:
            return dict(self.service.undrain_worker(worker_id))
        except KeyError:
            raise NotFound(f"worker {worker_id} is not registered") from None
