"""`POST /v1/embeddings` through a real orchestratord to real workers (ORCH-230..ORCH-234), and the
default policy's prefix affinity across two real workers (ORCH-235)."""

from __future__ import annotations

import base64
import math
import re
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import openai
import pytest

from llorch_sdk import AsyncClient, Client
from llorch_sdk.errors import InvalidParams
from orchestratord.policy import PolicyEngine
from orchestratord.policy.types import WorkerView
from shared.testmodel import write_model
from tests.orchestratord.cluster import (
    AUTH,
    MODEL,
    open_task_stream,
    orchestratord,
    stream_task,
    wait_for,
    worker,
    workers,
)
from tests.support import Proc

pytestmark = pytest.mark.e2e
KEY_A, KEY_B = "key-a", "key-b"
A = {"authorization": f"Bearer {KEY_A}"}
B = {"authorization": f"Bearer {KEY_B}"}


class Fleet:
    def __init__(self, orch: Proc, embed_worker: Proc, rerank_model: str) -> None:
        self.url = orch.url
        self.worker_url = embed_worker.url
        self.rerank_model = rerank_model

    def direct(self, inputs: list[str]) -> list[list[float]]:
        """What the worker itself answers: the vectors orchestratord must relay."""
        r = httpx.post(
            self.worker_url + "/embeddings", json={"input": inputs}, headers=AUTH, timeout=60
        )
        assert r.status_code == 200, r.text
        return [d["embedding"] for d in r.json()["data"]]

    def tasks_ok(self) -> float:
        """The finished-task counter's OK series (whatever the metric's prefix)."""
        text = httpx.get(self.url + "/metrics", timeout=10).text
        found = re.search(r'^\w+_tasks_total\{code="OK"\} (\S+)$', text, re.MULTILINE)
        return float(found.group(1)) if found else 0.0

    def post(self, body: Any, headers: dict[str, str] | None = None) -> httpx.Response:
        return httpx.post(
            self.url + "/v1/embeddings",
            json=body,
            headers=A if headers is None else headers,
            timeout=60,
        )


@pytest.fixture(scope="module")
def fleet(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    tmp = tmp_path_factory.mktemp("embeddings")
    # A reranker's metadata (rank pooling): a real worker that says it cannot embed (WRK-112).
    rerank = write_model(tmp / "llorch-rerank.gguf", name="llorch-rerank", pooling_type=4)
    keys = ["--api-key", f"tenant-a:{KEY_A}", "--api-key", f"tenant-b:{KEY_B}"]
    with (
        orchestratord(tmp, *keys) as orch,
        worker(tiny_model, tmp, orch.url, "w-embed") as w,
        worker(rerank, tmp, orch.url, "w-rerank"),
    ):
        name = workers(orch.url)["w-rerank"]["model"]
        yield Fleet(orch, w, name)


def _close(a: list[float], b: list[float]) -> bool:
    return len(a) == len(b) and all(
        math.isclose(x, y, abs_tol=1e-5) for x, y in zip(a, b, strict=True)
    )


def test_orch_230_embeddings_of_a_string_and_a_list(fleet: Fleet) -> None:
    """ORCH-230: one vector of the worker's width per input, in input order, OpenAI's shape;
    the request is a task of the caller's tenant, counted like any other."""
    ok_before = fleet.tasks_ok()
    texts = ["the cat sat", "a kitten", "carburetor"]
    expected = fleet.direct(texts)
    width = len(expected[0])
    assert width > 0
    one = fleet.post({"model": MODEL, "input": texts[0]})
    assert one.status_code == 200, one.text
    body = one.json()
    assert body["object"] == "list" and body["model"] == MODEL
    assert [d["index"] for d in body["data"]] == [0]
    assert body["data"][0]["object"] == "embedding"
    assert _close(body["data"][0]["embedding"], expected[0])
    assert body["usage"]["prompt_tokens"] > 0
    assert body["usage"]["total_tokens"] == body["usage"]["prompt_tokens"]
    many = fleet.post({"model": MODEL, "input": texts, "encoding_format": "float"}).json()
    assert [d["index"] for d in many["data"]] == [0, 1, 2]
    for got, want in zip(many["data"], expected, strict=True):
        assert len(got["embedding"]) == width and _close(got["embedding"], want)
    # The task is the caller's: its tenant, on the embedding worker, succeeded; another tenant
    # cannot see it.
    task_id = one.headers["x-llorch-task-id"]
    record = httpx.get(f"{fleet.url}/v2/tasks/{task_id}", headers=A, timeout=10).json()
    assert record["tenant"] == "tenant-a" and record["status"] == "succeeded"
    assert record["worker_id"] == "w-embed"
    assert httpx.get(f"{fleet.url}/v2/tasks/{task_id}", headers=B, timeout=10).status_code == 404
    assert fleet.tasks_ok() >= ok_before + 2  # counted like any task


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"model": MODEL}, "input"),
        ({"model": MODEL, "input": []}, "input"),
        ({"model": MODEL, "input": ""}, "input[0]"),
        ({"model": MODEL, "input": ["ok", ""]}, "input[1]"),
        ({"model": MODEL, "input": [[1, 2, 3]]}, "input[0]"),
        ({"model": MODEL, "input": ["x"] * 65}, "input"),
        ({"model": MODEL, "input": "x", "encoding_format": "int8"}, "encoding_format"),
        ({"model": MODEL, "input": "x", "dimensions": 8}, "dimensions"),
        ({"input": "x"}, "model"),
        ("not an object", "body"),
    ],
)
def test_orch_231_bad_input_is_400_naming_the_field(fleet: Fleet, body: Any, field: str) -> None:
    """ORCH-231: bad input is 400 INVALID_PARAMS naming the field, OpenAI's `error` alongside."""
    r = fleet.post(body)
    assert r.status_code == 400, r.text
    problem = r.json()
    assert problem["code"] == "INVALID_PARAMS"
    assert field in [e["field"] for e in problem["errors"]]
    assert problem["error"]["param"] in [e["field"] for e in problem["errors"]]


