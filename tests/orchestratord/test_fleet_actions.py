"""The diff from desired state and plan to actions (specs/fleet.md FLT-020..FLT-027)."""

from __future__ import annotations

from orchestratord.fleet.actions import ActualWorker, diff
from orchestratord.fleet.desired import FleetSpec, parse_fleet

SPEC: FleetSpec = parse_fleet(
    {
        "models": {
            "m": {
                "source": "file:/models/m.gguf",
                "pools": ["a", "b"],
                "slots": 2,
                "min_replicas": 1,
                "max_replicas": 3,
            },
        }
    }
)


def w(
    wid: str, pool: str = "a", state: str = "ready", busy: int = 0, at: int = 0, model: str = "m"
) -> ActualWorker:
    return ActualWorker(wid, model, pool, state, busy, at)


def test_flt_021_scale_up_ensures_the_model_then_spawns_on_the_emptier_pool() -> None:
    """FLT-021, FLT-022, FLT-023: one replica on a; the plan asks 3: b gets one first (fewest),
    then a tie goes to a, each spawn after its pool's ensure_model, with deterministic ids."""
    actions = diff(SPEC, {"m": 3}, {"m": "load"}, [w("m.a.0", "a")])
    assert [(a["kind"], a["pool"], a["worker_id"], a["after"]) for a in actions] == [
        ("ensure_model", "b", None, None),
        ("spawn", "b", "m.b.0", "ensure_model:m@b"),
        ("ensure_model", "a", None, None),
        ("spawn", "a", "m.a.1", "ensure_model:m@a"),
    ]
    assert actions[0]["source"] == "file:/models/m.gguf"
    assert actions[1]["slots"] == 2
    assert actions[1]["reason"] == "scale m from 1 to 3 replicas: load"
    # The same inputs give the same actions: ids are what leases are keyed on.
    assert diff(SPEC, {"m": 3}, {"m": "load"}, [w("m.a.0", "a")]) == actions


def test_flt_027_leased_spawns_count_as_replicas() -> None:
    """FLT-027: a spawn leased but not registered yet is not spawned again."""
    first = diff(SPEC, {"m": 2}, {}, [w("m.a.0")])
    spawn = [a for a in first if a["kind"] == "spawn"]
    assert [a["worker_id"] for a in spawn] == ["m.b.0"]
    assert diff(SPEC, {"m": 2}, {}, [w("m.a.0")], starting=spawn) == []
    # Once registered (loading, then ready) it counts by itself.
    assert diff(SPEC, {"m": 2}, {}, [w("m.a.0"), w("m.b.0", "b", "loading")], starting=spawn) == []


def test_flt_024_drain_the_least_busy_newest_replica() -> None:
    """FLT-024: scale 3 -> 1 drains the two least busy, the later pool in `pools` first on a
    tie; none is stopped before it is drained."""
    workers = [w("m.a.0", busy=1, at=1), w("m.b.0", "b", busy=0, at=2), w("m.a.1", busy=0, at=3)]
    actions = diff(SPEC, {"m": 1}, {"m": "idle"}, workers)
    assert [(a["kind"], a["worker_id"]) for a in actions] == [
        ("drain", "m.b.0"),
        ("drain", "m.a.1"),
    ]
    # Same pool, same load: the newest goes first.
    newest = diff(SPEC, {"m": 1}, {}, [w("m.a.0", at=5), w("m.a.1", at=3)])
    assert [a["worker_id"] for a in newest] == ["m.a.0"]
    assert all(a["reason"] == "scale m from 3 to 1 replicas: idle" for a in actions)


def test_flt_025_stop_only_once_drained() -> None:
    """FLT-025: a draining replica with a task running waits; drained (or draining and idle)
    gets its stop; it no longer counts, so no replacement is spawned for it."""
    busy = diff(SPEC, {"m": 1}, {}, [w("m.a.0"), w("m.b.0", "b", "draining", busy=1)])
    assert busy == []
    done = diff(SPEC, {"m": 1}, {}, [w("m.a.0"), w("m.b.0", "b", "drained")])
    assert [(a["kind"], a["pool"], a["worker_id"]) for a in done] == [("stop", "b", "m.b.0")]
    idle = diff(SPEC, {"m": 1}, {}, [w("m.a.0"), w("m.b.0", "b", "draining")])
    assert [a["id"] for a in idle] == ["stop:m.b.0"]


def test_flt_006_unmanaged_models_and_dead_workers() -> None:
    """FLT-006: a worker of a model outside the desired state is left alone; a dead replica
    does not count, so it is replaced."""
    actions = diff(SPEC, {"m": 1}, {}, [w("x-1", model="x"), w("m.a.0", state="dead")])
    assert [(a["kind"], a["worker_id"]) for a in actions] == [
        ("ensure_model", None),
        ("spawn", "m.a.1"),
    ]


def test_flt_020_at_target_nothing_to_do() -> None:
    """FLT-020: desired equals actual: no action."""
    assert diff(SPEC, {"m": 2}, {}, [w("m.a.0"), w("m.b.0", "b")]) == []
