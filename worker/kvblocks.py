"""What a worker's KV cache holds, as orchestratord's cache index needs it (WRK-170..WRK-174).

A cached sequence is named by the hashes of its full blocks of `block_size` tokens, each hash
chained from its parent's (`block_hash(parent, tokens)`), so one hash names a whole prefix from
the start of the sequence: two prompts share a block hash exactly when they share every token up
to the end of that block. The hash is blake2b (8 bytes, 63 bits kept so every JSON reader holds
it as an integer): stable across processes and machines, unlike Python's salted `hash()`.

`BlockLedger` counts, per hash, the holders (sequences, host-RAM entries) that have it, and
queues `stored`/`evicted` changes for the next heartbeat. Thread-safe: the decode thread sets
holders, the event loop takes reports.
"""

from __future__ import annotations

import hashlib
import secrets
import threading
from array import array
from collections.abc import Hashable, Sequence

from shared.wire import KvBlockReport

DEFAULT_BLOCK_SIZE = 64
# Hashes a heartbeat carries at most (WRK-171); more changes wait for the next ones.
MAX_REPORT = 2048
# Changes waiting past this become one full report: a burst never grows without bound.
MAX_PENDING = 8 * MAX_REPORT
_MASK = (1 << 63) - 1
_ROOT = (0).to_bytes(8, "little")


def block_hashes(
    tokens: Sequence[int], block_size: int, known: Sequence[int] = (), known_tokens: int = 0
) -> list[int]:
    """The chained hashes of the full blocks of `tokens`. `known`: hashes already computed for
    the first `known_tokens` tokens (unchanged), reused instead of hashed again."""
    n = len(tokens) // block_size
    reuse = min(len(known), known_tokens // block_size, n)
    out = list(known[:reuse])
    parent = out[-1].to_bytes(8, "little") if out else _ROOT
    for i in range(reuse, n):
        chunk = array("i", tokens[i * block_size : (i + 1) * block_size]).tobytes()
        h = int.from_bytes(hashlib.blake2b(parent + chunk, digest_size=8).digest(), "little")
        h &= _MASK
        out.append(h)
        parent = h.to_bytes(8, "little")
    return out


class BlockLedger:
    """The block hashes every holder has, and the changes not yet reported."""

    def __init__(self, block_size: int = DEFAULT_BLOCK_SIZE, max_report: int = MAX_REPORT):
        if block_size < 1:
            raise ValueError("block_size must be positive")
        self.block_size = block_size
        self.max_report = max_report
        self._lock = threading.Lock()
        self._held: dict[Hashable, list[int]] = {}
        self._count: dict[int, int] = {}
        self._stored: dict[int, None] = {}  # ordered sets: oldest change first
        self._evicted: dict[int, None] = {}
        # A new epoch per process: orchestratord drops what it knew of an older one (WRK-172).
        self.epoch = secrets.token_hex(8)
        self._seq = 0
        self._full = True  # the first report is a full one

    def set(self, holder: Hashable, tokens: Sequence[int], unchanged: int = 0) -> None:
        """`holder` now caches `tokens` (empty: nothing); its first `unchanged` tokens are the
        same as at its last `set`."""
        old = self._held.get(holder, [])
        new = block_hashes(tokens, self.block_size, old, unchanged)
        with self._lock:
            i = 0
            while i < len(old) and i < len(new) and old[i] == new[i]:
                i += 1
            for h in old[i:]:
                left = self._count[h] - 1
                if left:
                    self._count[h] = left
                else:
                    del self._count[h]
                    self._stored.pop(h, None)
                    self._evicted[h] = None
            for h in new[i:]:
                had = self._count.get(h, 0)
                self._count[h] = had + 1
                if not had:
                    self._evicted.pop(h, None)
                    self._stored[h] = None
            if new:
                self._held[holder] = new
            else:
                self._held.pop(holder, None)
            if len(self._stored) + len(self._evicted) > MAX_PENDING:
                self._full = True

    def held(self) -> int:
        """Distinct blocks cached now."""
        with self._lock:
            return len(self._count)

    def resync(self) -> None:
        """The next report is a full one (orchestratord asked, or a report may be lost)."""
        with self._lock:
            self._full = True

    def report(self) -> KvBlockReport:
        """The next heartbeat's part: every hash held (full), or at most `max_report` changes,
        evictions first, each report numbered one past the last of this epoch."""
        with self._lock:
            self._seq += 1
            if self._full:
                self._full = False
                self._stored.clear()
                self._evicted.clear()
                return {
                    "block_size": self.block_size,
                    "epoch": self.epoch,
                    "seq": self._seq,
                    "full": True,
                    "stored": list(self._count),
                    "evicted": [],
                }
            evicted = _take(self._evicted, self.max_report)
            stored = _take(self._stored, self.max_report - len(evicted))
            return {
                "block_size": self.block_size,
                "epoch": self.epoch,
                "seq": self._seq,
                "full": False,
                "stored": stored,
                "evicted": evicted,
            }


def _take(pending: dict[int, None], n: int) -> list[int]:
    out: list[int] = []
    for h in pending:
        if len(out) >= n:
            break
        out.append(h)
    for h in out:
        del pending[h]
    return out
