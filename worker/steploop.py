"""The decode thread: every running job of one llama.cpp context advances in one batch per step.

`Batcher` (worker/batching.py) decides what goes into a step; this module only carries those
decisions out through llama.cpp's C API: fill one `llama_batch`, `llama_decode` it, sample each
sequence that asked for logits with its own sampler chain, hand the text to its sink, and end
jobs (EOS, max_tokens, stop string, cancel). Submissions and cancels from other threads land at
the start of the next step.
"""

from __future__ import annotations

import ctypes
import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import llama_cpp as lc

from shared.wire import TokenLogprob
from worker.batching import Batcher, Step
from worker.constrained import ConstrainedSampler, GrammarDeadEnd
from worker.logprobs import LogprobReader
from worker.seeded import SeededDraw
from worker.textstream import TextStream
from worker.types import (
    EngineError,
    GenerationJob,
    IdSink,
    LogprobSink,
    Outcome,
    StopReason,
    TokenSink,
)

log = logging.getLogger("llorch.worker.steploop")
_PIECE_BUF = 256


@dataclass(eq=False)
class _Submission:
    job: GenerationJob
    cancel: threading.Event
    sink: TokenSink
    future: Future[Outcome]
    # WRK-140: the other choices of an `n > 1` job; they share this prompt, held sequences
    # wait for its prefill and then copy its cache and sample from its logits.
    forks: list[_Submission] = field(default_factory=list)


@dataclass(eq=False)
class _Running:
    sub: _Submission
    sampler: Any
    grammar: Any  # the job's grammar sampler, outside its chain (WRK-130), or None
    text: TextStream
    cached: int
    produced: int = 0
    generated: list[int] = field(default_factory=list)
    first: float | None = None
    lp_sink: LogprobSink | None = None  # the job asked for logprobs (WRK-134)
    lp_pending: list[TokenLogprob] = field(default_factory=list)  # tokens not yet sent with text
    forks: list[tuple[int, _Submission]] = field(default_factory=list)  # held, not yet copied
    seed: int | None = None  # WRK-162: drawn by SeededDraw at (seed, position)
    position: int = 0  # the generation's position: tokens resumed (WRK-160) plus produced
    id_sink: IdSink | None = None  # the job asked for token ids (WRK-161)
    ids_sent: int = 0  # of `generated`, those whose ids went with a piece

    def emit(self, piece: str) -> None:
        if self.lp_sink is not None:
            self.lp_sink.logprobs(self.lp_pending)
            self.lp_pending = []
        if self.id_sink is not None:
            self.id_sink.ids(self.generated[self.ids_sent :])
            self.ids_sent = len(self.generated)
        self.sub.sink.token(piece)


@dataclass
class CacheStats:
    """Prefix-cache use since start (read from other threads: plain ints, written by one)."""

    lookups: int = 0
    hits: int = 0
    prompt_tokens: int = 0
    tokens_reused: int = 0
    copies: int = 0
    restores: int = 0  # from the host-RAM cache (WRK-174)


