"""Drain in the registry (specs/fleet.md FLT-030): no new task, running ones finish, drained."""

from __future__ import annotations

from orchestratord.domain.registry import Registry, Worker


def test_flt_030_draining_until_the_last_task_ends() -> None:
    """FLT-030: a drained worker is no candidate at once; it is `draining` while a task of
    ours runs there and `drained` when the last one ends; policies see it as draining."""
    reg = Registry(stale_ms=5_000, dead_ms=10_000)
    reg.register(Worker("w1", "http://h:1", "m", slots_total=2), 0)
    reg.register(Worker("w2", "http://h:2", "m", slots_total=2), 0)
    reg.reserve("w1", "t1")
    assert reg.drain("w1") is not None and reg.drain("ghost") is None
    assert [w.id for w in reg.candidates("m", 1)] == ["w2"]
    w1 = reg.get("w1")
    assert w1 is not None
    assert w1.state(1, reg.stale_ms) == "draining"
    assert w1.view(1, reg.stale_ms)["state"] == "draining"
    # Heartbeats saying "ready" do not undo the drain; a re-registration keeps it too.
    reg.heartbeat("w1", "ready", 2, 1, 2)
    assert w1.state(2, reg.stale_ms) == "draining"
    reg.release("w1", "t1")
    assert w1.state(3, reg.stale_ms) == "drained"
    assert w1.view(3, reg.stale_ms)["state"] == "draining"
    again = reg.register(Worker("w1", "http://h:1", "m", slots_total=2), 4)
    assert again.state(4, reg.stale_ms) == "drained"
    assert reg.models(4) == ["m"]  # w2 still serves it
    assert reg.counts(4) == {"drained": 1, "ready": 1}