def test_orch_232_unknown_model_and_a_model_that_cannot_embed(fleet: Fleet) -> None:
    """ORCH-232: a model no worker serves is 404 MODEL_NOT_FOUND; a model whose workers say they
    cannot embed is 400 naming `model`, without queueing; no key is 401."""
    r = fleet.post({"model": "no-such-model", "input": "x"})
    assert r.status_code == 404 and r.json()["code"] == "MODEL_NOT_FOUND"
    wait_for(
        lambda: fleet.post({"model": fleet.rerank_model, "input": "x"}).status_code == 400,
        what="the reranker's heartbeat to say it cannot embed",
    )
    r = fleet.post({"model": fleet.rerank_model, "input": "x"})
    problem = r.json()
    assert problem["code"] == "INVALID_PARAMS" and problem["errors"][0]["field"] == "model"
    assert "cannot produce embeddings" in problem["detail"]
    assert fleet.post({"model": MODEL, "input": "x"}, headers={}).status_code == 401


def test_orch_233_the_openai_package_embeds(fleet: Fleet) -> None:
    """ORCH-233: `openai`'s `client.embeddings.create` works, in its default base64 encoding
    (little-endian float32) and in floats."""
    expected = fleet.direct(["hello world", "goodbye"])
    with openai.OpenAI(base_url=fleet.url + "/v1", api_key=KEY_A, max_retries=0) as client:
        reply = client.embeddings.create(model=MODEL, input=["hello world", "goodbye"])
        assert [d.index for d in reply.data] == [0, 1]
        for got, want in zip(reply.data, expected, strict=True):
            assert _close(got.embedding, want)
        floats = client.embeddings.create(model=MODEL, input="goodbye", encoding_format="float")
        assert _close(floats.data[0].embedding, expected[1])
        assert reply.usage.prompt_tokens > 0
        with pytest.raises(openai.BadRequestError):
            client.embeddings.create(model=fleet.rerank_model, input="x")
    raw = fleet.post({"model": MODEL, "input": "goodbye", "encoding_format": "base64"}).json()
    packed = base64.b64decode(raw["data"][0]["embedding"])
    assert _close(list(struct.unpack(f"<{len(packed) // 4}f", packed)), expected[1])


def test_orch_234_sdk_embeddings_sync_and_async(fleet: Fleet) -> None:
    """ORCH-234: `Client.embeddings` and `AsyncClient.embeddings` return one vector per input."""
    expected = fleet.direct(["one", "two"])
    with Client(fleet.url, api_key=KEY_A) as client:
        vectors = client.embeddings(MODEL, ["one", "two"])
        assert len(vectors) == 2 and all(
            _close(v, e) for v, e in zip(vectors, expected, strict=True)
        )
        assert len(client.embeddings(MODEL, "one")) == 1
        with pytest.raises(InvalidParams):
            client.embeddings(fleet.rerank_model, "x")

    async def run() -> list[list[float]]:
        async with AsyncClient(fleet.url, api_key=KEY_A) as client:
            return await client.embeddings(MODEL, "two")

    vectors = anyio.run(run)
    assert len(vectors) == 1 and _close(vectors[0], expected[1])


