"""The `plan(fleet, cluster)` policy hook: how many replicas each model should have (FLT-010..).

plan() is a function of the policy file, next to admit() and schedule(): the policy engine
(orchestratord.policy) compiles it from the same read of the file, calls it under the same
budget and falls back to the built-in plan (orchestratord/policies/plan.star) the same way.
This module turns the desired state into plan()'s input and follows the running engine, so a
reload changes admit, schedule and plan at once.

    hook = PlanHook.following(holder)                    # the holder's engine at each call
    decision = hook.plan(fleet_input(spec), cluster)      # never raises
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from orchestratord.fleet.desired import FleetSpec
from orchestratord.policy import PolicyEngine, PolicyHolder
from orchestratord.policy.fleet_plan import (
    ClusterInput,
    FleetInput,
    ModelInput,
    ModelLoad,
    PlanDecision,
    ScalingInput,
    check_decision,
    dry_run_input,
)
from orchestratord.policy.types import PolicyObserver

__all__ = [
    "ClusterInput",
    "FleetInput",
    "ModelInput",
    "ModelLoad",
    "PlanDecision",
    "PlanHook",
    "ScalingInput",
    "check_decision",
    "dry_run_input",
    "fleet_input",
]


def fleet_input(spec: FleetSpec) -> FleetInput:
    """What plan() sees of the desired state: the numbers, not the sources."""
    return {
        "models": {
            m.id: {
                "min_replicas": m.min_replicas,
                "max_replicas": m.max_replicas,
                "warm_replicas": m.warm_replicas,
                "slots": m.slots,
                "pools": list(m.pools),
                "backend": m.backend,
                "idle_ttl_s": m.idle_ttl_s,
            }
            for m in spec.models
        },
        "scaling": {
            "target_ttft_ms": spec.scaling.target_ttft_ms,
            "cooldown_s": spec.scaling.cooldown_s,
        },
    }


class PlanHook:
    """plan() of the running policy engine, read afresh at every call."""

    def __init__(self, engine: Callable[[], PolicyEngine]) -> None:
        self._engine = engine

    @classmethod
    def following(cls, holder: PolicyHolder) -> PlanHook:
        """The plan() of whatever engine the holder runs now (reloads included)."""
        return cls(lambda: holder.engine)

    @classmethod
    def from_source(
        cls,
        src: str,
        *,
        name: str = "<inline>",
        budget_ms: float = 50.0,
        observer: PolicyObserver | None = None,
        clock: Callable[[], float] = time.perf_counter,
    ) -> PlanHook:
        """A hook on a fixed engine compiled from `src`; PolicyError when it is unusable."""
        engine = PolicyEngine.from_source(
            src, name=name, budget_ms=budget_ms, observer=observer, clock=clock
        )
        return cls(lambda: engine)

    @classmethod
    def from_file(cls, path: Path | None, *, budget_ms: float = 50.0) -> PlanHook:
        engine = PolicyEngine.from_file(path, budget_ms=budget_ms)
        return cls(lambda: engine)

    @property
    def defined(self) -> bool:
        """Whether the policy file defines its own plan()."""
        return "plan" in self._engine().defines

    @property
    def own(self) -> bool:
        """Whether plan() is the policy's own code (it runs off the event loop: FLT-081)."""
        return self._engine().own("plan")

    def plan(self, fleet: FleetInput, cluster: ClusterInput) -> PlanDecision:
        """Replicas per model of the fleet, with reasons. Never raises."""
        return self._engine().plan(fleet, cluster)
