"""Which worker holds which prompt prefix in its KV cache: one index over all workers of a
model, fed by the workers' own block reports (ORCH-400..ORCH-403, WRK-170..WRK-172); pure.

A worker reports its cache as chained hashes of full token blocks: a hash names a whole prefix
from the start of a sequence. The index maps each hash to the set of workers holding it (per
model), and each worker to its hashes (so a resync or a removal is one pass over its own).
`lookup` walks a prompt's hashes from the start and, for each worker, stops where it stops
holding them: the longest cached prefix per worker, in time proportional to the prompt's blocks
times the workers still matching.

Memory is bounded by `max_entries` (worker-block pairs, over all models): past it the least
recently stored or matched hashes are dropped (LRU). An index that dropped a block a worker
still holds only predicts less than the worker will reuse; it never routes to a worker for
blocks the worker said it evicted.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from shared.wire import KvBlockReport


@dataclass(slots=True)
class _WorkerBlocks:
    model: str
    block_size: int
    epoch: str
    seq: int
    synced: bool
    hashes: set[int] = field(default_factory=set)


class CacheIndex:
    def __init__(self, max_entries: int = 1_000_000) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be positive")
        self.max_entries = max_entries
        # model -> hash -> workers holding it; insertion order is recency (LRU first).
        self._blocks: dict[str, OrderedDict[int, set[str]]] = {}
        self._workers: dict[str, _WorkerBlocks] = {}
        self.entries = 0
        self.dropped = 0
        self.resyncs = 0
        self.gaps = 0

    # --- reports ------------------------------------------------------------------------

    def apply(self, worker_id: str, model: str, report: KvBlockReport) -> bool:
        """Apply one heartbeat's report; True when the worker must send a full one next
        (ORCH-401): a report of another epoch, or one that does not follow the last."""
        w = self._workers.get(worker_id)
        if report["full"]:
            self.drop_worker(worker_id)
            w = self._workers[worker_id] = _WorkerBlocks(
                model, report["block_size"], report["epoch"], report["seq"], True
            )
            self.resyncs += 1
            self._store(w, worker_id, report["stored"])
            return False
        if (
            w is None
            or not w.synced
            or w.model != model
            or w.epoch != report["epoch"]
            or report["seq"] != w.seq + 1
            or w.block_size != report["block_size"]
        ):
            # What the worker holds is unknown until its full report: route as if nothing.
            self.drop_worker(worker_id)
            self._workers[worker_id] = _WorkerBlocks(
                model, report["block_size"], report["epoch"], report["seq"], False
            )
            self.gaps += 1
            return True
        w.seq = report["seq"]
        blocks = self._blocks.get(model)
        if blocks is not None:
            for h in report["evicted"]:
                if h in w.hashes:
                    w.hashes.discard(h)
                    holders = blocks.get(h)
                    if holders is not None:
                        holders.discard(worker_id)
                        self.entries -= 1
                        if not holders:
                            del blocks[h]
        self._store(w, worker_id, report["stored"])
        return False

    def note(self, worker_id: str, model: str, hashes: Sequence[int]) -> None:
        """A task with these prompt blocks ended well on the worker: it holds them now, before
        its next heartbeat says so (a chat's next turn may come first). Its own report corrects
        this: blocks it stored and evicted meanwhile come as evicted (WRK-171)."""
        w = self._workers.get(worker_id)
        if w is not None and w.synced and w.model == model and hashes:
            self._store(w, worker_id, hashes)

    def drop_worker(self, worker_id: str) -> None:
        """Forget what `worker_id` holds (removed, re-registered, or out of sync)."""
        w = self._workers.pop(worker_id, None)
        if w is None:
            return
        blocks = self._blocks.get(w.model)
        if blocks is None:
            return
        for h in w.hashes:
            holders = blocks.get(h)
            if holders is not None and worker_id in holders:
                holders.discard(worker_id)
                self.entries -= 1
                if not holders:
                    del blocks[h]

    def _store(self, w: _WorkerBlocks, worker_id: str, hashes: Iterable[int]) -> None:
        blocks = self._blocks.setdefault(w.model, OrderedDict())
        for h in hashes:
            holders = blocks.get(h)
            if holders is None or worker_id not in holders:
                while self.entries >= self.max_entries:
                    self._drop_oldest(blocks)
                holders = blocks.get(h)  # the bound may have dropped it
                if holders is None:
                    holders = blocks[h] = set()
                holders.add(worker_id)
                w.hashes.add(h)
                self.entries += 1
            blocks.move_to_end(h)

    def _drop_oldest(self, prefer: OrderedDict[int, set[str]]) -> None:
        # The storing model's own oldest block first; another model's when it has none left.
        blocks = prefer if prefer else max(self._blocks.values(), key=len)
        h, holders = blocks.popitem(last=False)
        for worker_id in holders:
            w = self._workers.get(worker_id)
            if w is not None:
                w.hashes.discard(h)
        self.entries -= len(holders)
        self.dropped += len(holders)

    # --- questions ------------------------------------------------------------------------

    def has(self, model: str) -> bool:
        """Whether any worker of `model` holds a block: else a prompt's hashes are not worth
        asking for (ORCH-402)."""
        return bool(self._blocks.get(model))

    def block_size(self, model: str) -> int:
        """The block size the workers of `model` report in (the smallest, if they differ)."""
        sizes = [w.block_size for w in self._workers.values() if w.model == model and w.hashes]
        return min(sizes) if sizes else 0

    def lookup(
        self, model: str, hashes: Sequence[int], block_size: int, prompt_tokens: int = 0
    ) -> dict[str, int]:
        """Worker id -> prompt tokens of its longest cached prefix (0s left out), at most
        `prompt_tokens - 1` when given (the worker decodes at least the last token, WRK-100)."""
        blocks = self._blocks.get(model)
        if not blocks or not hashes:
            return {}
        out: dict[str, int] = {}
        alive: set[str] | None = None
        depth = 0
        for h in hashes:
            holders = blocks.get(h)
            if not holders:
                break
            live = {
                w
                for w in (holders if alive is None else alive & holders)
                if self._workers[w].block_size == block_size
            }
            if alive is not None:
                for gone in alive - live:
                    out[gone] = depth * block_size
            if not live:
                alive = live
                break
            blocks.move_to_end(h)  # matched: recently useful
            alive = live
            depth += 1
        for w in alive or ():
            out[w] = depth * block_size
        if prompt_tokens > 0:
            out = {w: min(n, prompt_tokens - 1) for w, n in out.items()}
        return {w: n for w, n in out.items() if n > 0}

    def holds(self, worker_id: str) -> int:
        w = self._workers.get(worker_id)
        return len(w.hashes) if w is not None else 0

    def stats(self) -> dict[str, int]:
        """What the index holds (the fleet snapshot, /metrics; ORCH-403): `entries`
        (worker-block pairs), `blocks` (distinct hashes), `max_entries`, `dropped` (pairs
        dropped for the bound since start), `resyncs` (full reports applied), `gaps` (reports
        refused for a gap or an unknown epoch: a full one was asked)."""
        return {
            "entries": self.entries,
            "blocks": sum(len(b) for b in self._blocks.values()),
            "max_entries": self.max_entries,
            "dropped": self.dropped,
            "resyncs": self.resyncs,
            "gaps": self.gaps,
        }
