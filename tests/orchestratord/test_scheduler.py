from __future__ import annotations

from orchestratord.domain.queue import QueueEntry, TaskQueue
from orchestratord.domain.registry import Registry, Worker, WorkerView
from orchestratord.domain.scheduler import plan


def setup(slots: dict[str, int], model: str = "m") -> tuple[TaskQueue, Registry]:
    q = TaskQueue(100)
    r = Registry(1000, 10_000)
    for wid, n in slots.items():
        r.register(Worker(id=wid, url=f"http://{wid}", model=model, slots_total=n), 0)
    return q, r


def least_busy(entry: QueueEntry, workers: list[WorkerView]) -> str | None:
    free = [w for w in workers if w["slots_busy"] < w["slots_total"]]
    return min(free, key=lambda w: w["slots_busy"])["id"] if free else None


def test_plan_fills_free_slots_and_leaves_the_rest_queued() -> None:
    q, r = setup({"a": 1, "b": 2})
    for n in range(5):
        q.push(QueueEntry(f"t{n}", "m", "interactive", n, None))
    out = plan(q, r, 1, least_busy)
    assert len(out) == 3
    assert sorted(a.worker_id for a in out) == ["a", "b", "b"]
    assert [e.task_id for e in q] == ["t3", "t4"]
    assert plan(q, r, 2, least_busy) == []


def test_plan_never_overcommits_whatever_the_policy_says() -> None:
    """ORCH-050: a policy can never over-commit a worker."""
    q, r = setup({"a": 1})
    q.push(QueueEntry("t1", "m", "interactive", 0, None))
    q.push(QueueEntry("t2", "m", "interactive", 0, None))
    calls: list[str] = []

    def always_a(entry: QueueEntry, workers: list[WorkerView]) -> str | None:
        calls.append(entry.task_id)
        return "a"

    out = plan(q, r, 1, always_a)
    assert [a.entry.task_id for a in out] == ["t1"]
    # t2 was not offered: no free slot for model m remained.
    assert calls == ["t1"]
    assert [e.task_id for e in q] == ["t2"]


def test_plan_ignores_unknown_or_wrong_model_picks_and_other_models_proceed() -> None:
    """ORCH-050: a pick that is unknown or of another model is ignored and the task stays queued."""
    q, r = setup({"a": 1})
    r.register(Worker(id="x", url="http://x", model="other", slots_total=1), 0)
    q.push(QueueEntry("t1", "m", "interactive", 0, None))
    q.push(QueueEntry("t2", "nomodel", "interactive", 0, None))
    q.push(QueueEntry("t3", "other", "batch", 0, None))
    picks = {"t1": "x", "t3": "x"}
    out = plan(q, r, 1, lambda e, ws: picks.get(e.task_id))
    assert [(a.entry.task_id, a.worker_id) for a in out] == [("t3", "x")]
    assert [e.task_id for e in q] == ["t1", "t2"]


def test_prefetch_sends_jobs_beyond_free_slots_and_policies_see_the_capacity() -> None:
    """ORCH-042: with --worker-prefetch policies see slots + N; the listing shows the real slots."""
    q = TaskQueue(100)
    r = Registry(1000, 10_000, prefetch=1)
    r.register(Worker(id="a", url="http://a", model="m", slots_total=2), 0)
    for n in range(4):
        q.push(QueueEntry(f"t{n}", "m", "interactive", n, None))
    seen: list[tuple[int, int]] = []

    def record(entry: QueueEntry, workers: list[WorkerView]) -> str | None:
        seen.append((workers[0]["slots_busy"], workers[0]["slots_total"]))
        return least_busy(entry, workers)

    out = plan(q, r, 1, record)
    assert [a.entry.task_id for a in out] == ["t0", "t1", "t2"]
    assert seen == [(0, 3), (1, 3), (2, 3)]
    [w] = r.listings(1)
    assert (w["slots_busy"], w["slots_total"]) == (2, 2)  # the listing shows the real slots


def test_orch_211_a_pinned_task_is_offered_only_its_worker_or_pool() -> None:
    """ORCH-211: a pinned task is offered only its worker or pool."""
    q, r = setup({"a": 1, "b": 1})
    r.register(Worker(id="c", url="http://c", model="m", pool="gpu", slots_total=1), 0)
    q.push(QueueEntry("t-b", "m", "interactive", 0, None, pin="worker:b"))
    q.push(QueueEntry("t-gpu", "m", "interactive", 0, None, pin="pool:gpu"))
    q.push(QueueEntry("t-b2", "m", "interactive", 0, None, pin="worker:b"))
    q.push(QueueEntry("t-any", "m", "interactive", 0, None))
    offered: dict[str, list[str]] = {}

    def first(entry: QueueEntry, workers: list[WorkerView]) -> str | None:
        offered[entry.task_id] = [w["id"] for w in workers]
        free = [w for w in workers if w["slots_busy"] < w["slots_total"]]
        return free[0]["id"] if free else None

    out = {a.entry.task_id: a.worker_id for a in plan(q, r, 1, first)}
    assert out == {"t-b": "b", "t-gpu": "c", "t-any": "a"}
    assert offered["t-b"] == ["b"] and offered["t-gpu"] == ["c"]
    # b is full: its second pinned task waits without holding back the unpinned one.
    assert "t-b2" not in offered and [e.task_id for e in q] == ["t-b2"]


