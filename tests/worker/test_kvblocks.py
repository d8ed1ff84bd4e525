"""The worker's KV block ledger (WRK-170..WRK-172): chained hashes, store/evict events, bounded
reports and full resyncs; with the batcher that feeds it. Pure: no model."""

from __future__ import annotations

import subprocess
import sys

from worker.batching import Batcher
from worker.kvblocks import MAX_PENDING, BlockLedger, block_hashes


def test_wrk_170_hashes_chain_from_the_start_and_are_stable_across_processes() -> None:
    """WRK-170: a block's hash names the whole prefix up to its end: equal prefixes, equal
    hashes; a change in block 0 changes every later hash; full blocks only; the same in another
    process (not Python's salted hash())."""
    a = list(range(100))
    b = [*range(64), *range(1000, 1036)]
    ha, hb = block_hashes(a, 16), block_hashes(b, 16)
    assert len(ha) == 6 and ha[:4] == hb[:4] and ha[4] != hb[4]
    c = [7, *range(1, 100)]
    assert all(x != y for x, y in zip(block_hashes(c, 16), ha, strict=True))
    assert all(0 <= h < 2**63 for h in ha)
    assert block_hashes(a, 16, ha[:3], 48) == ha  # reusing known hashes gives the same
    code = "from worker.kvblocks import block_hashes; print(block_hashes(list(range(100)), 16))"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == str(ha)


def test_wrk_171_store_and_evict_events_count_holders() -> None:
    """WRK-171: a block is stored when its first holder gets it and evicted when its last lets
    it go; the report after the first (full) one carries only the changes."""
    ledger = BlockLedger(4)
    first = ledger.report()
    assert first["full"] and first["stored"] == [] and first["seq"] == 1
    ledger.set(0, list(range(10)))  # two full blocks
    ledger.set(1, list(range(8)))  # the same two blocks
    r = ledger.report()
    assert not r["full"] and r["seq"] == 2 and len(r["stored"]) == 2 and r["evicted"] == []
    ledger.set(0, [])
    assert ledger.report()["evicted"] == []  # seq 1 still holds them
    ledger.set(1, [9, 9, 9, 9])
    r = ledger.report()
    assert sorted(r["evicted"]) == sorted(block_hashes(list(range(8)), 4))
    assert r["stored"] == block_hashes([9, 9, 9, 9], 4)
    # Stored and evicted before a report: the orchestrator is told it is gone.
    ledger.set(2, [5] * 4)
    ledger.set(2, [])
    r = ledger.report()
    assert r["stored"] == [] and r["evicted"] == block_hashes([5] * 4, 4)


def test_wrk_171_reports_are_bounded_and_a_flood_becomes_one_full_report() -> None:
    """WRK-171: at most `max_report` hashes a report, the rest in the next; past MAX_PENDING
    waiting changes the next report is a full one (WRK-172)."""
    ledger = BlockLedger(1, max_report=10)
    ledger.report()
    ledger.set(0, list(range(25)))
    sizes = [len(ledger.report()["stored"]) for _ in range(4)]
    assert sizes == [10, 10, 5, 0]
    ledger.set(1, list(range(100, 100 + MAX_PENDING + 1)))
    r = ledger.report()
    assert r["full"] and len(r["stored"]) == ledger.held() == 25 + MAX_PENDING + 1


def test_wrk_172_resync_sends_everything_held_under_a_new_sequence_number() -> None:
    """WRK-172: after `resync()` (a lost heartbeat, or orchestratord asked) the next report is
    full; each process has its own epoch."""
    ledger = BlockLedger(2)
    ledger.report()
    ledger.set("host-1", [1, 2, 3, 4])
    ledger.report()
    ledger.resync()
    r = ledger.report()
    assert (
        r["full"] and r["seq"] == 3 and sorted(r["stored"]) == sorted(block_hashes([1, 2, 3, 4], 2))
    )
    assert BlockLedger(2).epoch != ledger.epoch


def test_wrk_170_the_batcher_reports_what_idle_sequences_hold() -> None:
    """WRK-170: a job's prompt and output are reported when it ends (release); an admission
    that keeps only part of an idle cache evicts the rest; a failed decode evicts all."""
    ledger = BlockLedger(4)
    ledger.report()
    b = Batcher(1, 512, ledger=ledger)
    prompt = list(range(12))
    adm = b.admit(prompt)
    b.commit(b.plan())
    b.sampled(adm.seq_id, 99)
    b.commit(b.plan())  # 13 tokens cached
    b.release(adm.seq_id)
    assert ledger.report()["stored"] == block_hashes([*prompt, 99], 4)
    adm = b.admit([0, 1, 2, 3, 4, 5, 50, 51, 52])  # keeps 6 tokens: one full block
    r = ledger.report()
    assert sorted(r["evicted"]) == sorted(block_hashes(prompt, 4)[1:])
    b.commit(b.plan())
    b.forget(adm.seq_id)
    r = ledger.report()
    assert block_hashes(prompt, 4)[0] in r["evicted"] and r["stored"] == [] and not ledger.held()
