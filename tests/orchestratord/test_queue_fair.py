"""Fair share of the queue across tenants (issue 22, item 3): ORCH-350..ORCH-353. Pure: the
order is read from the queue (`head`, `position`), never from timings."""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path

import pytest

from orchestratord.domain.queue import QueueEntry, TaskQueue, task_cost
from orchestratord.domain.registry import Registry, Worker
from orchestratord.domain.scheduler import plan
from orchestratord.domain.tasks import Priority
from orchestratord.policy import PolicyEngine
from orchestratord.policy.types import WorkerView
from orchestratord.replay.sim import simulate
from orchestratord.replay.trace import RecordedTask, RecordedWorker, Trace
from orchestratord.settings import Settings, SettingsError


def task(
    task_id: str, tenant: str | None, priority: Priority = "batch", cost: float = 1.0
) -> QueueEntry:
    return QueueEntry(task_id, "m", priority, 0, None, tenant=tenant, cost=cost)


def order(q: TaskQueue, limit: int = 10_000) -> list[str]:
    return [e.task_id for e in q.head("m", limit)]


def serve(q: TaskQueue, k: int) -> list[str]:
    """Dispatch the first `k` tasks in service order, as a scheduling pass does."""
    taken = order(q, k)
    for tid in taken:
        q.remove(tid, served=True)
    return taken


def test_orch_350_a_tenants_task_waits_behind_its_own_backlog_not_anothers() -> None:
    """ORCH-350: A queues 1,000 tasks and two start; B's task then goes next, at position 0,
    where first come, first served puts it behind all of A's backlog."""
    for discipline, expected in (("wfq", 0), ("fifo", 998)):
        q = TaskQueue(10_000, discipline=discipline)  # type: ignore[arg-type]
        for i in range(1000):
            q.push(task(f"a{i}", "A"))
        assert serve(q, 2) == ["a0", "a1"]
        q.push(task("b0", "B"))
        assert q.position("b0") == expected
        assert order(q).index("b0") == expected
        if discipline == "wfq":
            # B's next task, queued while its first still waits, goes after one turn of A's.
            q.push(task("b1", "B"))
            assert order(q, 4) == ["b0", "a2", "b1", "a3"]


def test_orch_350_two_backlogs_alternate_and_each_tenant_keeps_its_own_order() -> None:
    """ORCH-350: with equal weights two backlogged tenants take turns, and each tenant's tasks
    start in the order they were queued (FIFO within a tenant)."""
    q = TaskQueue(1000)
    for i in range(50):
        q.push(task(f"a{i}", "A"))
    for i in range(50):
        q.push(task(f"b{i}", "B"))
    first = serve(q, 20)
    assert Counter(t[0] for t in first) == {"a": 10, "b": 10}
    rest = order(q)
    for tenant in "ab":
        mine = [t for t in first + rest if t[0] == tenant]
        assert mine == [f"{tenant}{i}" for i in range(50)]


def test_orch_352_weights_3_to_1_give_3_to_1_over_a_window() -> None:
    """ORCH-352: weights 3:1, both backlogged: every window of four starts holds three of A's
    and one of B's, and the served shares are 3:1 over 400 starts."""
    weights = {"A": 3.0, "B": 1.0}
    q = TaskQueue(10_000, weight=lambda t: weights.get(t or "", 1.0))
    for i in range(500):
        q.push(task(f"a{i}", "A"))
        q.push(task(f"b{i}", "B"))
    served = serve(q, 400)
    for w in range(0, 400, 4):
        assert Counter(t[0] for t in served[w : w + 4]) == {"a": 3, "b": 1}, served[w : w + 4]
    # A weight changed at run time counts for the tasks queued after it.
    weights["B"] = 3.0
    q2 = TaskQueue(10_000, weight=lambda t: weights.get(t or "", 1.0))
    for i in range(100):
        q2.push(task(f"a{i}", "A"))
        q2.push(task(f"b{i}", "B"))
    assert Counter(t[0] for t in serve(q2, 100)) == {"a": 50, "b": 50}


