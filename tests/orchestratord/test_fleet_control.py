"""Plan memory and action leases of the fleet controller (specs/fleet.md FLT-015, FLT-026,
FLT-027, FLT-028)."""

from __future__ import annotations

import pytest

from orchestratord.fleet.actions import ActualWorker
from orchestratord.fleet.control import Demand, FleetControl
from orchestratord.fleet.desired import parse_fleet
from orchestratord.fleet.plan_hook import PlanHook
from shared.problem import Conflict, NotFound

SPEC = parse_fleet(
    {
        "models": {
            "m": {
                "source": "catalog:m",
                "pools": ["a", "b"],
                "slots": 1,
                "min_replicas": 1,
                "max_replicas": 2,
            },
        },
        "scaling": {"target_ttft_ms": 1000, "cooldown_s": 10},
    }
)
BUSY: Demand = {
    "queued_tasks": 4,
    "running_tasks": 1,
    "queued_tokens": 400,
    "running_tokens": 50,
    "ttft_ms": 0.0,
}
IDLE: Demand = {
    "queued_tasks": 0,
    "running_tasks": 0,
    "queued_tokens": 0,
    "running_tokens": 0,
    "ttft_ms": 0.0,
}


@pytest.fixture
def control() -> FleetControl:
    return FleetControl(SPEC, PlanHook.from_source(""), start_grace_ms=5_000)


def ready(wid: str, pool: str = "a", state: str = "ready", busy: int = 0) -> ActualWorker:
    return ActualWorker(wid, "m", pool, state, busy, 0, slots=1, tokens_per_s=100.0)


def test_flt_026_one_holder_per_action(control: FleetControl) -> None:
    """FLT-026: two applies lease the same spawn: the second gets Conflict until the first's
    lease expires; the holder itself may renew; an action not in the plan is NotFound."""
    view = control.plan(1_000, {"m": BUSY}, [ready("m.a.0")])
    assert [a["id"] for a in view["actions"]] == ["ensure_model:m@b", "spawn:m.b.0"]
    assert view["models"][0]["planned_replicas"] == 2
    control.lease("spawn:m.b.0", "apply-1", 60_000, 1_000, view)
    with pytest.raises(Conflict, match="leased to apply-1"):
        control.lease("spawn:m.b.0", "apply-2", 60_000, 2_000, view)
    control.lease("spawn:m.b.0", "apply-1", 60_000, 2_000, view)
    later = control.plan(3_000, {"m": BUSY}, [ready("m.a.0")])
    # A spawn being run counts as a starting replica: it is listed with its lease only.
    assert [(a["id"], a["lease"]) for a in later["actions"]] == [
        ("spawn:m.b.0", {"holder": "apply-1", "expires_ms": 62_000, "done": False})
    ]
    assert later["models"][0]["load"]["starting"] == 1
    with pytest.raises(Conflict):
        control.lease("spawn:m.b.0", "apply-2", 60_000, 3_000, later)
    with pytest.raises(NotFound):
        control.lease("spawn:m.a.9", "apply-2", 60_000, 3_000, later)
    expired = control.plan(63_000, {"m": BUSY}, [ready("m.a.0")])
    assert [a["id"] for a in expired["actions"]] == ["ensure_model:m@b", "spawn:m.b.0"]
    assert expired["actions"][1]["lease"] is None
    control.lease("spawn:m.b.0", "apply-2", 60_000, 63_000, expired)


def test_flt_027_done_spawn_counts_until_registered_or_grace(control: FleetControl) -> None:
    """FLT-027: a spawn reported done counts as starting until its worker registers; if it
    never does, after start_grace_ms the gap is offered again; a failed one at once."""
    view = control.plan(0, {"m": BUSY}, [ready("m.a.0")])
    control.lease("spawn:m.b.0", "x", 60_000, 0, view)
    control.report("spawn:m.b.0", "x", True, 100)
    [listed] = control.plan(4_000, {"m": BUSY}, [ready("m.a.0")])["actions"]
    assert listed["lease"] == {"holder": "x", "expires_ms": 60_000, "done": True}
    assert control.plan(4_000, {"m": BUSY}, [ready("m.a.0"), ready("m.b.0", "b")])["actions"] == []
    again = control.plan(5_200, {"m": BUSY}, [ready("m.a.0")])
    assert [a["id"] for a in again["actions"]] == ["ensure_model:m@b", "spawn:m.b.0"]
    control.lease("spawn:m.b.0", "y", 60_000, 5_200, again)
    control.report("spawn:m.b.0", "y", False, 5_300)
    assert len(control.plan(5_400, {"m": BUSY}, [ready("m.a.0")])["actions"]) == 2
    with pytest.raises(Conflict, match="not leased to z"):
        control.report("spawn:m.b.0", "z", True, 5_500)


def test_flt_015_cooldown_counts_from_the_last_planned_change(control: FleetControl) -> None:
    """FLT-015: the plan remembers when a model's count last changed; load gone, the extra
    replica is drained only once cooldown_s has passed since then."""
    two = [ready("m.a.0"), ready("m.b.0", "b")]
    assert control.plan(0, {"m": BUSY}, [ready("m.a.0")])["models"][0]["planned_replicas"] == 2
    held = control.plan(9_000, {"m": IDLE}, two)
    assert held["models"][0]["planned_replicas"] == 2 and held["actions"] == []
    assert "cooldown" in held["models"][0]["reason"]
    down = control.plan(10_000, {"m": IDLE}, two)
    assert [(a["kind"], a["worker_id"]) for a in down["actions"]] == [("drain", "m.b.0")]
    # Re-installing the same desired state keeps the plan memory.
    control.replace(SPEC)
    assert control.plan(10_001, {"m": IDLE}, two)["models"][0]["planned_replicas"] == 1


def test_flt_028_a_done_stop_is_not_offered_twice(control: FleetControl) -> None:
    """FLT-028: stop done stays leased until the worker has deregistered."""
    workers = [ready("m.a.0"), ready("m.b.0", "b", state="drained")]
    view = control.plan(0, {"m": IDLE}, workers)
    assert [a["id"] for a in view["actions"]] == ["stop:m.b.0"]
    control.lease("stop:m.b.0", "x", 60_000, 0, view)
    control.report("stop:m.b.0", "x", True, 10)
    seen = control.plan(20, {"m": IDLE}, workers)
    assert seen["actions"][0]["lease"] == {"holder": "x", "expires_ms": 60_000, "done": True}
    with pytest.raises(Conflict, match="done by x"):
        control.lease("stop:m.b.0", "y", 60_000, 30, seen)
    assert control.plan(40, {"m": IDLE}, [ready("m.a.0")])["actions"] == []


def test_flt_015_a_restart_holds_scale_downs_for_a_cooldown() -> None:
    """FLT-015: plan memory is not stored; a controller that has just started (orchestratord
    restarted) treats its first plan of a model as a change, so two replicas that are more than
    the load needs are kept for a cooldown instead of one being stopped at once."""
    control = FleetControl(SPEC, PlanHook.from_source(""), start_grace_ms=5_000)
    workers = [ready("m.a.0"), ready("m.b.0", pool="b")]
    first = control.plan(1_000, {"m": IDLE}, workers)
    assert first["models"][0]["planned_replicas"] == 2 and first["actions"] == []
    assert "cooldown" in first["models"][0]["reason"]
    later = control.plan(1_000 + 10_000, {"m": IDLE}, workers)
    assert later["models"][0]["planned_replicas"] == 1
    assert [a["kind"] for a in later["actions"]] == ["drain"]
