"""The pure parts of embeddings tasks and worker history (ORCH-230..ORCH-232, ORCH-235)."""

from __future__ import annotations

import base64
import struct

import pytest

from orchestratord.domain.admission import check_embeddable
from orchestratord.domain.embeddings import embedding_reply, parse_embedding_request, vectors_of
from orchestratord.domain.queue import QueueEntry, TaskQueue
from orchestratord.domain.registry import RECENT, Registry, Worker, WorkerView
from orchestratord.domain.scheduler import plan
from orchestratord.domain.tenancy import Caller
from shared.problem import InvalidParams

TENANT_A = Caller(tenant="tenant-a")


def test_orch_230_an_embeddings_body_becomes_a_task_of_the_callers_tenant() -> None:
    req, fmt = parse_embedding_request(
        {"model": "m", "input": ["a", "b"], "user": "ignored", "tenant": "other"}, caller=TENANT_A
    )
    assert req.embed_input == ("a", "b") and req.tenant == "tenant-a" and fmt == "float"
    assert req.embed_body() == {"model": "m", "input": ["a", "b"], "encoding_format": "float"}
    single, fmt = parse_embedding_request(
        {"model": "m", "input": "a", "encoding_format": "base64"}, caller=TENANT_A
    )
    assert single.embed_input == ("a",) and fmt == "base64"
    # The same inputs hash the same; different inputs do not.
    assert (
        single.prompt_hash
        == parse_embedding_request({"model": "m", "input": ["a"]}, caller=TENANT_A)[0].prompt_hash
    )
    assert single.prompt_hash != req.prompt_hash


def test_orch_231_every_bad_field_is_listed() -> None:
    with pytest.raises(InvalidParams) as info:
        parse_embedding_request(
            {"input": ["ok", "", 3], "encoding_format": "int8", "dimensions": 4}, caller=TENANT_A
        )
    fields = [e["field"] for e in info.value.errors]
    assert fields == ["model", "input[1]", "input[2]", "encoding_format", "dimensions"]


def test_orch_230_replies_in_floats_or_base64_float32() -> None:
    worker = {"data": [{"index": 1, "embedding": [0.5, -1]}, {"index": 0, "embedding": [1, 0]}]}
    vectors = vectors_of(worker)
    assert vectors == [[1.0, 0.0], [0.5, -1.0]]
    reply = embedding_reply(vectors, 3, "m", "base64")
    packed = base64.b64decode(reply["data"][1]["embedding"])
    assert struct.unpack("<2f", packed) == (0.5, -1.0)
    assert reply["usage"] == {"prompt_tokens": 3, "total_tokens": 3}
    with pytest.raises(ValueError, match="malformed"):
        vectors_of({"data": [{"index": 0}]})


def _registry(**embeddings: bool | None) -> Registry:
    r = Registry(1000, 10_000)
    for wid, can in embeddings.items():
        w = r.register(Worker(id=wid, url=f"http://{wid}", model="m", slots_total=1), 0)
        w.embeddings = can
    return r


def test_orch_232_a_model_whose_workers_cannot_embed_is_refused() -> None:
    req, _ = parse_embedding_request({"model": "m", "input": "x"}, caller=TENANT_A)
    r = _registry(a=False, b=False)
    with pytest.raises(InvalidParams) as info:
        check_embeddable(req, r.serving("m"))
    assert info.value.errors[0]["field"] == "model"
    check_embeddable(req, _registry(a=False, b=None).serving("m"))  # b has not said: it may


def test_orch_231_embeddings_tasks_are_offered_only_workers_that_can_embed() -> None:
    r = _registry(no=False, yes=True)
    q = TaskQueue(10)
    q.push(QueueEntry("gen", "m", "interactive", 0, None))
    q.push(QueueEntry("emb", "m", "interactive", 1, None, embed=True))
    offered: dict[str, list[str]] = {}

    def first(entry: QueueEntry, workers: list[WorkerView]) -> str | None:
        offered[entry.task_id] = [w["id"] for w in workers]
        return next((w["id"] for w in workers if w["slots_busy"] < w["slots_total"]), None)

    out = plan(q, r, 1, first)
    assert offered["emb"] == ["yes"]
    assert {a.entry.task_id: a.worker_id for a in out} == {"gen": "no", "emb": "yes"}


def test_orch_235_workers_remember_what_they_served_bounded_newest_last() -> None:
    r = _registry(a=None)
    for n in range(RECENT + 5):
        r.served("a", f"s{n}", f"p{n}")
    r.served("a", "s10", "p10")  # served again: moves to the newest place
    w = r.workers["a"]
    assert len(w.recent_sessions) == RECENT and w.recent_sessions[-1] == "s10"
    assert "s0" not in w.recent_sessions and w.recent_prefixes[-1] == "p10"
    view = w.view(1, 1000)
    assert view["recent_sessions"][-1] == "s10" and len(view["recent_prefixes"]) == RECENT
    # A re-registration keeps the history (the worker's cache survives a lost heartbeat).
    r.register(Worker(id="a", url="http://a", model="m"), 2)
    assert r.workers["a"].recent_sessions[-1] == "s10"
