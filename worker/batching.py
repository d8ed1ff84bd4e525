"""What goes into each decode step: pure bookkeeping of the sequences in one llama.cpp context.

No llama.cpp, no clock, no threads. The engine asks `admit()` where a new prompt goes (which
sequence, how much of its cached prefix is kept, whether to copy another sequence's cache first),
asks `plan()` for the next step, performs it, and reports back with `commit()`, `sampled()` and
`release()`. Every decision the scheduler makes is therefore testable without a model.

The rules (specs/worker.md, WRK-090..WRK-094, WRK-100..WRK-102):
- every generating sequence puts its next token into every step, with logits (one token each);
- prompt tokens of newly admitted jobs fill the rest of the step, oldest admission first, at most
  `chunk` prompt tokens per step in all: a long prompt arriving delays the running streams' next
  token by at most one chunk of prefill (chunked prefill);
- logits are requested only where a token will be sampled: the last token of a generating
  sequence's step, the last token of a prompt;
- a sequence's cache is kept when its job ends (`release`): the next prompt that shares a prefix
  with it reuses the prefix and decodes only the rest (prefix cache);
- a prompt whose prefix another sequence is still prefilling waits for that prefill
  (`prefilling`) and then reuses it, instead of decoding the same tokens beside it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from worker.kvblocks import BlockLedger

if TYPE_CHECKING:
    from worker.hostcache import HostCache


@dataclass(eq=False)
class SeqState:
    """One sequence (one slot's share of the KV cache)."""

    seq_id: int
    kv: list[int] = field(default_factory=list)  # tokens whose K/V is cached, kv[i] at pos i
    busy: bool = False
    pending: list[int] = field(default_factory=list)  # prompt tokens not yet decoded
    next_token: int | None = None  # sampled last step, decoded in the next one
    admitted: int = 0  # admission order (prefill is served oldest first)
    released: int = 0  # release order (the least recently used idle cache is overwritten first)
    kept: int = 0  # cached tokens kept at admission: unchanged since the ledger last saw them


@dataclass(frozen=True, slots=True)
class Admission:
    seq_id: int
    keep: int  # cached positions kept: the engine removes positions >= keep
    copy_from: int | None  # copy this sequence's cache first (then keep its first `keep`)
    prompt_tokens: int
    # WRK-174: save the sequence's state (these tokens) to host RAM before anything else, and
    # restore this host entry into it (then keep its first `keep`).
    save: tuple[int, ...] | None = None
    restore: int | None = None

    @property
    def cached(self) -> int:
        return self.keep


@dataclass(frozen=True, slots=True)
class Entry:
    """A run of tokens of one sequence in a step, at positions pos, pos + 1, ..."""

    seq_id: int
    tokens: tuple[int, ...]
    pos: int
    sample: bool  # logits at the last token; a token is sampled for this sequence
    prefill: bool  # prompt tokens (False: the one next token of a generating sequence)


@dataclass(frozen=True, slots=True)
class Step:
    entries: tuple[Entry, ...]

    @property
    def n_tokens(self) -> int:
        return sum(len(e.tokens) for e in self.entries)

    @property
    def prefill_tokens(self) -> int:
        return sum(len(e.tokens) for e in self.entries if e.prefill)

    @property
    def sampled(self) -> tuple[int, ...]:
        return tuple(e.seq_id for e in self.entries if e.sample)


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


class Batcher:
    """The scheduler of one context with `n_seq` sequences.

    `min_copy`: a prefix held by another sequence is copied only when it saves at least this many
    tokens over the best idle sequence's own cache; a cross-sequence copy moves the whole KV stream,
    which costs more than recomputing a short prefix.
    """

    def __init__(
        self,
        n_seq: int,
        chunk: int,
        *,
        min_copy: int = 64,
        ledger: BlockLedger | None = None,
        host: HostCache | None = None,
    ) -> None:
        if n_seq < 1 or chunk < 1:
            raise ValueError("n_seq and chunk must be positive")
        self.chunk = chunk
        self.min_copy = min_copy
        # Told what each sequence caches when a job takes or leaves it (WRK-170): what a
        # running job adds is reported when it ends, as only then can another prompt use it.
        self.ledger = ledger
        # WRK-174: where overwritten caches are saved, and restored from when they match more.
        self.host = host
        self.seqs = [SeqState(i) for i in range(n_seq)]
        self._clock = 0  # a counter, not time: orders admissions and releases

    @property
    def busy(self) -> int:
        return sum(1 for s in self.seqs if s.busy)

    @property
    def idle(self) -> int:
        return len(self.seqs) - self.busy

    @property
    def cached_tokens(self) -> int:
        """Tokens held in idle sequences' caches, ready for reuse."""
        return sum(len(s.kv) for s in self.seqs if not s.busy)

    def admit(self, prompt: Sequence[int]) -> Admission:
        """Place a prompt on an idle sequence, reusing the longest cached prefix."""
        if not prompt:
            raise ValueError("a prompt has at least one token")
        idle = [s for s in self.seqs if not s.busy]
        if not idle:
            raise RuntimeError("no idle sequence: admission control lets in at most n_seq jobs")
        limit = len(prompt) - 1  # at least one token is decoded: its logits start generation
        own = max(idle, key=lambda s: (min(common_prefix(s.kv, prompt), limit), -s.released))
        own_keep = min(common_prefix(own.kv, prompt), limit)
        target, keep, source = own, own_keep, None
        donor = max(self.seqs, key=lambda s: common_prefix(s.kv, prompt))
        donor_keep = min(common_prefix(donor.kv, prompt), limit)
        restore, host_keep = self.host.best(prompt, limit) if self.host else (None, 0)
        save: tuple[int, ...] | None = None
        if restore is not None and host_keep >= max(own_keep, donor_keep) + self.min_copy:
            # Host RAM holds much more of the prompt than any sequence: restore it into the
            # least valuable idle sequence, whose own cache is saved first if worth it.
            assert self.host is not None
            target = min(idle, key=lambda s: (min(common_prefix(s.kv, prompt), limit), s.released))
            keep = host_keep
            save = self._worth_saving(target, 0)
            target.kv = list(self.host.tokens(restore)[:keep])
        elif donor is not own and donor_keep >= own_keep + self.min_copy:
            # Overwrite the least valuable idle cache: the least recently released.
            target = min(idle, key=lambda s: (min(common_prefix(s.kv, prompt), limit), s.released))
            keep, source, restore = donor_keep, donor.seq_id, None
            save = self._worth_saving(target, 0)
            target.kv = donor.kv[:keep]
        else:
            if own_keep == 0:  # nothing reused: take the least recently used idle sequence
                target = min(idle, key=lambda s: s.released)
            save = self._worth_saving(target, keep)
            del target.kv[keep:]
            restore = None
        target.kept = keep if source is None and restore is None else 0
        if self.ledger is not None:
            self.ledger.set(target.seq_id, target.kv, target.kept)
        target.kept = keep
        self._clock += 1
        target.busy = True
        target.pending = list(prompt[keep:])
        target.next_token = None
        target.admitted = self._clock
        return Admission(target.seq_id, keep, source, len(prompt), save, restore)

    def prefilling(self, prompt: Sequence[int]) -> bool:
        """Whether a busy sequence is still prefilling a prefix of `prompt` that gives it at
        least `min_copy` more cached tokens than anything else holds now (the other sequences,
        host RAM): the prompt then waits until that sequence has decoded the whole shared
        part, rather than decoding the same tokens beside it (WRK-176)."""
        limit = len(prompt) - 1
        host: int | None = None  # what host RAM holds of it, looked up only when needed
        for s in self.seqs:
            if not (s.busy and s.pending):
                continue
            done = common_prefix(s.kv, prompt)
            if done < len(s.kv):
                continue  # the prompt leaves this sequence within what it holds already
            will = min(done + common_prefix(s.pending, prompt[done:]), limit)
            if will <= done:
                continue  # nothing more of the prompt to come from it
            if host is None:
                host = self.host.best(prompt, limit)[1] if self.host is not None else 0
            other = max(
                [host, *(min(common_prefix(o.kv, prompt), limit) for o in self.seqs if o is not s)]
            )
            if will >= other + self.min_copy:
                return True
        return False

    def _worth_saving(self, s: SeqState, keep: int) -> tuple[int, ...] | None:
        """The tokens of `s`'s cache to save to host RAM before it loses all but `keep` of
        them: when there is a host cache and at least `min_copy` tokens would be lost."""
        if self.host is None or len(s.kv) - keep < self.min_copy:
            return None
        return tuple(s.kv)

    def restore_failed(self, seq_id: int, prompt: Sequence[int]) -> None:
        """llama.cpp refused the saved state: the sequence starts empty, the whole prompt
        pending."""
        s = self.seqs[seq_id]
        s.kv, s.pending, s.kept = [], list(prompt), 0
        if self.ledger is not None:
            self.ledger.set(seq_id, ())

    def hold(self) -> int:
        """Take an idle sequence for a choice that will copy another's cache (WRK-140): it is
        busy, but in no step until `fork`. The least recently used idle cache is given up."""
        idle = [s for s in self.seqs if not s.busy]
        if not idle:
            raise RuntimeError("no idle sequence: admission control lets in at most n_seq jobs")
        target = min(idle, key=lambda s: s.released)
        self._clock += 1
        target.busy, target.kv, target.pending, target.next_token = True, [], [], None
        target.admitted = self._clock
        target.kept = 0
        if self.ledger is not None:
            self.ledger.set(target.seq_id, ())
        return target.seq_id

    def fork(self, src: int, dst: int) -> None:
        """`dst` (held) now holds a copy of `src`'s cache."""
        self.seqs[dst].kv = list(self.seqs[src].kv)

    def plan(self) -> Step:
        entries: list[Entry] = []
        for s in self.seqs:
            if s.busy and s.next_token is not None:
                entries.append(Entry(s.seq_id, (s.next_token,), len(s.kv), True, False))
        budget = self.chunk
        for s in sorted((s for s in self.seqs if s.busy and s.pending), key=lambda s: s.admitted):
            if budget <= 0:
                break
            n = min(budget, len(s.pending))
            budget -= n
            last = n == len(s.pending)
            entries.append(Entry(s.seq_id, tuple(s.pending[:n]), len(s.kv), last, True))
        return Step(tuple(entries))

    def commit(self, step: Step) -> None:
        """The step was decoded: its tokens are now in the cache."""
        for e in step.entries:
            s = self.seqs[e.seq_id]
            s.kv.extend(e.tokens)
            if e.prefill:
                del s.pending[: len(e.tokens)]
            else:
                s.next_token = None

    def sampled(self, seq_id: int, token: int) -> None:
        """The job goes on: `token` is decoded in the next step."""
        self.seqs[seq_id].next_token = token

    def release(self, seq_id: int) -> None:
        """The job ended; the cache stays for the next prompt that shares its prefix."""
        s = self.seqs[seq_id]
        self._clock += 1
        s.busy, s.pending, s.next_token, s.released = False, [], None, self._clock
        if self.ledger is not None:
            self.ledger.set(seq_id, s.kv, s.kept)
        s.kept = len(s.kv)

    def forget(self, seq_id: int) -> None:
        """The cache content is unknown (a failed decode): never reuse it."""
        self.release(seq_id)
        self.seqs[seq_id].kv = []
        if self.ledger is not None:
            self.ledger.set(seq_id, ())

    def max_step_tokens(self) -> int:
        """The largest step `plan()` can produce: the context's batch must hold it."""
        return self.chunk + len(self.seqs)
