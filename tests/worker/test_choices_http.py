"""`n > 1` through a real llorch-workerd on the tiny model (WRK-140, WRK-141)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support import Proc, spawn_worker
from tests.worker.sse_client import Event, events, execute, wait_idle

TOKEN = "choices-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def worker(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proc]:
    with spawn_worker(
        tiny_model,
        tmp_path_factory.mktemp("choices"),
        slots=3,
        token=TOKEN,
        extra=["--max-queue", "4", "--n-ctx", "4096"],
    ) as p:
        yield p


def texts(evs: list[Event], n: int) -> list[str]:
    out = [""] * n
    for e in evs:
        if e.event == "token":
            out[e.data["index"]] += e.data["t"]
    return out


def test_wrk140_three_seeded_greedy_choices_are_identical(worker: Proc) -> None:
    """WRK-140: n=3 with a seed at temperature 0: three identical texts, each numbered by its
    choice; the end event says how each ended and counts all their tokens."""
    body = {"prompt": "once upon a time", "max_tokens": 12, "temperature": 0, "seed": 3}
    evs = execute(worker.url, TOKEN, {**body, "n": 3})
    solo = execute(worker.url, TOKEN, body)
    got = texts(evs, 3)
    assert got[0] and got == [got[0]] * 3
    assert got[0] == "".join(e.data["t"] for e in solo if e.event == "token")
    assert all("index" not in e.data for e in solo if e.event == "token"), "n=1 is unchanged"
    end = evs[-1]
    assert end.event == "end"
    assert [c["index"] for c in end.data["choices"]] == [0, 1, 2]
    assert end.data["tokens_out"] == sum(c["tokens_out"] for c in end.data["choices"])
    per_choice = [
        [e.data["i"] for e in evs if e.event == "token" and e.data["index"] == k] for k in range(3)
    ]
    assert all(ids == list(range(len(ids))) for ids in per_choice)


def test_wrk141_n_beyond_the_free_slots_is_busy_and_beyond_all_slots_invalid(
    worker: Proc,
) -> None:
    """WRK-141: n counts against slots: with one of three busy, n=3 gets 503 BUSY at once;
    n above the worker's slots is a 400."""
    too_many = httpx.post(worker.url + "/execute", json={"prompt": "a", "n": 4}, headers=AUTH)
    assert too_many.status_code == 400
    long = {"prompt": "hello", "max_tokens": 4000, "ignore_eos": True}
    with httpx.stream("POST", worker.url + "/execute", json=long, headers=AUTH, timeout=60) as r:
        stream = events(r)
        next(stream)
        over = httpx.post(worker.url + "/execute", json={"prompt": "a", "n": 3}, headers=AUTH)
        assert over.status_code == 503 and over.json()["code"] == "BUSY"
        two = execute(worker.url, TOKEN, {"prompt": "a", "n": 2, "max_tokens": 4})
        assert two[-1].event == "end" and len(two[-1].data["choices"]) == 2
    assert wait_idle(worker.url)["slots_busy"] == 0


def test_wrk140_cancel_ends_every_choice_and_frees_all_slots(worker: Proc) -> None:
    """WRK-140: one cancel ends all n choices; health shows n slots busy, then none."""
    body = {"prompt": "hello", "max_tokens": 4000, "ignore_eos": True, "n": 3, "job_id": "c3"}
    with httpx.stream("POST", worker.url + "/execute", json=body, headers=AUTH, timeout=60) as r:
        stream = events(r)
        seen: set[int] = set()
        for e in stream:
            if e.event == "token":
                seen.add(e.data["index"])
                if len(seen) == 3:
                    break
        assert httpx.get(worker.url + "/health").json()["slots_busy"] == 3
        ack = httpx.post(worker.url + "/cancel", json={"job_id": "c3"}, headers=AUTH)
        assert ack.json()["state"] == "cancelled"
        rest = list(stream)
    end = rest[-1]
    assert end.event == "end" and end.data["stop_reason"] == "CANCELLED"
    assert [c["stop_reason"] for c in end.data["choices"]] == ["CANCELLED"] * 3
    assert wait_idle(worker.url)["slots_busy"] == 0


def test_wrk140_a_client_gone_mid_stream_frees_all_n_slots(worker: Proc) -> None:
    """WRK-140: closing the connection of an n=3 job cancels every choice; its slots free once
    the engine ended them, and the next n=3 job runs."""
    body = {"prompt": "hello", "max_tokens": 4000, "ignore_eos": True, "n": 3}
    with httpx.stream("POST", worker.url + "/execute", json=body, headers=AUTH, timeout=60) as r:
        stream = events(r)  # keep a reference: a finalized reader closes the connection
        for e in stream:
            if e.event == "token":
                break
        assert httpx.get(worker.url + "/health").json()["slots_busy"] == 3
    assert wait_idle(worker.url)["slots_busy"] == 0
    again = execute(worker.url, TOKEN, {"prompt": "a", "n": 3, "max_tokens": 4})
    assert again[-1].event == "end" and len(again[-1].data["choices"]) == 3
