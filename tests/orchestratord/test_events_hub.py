"""The fleet event hub and the 1-second snapshot, pure (ORCH-201..ORCH-204; ORCH-112)."""

from __future__ import annotations

import asyncio
import random
import tracemalloc
from typing import Any

import pytest

from orchestratord.domain.fleet_snapshot import (
    LaneEntry,
    LatencyWindow,
    ThroughputMeter,
    WorkerWatch,
    lanes,
    snapshot,
)
from orchestratord.domain.tasks import TaskRecord
from orchestratord.runtime.events_feed import EventsFeed
from orchestratord.runtime.events_hub import EventHub


def test_orch_201_fleet_events_reach_all_task_events_only_their_tenant() -> None:
    hub = EventHub(buffer=8)
    admin = hub.subscribe(tenant=None, admin=True)
    acme = hub.subscribe(tenant="acme", admin=False)
    other = hub.subscribe(tenant="other", admin=False)
    hub.publish("worker", {"id": "w1", "change": "up"}, scope="fleet")
    hub.publish("task", {"id": "t1", "status": "queued"}, tenant="acme", scope="tenant")
    hub.publish("task", {"id": "t2", "status": "queued"}, tenant=None, scope="tenant")
    names = {
        who: [(e.event, e.frame) for e in sub.drain()[0]]
        for who, sub in (("admin", admin), ("acme", acme), ("other", other))
    }
    assert [n for n, _ in names["admin"]] == ["worker", "task", "task"]
    assert [n for n, _ in names["acme"]] == ["worker", "task"]
    assert b'"t1"' in names["acme"][1][1]
    assert [n for n, _ in names["other"]] == ["worker"]
    # One frame per event, shared by every reader, with the hub's id.
    assert names["admin"][0][1] is names["acme"][0][1]
    assert names["admin"][0][1].startswith(b"id: 0\nevent: worker\ndata: {")


def test_orch_202_a_slow_reader_loses_its_oldest_events_and_is_told_how_many() -> None:
    """ORCH-202: a slow reader loses its oldest events and is told how many."""
    hub = EventHub(buffer=4)
    slow = hub.subscribe(tenant=None, admin=True)
    fast = hub.subscribe(tenant=None, admin=True)
    for i in range(10):
        hub.publish("metrics", {"n": i}, scope="fleet")
        if i % 2 == 0:
            assert len(fast.drain()[0]) >= 1
    batch, dropped = slow.drain()
    assert dropped == 6
    assert [e.id for e in batch] == [6, 7, 8, 9]  # the newest survive
    assert slow.drain() == ([], 0)


def test_orch_202_no_subscribers_nothing_is_framed_and_unsubscribe_stops_delivery() -> None:
    """ORCH-202: no subscribers nothing is framed and unsubscribe stops delivery."""
    hub = EventHub()
    assert hub.publish("metrics", {}, scope="fleet") is None
    sub = hub.subscribe(tenant=None, admin=True)
    hub.unsubscribe(sub)
    assert len(hub) == 0
    assert hub.publish("metrics", {}, scope="fleet") is None
    assert sub.pending() == 0
    with pytest.raises(ValueError):
        EventHub(buffer=1)


def test_subscription_wait_wakes_on_publish_and_times_out_when_idle() -> None:
    async def main() -> tuple[bool, bool]:
        hub = EventHub()
        sub = hub.subscribe(tenant=None, admin=True)
        idle = await sub.wait(0.01)
        waiter = asyncio.create_task(sub.wait(30))
        await asyncio.sleep(0)
        hub.publish("worker", {"id": "w"}, scope="fleet")
        return idle, await waiter

    assert asyncio.run(main()) == (False, True)


def test_orch_203_latency_window_percentiles_forget_old_samples() -> None:
    """ORCH-203: latency window percentiles forget old samples."""
    w = LatencyWindow(window_ms=1000)
    assert w.percentiles(0) == {"count": 0, "p50": None, "p90": None, "p99": None}
    for i in range(1, 101):
        w.add(500, float(i))
    p = w.percentiles(1000)
    assert p == {"count": 100, "p50": 50.0, "p90": 90.0, "p99": 99.0}
    w.add(1600, 7.0)
    assert w.percentiles(1600) == {"count": 1, "p50": 7.0, "p90": 7.0, "p99": 7.0}