class StepLoop:
    """Owns the decode thread of one context; `close()` stops it and ends what is left."""

    def __init__(
        self,
        ctx: Any,
        vocab: Any,
        batcher: Batcher,
        make_sampler: Callable[[GenerationJob], tuple[Any, int | None]],
        piece: Callable[[int], bytes],
        on_step: Callable[[Step], None] | None = None,
    ) -> None:
        self._ctx = ctx
        self._mem = lc.llama_get_memory(ctx)
        self._vocab = vocab
        self._batcher = batcher
        self._make_sampler = make_sampler
        self._piece = piece
        self._on_step = on_step
        self._eog = eog_tokens(vocab)
        self._sample = holding_gil(lc.llama_sampler_sample)
        n_vocab = lc.llama_vocab_n_tokens(vocab)
        self._logprobs = LogprobReader(ctx, n_vocab, piece, holding_gil)
        self.constrained = ConstrainedSampler(ctx, n_vocab, holding_gil)
        self.seeded = SeededDraw(ctx, n_vocab, holding_gil)
        self._accept = holding_gil(lc.llama_sampler_accept)
        self._capacity = batcher.max_step_tokens()
        self._batch = lc.llama_batch_init(self._capacity, 0, 1)
        # The batch's arrays as ctypes arrays: a run of tokens is one slice assignment.
        cap, b = self._capacity, self._batch
        self._token = _array(ctypes.c_int32, b.token, cap)
        self._pos = _array(ctypes.c_int32, b.pos, cap)
        self._logits = _array(ctypes.c_int8, b.logits, cap)
        self._seq = [b.seq_id[i] for i in range(cap)]
        for i in range(cap):
            b.n_seq_id[i] = 1  # every token belongs to one sequence
        self._inbox: list[_Submission] = []
        # WRK-176: jobs waiting for a running sequence to prefill the prefix they share.
        self._deferred: list[_Submission] = []
        self._running: dict[int, _Running] = {}
        self._cv = threading.Condition()
        self._closing = False
        self.cache = CacheStats()
        self.steps = 0
        self._thread = threading.Thread(target=self._loop, name="llorch-decode", daemon=True)
        self._thread.start()

    def submit(
        self, job: GenerationJob, cancel: threading.Event, sink: TokenSink
    ) -> Future[Outcome]:
        return self.submit_n([job], cancel, [sink])[0]

    def submit_n(
        self, jobs: list[GenerationJob], cancel: threading.Event, sinks: list[TokenSink]
    ) -> list[Future[Outcome]]:
        """Jobs with one prompt, one sequence each (WRK-140): the prompt is decoded once, in the
        first job's sequence, whose cache the others then copy; each samples with its own chain."""
        futures: list[Future[Outcome]] = [Future() for _ in jobs]

        def refuse(message: str) -> list[Future[Outcome]]:
            for f in futures:
                f.set_exception(EngineError(message))
            return futures

        if not jobs or len(jobs) != len(sinks):
            return refuse("one sink per job, at least one job")
        if any(j.prompt_tokens != jobs[0].prompt_tokens for j in jobs):
            return refuse("the jobs of one submission share their prompt")
        if not jobs[0].prompt_tokens:
            return refuse("the prompt has no tokens")
        if any(
            j.logprobs and not isinstance(s, LogprobSink) for j, s in zip(jobs, sinks, strict=True)
        ):
            return refuse("a job with logprobs needs a LogprobSink")
        if any(j.token_ids and not isinstance(s, IdSink) for j, s in zip(jobs, sinks, strict=True)):
            return refuse("a job with token_ids needs an IdSink")
        if jobs[0].resumed and (len(jobs) > 1 or jobs[0].resumed >= len(jobs[0].prompt_tokens)):
            return refuse("a resumed job is one job whose prompt precedes what it resumes")
        subs = [_Submission(j, cancel, s, f) for j, s, f in zip(jobs, sinks, futures, strict=True)]
        subs[0].forks = subs[1:]
        with self._cv:
            if self._closing:
                return refuse("the engine is closed")
            self._inbox.append(subs[0])
            self._cv.notify()
        return futures

    def wake(self) -> None:
        """A cancel was requested: make sure an idle-waiting loop looks at it."""
        with self._cv:
            self._cv.notify()

    def close(self) -> None:
        with self._cv:
            self._closing = True
            self._cv.notify()
        self._thread.join()
        lc.llama_batch_free(self._batch)

    # -- the decode thread -------------------------------------------------------------------

    def _loop(self) -> None:
        while True:
            with self._cv:
                while not (self._inbox or self._deferred or self._running or self._closing):
                    self._cv.wait()
                incoming, self._inbox = self._deferred + self._inbox, []
                self._deferred = []
                closing = self._closing
            if closing:
                for sub in incoming:
                    for one in (sub, *sub.forks):
                        one.future.set_exception(EngineError("the engine is closed"))
                for seq_id in list(self._running):
                    self._finish(seq_id, "CANCELLED")
                return
            for sub in incoming:
                if self._waits(sub):
                    self._deferred.append(sub)
                    continue
                try:
                    self._start(sub)
                except Exception as e:
                    for one in (sub, *sub.forks):
                        if not one.future.done():
                            one.future.set_exception(EngineError(f"could not start the job: {e}"))
            try:
                self._step()
            except Exception as e:  # a failed decode: fail the jobs, keep serving new ones
                log.exception("decode step failed")
                for seq_id in list(self._running):
                    self._fail(seq_id, e)

    def _waits(self, sub: _Submission) -> bool:
        """WRK-176: the job waits (one step at a time, in arrival order) while a running
        sequence prefills a prefix of its prompt it would otherwise decode again beside it."""
        return not (sub.cancel.is_set() or sub.forks) and self._batcher.prefilling(
            sub.job.prompt_tokens
        )

    def _start(self, sub: _Submission) -> None:
        if sub.cancel.is_set():
            for one in (sub, *sub.forks):
                one.future.set_result(Outcome("CANCELLED", 0, None, None))
            return
        prompt = sub.job.prompt_tokens
        if self._batcher.idle < 1 + len(sub.forks):
            raise EngineError(f"{1 + len(sub.forks)} sequences asked, {self._batcher.idle} idle")
        adm = self._batcher.admit(prompt)
        seq = adm.seq_id
        held: list[int] = []
        try:
            # The entry to restore is taken before the save below, which may evict it (the
            # budget) or replace it (a save that extends it).
            host = self._batcher.host
            blob = host.take(adm.restore) if host is not None and adm.restore is not None else None
            if adm.save is not None:  # WRK-174: what this sequence held, kept in host RAM
                self._save(seq, adm.save)
            held = [self._batcher.hold() for _ in sub.forks]
            keep = adm.keep
            if blob is not None and not self._restore(seq, blob):
                self._batcher.restore_failed(seq, prompt)
                keep = 0
            elif adm.copy_from is not None:
                lc.llama_memory_seq_rm(self._mem, seq, -1, -1)
                # Across KV streams llama.cpp copies whole streams only; the tail is dropped
                # below.
                lc.llama_memory_seq_cp(self._mem, adm.copy_from, seq, -1, -1)
                self.cache.copies += 1
            lc.llama_memory_seq_rm(self._mem, seq, keep, -1)
            sampler, seed = self._make_sampler(sub.job)
            grammar = None
            if sub.job.grammar is not None:
                grammar = lc.llama_sampler_init_grammar(
                    self._vocab, sub.job.grammar.encode(), b"root"
                )
                if not grammar:
                    lc.llama_sampler_free(sampler)
                    raise EngineError("the grammar does not parse")
        except BaseException:
            # The admitted sequences hold nothing the batcher can vouch for now: emptied, so
            # that no later step decodes at positions their KV cells do not have (WRK-175).
            for s in (seq, *held):
                self._batcher.forget(s)
                lc.llama_memory_seq_rm(self._mem, s, -1, -1)
            raise
        self.cache.lookups += 1
        self.cache.prompt_tokens += len(prompt)
        if keep:
            self.cache.hits += 1
            self.cache.tokens_reused += keep
        run = self._run(sub, sampler, grammar, keep, seed)
        run.forks = list(zip(held, sub.forks, strict=True))
        if sub.job.resumed:
            self._resume(run, prompt[len(prompt) - sub.job.resumed :])
        self._running[seq] = run

    def _save(self, seq: int, tokens: tuple[int, ...]) -> None:
        host = self._batcher.host
        if host is None:
            return
        size = lc.llama_state_seq_get_size(self._ctx, seq)
        if size <= 0 or size > host.budget:
            return
        buf = (ctypes.c_uint8 * size)()
        n = lc.llama_state_seq_get_data(self._ctx, buf, size, seq)
        if n > 0:
            host.put(tokens, ctypes.string_at(buf, n))

    def _restore(self, seq: int, blob: bytes) -> bool:
        """A host entry's state into `seq` (emptied first); False when llama.cpp refuses it."""
        lc.llama_memory_seq_rm(self._mem, seq, -1, -1)
        buf = (ctypes.c_uint8 * len(blob)).from_buffer_copy(blob)
        if lc.llama_state_seq_set_data(self._ctx, buf, len(blob), seq) == 0:
            lc.llama_memory_seq_rm(self._mem, seq, -1, -1)
            log.warning("a host-RAM cache entry did not restore; decoding the prompt")
            return False
        self.cache.restores += 1
        return True

    def _run(
        self, sub: _Submission, sampler: Any, grammar: Any, cached: int, seed: int | None
    ) -> _Running:
        run = _Running(sub, sampler, grammar, TextStream(sub.job.stops), cached, seed=seed)
        if sub.job.logprobs and isinstance(sub.sink, LogprobSink):
            run.lp_sink = sub.sink
        if sub.job.token_ids and isinstance(sub.sink, IdSink):
            run.id_sink = sub.sink
        return run

    def _resume(self, run: _Running, tokens: Sequence[int]) -> None:
        """WRK-160: put the job where the generation it continues stood after `tokens`: the
        chain (penalties) and grammar have accepted them, the detokenizer holds their
        incomplete bytes and any text that may begin a stop string (the text before that was
        sent by the job that generated them), and the seeded draw counts from their end."""
        for tok in tokens:
            self._accept(run.sampler, tok)
            if run.grammar is not None:
                self._accept(run.grammar, tok)
            run.text.feed(self._piece(tok))
        run.position = len(tokens)

    def _fork(self, run: _Running, seq_id: int, idx: int) -> None:
        """The prompt is decoded: each held sequence takes a copy of its cache and samples its
        first token from the same logits (WRK-140)."""
        forks, run.forks = run.forks, []
        started: list[int] = []
        for dst, sub in forks:
            lc.llama_memory_seq_rm(self._mem, dst, -1, -1)
            # Across KV streams llama.cpp copies whole streams only (as in _start).
            lc.llama_memory_seq_cp(self._mem, seq_id, dst, -1, -1)
            self._batcher.fork(seq_id, dst)
            self.cache.copies += 1
            grammar = None
            sampler, seed = self._make_sampler(sub.job)
            if sub.job.grammar is not None:
                grammar = lc.llama_sampler_init_grammar(
                    self._vocab, sub.job.grammar.encode(), b"root"
                )
            self._running[dst] = self._run(sub, sampler, grammar, run.cached, seed)
            started.append(dst)
        for dst in started:
            self._advance(dst, idx)

    def _drop_forks(self, run: _Running, outcome: Outcome | None, error: Exception | None) -> None:
        """The first job ended before its prompt was decoded: its held choices end with it."""
        for dst, sub in run.forks:
            self._batcher.release(dst)
            if error is not None:
                sub.future.set_exception(EngineError(f"inference failed: {error}"))
            else:
                sub.future.set_result(outcome or Outcome("CANCELLED", 0, None, None))
        run.forks = []

    def _step(self) -> None:
        for seq_id, run in list(self._running.items()):
            if run.sub.cancel.is_set():
                self._finish(seq_id, "CANCELLED")
        step = self._batcher.plan()
        if not step.entries:
            return
        k = 0
        sample_at: list[tuple[int, int]] = []
        tokens, pos, seq, logits = self._token, self._pos, self._seq, self._logits
        for e in step.entries:
            n = len(e.tokens)
            end = k + n
            tokens[k:end] = e.tokens
            pos[k:end] = range(e.pos, e.pos + n)
            logits[k:end] = bytes(n)
            for i in range(k, end):
                seq[i][0] = e.seq_id
            k = end
            if e.sample:
                logits[k - 1] = 1
                sample_at.append((e.seq_id, k - 1))
        self._batch.n_tokens = k
        rc = lc.llama_decode(self._ctx, self._batch)
        if rc != 0:
            raise EngineError(f"llama_decode failed ({rc}) on a step of {k} tokens")
        self._batcher.commit(step)
        self.steps += 1
        if self._on_step is not None:
            self._on_step(step)
        for seq_id, idx in sample_at:
            self._advance(seq_id, idx)

    def _advance(self, seq_id: int, idx: int) -> None:
        run = self._running[seq_id]
        job = run.sub.job
        if run.forks:
            self._fork(run, seq_id, idx)
        if run.seed is not None:
            tok = self.seeded.sample(run.sampler, idx, run.seed, run.position)
        elif run.grammar is None:
            tok = self._sample(run.sampler, self._ctx, idx)
        else:
            try:
                tok = self.constrained.sample(run.sampler, run.grammar, idx)
            except GrammarDeadEnd as e:
                self._fail(seq_id, e)
                return
        if tok in self._eog:
            self._finish(seq_id, "EOS")
            return
        run.generated.append(tok)
        run.produced += 1
        run.position += 1
        if run.first is None:
            run.first = time.perf_counter()
        if run.lp_sink is not None:
            run.lp_pending.append(self._logprobs.entry(idx, tok, job.top_logprobs))
        piece = run.text.feed(self._piece(tok))
        if piece:
            run.emit(piece)
        if run.text.stopped:
            self._finish(seq_id, "STOP_SEQUENCE")
        elif run.produced >= job.max_tokens:
            self._finish(seq_id, "MAX_TOKENS")
        else:
            self._batcher.sampled(seq_id, tok)

    def _finish(self, seq_id: int, reason: StopReason) -> None:
        run = self._running.pop(seq_id)
        _free(run)
        self._batcher.release(seq_id)
        self._drop_forks(run, Outcome(reason, 0, None, None), None)
        if reason in ("MAX_TOKENS", "EOS"):
            tail = run.text.finish(cut=reason == "MAX_TOKENS")
            if tail:
                run.emit(tail)
        last = time.perf_counter() if run.produced else None
        outcome = Outcome(reason, run.produced, run.first, last, tuple(run.generated), run.cached)
        run.sub.future.set_result(outcome)

    def _fail(self, seq_id: int, error: Exception) -> None:
        run = self._running.pop(seq_id)
        _free(run)
        self._batcher.forget(seq_id)
        lc.llama_memory_seq_rm(self._mem, seq_id, -1, -1)
        self._drop_forks(run, None, error)
        run.sub.future.set_exception(EngineError(f"inference failed: {error}"))