def test_orch_351_cost_is_tokens_so_shares_are_tokens_not_tasks() -> None:
    """ORCH-351: a task costs the tokens it may decode (n x max_tokens), so a tenant of 4x
    larger tasks starts a quarter as many of them: the token shares are equal."""
    assert task_cost(256) == 256 and task_cost(100, n=3) == 300 and task_cost(128, 1, 5) == 5
    q = TaskQueue(1000)
    for i in range(100):
        q.push(task(f"big{i}", "A", cost=task_cost(400)))
        q.push(task(f"small{i}", "B", cost=task_cost(100)))
    served = serve(q, 50)
    counts = Counter("A" if t.startswith("big") else "B" for t in served)
    assert counts["B"] == 4 * counts["A"]


def test_orch_350_lanes_still_win_over_fair_share() -> None:
    """ORCH-031, ORCH-350: every interactive task goes before any batch task, whoever's, and
    fairness applies within each lane."""
    q = TaskQueue(1000)
    for i in range(20):
        q.push(task(f"ab{i}", "A", "batch"))
    q.push(task("bb0", "B", "batch"))
    for i in range(5):
        q.push(task(f"ai{i}", "A", "interactive"))
    q.push(task("bi0", "B", "interactive"))
    got = order(q)
    assert set(got[:6]) == {"ai0", "ai1", "ai2", "ai3", "ai4", "bi0"}
    assert got.index("bi0") <= 1 and got.index("bb0") <= 7  # one turn of A's each
    assert q.position("ab0") == 6 and q.position("bb0") == got.index("bb0")


def test_orch_350_a_cancelled_backlog_is_not_charged_and_a_retry_goes_first() -> None:
    """ORCH-350: tasks that leave unserved (cancelled, expired) cost their tenant nothing;
    a retried task goes back to the head of its lane (ORCH-052), before every tenant's."""
    q = TaskQueue(1000)
    for i in range(30):
        q.push(task(f"a{i}", "A"))
    for i in range(30):
        q.push(task(f"b{i}", "B"))
    for i in range(30):
        q.remove(f"b{i}")  # B cancels everything it queued
    serve(q, 3)
    q.push(task("b-new", "B"))
    assert q.position("b-new") == 0
    running = serve(q, 1)[0]
    gone = q.get("a3")
    assert gone is not None and running == "b-new"
    q.remove("a3", served=True)
    q.push_front(gone)
    assert order(q, 2)[0] == "a3" and q.position("a3") == 0


def test_orch_350_positions_match_the_service_order_under_random_operations() -> None:
    """ORCH-350, ORCH-354: `position` (binary searches, no scan) is always the task's index in
    the service order `head` reads, through pushes, retries, dispatches and cancels."""
    rng = random.Random(7)
    q = TaskQueue(10_000, weight=lambda t: {"A": 2.0, "C": 0.5}.get(t or "", 1.0))
    live: list[str] = []
    for step in range(3000):
        op = rng.random()
        if op < 0.5 or not live:
            tid = f"t{step}"
            prio: Priority = "interactive" if rng.random() < 0.2 else "batch"
            tenant = rng.choice("ABCDEFGHIJKL")
            q.push(task(tid, tenant, prio, cost=rng.choice((1, 16, 128))))
            live.append(tid)
        elif op < 0.75:
            for tid in serve(q, rng.randint(1, 3)):
                live.remove(tid)
                if rng.random() < 0.1:  # a retry
                    entry = QueueEntry(tid, "m", "batch", 0, None, tenant="A")
                    q.push_front(entry)
                    live.append(tid)
        else:
            tid = rng.choice(live)
            q.remove(tid)
            live.remove(tid)
        if step % 50 == 0:
            seq = order(q)
            entries = [q.get(t) for t in live]
            lanes = {"interactive": 0, "batch": 1}
            by_tags = sorted(
                (e for e in entries if e is not None),
                key=lambda e: (lanes[e.priority], e.vstart, e.seq),
            )
            assert seq == [e.task_id for e in by_tags]  # smallest start tag first, per lane
            assert all(q.position(t) == i for i, t in enumerate(seq))