# --- prefix affinity across two workers (ORCH-235) ------------------------------------------


def _view(worker_id: str) -> WorkerView:
    return {
        "id": worker_id,
        "pool": "test",
        "model": MODEL,
        "backend": "cpu",
        "state": "ready",
        "slots_total": 1,
        "slots_busy": 0,
        "tokens_per_s": 0.0,
        "last_heartbeat_ms": 0,
        "recent_starts": 0,
        "cached_tokens": 0,
        "recent_sessions": [],
        "recent_prefixes": [],
    }


def test_orch_235_second_turn_lands_where_the_first_was_served(
    tiny_model: Path, tmp_path: Path
) -> None:
    """ORCH-235: the second turn of a chat goes to the worker that served the first, even where
    session hashing alone would pick the other one, and reads its prefix from that worker's
    cache (`prompt_tokens_cached > 0` in its end event)."""
    # A session whose rendezvous home (the default policy without history) is w-x: the first
    # turn is forced to w-y by keeping w-x busy, so only the history can bring turn 2 back.
    engine = PolicyEngine.from_file(None)
    cluster: Any = {
        "queue_depth": {"interactive": 0, "batch": 0},
        "now_ms": 0,
        "workers": {"ready": 2},
        "running_by_tenant": {},
    }

    def home(session: str) -> str | None:
        task: Any = {
            "id": "t",
            "model": MODEL,
            "priority": "interactive",
            "session_id": session,
            "max_tokens": 8,
            "prompt_tokens": 8,
            "wait_ms": 0,
            "prefix_hash": "0" * 16,
            "tenant": None,
            "constrained": False,
            "logprobs": False,
            "tools": 0,
            "n": 1,
            "tenant_limits": None,
            "tenant_usage": {},
            "failovers": 0,
        }
        return engine.schedule(task, [_view("w-x"), _view("w-y")], cluster)

    # Two sessions whose rendezvous home is w-x: one for the chat, one for a long task that
    # holds w-x while the chat's first turn is placed.
    session, holder = [s for s in (f"chat-{n}" for n in range(100)) if home(s) == "w-x"][:2]
    first = [
        {"role": "system", "content": "You are a helpful assistant who answers briefly."},
        {"role": "user", "content": "Tell me about cats and the places they like to sleep."},
    ]
    with (
        orchestratord(tmp_path, "--worker-prefetch", "0") as orch,
        worker(tiny_model, tmp_path, orch.url, "w-x") as _x,
        worker(tiny_model, tmp_path, orch.url, "w-y") as _y,
    ):
        # Rendezvous puts the long task on w-x; while it runs, turn 1 can only go to w-y.
        busy = {"prompt": "Keep w-x busy", "max_tokens": 16000, "ignore_eos": True}
        with open_task_stream(orch.url, {**busy, "model": MODEL, "session_id": holder}) as hold:
            assert next(e for e in hold.head if e.event == "started").data["worker_id"] == "w-x"
            turn1 = stream_task(
                orch.url,
                {"model": MODEL, "messages": first, "max_tokens": 8, "session_id": session},
            )
            assert next(e for e in turn1 if e.event == "started").data["worker_id"] == "w-y"
        reply = "".join(str(e.data["t"]) for e in turn1 if e.event == "token")
        wait_for(
            lambda: all(w["slots_busy"] == 0 for w in workers(orch.url).values()),
            what="both workers to be idle",
        )
        second = [
            *first,
            {"role": "assistant", "content": reply},
            {"role": "user", "content": "And dogs?"},
        ]
        turn2 = stream_task(
            orch.url,
            {"model": MODEL, "messages": second, "max_tokens": 8, "session_id": session},
        )
        started = next(e for e in turn2 if e.event == "started")
        end = turn2[-1]
        # Without the history, the same session would go back to its rendezvous home, w-x.
        assert started.data["worker_id"] == "w-y"
        assert end.event == "end" and end.data["prompt_tokens_cached"] > 0
