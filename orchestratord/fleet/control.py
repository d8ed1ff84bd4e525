"""The fleet controller's state in orchestratord: desired state, plan memory, action leases
(FLT-020..FLT-028). Pure: the daemon passes in the clock and a snapshot of its registry and
queue; nothing here does I/O except `reload()`, which reads the fleet file.

    control = FleetControl(spec, hook, path=Path("fleet.toml"))
    asked = control.plan_input(now_ms, loads, workers)    # GET /v2/fleet/plan, on the loop
    decision = hook.plan(asked.fleet, asked.cluster)      # the policy's thread (FLT-081)
    view = control.plan_view(now_ms, workers, asked, decision)
    action = control.lease(id, holder, ttl_ms, now_ms, view)   # POST .../lease (Conflict)
    control.report(id, holder, ok, detail, now_ms)         # POST .../result

Leases: an action of the current plan is leased to one holder (an `llorch fleet apply`) at a
time, until it reports or the lease expires. A spawn reported done counts as a starting
replica until its worker registers, or `start_grace_ms` passes (it failed to come up: the gap
reappears and is spawned again, under the same id); a stop reported done stays leased until
the worker has deregistered, so it is not offered twice.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TypedDict

from orchestratord.fleet.actions import Action, ActualWorker, Placement, PoolFacts, diff
from orchestratord.fleet.desired import FleetJson, FleetSpec, load_fleet_file
from orchestratord.fleet.plan_hook import (
    ClusterInput,
    FleetInput,
    ModelLoad,
    PlanDecision,
    PlanHook,
    fleet_input,
)
from shared.problem import Conflict, NotFound


class Demand(TypedDict):
    """What the daemon knows of one model's work: its queue and its running tasks."""

    queued_tasks: int
    running_tasks: int
    queued_tokens: int
    running_tokens: int
    ttft_ms: float


class LeaseJson(TypedDict):
    holder: str
    expires_ms: int
    done: bool


class PlannedAction(Action):
    lease: LeaseJson | None


class ModelPlan(TypedDict):
    model: str
    planned_replicas: int
    min_replicas: int
    max_replicas: int
    warm_replicas: int
    reason: str
    load: ModelLoad
    misplaced: list[str]  # live replicas on pools its `pools` do not list (FLT-060)
    unplaced: list[str]  # why replicas the plan asks for have no pool with room (FLT-066)


class PlanView(TypedDict):
    """The body of GET /v2/fleet/plan."""

    now_ms: int
    decided_by: str
    fleet: FleetJson
    models: list[ModelPlan]
    actions: list[PlannedAction]


@dataclass(frozen=True)
class PlanInput:
    """What one plan asks the hook: the desired state then, and plan()'s two arguments."""

    spec: FleetSpec
    fleet: FleetInput
    cluster: ClusterInput


@dataclass
class _Lease:
    holder: str
    expires_ms: int
    action: Action
    done_ms: int | None = None


def _visible(a: Action, registered: set[str]) -> bool:
    """Whether a done action's effect shows in the registry: a spawned worker registered, a
    stopped one deregistered; ensure_model and drain show at once."""
    if a["kind"] == "spawn":
        return a["worker_id"] in registered
    if a["kind"] == "stop":
        return a["worker_id"] not in registered
    return True


POOL_FACTS_TTL_MS = 600_000
MAX_POOL_REPORTS = 4096


def _idle_ms(now_ms: int, d: Demand, live: list[ActualWorker], since_ms: int) -> int:
    """How long the model's replicas have served nothing (FLT-061): since the last task on any
    of them ended, or since the newest of them registered when none has served, and at most
    since `since_ms` (this orchestratord first planned the model: after a restart it does not
    know what they served before); 0 while tasks are queued or running, or with no replica."""
    if d["queued_tasks"] or d["running_tasks"] or not live or any(w.busy for w in live):
        return 0
    last = max(since_ms, *(max(w.last_used_ms, w.registered_ms) for w in live))
    return max(0, now_ms - last)


NO_DEMAND: Demand = {
    "queued_tasks": 0,
    "running_tasks": 0,
    "queued_tokens": 0,
    "running_tokens": 0,
    "ttft_ms": 0.0,
}