def test_orch_203_latency_window_keeps_the_newest_max_samples_in_its_window() -> None:
    """ORCH-203: past `max_samples` the oldest samples go first, and the age bound still holds,
    across the window's wrap-around (compared with a plain list of every sample)."""
    rng = random.Random(7)
    w = LatencyWindow(window_ms=1_000, max_samples=50)
    every: list[tuple[int, float]] = []
    now = 1_700_000_000_000
    for step in range(2_000):
        now += rng.choice((0, 1, 3, 40))
        value = round(rng.uniform(0, 500), 3)
        w.add(now, value)
        every.append((now, value))
        if step % 37 == 0:
            kept = sorted(v for t, v in every[-50:] if t >= now - 1_000)
            p = w.percentiles(now)
            assert p["count"] == len(kept)
            assert p["p50"] == (kept[max(1, -(-50 * len(kept) // 100)) - 1] if kept else None)
            assert p["p99"] == (kept[max(1, -(-99 * len(kept) // 100)) - 1] if kept else None)


def test_orch_112_latency_window_memory_does_not_grow_with_its_samples() -> None:
    """ORCH-112: the fleet feed's TTFT and queue-time windows are fed by every task whether or
    not anyone reads `GET /v2/events`; each holds up to MAX_SAMPLES samples, so their memory
    must be fixed from the start, not grow with the first tens of thousands of tasks."""
    tracemalloc.start()
    try:
        w = LatencyWindow(window_ms=10**9, max_samples=1_000)
        before = tracemalloc.get_traced_memory()[0]
        for i in range(5_000):
            w.add(1_700_000_000_000 + i, i * 0.37)
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert w.percentiles(1_700_000_005_000)["count"] == 1_000
    assert grown < 4_096, f"{grown} bytes for 1,000 samples"


def test_orch_203_throughput_is_the_difference_of_counters_per_second() -> None:
    """ORCH-203: throughput is the difference of counters per second."""
    m = ThroughputMeter()
    assert m.rates(1000, {"a": 10}) == {"a": 0.0}
    assert m.rates(2000, {"a": 110, "b": 5}) == {"a": 100.0, "b": 0.0}
    assert m.rates(2500, {"a": 160, "b": 5}) == {"a": 100.0, "b": 0.0}
    # A counter that went back (a worker registered again) restarts at 0.
    assert m.rates(3500, {"a": 3, "b": 5}) == {"a": 0.0, "b": 0.0}


def _w(wid: str, state: str) -> dict[str, object]:
    return {"id": wid, "state": state, "pool": "p", "model": "m"}


def test_orch_204_worker_watch_reports_up_down_drained_and_removed() -> None:
    watch = WorkerWatch()
    assert watch.changes([_w("a", "ready")]) == []  # the baseline
    assert [
        (c["id"], c["change"]) for c in watch.changes([_w("a", "ready"), _w("b", "ready")])
    ] == [("b", "up")]
    got = watch.changes([_w("a", "dead"), _w("b", "drained")])
    assert [(c["id"], c["change"], c["state"]) for c in got] == [
        ("a", "down", "dead"),
        ("b", "drained", "drained"),
    ]
    assert [(c["id"], c["change"]) for c in watch.changes([_w("a", "ready")])] == [
        ("a", "up"),
        ("b", "removed"),
    ]
    assert [c["change"] for c in watch.changes([_w("a", "draining")])] == ["state"]


def test_orch_203_snapshot_has_slots_rates_lanes_and_percentiles() -> None:
    """ORCH-203: snapshot has slots rates lanes and percentiles."""
    workers = [
        {
            "id": "w2",
            "pool": "b",
            "model": "m",
            "backend": "cpu",
            "state": "ready",
            "slots_busy": 1,
            "slots_total": 2,
            "tokens_per_s": 40.0,
            "last_heartbeat_ms": 9_500,
        },
        {"id": "w1", "pool": "a", "model": "m", "state": "stale", "last_heartbeat_ms": 0},
    ]
    lane = lanes(
        [LaneEntry("batch", 9_000), LaneEntry("batch", 8_000)], ("interactive", "batch"), 10_000
    )
    assert lane == {
        "interactive": {"depth": 0, "oldest_wait_ms": None},
        "batch": {"depth": 2, "oldest_wait_ms": 2_000},
    }
    empty = LatencyWindow().percentiles(10_000)
    snap = snapshot(10_000, workers, {"w2": 12.5}, lane, empty, empty, {"name": "default"})
    assert [w["id"] for w in snap["workers"]] == ["w1", "w2"]  # by pool, then id
    w2 = snap["workers"][1]
    assert (w2["slots_busy"], w2["slots_total"], w2["tokens_per_s"]) == (1, 2, 12.5)
    assert w2["heartbeat_age_ms"] == 500 and w2["decode_tokens_per_s"] == 40.0
    assert snap["workers"][0]["heartbeat_age_ms"] is None
    assert snap["tokens_per_s"] == 12.5 and snap["lanes"] == lane


def _Rec(tid: str, tenant: str | None, status: str = "queued", **kw: Any) -> TaskRecord:
    return TaskRecord(tid, "m", "interactive", status, "h", 1_000, tenant=tenant, **kw)  # type: ignore[arg-type]


def _feed(workers: list[dict[str, object]], totals: dict[str, int], now: list[int]) -> EventsFeed:
    return EventsFeed(
        clock=lambda: now[0],
        workers=lambda: workers,
        queued=lambda: [LaneEntry("interactive", now[0] - 250)],
        token_totals=lambda: totals,
        policy=lambda: {"name": "default", "sha256": "x", "fallbacks": 0},
        buffer=4,
    )


def test_orch_200_feed_hello_then_changes_metrics_and_own_tenant_tasks() -> None:
    now = [10_000]
    workers: list[dict[str, object]] = [{**_w("a", "ready"), "last_heartbeat_ms": 9_900}]
    totals = {"a": 0}
    feed = _feed(workers, totals, now)
    feed.tick()  # no reader: only the baseline moves
    sub, hello = feed.subscribe(tenant="acme", admin=False)
    assert b"event: hello" in hello and b'"role":"client"' in hello
    feed.task_changed(_Rec("t1", "acme"))
    feed.task_changed(_Rec("t2", "other"))
    now[0] += 1000
    workers[0]["state"] = "dead"
    totals["a"] = 50
    feed.tick()
    batch, dropped = sub.drain()
    assert dropped == 0
    assert [e.event for e in batch] == ["task", "worker", "metrics"]
    assert b'"t1"' in batch[0].frame and b'"change":"down"' in batch[1].frame
    assert b'"oldest_wait_ms":250' in batch[2].frame


def test_orch_202_feed_chunks_start_with_hello_and_report_lag() -> None:
    """ORCH-202: feed chunks start with hello and report lag."""

    async def main() -> list[bytes]:
        feed = _feed([_w("a", "ready")], {"a": 0}, [1_000])
        sub, hello = feed.subscribe(tenant=None, admin=True)
        chunks = feed.chunks(sub, hello)
        got = [await anext(chunks)]
        for i in range(7):
            feed.task_changed(_Rec(f"t{i}", None))
        got.append(await anext(chunks))
        await chunks.aclose()
        feed.hub.unsubscribe(sub)  # the SSE response's on_close
        assert len(feed.hub) == 0
        return got

    hello, lagged = asyncio.run(main())
    assert b"event: hello" in hello
    frames = lagged.split(b"\n\n")[:-1]
    assert b"event: lagged" in frames[0] and b'"dropped":3' in frames[0]
    assert len(frames) == 5 and b'"t6"' in frames[-1]


def test_orch_203_feed_latency_windows_come_from_task_changes() -> None:
    """ORCH-203: feed latency windows come from task changes."""
    now = [5_000]
    feed = _feed([], {}, now)
    feed.task_changed(_Rec("t", None, status="running", attempts=1, started_ms=1_400))
    feed.task_changed(_Rec("t", None, status="running", attempts=2, started_ms=1_400))  # a retry
    feed.task_changed(_Rec("t", None, status="succeeded", ttft_ms=42.0, finished_ms=4_000))
    feed.task_changed(_Rec("u", None, status="failed", finished_ms=4_000))
    snap = feed.snapshot()
    assert snap["queue_ms"] == {"count": 1, "p50": 400.0, "p90": 400.0, "p99": 400.0}
    assert snap["ttft_ms"]["count"] == 1 and snap["ttft_ms"]["p50"] == 42.0
