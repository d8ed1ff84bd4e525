"""A job that resumes another's generation (WRK-160..WRK-162), on a real llorch-workerd serving the
tiny GGUF: resumed at any token event of an uninterrupted run, with that event's token ids, the
rest of the text is the uninterrupted run's, byte for byte, greedy and seeded; a stop string or
a UTF-8 character that straddles the resume point comes out whole."""

from __future__ import annotations

import random
from typing import Any

import httpx
import pytest

from tests.support import Proc
from tests.worker.conftest import TOKEN
from tests.worker.sse_client import Event, execute, text_of

pytestmark = pytest.mark.e2e
AUTH = {"Authorization": f"Bearer {TOKEN}"}
N_TOKENS = 200


def run(worker: Proc, body: dict[str, Any]) -> list[Event]:
    return execute(worker.url, TOKEN, {"token_ids": True, **body})


def tokens(evs: list[Event]) -> list[Event]:
    return [e for e in evs if e.event == "token"]


def resumed_text(worker: Proc, body: dict[str, Any], full: list[Event], cut: int) -> str:
    """The text a client gets when the job breaks after token event `cut` of `full` and a new
    job resumes from the ids those events carried."""
    before = tokens(full)[:cut]
    ids = [t for e in before for t in e.data["ids"]]
    rest = run(
        worker,
        {
            **body,
            "resume_tokens": ids,
            "resume_index": cut,
            "max_tokens": body["max_tokens"] - len(ids),
        },
    )
    assert [e.data["i"] for e in tokens(rest)] == list(range(cut, cut + len(tokens(rest))))
    assert rest[-1].event == "end"
    return text_of(before) + text_of(rest)


@pytest.mark.parametrize(
    "sampling",
    [{"temperature": 0}, {"temperature": 1.0, "seed": 1234}, {"temperature": 0.7, "seed": 9}],
    ids=["greedy", "seeded", "seeded-t0.7"],
)
def test_wrk_160_wrk_162_a_resumed_job_continues_the_generation_exactly(
    worker: Proc, sampling: dict[str, Any]
) -> None:
    """WRK-160, WRK-161, WRK-162: ids on every token event add up to tokens_out; resumed after
    any of a dozen random token events (multi-byte characters included: the tiny model's
    byte tokens), the text equals the uninterrupted run's byte for byte."""
    body = {"prompt": "hello", "max_tokens": N_TOKENS, "ignore_eos": True, **sampling}
    full = run(worker, body)
    assert full[-1].event == "end" and full[-1].data["tokens_out"] == N_TOKENS
    assert sum(len(e.data["ids"]) for e in tokens(full)) == N_TOKENS
    want = text_of(full)
    assert any(len(e.data["ids"]) > 1 for e in tokens(full)), "no event carried several tokens"
    rng = random.Random(24)
    for cut in sorted(rng.sample(range(1, len(tokens(full))), 12)):
        assert resumed_text(worker, body, full, cut) == want, f"resumed after event {cut}"


def test_wrk_160_a_stop_string_that_straddles_the_resume_point_still_matches(
    worker: Proc,
) -> None:
    """WRK-160: the stop string begins inside the text of a token whose event came before the
    break (its beginning was held back, WRK-026); the resumed job holds it too, finds the stop
    string and ends STOP_SEQUENCE with the same text as the uninterrupted job."""
    base = {"prompt": "Once upon a time", "max_tokens": N_TOKENS, "ignore_eos": True}
    plain = tokens(run(worker, {**base, "temperature": 0}))
    # A single-token event deep enough into the text, whose piece has a tail to start a stop.
    at = next(
        k
        for k, e in enumerate(plain)
        if k > 20 and len(e.data["ids"]) == 1 and len(e.data["t"]) >= 3 and e.data["t"].isascii()
    )
    stop = plain[at].data["t"][1:] + plain[at + 1].data["t"] + plain[at + 2].data["t"]
    body = {**base, "temperature": 0, "stop": [stop]}
    full = run(worker, body)
    assert full[-1].data["stop_reason"] == "STOP_SEQUENCE"
    want = text_of(full)
    assert stop not in want
    # The event that carried the token the stop string begins in: its text ends before it.
    held = [k for k, e in enumerate(tokens(full)) if plain[at].data["ids"][0] in e.data["ids"]]
    assert held, "the token the stop string begins in was not sent"
    for cut in range(max(1, held[0] - 2), len(tokens(full)) + 1):
        assert resumed_text(worker, body, full, cut) == want, f"resumed after event {cut}"


def test_wrk_160_refuses_bad_resume_tokens(worker: Proc) -> None:
    """WRK-160: resume ids must be token ids of the model, not with n > 1, and count against
    the context like the prompt (400 INVALID_PARAMS naming the field, before any stream)."""
    cases: list[tuple[dict[str, Any], str]] = [
        ({"resume_tokens": [1, "x"]}, "resume_tokens"),
        ({"resume_tokens": [10**6]}, "resume_tokens"),
        ({"resume_tokens": [5], "n": 2}, "resume_tokens"),
        ({"resume_tokens": [5] * 16380, "max_tokens": 100}, "max_tokens"),
        ({"token_ids": "yes"}, "token_ids"),
    ]
    for extra, field in cases:
        r = httpx.post(
            worker.url + "/execute", json={"prompt": "hi", **extra}, headers=AUTH, timeout=30
        )
        assert r.status_code == 400, (extra, r.text)
        assert field in {e["field"] for e in r.json()["errors"]}, (extra, r.json())
