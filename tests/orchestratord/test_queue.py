from __future__ import annotations

import pytest

from orchestratord.domain.queue import QueueEntry, QueueFullError, TaskQueue
from orchestratord.domain.tasks import Priority


def entry(
    task_id: str,
    priority: Priority = "interactive",
    at: int = 0,
    deadline: int | None = None,
    model: str = "m",
) -> QueueEntry:
    return QueueEntry(task_id, model, priority, at, deadline)


def ids(q: TaskQueue) -> list[str]:
    return [e.task_id for e in q]


def test_interactive_lane_is_served_before_batch_fifo_within_lanes() -> None:
    """ORCH-031: every interactive task before any batch task, FIFO within a lane."""
    q = TaskQueue(10)
    for tid, lane in [
        ("b1", "batch"),
        ("i1", "interactive"),
        ("b2", "batch"),
        ("i2", "interactive"),
    ]:
        q.push(entry(tid, lane))  # type: ignore[arg-type]
    assert ids(q) == ["i1", "i2", "b1", "b2"]
    assert q.depth() == {"interactive": 2, "batch": 2}
    assert q.position("b1") == 2
    assert q.position("nope") is None


def test_reject_policy_refuses_when_full() -> None:
    """ORCH-031, ORCH-032: the queue is bounded; reject refuses when full."""
    q = TaskQueue(2, "reject")
    q.push(entry("a"))
    q.push(entry("b", "batch"))
    with pytest.raises(QueueFullError):
        q.push(entry("c"))
    assert ids(q) == ["a", "b"]


def test_drop_lru_evicts_oldest_batch_first() -> None:
    """ORCH-032: drop-lru evicts the oldest batch task first."""
    q = TaskQueue(3, "drop-lru")
    q.push(entry("i1"))
    q.push(entry("b1", "batch"))
    q.push(entry("b2", "batch"))
    dropped = q.push(entry("i2"))
    assert [d.task_id for d in dropped] == ["b1"]
    assert ids(q) == ["i1", "i2", "b2"]


def test_drop_lru_evicts_oldest_interactive_only_for_interactive_work() -> None:
    """ORCH-032: a batch task never evicts interactive work; an interactive one evicts the oldest
    interactive."""
    q = TaskQueue(2, "drop-lru")
    q.push(entry("i1"))
    q.push(entry("i2"))
    with pytest.raises(QueueFullError):
        q.push(entry("b1", "batch"))
    dropped = q.push(entry("i3"))
    assert [d.task_id for d in dropped] == ["i1"]
    assert ids(q) == ["i2", "i3"]


def test_deadlines_expire_in_order_and_push_front_requeues_at_head() -> None:
    """ORCH-033: queued tasks expire at their deadline; ORCH-052: a retried task goes back to the
    head."""
    q = TaskQueue(10)
    q.push(entry("a", deadline=100))
    q.push(entry("b", deadline=50))
    q.push(entry("c"))
    assert q.next_deadline() == 50
    assert [e.task_id for e in q.expire(60)] == ["b"]
    assert ids(q) == ["a", "c"]
    gone = q.remove("a")
    assert gone is not None
    q.push(entry("d"))
    q.push_front(gone)
    assert ids(q) == ["a", "c", "d"]


def test_duplicate_and_bad_capacity_are_refused() -> None:
    q = TaskQueue(2)
    q.push(entry("a"))
    with pytest.raises(ValueError):
        q.push(entry("a"))
    with pytest.raises(ValueError):
        TaskQueue(0)
