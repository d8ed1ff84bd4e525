"""What a worker would refuse is refused at submit; a task nobody waits for stops waiting
(issue 8, item 2): ORCH-160..162."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

from orchestratord.domain.admission import max_prompt_tokens
from orchestratord.domain.tasks import parse_task_request
from orchestratord.domain.tenancy import OPEN
from tests.orchestratord.cluster import wait_for
from tests.orchestratord.conftest import AppFactory

CT = {"authorization": "Bearer ct"}
WORKER = {
    "worker_id": "w1",
    "url": "http://127.0.0.1:1",
    "model": "llorch-tiny",
    "slots_total": 1,
    "n_ctx": 512,
}
TASK: dict[str, Any] = {"model": "llorch-tiny", "prompt": "hello", "max_tokens": 4}
CONTEXT_LOG = "llorch.orchestratord.context"


def test_orch_160_an_unserved_model_is_404_at_once_listing_the_models(orchd: AppFactory) -> None:
    with orchd(cluster_token="ct", expect_models=()) as c:
        r = c.post("/v2/tasks", json={**TASK, "model": "gpt-4"})
        assert r.status_code == 404 and r.json()["code"] == "MODEL_NOT_FOUND"
        assert "none yet" in r.json()["detail"]
        assert c.post("/v2/workers/register", json=WORKER, headers=CT).status_code == 201
        r = c.post("/v2/tasks", json={**TASK, "model": "gpt-4"})
        assert r.status_code == 404 and "llorch-tiny" in r.json()["detail"]
        # The OpenAI route answers at once too (it used to wait until the client gave up).
        chat = {"model": "gpt-4", "messages": [{"role": "user", "content": "hi"}]}
        r = c.post("/v1/chat/completions", json=chat)
        assert r.status_code == 404 and r.json()["error"]["code"] == "MODEL_NOT_FOUND"
    with orchd(cluster_token="ct", expect_models=("gpt-4",)) as c:
        assert c.post("/v2/tasks", json={**TASK, "model": "gpt-4"}).status_code == 202


def test_orch_161_what_a_worker_refuses_is_refused_at_submit(orchd: AppFactory) -> None:
    """ORCH-161: what a worker refuses is refused at submit."""
    with orchd(cluster_token="ct", expect_models=()) as c:
        assert c.post("/v2/workers/register", json=WORKER, headers=CT).status_code == 201
        tool = {**TASK, "prompt": None, "messages": [{"role": "robot", "content": "42"}]}
        del tool["prompt"]
        r = c.post("/v2/tasks", json=tool)
        assert r.status_code == 400 and r.json()["errors"][0]["field"] == "messages[0].role"
        r = c.post("/v2/tasks", json={**TASK, "prompt": ""})
        assert r.status_code == 400 and r.json()["errors"][0]["field"] == "prompt"
        r = c.post("/v2/tasks", json={**TASK, "max_tokens": 600})
        assert r.status_code == 400 and r.json()["errors"][0]["field"] == "max_tokens"
        assert "512" in r.json()["detail"]
        r = c.post("/v2/tasks", json={**TASK, "prompt": "x" * 64 * 400, "max_tokens": 200})
        assert r.status_code == 400  # at least 401 prompt tokens + 200 > 512
        assert c.post("/v2/tasks", json={**TASK, "max_tokens": 500}).status_code == 202
        # Nothing refused took a place in the queue.
        assert c.get("/health").json()["queue_depth"] == {"interactive": 1, "batch": 0}


def test_orch_162_a_queued_task_whose_reader_left_stops_holding_its_place(
    orchd: AppFactory,
) -> None:
    """ORCH-162: a queued task whose reader left stops holding its place."""
    with orchd(disconnect_grace_ms=50) as c:
        task = {"model": "m", "prompt": "hello", "max_tokens": 4}
        task_id = c.post("/v2/tasks", json=task).json()["task_id"]
        with c.stream("GET", f"/v2/tasks/{task_id}/events") as stream:
            next(stream.iter_lines())  # the reader is attached, then goes away
        record = wait_for(
            lambda: (rec := c.get(f"/v2/tasks/{task_id}").json())["status"] != "queued" and rec,
            timeout=30,
            what="the abandoned task to leave the queue",
        )
        assert record["status"] == "cancelled" and record["stop_reason"] == "CANCELLED"
        assert c.get("/health").json()["queue_depth"] == {"interactive": 0, "batch": 0}


def test_orch_163_a_prompt_nobody_can_count_is_accepted_and_a_short_one_is_never_counted(
    orchd: AppFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """ORCH-163: a prompt within the bound without a tokenizer is accepted without asking a
    worker; one beyond it is counted by a ready worker, and when that worker cannot answer (here
    nothing listens at its URL) or none is ready, the task is accepted as before (WRK-021)."""
    caplog.set_level(logging.INFO, logger=CONTEXT_LOG)
    with orchd(cluster_token="ct", expect_models=()) as c:
        assert c.post("/v2/workers/register", json=WORKER, headers=CT).status_code == 201
        # Its one slot busy with work of its own (two heartbeats say so): nothing is sent there,
        # and it stays ready to count.
        busy = {"state": "ready", "slots_total": 1, "slots_busy": 1}
        for _ in range(2):
            assert c.post("/v2/workers/w1/heartbeat", json=busy, headers=CT).status_code == 200
        # 600 bytes may be 604 tokens, + 200 > 512: asked, unanswered, accepted.
        long = {**TASK, "prompt": "x " * 300, "max_tokens": 200}
        assert c.post("/v2/tasks", json=long).status_code == 202
        assert [r.levelno for r in caplog.records if r.name == CONTEXT_LOG] == [logging.WARNING]
        assert c.get("/v2/workers", headers=CT).json()["workers"][0]["state"] == "ready"
        # 300 + 4 tokens at most, + 200 <= 512: accepted without asking.
        short = {**TASK, "prompt": "x" * 300, "max_tokens": 200}
        assert c.post("/v2/tasks", json=short).status_code == 202
        beat = {**busy, "state": "loading"}
        assert c.post("/v2/workers/w1/heartbeat", json=beat, headers=CT).status_code == 200
        assert c.post("/v2/tasks", json=long).status_code == 202  # nobody ready: not asked
        assert len([r for r in caplog.records if r.name == CONTEXT_LOG]) == 1


def test_orch_163_the_bound_without_a_tokenizer_is_above_the_tokenizer_count(
    tiny_model: Path,
) -> None:
    """ORCH-163: `max_prompt_tokens` never undercounts what the worker counts (WRK-032): the
    model's tokenizer, special tokens and chat template included."""
    from shared.prompt_constructor import build_prompt
    from worker.engine import LlamaEngine

    texts = ["x", "hello world", "日本語 🙂 é" * 50, "<|im_start|>user\n" * 20, " a b" * 200]
    engine = LlamaEngine.load(tiny_model)
    try:
        for text in texts:
            req = parse_task_request({"model": "m", "prompt": text}, caller=OPEN)
            assert len(engine.tokenize(text)) <= max_prompt_tokens(req)
            messages = [{"role": "system", "content": text}, {"role": "user", "content": text}]
            req = parse_task_request({"model": "m", "messages": messages}, caller=OPEN)
            rendered = build_prompt(
                req.messages or (),
                None,
                metadata=engine.metadata,
                bos_token=engine.bos_text,
                eos_token=engine.eos_text,
            )
            assert len(engine.tokenize(rendered.text)) <= max_prompt_tokens(req)
    finally:
        engine.close()


def test_orch_164_a_model_served_a_moment_ago_queues_then_is_404(orchd: AppFactory) -> None:
    """ORCH-164, ORCH-160: after its only worker is removed, a model still takes tasks within
    `--model-grace-ms`; once the grace has passed it is 404 `MODEL_NOT_FOUND` again."""
    with orchd(cluster_token="ct", expect_models=(), model_grace_ms=60_000) as c:
        assert c.post("/v2/workers/register", json=WORKER, headers=CT).status_code == 201
        assert c.delete("/v2/workers/w1", headers=CT).status_code == 204
        r = c.post("/v2/tasks", json=TASK)
        assert r.status_code == 202 and r.json()["status"] == "queued"
    with orchd(cluster_token="ct", expect_models=(), model_grace_ms=300) as c:
        assert c.post("/v2/workers/register", json=WORKER, headers=CT).status_code == 201
        assert c.delete("/v2/workers/w1", headers=CT).status_code == 204
        refused = wait_for(
            lambda: (r := c.post("/v2/tasks", json=TASK)).status_code == 404 and r,
            what="the grace to pass",
        )
        assert refused.json()["code"] == "MODEL_NOT_FOUND"
