"""The host-RAM prompt cache (WRK-174): the KV state of sequences a new job overwrote, kept in
host memory within a byte budget, so a conversation whose slot was taken restores instead of
being decoded again (llama-server's `--cache-ram`).

Pure bookkeeping of token lists and opaque blobs (what `llama_state_seq_get_data` wrote); the
decode thread saves and restores through llama.cpp (worker/steploop.py). Used by that one
thread only. Each entry is reported to the block ledger as a holder, so orchestratord's cache
index routes to a worker for what it holds in host RAM too (WRK-170).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

from worker.batching import common_prefix
from worker.kvblocks import BlockLedger


class HostCache:
    def __init__(self, budget_bytes: int, ledger: BlockLedger | None = None) -> None:
        self.budget = budget_bytes
        self.ledger = ledger
        self._entries: OrderedDict[int, tuple[tuple[int, ...], bytes]] = OrderedDict()
        self._next = 0
        self.bytes = 0
        self.saves = 0
        self.restores = 0

    def __len__(self) -> int:
        return len(self._entries)

    def best(self, prompt: Sequence[int], limit: int) -> tuple[int | None, int]:
        """The entry sharing the longest prefix with `prompt` (at most `limit` tokens) and
        that length; (None, 0) when none shares a token."""
        best: int | None = None
        best_n = 0
        for key, (tokens, _) in self._entries.items():
            if tokens and prompt and tokens[0] == prompt[0]:
                n = min(common_prefix(tokens, prompt), limit)
                if n > best_n:
                    best, best_n = key, n
        return best, best_n

    def tokens(self, key: int) -> tuple[int, ...]:
        return self._entries[key][0]

    def take(self, key: int) -> bytes:
        """The entry's state, to restore; it stays cached (most recently used now)."""
        self._entries.move_to_end(key)
        self.restores += 1
        return self._entries[key][1]

    def put(self, tokens: Sequence[int], blob: bytes) -> None:
        """Keep `blob`, the state of a sequence holding `tokens`; entries it makes redundant
        (their tokens a prefix of these) and the least recently used beyond the budget go."""
        if not tokens or not blob or len(blob) > self.budget:
            return
        kept = tuple(tokens)
        for key in [k for k, (t, _) in self._entries.items() if kept[: len(t)] == t]:
            self._drop(key)
        while self._entries and self.bytes + len(blob) > self.budget:
            self._drop(next(iter(self._entries)))
        key = self._next
        self._next += 1
        self._entries[key] = (kept, blob)
        self.bytes += len(blob)
        self.saves += 1
        if self.ledger is not None:
            self.ledger.set(("host", key), kept)

    def _drop(self, key: int) -> None:
        _, blob = self._entries.pop(key)
        self.bytes -= len(blob)
        if self.ledger is not None:
            self.ledger.set(("host", key), ())
