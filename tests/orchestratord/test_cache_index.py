"""orchestratord's cache index of the workers' KV blocks (ORCH-400..ORCH-403), pure, and the
scheduler's use of it (POL-120)."""

from __future__ import annotations

import random
import tracemalloc
from collections.abc import Sequence

from orchestratord.domain.cacheindex import CacheIndex
from orchestratord.domain.queue import QueueEntry, TaskQueue
from orchestratord.domain.registry import Registry, Worker
from orchestratord.domain.scheduler import decide, snapshot
from orchestratord.domain.views import WorkerView
from shared.wire import KvBlockReport


def report(
    seq: int,
    stored: list[int],
    evicted: Sequence[int] = (),
    *,
    full: bool = False,
    epoch: str = "e1",
) -> KvBlockReport:
    return {
        "block_size": 16,
        "epoch": epoch,
        "seq": seq,
        "full": full,
        "stored": list(stored),
        "evicted": list(evicted),
    }


def test_orch_400_longest_cached_prefix_per_worker() -> None:
    """ORCH-400: per worker, the blocks of the prompt it holds from the start, in tokens, capped
    at the prompt's length minus one."""
    index = CacheIndex()
    assert not index.apply("a", "m", report(1, [1, 2, 3], full=True))
    assert not index.apply("b", "m", report(1, [1, 2], full=True))
    assert not index.apply("c", "m", report(1, [2, 3], full=True))  # not from the start
    assert index.lookup("m", [1, 2, 3, 4], 16) == {"a": 48, "b": 32}
    assert index.lookup("m", [1, 2, 3], 16, prompt_tokens=40) == {"a": 39, "b": 32}
    assert index.lookup("m", [9, 1], 16) == {}
    assert index.lookup("other", [1, 2], 16) == {}
    assert index.lookup("m", [1, 2], 32) == {}  # another block size: other hashes
    assert index.has("m") and not index.has("other") and index.block_size("m") == 16


def test_orch_401_evictions_and_gaps() -> None:
    """ORCH-401: an evicted block stops matching at once; a report that does not follow the
    last (a gap, another epoch) drops the worker's entries and asks for a full report."""
    index = CacheIndex()
    index.apply("a", "m", report(1, [1, 2, 3], full=True))
    assert not index.apply("a", "m", report(2, [], [3]))
    assert index.lookup("m", [1, 2, 3], 16) == {"a": 32}
    assert index.apply("a", "m", report(4, [5]))  # 3 is missing: resync
    assert index.lookup("m", [1, 2], 16) == {} and index.entries == 0
    assert index.apply("a", "m", report(5, [1]))  # still out of sync until a full one
    assert not index.apply("a", "m", report(6, [1, 2], full=True))
    assert index.lookup("m", [1, 2], 16) == {"a": 32}
    assert index.apply("a", "m", report(7, [3], epoch="e2"))  # a restarted process
    assert index.entries == 0 and index.stats()["gaps"] == 3
    index.apply("a", "m", report(1, [1], full=True, epoch="e2"))
    index.drop_worker("a")
    assert index.entries == 0 and not index.has("m")


def test_orch_403_memory_stays_within_its_bound_under_100000_distinct_prompts() -> None:
    """ORCH-403: 100,000 distinct prompts of 4 blocks stored over 3 workers: the index keeps at
    most `max_entries` pairs (least recently used dropped), its memory stays within a bound
    proportional to them, and recent prompts still match."""
    cap = 20_000
    index = CacheIndex(cap)
    rng = random.Random(7)
    seqs = {"w0": 1, "w1": 1, "w2": 1}
    for w in seqs:
        index.apply(w, "m", report(1, [], full=True))
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    peak_entries = 0
    for p in range(100_000):
        w = f"w{p % 3}"
        seqs[w] += 1
        blocks = [rng.getrandbits(63) for _ in range(4)]
        index.apply(w, "m", report(seqs[w], blocks))
        peak_entries = max(peak_entries, index.entries)
    used = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.stop()
    stats = index.stats()
    assert peak_entries <= cap and stats["entries"] == cap and stats["blocks"] <= cap
    assert stats["dropped"] == 100_000 * 4 - cap
    assert sum(index.holds(w) for w in seqs) == cap
    # About 500 bytes an entry (the hash in two dicts, a set of holders): 10 MB here, where
    # the 400,000 pairs without the bound would take 20 times as much.
    assert used < cap * 600
    assert index.lookup("m", blocks, 16) == {w: 64}


def _queue_entry(task_id: str, blocks: tuple[int, ...]) -> QueueEntry:
    e = QueueEntry(task_id, "m", "interactive", 0, None)
    e.blocks, e.block_size, e.prompt_tokens = blocks, 16, 16 * len(blocks) + 5
    return e


def test_pol_120_schedule_sees_cached_tokens_per_candidate() -> None:
    """POL-120: the scheduling pass hands the policy each worker's `cached_tokens` for the task
    from the index (0 where it holds nothing); the pick's prediction goes with the assignment."""
    registry = Registry(10_000, 60_000)
    for wid in ("a", "b"):
        registry.register(Worker(id=wid, url="http://x", model="m", slots_total=2), 0)
    registry.kv.apply("b", "m", report(1, [1, 2, 3], full=True))
    queue = TaskQueue(16, "reject")
    queue.push(_queue_entry("t1", (1, 2, 9)))
    queue.push(QueueEntry("t2", "m", "interactive", 0, None))
    seen: dict[str, dict[str, int]] = {}

    def schedule(entry: QueueEntry, workers: list[WorkerView]) -> str:
        seen[entry.task_id] = {w["id"]: w["cached_tokens"] for w in workers}
        return max(workers, key=lambda w: w["cached_tokens"])["id"]

    out, _ = decide(snapshot(queue, registry, 0), schedule)
    assert seen == {"t1": {"a": 0, "b": 32}, "t2": {"a": 0, "b": 0}}
    assert [(a.worker_id, a.cached) for a in out] == [("b", 32), ("a", None)]