def test_pol_025_schedule_is_offered_every_worker_of_the_model_that_is_not_dead() -> None:
    """POL-025: the policy is offered at least every worker that serves the task's model and is
    not dead, whatever its state (busy, stale, draining, loading, failed, not yet verified), as
    the state a policy knows; a dead worker and workers of other models may be left out, and a
    pick of a worker that may not take work (ORCH-041, POL-032) is ignored."""
    now = 20_000
    r = Registry(1000, 10_000)
    r.register(Worker(id="dead", url="http://dead", model="m"), 0)
    r.register(Worker(id="stale", url="http://stale", model="m"), 15_000)
    assert [w.id for w in r.sweep(now)] == ["dead"]
    for wid in ("ready", "full", "drained", "draining", "loading", "failed"):
        r.register(Worker(id=wid, url=f"http://{wid}", model="m"), now)
    r.register(Worker(id="other", url="http://other", model="x"), now)
    r.reserve("full", "t-running")
    r.drain("drained")
    for wid in ("draining", "loading", "failed"):
        r.heartbeat(wid, wid, 1, 0, now)  # type: ignore[arg-type]
    r.restore([Worker(id="unverified", url="http://unverified", model="m")])
    q = TaskQueue(100)
    q.push(QueueEntry("t1", "m", "interactive", 0, None))
    seen: list[dict[str, str]] = []
    picks = iter(["stale", "drained", "loading", "dead", "other", "ready"])

    def record(entry: QueueEntry, workers: list[WorkerView]) -> str | None:
        seen.append({w["id"]: w["state"] for w in workers})
        return next(picks)

    for _ in range(5):  # each pick is of a worker that may not take work: the task stays
        assert plan(q, r, now, record) == []
        assert [e.task_id for e in q] == ["t1"]
    [placed] = plan(q, r, now, record)
    assert (placed.entry.task_id, placed.worker_id) == ("t1", "ready")
    every = {
        "ready": "ready",
        "full": "busy",
        "stale": "stale",
        "drained": "draining",
        "draining": "draining",
        "loading": "stale",
        "failed": "stale",
        "unverified": "stale",
    }
    assert len(seen) == 6
    for offered in seen:
        assert {k: v for k, v in offered.items() if k in every} == every
        assert "dead" not in offered or offered["dead"] == "dead"
        assert all(k in every or k in ("dead", "other") for k in offered)


def test_orch_412_recent_starts_count_a_passes_placements_over_the_last_minute() -> None:
    """ORCH-412: each placement a pass carries out counts one start on its worker; the policy
    sees the starts of the last 60 s (5 s buckets), a worker placed on earlier in the same pass
    with one more, and a re-registration keeps the count."""
    q, r = setup({"a": 4, "b": 4})
    seen: list[dict[str, int]] = []

    def to_a(entry: QueueEntry, workers: list[WorkerView]) -> str | None:
        seen.append({w["id"]: w["recent_starts"] for w in workers})
        return "a"

    for n in range(3):
        q.push(QueueEntry(f"t{n}", "m", "interactive", 0, None))
    assert [x.worker_id for x in plan(q, r, 1_000, to_a)] == ["a", "a", "a"]
    assert seen == [{"a": 0, "b": 0}, {"a": 1, "b": 0}, {"a": 2, "b": 0}]
    for n in range(3):
        r.release("a", f"t{n}")
    a = r.get("a")
    assert a is not None
    assert a.view(1_000, r.stale_ms)["recent_starts"] == 3
    r.register(Worker(id="a", url="http://a", model="m", slots_total=4), 30_000)
    a = r.get("a")
    assert a is not None
    # Still counted at 60.999 s (the bucket of 1 s overlaps the window), gone at 65 s.
    assert a.view(60_999, r.stale_ms)["recent_starts"] == 3
    for wid in ("a", "b"):
        r.heartbeat(wid, "ready", 4, 0, 61_000)
    q.push(QueueEntry("t9", "m", "interactive", 61_000, None))
    plan(q, r, 61_000, to_a)
    assert seen[-1] == {"a": 3, "b": 0}
    assert a.view(65_000, r.stale_ms)["recent_starts"] == 1
    assert a.view(200_000, r.stale_ms)["recent_starts"] == 0
