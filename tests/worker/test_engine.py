"""The batched engine on real llama.cpp (the tiny GGUF), in process: what each step holds, what
each sequence produces, what the prefix cache reuses. Assertions are on tokens and on step
accounting, never on time."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from shared.testmodel import write_model
from worker.batching import Step
from worker.engine import GenerationJob, LlamaEngine, Outcome, Sampling

GREEDY = Sampling(temperature=0.0)
PROMPTS = ("hello world", "the quick brown fox", "a b c d e f g", "once upon a time there was")


class Sink:
    """Counts pieces; `reached` is set once `n` pieces arrived (so a test can act mid-stream)."""

    def __init__(self, n: int = 0) -> None:
        self.pieces: list[str] = []
        self.reached = threading.Event()
        self._n = n

    def token(self, text: str) -> None:
        self.pieces.append(text)
        if len(self.pieces) >= self._n:
            self.reached.set()


class Steps:
    def __init__(self) -> None:
        self.log: list[Step] = []
        self.lock = threading.Lock()

    def __call__(self, step: Step) -> None:
        with self.lock:
            self.log.append(step)

    def since(self, i: int) -> list[Step]:
        with self.lock:
            return self.log[i:]

    def __len__(self) -> int:
        with self.lock:
            return len(self.log)


@pytest.fixture
def steps() -> Steps:
    return Steps()


@pytest.fixture
def engine(tiny_model: Path, steps: Steps) -> Iterator[LlamaEngine]:
    e = LlamaEngine.load(tiny_model, slots=4, n_ctx=2048, chunk=16, threads=1, on_step=steps)
    try:
        yield e
    finally:
        e.close()


def job(e: LlamaEngine, prompt: str, n: int, sampling: Sampling = GREEDY) -> GenerationJob:
    return GenerationJob(e.tokenize(prompt), n, sampling, ignore_eos=True)


def run_alone(e: LlamaEngine, j: GenerationJob) -> Outcome:
    return e.generate(j, threading.Event(), Sink())


def run_cold(model: Path, prompt: str, n: int, chunk: int) -> Outcome:
    """`prompt` on a fresh one-slot engine: nothing cached (the baseline of WRK-100/101)."""
    cold = LlamaEngine.load(model, slots=1, n_ctx=2048, chunk=chunk, threads=1)
    try:
        return run_alone(cold, job(cold, prompt, n))
    finally:
        cold.close()


@pytest.mark.parametrize("sampling", [GREEDY, Sampling(0.8, 0.95, 40, 0.05, 1.1, 42)])
def test_wrk094_four_jobs_at_once_produce_what_each_produces_alone(
    engine: LlamaEngine, steps: Steps, sampling: Sampling
) -> None:
    """Same prompt, same seed, same tokens, whatever the batch company (greedy and seeded).
    (WRK-094)"""
    jobs = [job(engine, p, 48, sampling) for p in PROMPTS]
    alone = [run_alone(engine, j).tokens for j in jobs]
    first = len(steps)
    futures = [engine.submit(j, threading.Event(), Sink()) for j in jobs]
    together = [f.result(timeout=120).tokens for f in futures]
    assert together == alone
    assert all(len(t) == 48 for t in together)
    shared = [s for s in steps.since(first) if len(s.sampled) == 4]
    assert shared, "the four jobs really decoded in the same steps"


def test_wrk093_cancelling_one_sequence_leaves_the_others_streaming(
    engine: LlamaEngine, steps: Steps
) -> None:
    """WRK-093: cancelling one sequence leaves the others streaming."""
    cancels = [threading.Event() for _ in range(3)]
    sinks = [Sink(5) for _ in range(3)]
    futures = [
        engine.submit(job(engine, p, 400), c, s)
        for p, c, s in zip(PROMPTS, cancels, sinks, strict=False)
    ]
    assert sinks[1].reached.wait(60)
    cancels[1].set()
    cancelled = futures[1].result(timeout=60)
    mark = len(steps)
    others = [futures[i].result(timeout=120) for i in (0, 2)]
    assert cancelled.stop_reason == "CANCELLED" and cancelled.tokens_out < 400
    assert [o.stop_reason for o in others] == ["MAX_TOKENS", "MAX_TOKENS"]
    assert [o.tokens_out for o in others] == [400, 400]
    after = steps.since(mark)
    assert after, "the others went on decoding after the cancel"
    seq_of_cancelled = {e.seq_id for s in after for e in s.entries}
    assert len(seq_of_cancelled) == 2, "the cancelled sequence is in no later step"
    alone = run_alone(engine, job(engine, PROMPTS[0], 400))
    assert others[0].tokens == alone.tokens, "the cancel did not disturb the others' tokens"


def test_wrk091_a_long_prompt_admitted_mid_stream_delays_the_others_by_at_most_one_chunk(
    engine: LlamaEngine, steps: Steps
) -> None:
    """WRK-091: a long prompt admitted mid-stream delays the others by at most one chunk."""
    running = Sink(3)
    a = engine.submit(job(engine, "hello", 600), threading.Event(), running)
    assert running.reached.wait(60)
    long_prompt = " ".join(f"w{i}" for i in range(150))
    b_job = job(engine, long_prompt, 4)
    mark = len(steps)
    b = engine.submit(b_job, threading.Event(), Sink())
    b_out = b.result(timeout=120)
    a.result(timeout=120)
    window = steps.since(mark)
    prefill = [s for s in window if s.prefill_tokens]
    assert len(prefill) >= len(b_job.prompt_tokens) // 16, "the prompt was split into chunks"
    for s in prefill:
        assert s.prefill_tokens <= 16, "at most one chunk of prompt per step"
        assert any(not e.prefill and e.sample for e in s.entries), (
            "the running stream got its next token in the same step"
        )
    assert b_out.tokens_out == 4


def test_wrk100_a_second_chat_turn_reuses_the_first_and_matches_a_cold_run(
    engine: LlamaEngine, tiny_model: Path
) -> None:
    turn1 = "user: hello there\nassistant:"
    first = run_alone(engine, job(engine, turn1, 24))
    reply = b"".join(engine.piece(t) for t in first.tokens).decode(errors="replace")
    turn2 = f"{turn1}{reply}\nuser: and then?\nassistant:"
    second = run_alone(engine, job(engine, turn2, 24))
    assert second.prompt_tokens_cached > 0
    baseline = run_cold(tiny_model, turn2, 24, chunk=16)
    assert baseline.prompt_tokens_cached == 0
    assert second.tokens == baseline.tokens
    stats = engine.cache_stats()
    assert stats.hits >= 1 and stats.tokens_reused >= second.prompt_tokens_cached


def test_wrk101_a_shared_prefix_is_copied_from_a_running_sequence(
    tiny_model: Path,
) -> None:
    """WRK-101: a shared prefix is copied from a running sequence."""
    e = LlamaEngine.load(tiny_model, slots=2, n_ctx=2048, chunk=64, threads=1)
    try:
        system = " ".join(f"rule{i}" for i in range(120))
        first_sink = Sink(2)
        first = e.submit(job(e, system + " one", 300), threading.Event(), first_sink)
        assert first_sink.reached.wait(60)
        second = run_alone(e, job(e, system + " two", 24))
        first.result(timeout=120)
        copies = e.cache_stats().copies
    finally:
        e.close()
    baseline = run_cold(tiny_model, system + " two", 24, chunk=64)
    assert copies == 1 and second.prompt_tokens_cached > 100
    assert second.tokens == baseline.tokens


def test_wrk176_a_prompt_sent_beside_one_sharing_its_prefix_waits_and_reuses_it(
    tiny_model: Path,
) -> None:
    """WRK-176: two jobs with one long shared prefix sent together: the second waits while the
    first prefills the prefix (in chunks), then copies it (WRK-101) and decodes only its own
    tail, with the same tokens as a cold run. A job waiting so can be cancelled."""
    e = LlamaEngine.load(tiny_model, slots=3, n_ctx=2048, chunk=16, threads=1)
    system = " ".join(f"rule{i}" for i in range(120))
    shared = len(e.tokenize(system))
    try:
        a = e.submit(job(e, system + " one", 4), threading.Event(), Sink())
        b = e.submit(job(e, system + " two", 24), threading.Event(), Sink())
        cancel = threading.Event()
        c = e.submit(job(e, system + " three", 4), cancel, Sink())
        cancel.set()
        assert c.result(timeout=60).stop_reason == "CANCELLED"
        second = b.result(timeout=120)
        a.result(timeout=120)
        copies = e.cache_stats().copies
    finally:
        e.close()
    baseline = run_cold(tiny_model, system + " two", 24, chunk=16)
    assert second.prompt_tokens_cached >= shared - 1, "the prefix was decoded once, not twice"
    assert copies >= 1
    assert second.tokens == baseline.tokens


def test_wrk093_a_job_cancelled_before_its_first_step_ends_cancelled(engine: LlamaEngine) -> None:
    """WRK-093: a job cancelled before its first step ends cancelled."""
    cancel = threading.Event()
    cancel.set()
    out = engine.generate(job(engine, "hello", 50), cancel, Sink())
    assert (out.stop_reason, out.tokens_out) == ("CANCELLED", 0)


def test_wrk110_embeddings_are_normalized_vectors_of_the_model_width(engine: LlamaEngine) -> None:
    """WRK-110: embeddings are normalized vectors of the model width."""
    vectors = engine.embed([engine.tokenize("cat"), engine.tokenize("a longer sentence here")])
    assert [len(v) for v in vectors] == [64, 64]
    for v in vectors:
        assert abs(sum(x * x for x in v) - 1.0) < 1e-4
    assert vectors[0] != vectors[1]
    again = engine.embed([engine.tokenize("cat")])
    assert again[0] == pytest.approx(vectors[0], abs=1e-5), "deterministic"
    assert engine.embeddings.pooling == "mean"


def test_wrk112_a_reranking_model_cannot_embed(tmp_path: Path) -> None:
    from worker.engine import EngineError

    path = write_model(tmp_path / "rank.gguf", pooling_type=4)
    e = LlamaEngine.load(path, slots=1, n_ctx=256, threads=1)
    try:
        assert not e.embeddings.available and "rerank" in e.embeddings.reason
        with pytest.raises(EngineError, match="cannot embed"):
            e.embed([e.tokenize("cat")])
    finally:
        e.close()


def test_wrk094_eog_and_pieces_read_once_match_llama_cpp(engine: LlamaEngine) -> None:
    """The decode loop reads each token's bytes and the end-of-generation set from llama.cpp once
    and keeps them: they must be what llama.cpp says for every token of the vocabulary, on the
    first read and from the cache alike. (WRK-094)"""
    import ctypes

    import llama_cpp as lc

    from worker.steploop import eog_tokens, piece_reader

    vocab = engine._vocab
    n = lc.llama_vocab_n_tokens(vocab)
    eog = eog_tokens(vocab)
    assert lc.llama_vocab_eos(vocab) in eog
    assert eog == {t for t in range(n) if lc.llama_vocab_is_eog(vocab, t)}
    piece = piece_reader(vocab)
    buf = ctypes.create_string_buffer(256)
    for t in range(n):
        m = lc.llama_token_to_piece(vocab, t, buf, 256, 0, False)
        want = buf.raw[:m]
        assert piece(t) == want
        assert piece(t) == want  # cached


class ThreadSink:
    """Keeps the pieces and the threads that delivered them."""

    def __init__(self) -> None:
        self.pieces: list[str] = []
        self.threads: set[tuple[int, str]] = set()

    def token(self, text: str) -> None:
        self.pieces.append(text)
        current = threading.current_thread()
        self.threads.add((threading.get_ident(), current.name))


def test_wrk001_one_context_with_one_sequence_of_n_ctx_tokens_per_slot(
    tiny_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """WRK-001: the model is loaded once, into one llama.cpp context with `n_seq_max = slots`,
    each sequence its own KV stream of `n_ctx` tokens (`kv_unified` off: the context holds slots
    x n_ctx, a sequence n_ctx), so every slot can fill its whole context at once; one decode
    thread advances all the slots' jobs in shared steps."""
    import llama_cpp as lc

    loads: list[object] = []
    contexts: list[object] = []
    load_model, init_context = lc.llama_model_load_from_file, lc.llama_init_from_model

    def counted_load(*args: object) -> object:
        loads.append(args)
        return load_model(*args)

    def counted_init(*args: object) -> object:
        contexts.append(args)
        return init_context(*args)

    monkeypatch.setattr(lc, "llama_model_load_from_file", counted_load)
    monkeypatch.setattr(lc, "llama_init_from_model", counted_init)
    steps = Steps()
    e = LlamaEngine.load(tiny_model, slots=3, n_ctx=256, chunk=16, threads=1, on_step=steps)
    try:
        assert (e.slots, e.n_ctx) == (3, 256)
        assert lc.llama_n_seq_max(e._ctx) == 3
        assert lc.llama_n_ctx_seq(e._ctx) == 256  # per sequence: not one pool shared by all
        assert lc.llama_n_ctx(e._ctx) == 3 * 256
        sinks = [ThreadSink() for _ in PROMPTS[:3]]
        jobs = []
        for p in PROMPTS[:3]:
            tokens = e.tokenize(p)
            jobs.append(GenerationJob(tokens, 256 - len(tokens), GREEDY, ignore_eos=True))
        futures = [e.submit(j, threading.Event(), s) for j, s in zip(jobs, sinks, strict=True)]
        outcomes = [f.result(timeout=300) for f in futures]
    finally:
        e.close()
    assert [(o.stop_reason, o.tokens_out) for o in outcomes] == [
        ("MAX_TOKENS", j.max_tokens) for j in jobs
    ]
    assert any(len(s.sampled) == 3 for s in steps.log), "the three slots decoded together"
    threads = set().union(*(s.threads for s in sinks))
    assert len(threads) == 1 and next(iter(threads))[0] != threading.get_ident()
    assert (len(loads), len(contexts)) == (1, 1)