def _free(run: _Running) -> None:
    lc.llama_sampler_free(run.sampler)
    if run.grammar is not None:
        lc.llama_sampler_free(run.grammar)


def _array(ctype: Any, pointer: Any, n: int) -> Any:
    return (ctype * n).from_address(ctypes.addressof(pointer.contents))


def piece_reader(vocab: Any) -> Callable[[int], bytes]:
    """token -> its bytes. A token's bytes never change, so each is read from llama.cpp once and
    kept: a streamed token costs a dict lookup, not a foreign call (each of which lets the event
    loop take the GIL, and the decode thread then waits for it)."""
    buf = ctypes.create_string_buffer(_PIECE_BUF)
    to_piece = lc.llama_token_to_piece
    known: dict[int, bytes] = {}

    def read(token: int) -> bytes:
        n = to_piece(vocab, token, buf, _PIECE_BUF, 0, False)
        if n >= 0:
            data = buf.raw[:n]
        else:  # a piece longer than the buffer is rare
            big = ctypes.create_string_buffer(-n)
            data = big.raw[: to_piece(vocab, token, big, -n, 0, False)]
        known[token] = data
        return data

    def piece(token: int) -> bytes:
        data = known.get(token)
        return data if data is not None else read(token)

    return piece


def eog_tokens(vocab: Any) -> frozenset[int]:
    """Every end-of-generation token of the vocabulary, read once: EOS, EOT, EOM and the rest
    llama.cpp marks EOG."""
    is_eog = lc.llama_vocab_is_eog
    return frozenset(t for t in range(lc.llama_vocab_n_tokens(vocab)) if is_eog(vocab, t))


def holding_gil(func: Any) -> Callable[..., Any]:
    """`func` (a ctypes foreign function) called without releasing the GIL.

    ctypes releases the GIL around every call, so after each call the decode thread must take it
    back, and if the event loop has it meanwhile, the decode thread waits up to the interpreter's
    switch interval (5 ms). For a short call on the decode thread's critical path (sampling one
    token: tens of microseconds) the hand-off costs more than it lets the event loop do."""
    proto = ctypes.PYFUNCTYPE(func.restype, *func.argtypes)
    address = ctypes.cast(func, ctypes.c_void_p).value
    if address is None:
        raise EngineError(f"no address for {func!r}")
    call: Callable[..., Any] = proto(address)
    return call
