"""Scheduling work is proportional to what changed, not to the queue (issue 8, item 5):
ORCH-180. Pure: no timing is asserted, only how much of the queue a pass looks at."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from orchestratord.domain.queue import QueueEntry, TaskQueue
from orchestratord.domain.registry import Registry, Worker
from orchestratord.domain.scheduler import MAX_DECLINED, plan
from orchestratord.domain.tasks import parse_task_request
from orchestratord.domain.tenancy import OPEN
from orchestratord.metrics import Metrics
from orchestratord.policy import PolicyEngine, PolicyHolder
from orchestratord.policy.types import WorkerView
from orchestratord.runtime.service import TaskService
from orchestratord.settings import Settings


def fill(q: TaskQueue, model: str, n: int, priority: str = "interactive") -> None:
    for i in range(n):
        q.push(QueueEntry(f"{model}-{priority}-{i}", model, priority, i, None))  # type: ignore[arg-type]


def test_orch_180_a_pass_reads_only_the_models_it_is_given_and_their_heads() -> None:
    q = TaskQueue(100_000)
    fill(q, "big", 20_000)
    fill(q, "small", 3)
    r = Registry(1000, 10_000)
    r.register(Worker("wb", "http://b", "big", slots_total=2), 0)
    r.register(Worker("ws", "http://s", "small", slots_total=8), 0)
    asked: list[str] = []

    def decline_all(entry: QueueEntry, workers: list[WorkerView]) -> str | None:
        asked.append(entry.task_id)
        return None  # a policy that waits for something

    assert plan(q, r, 1, decline_all, models=["small"]) == []
    assert asked == ["small-interactive-0", "small-interactive-1", "small-interactive-2"]
    asked.clear()
    # A model with room whose tasks the policy declines: the pass reads its head, not 20,000.
    assert plan(q, r, 1, decline_all, models=["big"]) == []
    assert len(asked) == MAX_DECLINED
    asked.clear()

    def first(entry: QueueEntry, workers: list[WorkerView]) -> str | None:
        asked.append(entry.task_id)
        return workers[0]["id"]

    out = plan(q, r, 1, first)
    assert sorted(a.worker_id for a in out) == ["wb", "wb", "ws", "ws", "ws"]
    assert len(asked) == 5  # exactly what started
    asked.clear()
    assert plan(q, r, 1, first) == [] and asked == []  # full workers: not one task read


def test_orch_180_positions_count_only_the_same_models_work_ahead() -> None:
    q = TaskQueue(100)
    fill(q, "a", 3, "batch")
    fill(q, "b", 5)
    fill(q, "a", 2)
    assert q.position("a-interactive-0") == 0
    assert q.position("a-interactive-1") == 1
    assert q.position("a-batch-0") == 2  # a's two interactive tasks go first; b's do not count
    assert q.position("b-interactive-4") == 4
    q.remove("a-interactive-0")
    assert q.position("a-batch-2") == 3
    gone = q.remove("a-batch-1")
    assert gone is not None
    q.push_front(gone)  # a retry goes back to the head of its lane
    assert q.position("a-batch-1") == 1 and q.position("a-batch-0") == 2


def test_orch_180_deadlines_come_from_a_heap_that_forgets_removed_tasks() -> None:
    q = TaskQueue(1000)
    for i in range(200):
        q.push(QueueEntry(f"t{i}", "m", "batch", 0, 1_000 + i))
    for i in range(0, 200, 2):
        q.remove(f"t{i}")  # their deadlines must not expire anything
    assert q.next_deadline() == 1_001
    assert [e.task_id for e in q.expire(1_004)] == ["t1", "t3"]
    assert q.next_deadline() == 1_005 and len(q) == 98
    assert q.expire(999) == []


@pytest.mark.anyio
async def test_orch_180_a_wake_names_the_models_that_changed(tmp_path: object) -> None:
    settings = Settings(state_dir=tmp_path, expect_models=("a", "b"))  # type: ignore[arg-type]
    async with httpx.AsyncClient() as client:
        service = TaskService(
            settings,
            policy=PolicyHolder(PolicyEngine.from_file(None)),
            metrics=Metrics(),
            client=client,
        )
        await service.submit(parse_task_request({"model": "a", "prompt": "x"}, caller=OPEN))
        await service.submit(parse_task_request({"model": "b", "prompt": "x"}, caller=OPEN))
        service.dirty.clear()
        service.wake("b")
        assert await service.wait_for_work(5.0) == {"b"}
        # Nothing happened: the periodic pass looks at every queued model, and only at those.
        assert await asyncio.wait_for(service.wait_for_work(0.01), 5.0) == {"a", "b"}
        await service.stop()