def test_wrk029_per_token_work_does_not_grow_with_the_output(
    tiny_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """WRK-029: the loop never re-detokenizes the output. Each generated token's bytes are read
    once, for that token alone; the text stream is fed exactly those bytes and holds back less
    than the longest stop string; llama.cpp's whole-output `llama_detokenize` is never called;
    the same holds for 16 tokens and for 512. The loop runs on the engine's decode thread, not
    the caller's (an event loop's, in the worker)."""
    import llama_cpp as lc

    import worker.steploop as steploop
    from worker.textstream import TextStream

    detokenized: list[object] = []

    def detokenize(*args: object) -> int:
        detokenized.append(args)
        return 0

    monkeypatch.setattr(lc, "llama_detokenize", detokenize)
    fed: list[tuple[bytes, int]] = []  # (what one feed got, what the stream then held back)

    class RecordingStream(TextStream):
        def feed(self, piece: bytes) -> str:
            out = super().feed(piece)
            fed.append((piece, len(self._hold)))
            return out

    monkeypatch.setattr(steploop, "TextStream", RecordingStream)
    stop = "<a stop string the model does not write>"
    e = LlamaEngine.load(tiny_model, slots=1, n_ctx=2048, threads=1)
    try:
        real_piece = e._loop._piece
        reads: list[int] = []

        def piece(token: int) -> bytes:
            reads.append(token)
            return real_piece(token)

        e._loop._piece = piece
        for n in (16, 512):
            reads.clear()
            fed.clear()
            sink = ThreadSink()
            work = GenerationJob(e.tokenize("hello"), n, GREEDY, (stop,), ignore_eos=True)
            out = e.generate(work, threading.Event(), sink)
            assert (out.stop_reason, out.tokens_out) == ("MAX_TOKENS", n)
            assert reads == list(out.tokens), "one read per token, of that token alone"
            assert [p for p, _ in fed] == [real_piece(t) for t in out.tokens]
            assert max(held for _, held in fed) < len(stop)
            [(ident, name)] = sink.threads
            assert ident != threading.get_ident() and name == "llorch-decode"
    finally:
        e.close()
    assert detokenized == []
