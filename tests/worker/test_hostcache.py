"""The host-RAM prompt cache (WRK-174) on the tiny model: a conversation whose only slot another
prompt took is saved to host RAM, restored for its next turn, and produces what a cold run
produces; its blocks stay reported (WRK-170); the byte budget holds."""

from __future__ import annotations

import threading
from pathlib import Path

from tests.worker.test_engine import Sink, job
from worker.engine import LlamaEngine
from worker.hostcache import HostCache
from worker.kvblocks import BlockLedger, block_hashes


def cold_tokens(model: Path, prompt: str, n: int) -> tuple[int, ...]:
    """What a fresh engine, with nothing cached, generates for `prompt`."""
    cold = LlamaEngine.load(model, slots=1, n_ctx=2048, chunk=64, threads=1)
    try:
        return cold.generate(job(cold, prompt, n), threading.Event(), Sink()).tokens
    finally:
        cold.close()


def test_wrk_174_an_overwritten_conversation_restores_from_host_ram(tiny_model: Path) -> None:
    """WRK-174: slot 0 holds chat A; prompt B takes the slot, A's state goes to host RAM; A's
    second turn restores it (cached tokens, one restore) and matches a cold run; while B holds
    the slot, A's blocks are still reported held (the host entry is a holder)."""
    e = LlamaEngine.load(tiny_model, slots=1, n_ctx=2048, chunk=64, threads=1, cache_ram=64 << 20)
    try:
        turn1 = "user: " + " ".join(f"fact{i}" for i in range(60)) + "\nassistant:"
        first = e.generate(job(e, turn1, 16), threading.Event(), Sink())
        reply = b"".join(e.piece(t) for t in first.tokens).decode(errors="replace")
        other = e.generate(
            job(e, "user: " + " ".join(f"other{i}" for i in range(60)), 4),
            threading.Event(),
            Sink(),
        )
        assert other.prompt_tokens_cached < 10  # "user: " only
        assert e.host_cache is not None and len(e.host_cache) == 1
        a_blocks = block_hashes(e.tokenize(turn1), e.ledger.block_size)
        report = e.ledger.report()
        assert report["full"] and set(a_blocks) <= set(report["stored"])
        turn2 = f"{turn1}{reply}\nuser: and then?\nassistant:"
        second = e.generate(job(e, turn2, 16), threading.Event(), Sink())
        stats = e.cache_stats()
        n1 = len(e.tokenize(turn1))
    finally:
        e.close()
    assert stats.restores == 1 and second.prompt_tokens_cached >= n1 - 1
    assert second.tokens == cold_tokens(tiny_model, turn2, 16)


def test_wrk_174_the_byte_budget_holds_and_prefixes_give_way() -> None:
    """WRK-174: entries past the budget go least recently used first; an entry whose tokens
    begin a newer one is dropped for it; each drop is an eviction for the ledger."""
    ledger = BlockLedger(2)
    host = HostCache(100, ledger)
    host.put([1, 2, 3, 4], b"x" * 40)
    host.put([1, 2, 3, 4, 5, 6], b"x" * 40)  # the first is a prefix of it: replaced
    assert len(host) == 1 and host.bytes == 40
    host.put([7, 8], b"y" * 40)
    host.take(host.best([1, 2, 3], 3)[0] or 0)  # [1..6] used: [7, 8] is now the oldest
    host.put([9, 9], b"z" * 40)
    assert host.bytes <= 100 and host.best([7, 8], 2) == (None, 0)
    assert host.best([1, 2, 3, 4, 5, 6, 0], 6)[1] == 6
    host.put([5, 5], b"w" * 101)  # larger than the whole budget: not kept
    assert host.best([5, 5], 2) == (None, 0)
    held = set(block_hashes([1, 2, 3, 4, 5, 6], 2)) | set(block_hashes([9, 9], 2))
    assert set(ledger.report()["stored"]) == held


def test_wrk_175_a_restore_survives_the_save_that_evicts_its_entry(tiny_model: Path) -> None:
    """WRK-175: one slot, a host budget of one entry: chat A is saved when B takes the slot;
    A's next turn saves B, which evicts A's entry from the budget, and must still restore A
    (it failed with KeyError, and every later step with llama_decode -1). Then A's turn
    matches a cold run and the worker goes on serving."""
    e = LlamaEngine.load(tiny_model, slots=1, n_ctx=2048, chunk=64, threads=1, cache_ram=64 << 20)
    try:
        turn1 = "user: " + " ".join(f"fact{i}" for i in range(60)) + "\nassistant:"
        first = e.generate(job(e, turn1, 8), threading.Event(), Sink())
        reply = b"".join(e.piece(t) for t in first.tokens).decode(errors="replace")
        other = "user: " + " ".join(f"other{i}" for i in range(60))
        e.generate(job(e, other, 8), threading.Event(), Sink())
        host = e.host_cache
        assert host is not None and len(host) == 1
        host.budget = host.bytes * 3 // 2  # room for A's entry or B's, not both
        turn2 = f"{turn1}{reply}\nuser: and then?\nassistant:"
        second = e.generate(job(e, turn2, 8), threading.Event(), Sink())
        assert e.cache_stats().restores == 1
        assert second.prompt_tokens_cached >= len(e.tokenize(turn1)) - 1
        after = e.generate(job(e, other + " again", 4), threading.Event(), Sink())
        assert after.tokens_out == 4
    finally:
        e.close()
    assert second.tokens == cold_tokens(tiny_model, turn2, 8)
