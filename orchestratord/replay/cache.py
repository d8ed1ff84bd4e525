"""The workers' prefix caches in a replay, fed to the daemon's own cache index (ORCH-405).

A trace records prompt sizes, not prompts, so a task's blocks are named from what the trace
has: its session (or, without one, the task itself) and the block's place. A chat's later turn
repeats its earlier prompt, so its first blocks have the same names and find the worker that
served the earlier turn. Each worker keeps its last `slots` prompts (one sequence per slot,
least recently used overwritten, WRK-102) and reports what it stores and evicts through
`CacheIndex.apply`, as its heartbeats would; the scheduling pass reads the index as the
daemon's does (ORCH-402).
"""

from __future__ import annotations

import hashlib
from collections import deque

from orchestratord.domain.cacheindex import CacheIndex
from orchestratord.replay.trace import RecordedTask

BLOCK_SIZE = 64


def task_blocks(t: RecordedTask, block_size: int = BLOCK_SIZE) -> tuple[int, ...]:
    key = (t.session_id or f"task:{t.id}").encode()
    out = []
    for i in range(t.prompt_tokens // block_size):
        digest = hashlib.blake2b(key + i.to_bytes(4, "little"), digest_size=8).digest()
        out.append(int.from_bytes(digest, "little") >> 1)
    return tuple(out)


class SimCaches:
    def __init__(self, index: CacheIndex, block_size: int = BLOCK_SIZE) -> None:
        self.index = index
        self.block_size = block_size
        self._seqs: dict[str, deque[tuple[int, ...]]] = {}
        self._count: dict[str, dict[int, int]] = {}
        self._seq: dict[str, int] = {}

    def add_worker(self, worker_id: str, model: str) -> None:
        self._seqs[worker_id] = deque()
        self._count[worker_id] = {}
        self._seq[worker_id] = 1
        self.index.apply(
            worker_id,
            model,
            {
                "block_size": self.block_size,
                "epoch": "replay",
                "seq": 1,
                "full": True,
                "stored": [],
                "evicted": [],
            },
        )

    def finished(self, worker_id: str, model: str, slots: int, blocks: tuple[int, ...]) -> None:
        """A task ended on the worker: its prompt's blocks stay in one of its sequences."""
        if not blocks:
            return
        seqs, count = self._seqs[worker_id], self._count[worker_id]
        stored: list[int] = []
        evicted: list[int] = []
        for h in blocks:
            count[h] = count.get(h, 0) + 1
            if count[h] == 1:
                stored.append(h)
        seqs.append(blocks)
        while len(seqs) > max(1, slots):
            for h in seqs.popleft():
                count[h] -= 1
                if not count[h]:
                    del count[h]
                    evicted.append(h)
        self._seq[worker_id] += 1
        self.index.apply(
            worker_id,
            model,
            {
                "block_size": self.block_size,
                "epoch": "replay",
                "seq": self._seq[worker_id],
                "full": False,
                "stored": stored,
                "evicted": evicted,
            },
        )