def test_orch_354_tenants_long_gone_are_forgotten() -> None:
    """ORCH-354, ORCH-350: a stream of one-off tenants leaves nothing behind once the lane's
    virtual time has passed their service, so a pass never walks them."""
    q = TaskQueue(10_000)
    for i in range(200):
        q.push(task(f"a{i}", "A"))
    for i in range(100):
        q.push(task(f"x{i}", f"once-{i}"))
        serve(q, 2)
    lane = q._models["m"].lanes["batch"]
    assert len(lane.flows) <= 4


def test_pol_105_the_scheduler_is_offered_tasks_in_fair_order_and_a_decline_is_free() -> None:
    """ORCH-350, POL-105: a pass offers the policy the model's tasks in fair order; a task it
    declines keeps its place and charges its tenant nothing, and the next one is offered."""
    q = TaskQueue(1000)
    for i in range(10):
        q.push(task(f"a{i}", "A"))
    q.push(task("b0", "B"))
    r = Registry(1000, 10_000)
    r.register(Worker("w", "http://w", "m", slots_total=2), 0)
    offered: list[str] = []

    def no_a0(entry: QueueEntry, workers: list[WorkerView]) -> str | None:
        offered.append(entry.task_id)
        return None if entry.task_id == "a0" else workers[0]["id"]

    started = [a.entry.task_id for a in plan(q, r, 1, no_a0)]
    assert offered == ["a0", "b0", "a1"] and started == ["b0", "a1"]
    assert order(q, 2) == ["a0", "a2"]


def test_orch_352_tenant_weight_flag_is_checked() -> None:
    """ORCH-352: --tenant-weight TENANT=W, W a positive number; anything else is one clear
    error at start."""
    s = Settings(tenant_weights=("acme=3", "globex=0.5"), queue_discipline="fifo")
    assert s.tenant_weight_map == {"acme": 3.0, "globex": 0.5}
    for bad in ("acme", "=2", "acme=0", "acme=-1", "acme=x", "acme=nan", "acme=inf"):
        with pytest.raises(SettingsError, match="--tenant-weight"):
            Settings(tenant_weights=(bad,))
    with pytest.raises(SettingsError, match="--queue-discipline"):
        Settings(queue_discipline="lifo")  # type: ignore[arg-type]


def _trace() -> Trace:
    tasks = [RecordedTask(f"a{i}", "m", "batch", "A", None, 0, 10, 16, 100) for i in range(50)] + [
        RecordedTask(f"b{i}", "m", "batch", "B", None, 1, 10, 16, 100) for i in range(4)
    ]
    return Trace(tuple(tasks), (RecordedWorker("w", "m", "p", "llama.cpp", 1, 10.0),), 0, 0)


def test_orch_353_replay_orders_the_queue_as_the_daemon_does(tmp_path: Path) -> None:
    """ORCH-353: the what-if replay queues by the same fair share (and the same flags): B's
    task behind A's backlog of 50 waits one task under wfq, the whole backlog under fifo; with
    weights 3:1 B's second task waits three of A's turns instead of one."""
    fair = simulate(_trace(), PolicyEngine.from_file(None))
    fifo = simulate(_trace(), PolicyEngine.from_file(None), discipline="fifo")
    assert fair.waits_ms["b0"] == 99  # a0 ran 0..100; b0 came at 1
    assert fair.waits_ms["b1"] == 299  # a1 then b1
    assert fifo.waits_ms["b0"] == 50 * 100 - 1
    weighted = simulate(_trace(), PolicyEngine.from_file(None), weights={"A": 3.0})
    assert weighted.waits_ms["b0"] == 99 and weighted.waits_ms["b1"] == 499
