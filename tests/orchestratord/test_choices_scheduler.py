"""`n` counts against slots in admission (ORCH-270): pure scheduler and reservation checks."""

from __future__ import annotations

from orchestratord.domain.queue import QueueEntry, TaskQueue
from orchestratord.domain.registry import Registry, Worker
from orchestratord.domain.reservations import Ledger
from orchestratord.domain.scheduler import plan
from tests.orchestratord.test_scheduler import least_busy, setup


def test_orch270_a_task_of_n_choices_goes_only_where_n_slots_are_free_and_holds_them() -> None:
    q, r = setup({"a": 2, "b": 3})
    q.push(QueueEntry("t3", "m", "interactive", 0, None, n=3))
    q.push(QueueEntry("t1", "m", "interactive", 1, None))
    out = plan(q, r, 1, lambda e, ws: "a")
    assert [(a.entry.task_id, a.worker_id) for a in out] == [("t1", "a")], "a has 2 slots, not 3"
    assert [e.task_id for e in q] == ["t3"]
    out = plan(q, r, 2, least_busy)
    assert [(a.entry.task_id, a.worker_id) for a in out] == [("t3", "b")]
    b = r.get("b")
    assert b is not None and (b.slots_busy, b.free_slots) == (3, 0)
    r.release("b", "t3")
    assert b.slots_busy == 0


def test_orch270_a_task_of_n_choices_never_waits_in_a_worker_queue() -> None:
    """Prefetch places are for one-choice tasks: the worker answers BUSY to n > free slots."""
    q = TaskQueue(100)
    r = Registry(1000, 10_000, prefetch=4)
    r.register(Worker(id="a", url="http://a", model="m", slots_total=2), 0)
    q.push(QueueEntry("t1", "m", "interactive", 0, None))
    q.push(QueueEntry("t2", "m", "interactive", 1, None, n=2))
    out = plan(q, r, 1, lambda e, ws: "a")
    assert [a.entry.task_id for a in out] == ["t1"]
    assert [e.task_id for e in q] == ["t2"]


def test_orch270_the_reservation_holds_n_slots_and_one_running_task() -> None:
    _, r = setup({"a": 4})
    ledger = Ledger(r)
    with ledger.reserve("a", "t", "acme", 3):
        a = r.get("a")
        assert a is not None and a.slots_busy == 3
        assert ledger.running_by_tenant["acme"] == 1
        assert r.get("a") is not None and a.view(0, 1000)["slots_busy"] == 3
    assert a.slots_busy == 0 and not ledger.running_by_tenant
