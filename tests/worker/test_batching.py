"""The step scheduler alone (worker/batching.py): no model, no threads."""

from __future__ import annotations

import pytest

from worker.batching import Batcher, common_prefix


def run_prefill(b: Batcher) -> None:
    """Plan and commit steps until no prompt token is pending; sampled sequences keep going."""
    while any(s.pending for s in b.seqs):
        step = b.plan()
        b.commit(step)
        for sid in step.sampled:
            b.sampled(sid, 7)


def test_wrk090_every_generating_sequence_gets_one_token_per_step() -> None:
    b = Batcher(3, chunk=9)
    for prompt in ([1, 2, 3], [1, 4], [5, 6, 7, 8]):
        b.admit(prompt)
    step = b.plan()
    assert [e.prefill for e in step.entries] == [True, True, True]
    assert all(e.sample for e in step.entries), "each prompt ends in this step: logits at its end"
    b.commit(step)
    for sid in step.sampled:
        b.sampled(sid, 100 + sid)
    step = b.plan()
    assert [(e.seq_id, e.tokens, e.pos, e.sample) for e in step.entries] == [
        (0, (100,), 3, True),
        (1, (101,), 2, True),
        (2, (102,), 4, True),
    ]


def test_wrk091_a_long_prompt_is_chunked_and_never_starves_running_streams() -> None:
    """WRK-091: a long prompt is chunked and never starves running streams."""
    b = Batcher(2, chunk=4)
    b.admit([1, 2])
    first = b.plan()
    b.commit(first)
    b.sampled(0, 9)
    b.admit(list(range(10, 21)))  # 11 tokens: three chunks of at most 4
    prefill_steps = []
    while b.seqs[1].pending:
        step = b.plan()
        assert 0 in step.sampled, "the running stream samples in every step"
        assert step.prefill_tokens <= 4, "at most one chunk of prompt per step"
        prefill_steps.append(step.prefill_tokens)
        b.commit(step)
        for sid in step.sampled:
            b.sampled(sid, 9)
    assert prefill_steps == [4, 4, 3]
    assert b.seqs[1].kv == list(range(10, 21))


def test_wrk092_logits_only_where_a_token_is_sampled() -> None:
    """WRK-092: logits only where a token is sampled."""
    b = Batcher(1, chunk=4)
    b.admit(list(range(10)))
    samples = []
    while b.seqs[0].pending:
        step = b.plan()
        samples.append([e.sample for e in step.entries])
        b.commit(step)
    assert samples == [[False], [False], [True]], "only the last chunk of a prompt samples"


def test_wrk092_prefill_budget_is_shared_oldest_admission_first() -> None:
    """WRK-092: prefill budget is shared oldest admission first."""
    b = Batcher(3, chunk=5)
    b.admit([1, 2, 3, 4])
    b.admit([5, 6, 7])
    step = b.plan()
    assert [(e.seq_id, len(e.tokens)) for e in step.entries] == [(0, 4), (1, 1)]
    assert step.n_tokens <= b.max_step_tokens()


def test_wrk100_the_next_turn_reuses_its_conversation() -> None:
    b = Batcher(2, chunk=64)
    turn1 = [1, 2, 3, 4, 5]
    a = b.admit(turn1)
    run_prefill(b)
    b.commit(b.plan())  # one generated token decoded: 7
    b.release(a.seq_id)
    turn2 = [*turn1, 7, 8, 9]
    again = b.admit(turn2)
    assert (again.seq_id, again.keep, again.copy_from) == (a.seq_id, 6, None)
    assert b.seqs[a.seq_id].pending == [8, 9]


def test_wrk100_at_least_one_token_is_decoded_even_for_a_repeated_prompt() -> None:
    b = Batcher(1, chunk=64)
    b.admit([1, 2, 3])
    run_prefill(b)
    b.release(0)
    again = b.admit([1, 2, 3])
    assert again.keep == 2 and b.seqs[0].pending == [3]


def test_wrk101_a_prefix_held_by_a_busy_sequence_is_copied() -> None:
    """WRK-101: a prefix held by a busy sequence is copied."""
    b = Batcher(2, chunk=256, min_copy=8)
    system = list(range(100, 200))
    first = b.admit([*system, 1])
    run_prefill(b)
    second = b.admit([*system, 2])
    assert second.copy_from == first.seq_id and second.keep == 100
    assert b.seqs[second.seq_id].kv == system and b.seqs[second.seq_id].pending == [2]


def test_wrk176_a_prompt_waits_while_a_busy_sequence_prefills_its_prefix() -> None:
    """WRK-176: while a busy sequence still has to decode a prefix the new prompt shares (at
    least min_copy tokens more than anything holds), the prompt waits; once that part is
    decoded it no longer waits, and its admission copies the prefix (WRK-101)."""
    b = Batcher(3, chunk=40, min_copy=8)
    system = list(range(100, 200))
    first = b.admit([*system, 1])
    assert b.prefilling([*system, 2]), "nothing of the system prompt is decoded yet"
    assert not b.prefilling([5, 6, 7, 8, 9, 10, 11, 12, 13, 14]), "no shared prefix"
    assert not b.prefilling([*system[:5], 3, 4, 5]), "a shared prefix shorter than min_copy"
    b.commit(b.plan())  # 40 of the 101 prompt tokens
    assert b.prefilling([*system, 2]), "60 shared tokens still to come"
    b.commit(b.plan())
    b.commit(b.plan())  # all 101: the shared 100 are in the first sequence's cache
    assert not b.prefilling([*system, 2])
    assert not b.prefilling([*system[:30], 2]), "leaves the sequence within what it holds"
    second = b.admit([*system, 2])
    assert second.copy_from == first.seq_id and second.keep == 100


def test_wrk101_short_prefixes_are_recomputed_not_copied() -> None:
    """WRK-101: short prefixes are recomputed not copied."""
    b = Batcher(2, chunk=256, min_copy=64)
    b.admit([1, 2, 3, 4, 5])
    run_prefill(b)
    other = b.admit([1, 2, 3, 9])
    assert other.copy_from is None and other.keep == 0


def test_wrk102_a_new_prompt_overwrites_the_least_recently_used_cache() -> None:
    """WRK-102: a new prompt overwrites the least recently used cache."""
    b = Batcher(2, chunk=64)
    for prompt in ([1, 2], [3, 4]):
        adm = b.admit(prompt)
        run_prefill(b)
        b.release(adm.seq_id)
    fresh = b.admit([9, 9])
    assert fresh.seq_id == 0 and fresh.keep == 0
    assert b.seqs[1].kv == [3, 4], "the more recent cache is kept"
    assert b.cached_tokens == 2


def test_admission_beyond_n_seq_is_a_bug() -> None:
    b = Batcher(1, chunk=4)
    b.admit([1])
    with pytest.raises(RuntimeError):
        b.admit([2])
    with pytest.raises(ValueError):
        b.admit([])


def test_common_prefix() -> None:
    assert common_prefix([1, 2, 3], [1, 2, 4]) == 2
    assert common_prefix([], [1]) == 0
