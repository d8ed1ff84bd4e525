"""`n > 1`: choices of one prompt on real llama.cpp (the tiny GGUF), in process. The prompt is
decoded once and its cache copied; each choice samples with its own chain (WRK-140)."""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.worker.test_engine import GREEDY, Sink, Steps, job, run_alone
from worker.engine import EngineError, GenerationJob, LlamaEngine, Sampling


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


def seeded(j: GenerationJob, k: int) -> GenerationJob:
    s = j.sampling
    return dataclasses.replace(j, sampling=dataclasses.replace(s, seed=(s.seed or 0) + k))


def test_wrk140_three_greedy_choices_are_identical(engine: LlamaEngine) -> None:
    """WRK-140: n=3 with a seed at temperature 0: three identical choices, equal to a solo run."""
    greedy = dataclasses.replace(GREEDY, seed=7)
    base = job(engine, "once upon a time there was a little", 24, greedy)
    alone = run_alone(engine, base)
    sinks = [Sink() for _ in range(3)]
    futures = engine.submit_n([seeded(base, k) for k in range(3)], threading.Event(), list(sinks))
    outs = [f.result(timeout=120) for f in futures]
    assert len({"".join(s.pieces) for s in sinks}) == 1
    assert [o.tokens for o in outs] == [alone.tokens] * 3
    assert [o.stop_reason for o in outs] == ["MAX_TOKENS"] * 3


def test_wrk140_prefill_happens_once_for_three_choices(engine: LlamaEngine, steps: Steps) -> None:
    """WRK-140: the prompt's tokens are decoded in one sequence only; the other two choices enter
    the steps with their first sampled token."""
    base = job(engine, "the quick brown fox jumps over the lazy dog", 8)
    mark = len(steps)
    futures = engine.submit_n([base] * 3, threading.Event(), [Sink() for _ in range(3)])
    outs = [f.result(timeout=120) for f in futures]
    window = steps.since(mark)
    prefilled = sum(s.prefill_tokens for s in window)
    assert prefilled == len(base.prompt_tokens), "the prompt was decoded once"
    assert len({e.seq_id for s in window for e in s.entries}) == 3
    assert engine.cache_stats().copies == 2
    assert len({o.tokens for o in outs}) == 1 and len(outs[0].tokens) == 8


def test_wrk140_seeded_choices_each_match_a_solo_run_with_seed_plus_k(engine: LlamaEngine) -> None:
    """WRK-140: choice k samples with seed + k: each equals a solo run with that seed."""
    base = job(engine, "hello world", 32, Sampling(1.0, 1.0, 0, 0.0, 1.0, 100))
    outs = [
        f.result(timeout=120)
        for f in engine.submit_n(
            [seeded(base, k) for k in range(3)], threading.Event(), [Sink() for _ in range(3)]
        )
    ]
    alone = [run_alone(engine, seeded(base, k)).tokens for k in range(3)]
    assert [o.tokens for o in outs] == alone
    assert len({o.tokens for o in outs}) == 3, "different seeds, different choices"


def test_wrk140_cancel_ends_every_choice_and_frees_their_sequences(engine: LlamaEngine) -> None:
    """WRK-140: one cancel ends all n choices; all sequences are idle afterwards."""
    base = job(engine, "a b c d e f g", 400)
    cancel = threading.Event()
    sinks = [Sink(3) for _ in range(3)]
    futures = engine.submit_n([base] * 3, cancel, list(sinks))
    assert all(s.reached.wait(60) for s in sinks)
    cancel.set()
    outs = [f.result(timeout=60) for f in futures]
    assert [o.stop_reason for o in outs] == ["CANCELLED"] * 3
    assert all(o.tokens_out < 400 for o in outs)
    again = engine.submit_n([base] * 4, threading.Event(), [Sink() for _ in range(4)])
    assert all(f.result(timeout=120).tokens_out == 400 for f in again), "all 4 sequences free"


def test_wrk140_more_choices_than_idle_sequences_is_refused(engine: LlamaEngine) -> None:
    """WRK-140: the engine never overcommits its sequences (the slot pool refuses first)."""
    base = job(engine, "hello", 4)
    futures = engine.submit_n([base] * 5, threading.Event(), [Sink() for _ in range(5)])
    for f in futures:
        with pytest.raises(EngineError):
            f.result(timeout=60)
