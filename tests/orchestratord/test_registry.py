from __future__ import annotations

from orchestratord.domain.registry import Registry, Worker


def worker(wid: str = "w1", model: str = "m", slots: int = 2) -> Worker:
    return Worker(id=wid, url=f"http://{wid}", model=model, slots_total=slots)


def test_heartbeat_staleness_and_death() -> None:
    """ORCH-041: a silent worker is stale (no work), then dead (kept); a heartbeat revives it."""
    r = Registry(stale_ms=100, dead_ms=1000)
    r.register(worker(), now_ms=0)
    assert r.candidates("m", 50)
    assert r.get("w1") is not None
    assert r.counts(150) == {"stale": 1}
    assert r.candidates("m", 150) == []
    assert r.sweep(500) == []
    dead = r.sweep(1001)
    assert [w.id for w in dead] == ["w1"]
    assert r.sweep(1002) == []  # reported once
    assert r.counts(1001) == {"dead": 1}
    # A heartbeat brings it back.
    assert r.heartbeat("w1", "ready", 2, 0, now_ms=1100) is not None
    assert r.counts(1100) == {"ready": 1}


def test_unknown_worker_heartbeat_is_refused() -> None:
    r = Registry(100, 1000)
    assert r.heartbeat("ghost", "ready", 1, 0, 0) is None


def test_slots_follow_reported_busy_beyond_our_own_jobs() -> None:
    r = Registry(100, 1000)
    r.register(worker(slots=3), 0)
    r.reserve("w1", "t1")
    w = r.get("w1")
    assert w is not None
    assert (w.slots_busy, w.free_slots) == (1, 2)
    # The worker says 3 busy: 2 are someone else's work, once a second heartbeat confirms it
    # (a single report may lag a job that just ended here).
    r.heartbeat("w1", "ready", 3, 3, 10)
    assert w.slots_busy == 1
    r.heartbeat("w1", "ready", 3, 3, 12)
    assert (w.slots_busy, w.free_slots) == (3, 0)
    assert r.candidates("m", 10)[0].room(0) == 0
    # Our job ends: its slot is free at once, the foreign two stay until the next heartbeat.
    r.release("w1", "t1")
    assert w.slots_busy == 2
    r.heartbeat("w1", "ready", 3, 0, 20)
    assert w.slots_busy == 0


def test_reported_state_other_than_ready_gets_no_work() -> None:
    """ORCH-041: only ready workers get work."""
    r = Registry(100, 1000)
    r.register(worker(), 0)
    r.heartbeat("w1", "draining", 2, 0, 10)
    assert r.candidates("m", 10) == []
    assert r.models(10) == []
    r.heartbeat("w1", "bogus", 2, 0, 20)  # type: ignore[arg-type]  # what a bad caller sends
    assert r.counts(20) == {"failed": 1}


def test_restored_workers_wait_for_a_heartbeat() -> None:
    r = Registry(100, 1000)
    w = worker()
    w.last_heartbeat_ms = 5
    r.restore([w])
    assert r.counts(6) == {"unverified": 1}
    assert r.candidates("m", 6) == []
    r.heartbeat("w1", "ready", 2, 0, 7)
    assert [c.id for c in r.candidates("m", 7)] == ["w1"]


def test_reregistration_keeps_jobs_in_flight() -> None:
    r = Registry(100, 1000)
    r.register(worker(), 0)
    r.reserve("w1", "t1")
    r.register(worker(), 5)
    w = r.get("w1")
    assert w is not None and w.inflight == {"t1"}
    view = r.listings(5)[0]
    assert view["slots_busy"] == 1 and view["state"] == "ready"


def test_orch_164_a_model_is_seen_within_the_grace_after_its_workers_go() -> None:
    """ORCH-164: a model counts as served a moment ago for `grace_ms` after the last heartbeat
    of a worker of it, whether that worker died or was removed; never with no grace."""
    r = Registry(stale_ms=1_000, dead_ms=5_000)
    assert not r.seen_within("m", 0, 60_000)
    r.register(Worker(id="a", url="u", model="m"), 1_000)
    r.register(Worker(id="b", url="u", model="m"), 1_000)
    r.heartbeat("b", "ready", 1, 0, 3_000)
    assert r.sweep(7_000) == [r.workers["a"]]  # a died (its last heartbeat at 1000)
    r.remove("b")  # b left after its heartbeat at 3000
    assert r.serving("m") == [] and r.known_models() == []
    assert r.seen_within("m", 3_000 + 10_000, 10_000)
    assert not r.seen_within("m", 3_000 + 10_001, 10_000)
    assert not r.seen_within("m", 3_001, 0)
    r.remove("a")  # the dead one's last heartbeat does not move the time forward
    assert r.seen_within("m", 13_000, 10_000) and not r.seen_within("m", 13_001, 10_000)
    assert not r.seen_within("other", 3_000, 10_000)
