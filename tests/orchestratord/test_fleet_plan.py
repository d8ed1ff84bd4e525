"""The plan(fleet, cluster) hook: built-in scaling on token load, warm, cooldown, fallbacks
(specs/fleet.md FLT-010..FLT-016)."""

from __future__ import annotations

from typing import Any

import pytest

from orchestratord.fleet.desired import parse_fleet
from orchestratord.fleet.plan_hook import (
    ClusterInput,
    FleetInput,
    ModelLoad,
    PlanHook,
    fleet_input,
)
from orchestratord.policy.types import PolicyError

NOW = 10_000_000


def fleet(**model: Any) -> FleetInput:
    m = {
        "source": "catalog:m",
        "pools": ["a", "b"],
        "slots": 2,
        "min_replicas": 1,
        "max_replicas": 4,
    }
    m.update(model)
    return fleet_input(
        parse_fleet({"models": {"m": m}, "scaling": {"target_ttft_ms": 1000, "cooldown_s": 60}})
    )


def load(**over: Any) -> ClusterInput:
    m: dict[str, Any] = {
        "replicas": 1,
        "starting": 0,
        "queued_tasks": 0,
        "running_tasks": 0,
        "queued_tokens": 0,
        "running_tokens": 0,
        "tokens_per_s": 100.0,
        "ttft_ms": 0.0,
        "last_change_ms": 0,
    }
    m.update(over)
    m.setdefault("planned_replicas", m["replicas"] + m["starting"])
    loaded: ModelLoad = m  # type: ignore[assignment]
    return {"now_ms": NOW, "models": {"m": loaded}}


@pytest.fixture(scope="module")
def hook() -> PlanHook:
    return PlanHook.from_source("")


def test_flt_012_tokens_against_speed_give_replicas(hook: PlanHook) -> None:
    """FLT-012: 350 tokens at 100 tokens/s per replica, 1 s target: 4 replicas, capped at max."""
    d = hook.plan(fleet(), load(queued_tasks=5, queued_tokens=300, running_tokens=50))
    assert d.replicas == {"m": 4}
    assert "350 tokens at 100 tokens/s per replica" in d.reasons["m"]
    assert d.source == "builtin"
    d = hook.plan(fleet(max_replicas=3), load(queued_tokens=300, running_tokens=50))
    assert d.replicas == {"m": 3}
    assert "capped at max_replicas 3" in d.reasons["m"]


def test_flt_012_speed_is_per_replica(hook: PlanHook) -> None:
    """FLT-012: two replicas showing 200 tokens/s together serve 150 tokens in 1 s with 2."""
    d = hook.plan(fleet(), load(replicas=2, queued_tokens=150, tokens_per_s=200.0))
    assert d.replicas == {"m": 2}


def test_flt_013_ttft_above_target_adds_one(hook: PlanHook) -> None:
    """FLT-013: tokens alone ask for 1, but TTFT above target with a queue asks for one more."""
    d = hook.plan(fleet(), load(queued_tasks=2, queued_tokens=20, ttft_ms=2500.0))
    assert d.replicas == {"m": 2}
    assert "TTFT 2500 ms is above the 1000 ms target" in d.reasons["m"]


def test_flt_014_warm_and_min(hook: PlanHook) -> None:
    """FLT-014: an idle model keeps min_replicas, plus warm replicas on top of the load."""
    assert hook.plan(fleet(), load()).replicas == {"m": 1}
    assert hook.plan(fleet(min_replicas=0), load()).replicas == {"m": 0}
    d = hook.plan(fleet(min_replicas=0, warm_replicas=1), load(queued_tokens=150))
    assert d.replicas == {"m": 3}
    assert "+1 warm" in d.reasons["m"]


def test_flt_015_cooldown_holds_scale_down(hook: PlanHook) -> None:
    """FLT-015: load gone, 3 replicas: kept within cooldown_s of the last change, then 1."""
    f = fleet()
    recent = hook.plan(f, load(replicas=3, last_change_ms=NOW - 59_000))
    assert recent.replicas == {"m": 3}
    assert "cooldown" in recent.reasons["m"]
    later = hook.plan(f, load(replicas=3, last_change_ms=NOW - 60_000))
    assert later.replicas == {"m": 1}
    # Scaling up is never held.
    up = hook.plan(f, load(replicas=1, queued_tokens=250, last_change_ms=NOW))
    assert up.replicas == {"m": 3}


def test_flt_016_no_speed_yet(hook: PlanHook) -> None:
    """FLT-016: no ready replica yet: one per `slots` tasks queued or running, at least 1."""
    d = hook.plan(
        fleet(min_replicas=0), load(replicas=0, tokens_per_s=0.0, queued_tasks=5, queued_tokens=500)
    )
    assert d.replicas == {"m": 3}


def test_flt_010_operator_plan_is_used() -> None:
    """FLT-010: a policy's plan() gets the same inputs and its answer is taken."""
    src = """
def plan(fleet, cluster):
    return {"replicas": {k: m["max_replicas"] for k, m in fleet["models"].items()},
            "reasons": {k: "always max" for k in fleet["models"]}}
"""
    hook = PlanHook.from_source(src)
    assert hook.defined
    d = hook.plan(fleet(), load())
    assert (d.replicas, d.reasons, d.source) == ({"m": 4}, {"m": "always max"}, "policy")


class Seen:
    def __init__(self) -> None:
        self.fallbacks: list[tuple[str, str]] = []
        self.calls: list[str] = []

    def observe(self, fn: str, seconds: float) -> None:
        self.calls.append(fn)

    def fallback(self, fn: str, reason: str) -> None:
        self.fallbacks.append((fn, reason))


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        # out of [min, max] only on real input: the dry run's model is not "m"
        (
            'return {"replicas": {k: 9 for k in fleet["models"]}} if "m" in fleet["models"] '
            'else {"replicas": {k: 1 for k in fleet["models"]}}',
            "bad_return",
        ),
        (
            'return 1 // 0 if "m" in fleet["models"] else '
            '{"replicas": {k: 1 for k in fleet["models"]}}',
            "error",
        ),
        (
            'x = [i for i in range(10000000)] if "m" in fleet["models"] else None\n'
            '    return {"replicas": {k: 1 for k in fleet["models"]}}',
            "timeout",
        ),
    ],
)
def test_flt_011_fallback_to_builtin(body: str, reason: str) -> None:
    """FLT-011: a bad return, an error or an overrun falls back to the built-in plan, reported
    to the observer like admit() and schedule()."""
    seen = Seen()
    hook = PlanHook.from_source(
        f"def plan(fleet, cluster):\n    {body}\n", budget_ms=20, observer=seen
    )
    d = hook.plan(fleet(), load(queued_tokens=150))
    assert d.source == "builtin"
    assert d.replicas == {"m": 2}
    assert seen.fallbacks == [("plan", reason)]
    assert seen.calls == ["plan"]


def test_flt_011_a_broken_plan_is_refused_at_load() -> None:
    """FLT-011: a plan() that fails its dry run, or a `plan` that is not a function, is refused."""
    with pytest.raises(PolicyError, match="dry run of plan"):
        PlanHook.from_source("def plan(fleet, cluster):\n    return {}\n")
    with pytest.raises(PolicyError, match="must be a function"):
        PlanHook.from_source("plan = 3\n")
    with pytest.raises(PolicyError, match="does not parse"):
        PlanHook.from_source("def plan(:\n")