class FleetControl:
    def __init__(
        self,
        spec: FleetSpec,
        hook: PlanHook,
        *,
        path: Path | None = None,
        start_grace_ms: int = 300_000,
    ) -> None:
        self.spec = spec
        self._model_ids = frozenset(m.id for m in spec.models)
        self.hook = hook
        self.path = path
        self.start_grace_ms = start_grace_ms
        self._target: dict[str, int] = {}
        self._changed_ms: dict[str, int] = {}
        self._first_ms: dict[str, int] = {}  # when this process first planned each model
        self._leases: dict[str, _Lease] = {}
        self._pools: dict[str, PoolFacts] = {}

    # -- pool facts -----------------------------------------------------------------------

    def report_pool(self, name: str, facts: PoolFacts) -> None:
        """A pool's memory and model sizes, as `llorch fleet apply` probed them (FLT-065).
        Old reports go, and at most MAX_POOL_REPORTS are kept (the oldest go first)."""
        self._pools[name] = facts
        now = facts.reported_ms
        self._pools = {
            k: v for k, v in self._pools.items() if now - v.reported_ms < POOL_FACTS_TTL_MS
        }
        while len(self._pools) > MAX_POOL_REPORTS:
            del self._pools[min(self._pools, key=lambda k: self._pools[k].reported_ms)]

    def pool_facts(self, now_ms: int) -> dict[str, PoolFacts]:
        """The reports young enough to place by; an old one says nothing of the pool now."""
        return {k: v for k, v in self._pools.items() if now_ms - v.reported_ms < POOL_FACTS_TTL_MS}

    # -- desired state --------------------------------------------------------------------

    @property
    def model_ids(self) -> frozenset[str]:
        """The desired models: their tasks queue while no replica runs (ORCH-360)."""
        return self._model_ids

    def replace(self, spec: FleetSpec) -> None:
        """Install a validated desired state (PUT /v2/fleet); plan memory of the models that
        stay is kept, so a re-PUT of the same state does not reset the cooldown."""
        self.spec = spec
        self._model_ids = frozenset(m.id for m in spec.models)
        keep = {m.id for m in spec.models}
        self._target = {k: v for k, v in self._target.items() if k in keep}
        self._changed_ms = {k: v for k, v in self._changed_ms.items() if k in keep}
        self._first_ms = {k: v for k, v in self._first_ms.items() if k in keep}

    def reload(self) -> FleetSpec:
        """Re-read the fleet file (SIGHUP); InvalidParams keeps the running state."""
        if self.path is None:
            return self.spec
        self.replace(load_fleet_file(self.path))
        return self.spec

    # -- planning -------------------------------------------------------------------------

    def _starting(self, now_ms: int, registered: set[str]) -> list[Action]:
        out = []
        for lease in self._leases.values():
            a = lease.action
            if a["kind"] != "spawn" or a["worker_id"] in registered:
                continue
            if lease.done_ms is None and lease.expires_ms > now_ms:
                out.append(a)  # being spawned now
            elif lease.done_ms is not None and now_ms - lease.done_ms < self.start_grace_ms:
                out.append(a)  # spawned, registering
        return out

    def _expire(self, now_ms: int, registered: set[str]) -> None:
        for key, lease in list(self._leases.items()):
            a = lease.action
            if lease.done_ms is None:
                if lease.expires_ms <= now_ms:
                    del self._leases[key]
            elif _visible(a, registered):
                del self._leases[key]  # done, and its effect shows
            elif now_ms - lease.done_ms >= self.start_grace_ms:
                del self._leases[key]

    def plan(
        self,
        now_ms: int,
        demand: Mapping[str, Demand],
        workers: Iterable[ActualWorker],
        *,
        replace_misplaced: bool = False,
    ) -> PlanView:
        """Desired against actual, the hook's replica counts, and the actions to close the gap.
        With `replace_misplaced`, replicas outside their model's pools are drained once the
        placed ones serve (FLT-063). All on the caller's thread: the daemon asks the hook on
        the policy's thread instead (plan_input, then plan_view: FLT-081)."""
        workers = list(workers)
        asked = self.plan_input(now_ms, demand, workers)
        decision = self.hook.plan(asked.fleet, asked.cluster)
        return self.plan_view(now_ms, workers, asked, decision, replace_misplaced)

    def plan_input(
        self, now_ms: int, demand: Mapping[str, Demand], workers: list[ActualWorker]
    ) -> PlanInput:
        """What the hook's plan() is asked with: the desired state and each model's load."""
        registered = {w.id for w in workers}
        self._expire(now_ms, registered)
        starting = self._starting(now_ms, registered)
        cluster: ClusterInput = {"now_ms": now_ms, "models": {}}
        for m in self.spec.models:
            # Replicas count per desired pool: a misplaced one is no replica of the plan's
            # (FLT-060), though it serves; the idle TTL looks at every one of them.
            every = [w for w in workers if w.model == m.id]
            mine = [w for w in every if w.pool in m.pools]
            ready = [w for w in mine if w.state == "ready"]
            live = [w for w in every if w.state in ("ready", "loading", "unverified", "stale")]
            d = demand.get(m.id, NO_DEMAND)
            coming = sum(1 for w in mine if w.state in ("loading", "unverified")) + sum(
                1 for a in starting if a["model"] == m.id
            )
            cluster["models"][m.id] = {
                "replicas": len(ready),
                "starting": coming,
                "queued_tasks": d["queued_tasks"],
                "running_tasks": d["running_tasks"],
                "queued_tokens": d["queued_tokens"],
                "running_tokens": d["running_tokens"],
                "tokens_per_s": round(sum(w.tokens_per_s * w.slots for w in ready), 3),
                "ttft_ms": d["ttft_ms"],
                "planned_replicas": self._target.get(m.id, len(ready) + coming),
                # A model first seen (orchestratord just started, or the model is new) counts
                # as just changed: after a restart, scale-downs wait a cooldown (FLT-015).
                "last_change_ms": self._changed_ms.setdefault(m.id, now_ms),
                "idle_ms": _idle_ms(now_ms, d, live, self._first_ms.setdefault(m.id, now_ms)),
            }
        return PlanInput(self.spec, fleet_input(self.spec), cluster)

    def plan_view(
        self,
        now_ms: int,
        workers: list[ActualWorker],
        asked: PlanInput,
        decision: PlanDecision,
        replace_misplaced: bool = False,
    ) -> PlanView:
        """The plan of the hook's `decision` on what it was `asked`: the counts remembered,
        the actions. The desired state is the one the hook was asked about, though a PUT may
        have replaced it since: the decision names that one's models."""
        spec, cluster = asked.spec, asked.cluster
        registered = {w.id for w in workers}
        # Leases may have changed while the hook decided: the actions follow them as they are.
        self._expire(now_ms, registered)
        starting = self._starting(now_ms, registered)
        for model_id, n in decision.replicas.items():
            if model_id in self._model_ids and self._target.get(model_id) != n:
                self._target[model_id] = n
                self._changed_ms[model_id] = now_ms
        placement: dict[str, Placement] = {}
        actions = diff(
            spec,
            decision.replicas,
            decision.reasons,
            workers,
            starting,
            replace_misplaced=replace_misplaced,
            pools=self.pool_facts(now_ms),
            placement=placement,
        )
        # Actions in flight are listed too, with their lease, so that every apply sees them
        # (and a second lease of one is a conflict, not a stranger).
        listed = {a["id"] for a in actions}
        actions += [lease.action for key, lease in self._leases.items() if key not in listed]
        planned: list[PlannedAction] = []
        for a in actions:
            lease = self._leases.get(a["id"])
            info: LeaseJson | None = None
            if lease is not None:
                info = {
                    "holder": lease.holder,
                    "expires_ms": lease.expires_ms,
                    "done": lease.done_ms is not None,
                }
            planned.append({**a, "lease": info})
        models: list[ModelPlan] = [
            {
                "model": m.id,
                "planned_replicas": decision.replicas[m.id],
                "min_replicas": m.min_replicas,
                "max_replicas": m.max_replicas,
                "warm_replicas": m.warm_replicas,
                "reason": decision.reasons[m.id],
                "load": cluster["models"][m.id],
                "misplaced": placement[m.id]["misplaced"],
                "unplaced": placement[m.id]["unplaced"],
            }
            for m in spec.models
        ]
        return {
            "now_ms": now_ms,
            "decided_by": decision.source,
            "fleet": spec.to_json(),
            "models": models,
            "actions": planned,
        }

    # -- leases ---------------------------------------------------------------------------

    def lease(
        self, action_id: str, holder: str, ttl_ms: int, now_ms: int, view: PlanView
    ) -> Action:
        """Lease an action of the current plan to `holder`: NotFound when the plan no longer
        has it, Conflict when another holder's lease is live; the same holder renews."""
        action = next((a for a in view["actions"] if a["id"] == action_id), None)
        if action is None:
            raise NotFound(f"action {action_id} is not in the current plan")
        lease = self._leases.get(action_id)
        if lease is not None and lease.holder != holder:
            if lease.done_ms is not None:
                raise Conflict(f"action {action_id} was done by {lease.holder}")
            if lease.expires_ms > now_ms:
                raise Conflict(f"action {action_id} is leased to {lease.holder}")
        plain: Action = {k: v for k, v in action.items() if k != "lease"}  # type: ignore[assignment]
        self._leases[action_id] = _Lease(holder, now_ms + ttl_ms, plain)
        return plain

    def report(self, action_id: str, holder: str, ok: bool, now_ms: int) -> None:
        """The holder ran the action: done (kept while its effect shows) or failed (released,
        so the next plan offers it again). Conflict when the caller does not hold it."""
        lease = self._leases.get(action_id)
        if lease is None or lease.holder != holder:
            raise Conflict(f"action {action_id} is not leased to {holder}")
        if ok:
            lease.done_ms = now_ms
        else:
            del self._leases[action_id]
