"""The worker's CPU work on a request (chat template, tokenizing) runs off its event loop (WRK-031).

The worker app is served by uvicorn on loopback in the test's own event loop, on the real tiny
model. The engine is the real `LlamaEngine` with one addition: tokenizing a text that contains
`MARK` first asks the event loop to run a callback and notes whether it ran within
`PATIENCE_S`. On the loop's own thread it cannot run until the tokenizer returns, so the note is
False; off the loop it runs at once. The assertions are on those notes, never on durations.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from tests.support import free_port
from worker.app import create_app
from worker.engine import LlamaEngine
from worker.settings import WorkerSettings

pytestmark = pytest.mark.e2e
MARK = "probe-the-loop"
N_CTX = 16384
PATIENCE_S = 5.0  # a bound for a failing run, not a measured time


class ProbedEngine(LlamaEngine):
    """`LlamaEngine` whose `tokenize` of a marked text probes the event loop (and, with a
    gate set, then waits for the test to open it)."""

    loop: asyncio.AbstractEventLoop | None = None
    gate: threading.Event | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.probes: list[bool] = []  # per marked tokenize: did the loop run meanwhile?
        self.gate_opened: list[bool] = []
        self.entered = threading.Event()

    def tokenize(self, text: str) -> list[int]:
        if MARK in text:
            assert self.loop is not None
            ran = threading.Event()
            self.loop.call_soon_threadsafe(ran.set)
            self.probes.append(ran.wait(PATIENCE_S))
            if self.gate is not None:
                self.entered.set()
                self.gate_opened.append(self.gate.wait(PATIENCE_S))
        return super().tokenize(text)


def load(model: Path) -> ProbedEngine:
    engine = ProbedEngine.load(model, slots=2, n_ctx=N_CTX)
    assert isinstance(engine, ProbedEngine)
    return engine


@contextlib.asynccontextmanager
async def serve(engine: ProbedEngine) -> AsyncIterator[httpx.AsyncClient]:
    """The worker app (two slots, no token) on loopback, its model `engine`, ready."""
    port = free_port()
    settings = WorkerSettings(model=engine.model_path, port=port, slots=2, n_ctx=N_CTX)
    app = create_app(settings, load_engine=lambda _: engine)
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error", lifespan="on")
    )
    task = asyncio.create_task(server.serve())
    engine.loop = asyncio.get_running_loop()
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            async with asyncio.timeout(30):
                while True:
                    with contextlib.suppress(httpx.TransportError):
                        if (await client.get("/health")).json()["status"] == "ready":
                            break
                    await asyncio.sleep(0.02)
            yield client
    finally:
        server.should_exit = True
        await task


async def run_job(client: httpx.AsyncClient, body: dict[str, Any]) -> list[str]:
    """POST /execute and read its stream to the end; the event names, in order."""
    names: list[str] = []
    async with client.stream("POST", "/execute", json=body) as r:
        assert r.status_code == 200, await r.aread()
        async for line in r.aiter_lines():
            if line.startswith("event:"):
                names.append(line.split(":", 1)[1].strip())
    return names


def test_wrk031_prompts_messages_and_embedding_inputs_are_tokenized_off_the_loop(
    tiny_model: Path,
) -> None:
    """WRK-031: /execute (a prompt, and messages through the chat template), /tokenize and
    /embeddings tokenize while the event loop keeps running callbacks."""
    engine = load(tiny_model)
    long_prompt = MARK + " the quick brown fox" * 2000

    async def scenario() -> None:
        async with serve(engine) as client:
            names = await run_job(client, {"prompt": long_prompt, "max_tokens": 2})
            assert names[0] == "started" and names[-1] == "end"
            assert engine.probes == [True]
            messages = [{"role": "user", "content": long_prompt}]
            names = await run_job(client, {"messages": messages, "max_tokens": 2})
            assert names[-1] == "end"
            assert engine.probes == [True, True]
            r = await client.post("/embeddings", json={"input": [MARK + " short"]})
            assert r.status_code == 200, r.text
            assert engine.probes == [True, True, True]
            r = await client.post("/tokenize", json={"prompt": long_prompt})
            assert r.status_code == 200 and r.json()["n_tokens"] > 2000

    try:
        asyncio.run(scenario())
    finally:
        engine.close()
    assert engine.probes == [True, True, True, True]


def test_wrk031_another_slot_streams_to_its_end_while_a_prompt_is_tokenized(
    tiny_model: Path,
) -> None:
    """WRK-031: while one request's prompt is being tokenized (held there by the test), a job on
    the other slot runs and streams all its tokens; only then is the tokenizer let go."""
    engine = load(tiny_model)
    engine.gate = threading.Event()

    async def scenario() -> None:
        async with serve(engine) as client:
            held = asyncio.create_task(run_job(client, {"prompt": MARK, "max_tokens": 2}))
            assert await asyncio.to_thread(engine.entered.wait, PATIENCE_S)
            body = {"prompt": "hello", "max_tokens": 8, "ignore_eos": True, "seed": 1}
            names = await run_job(client, body)
            assert "token" in names and names[-1] == "end"
            assert engine.gate is not None
            engine.gate.set()
            assert (await held)[-1] == "end"

    try:
        asyncio.run(scenario())
    finally:
        engine.close()
    # Opened by the test, not given up on: the other job ended while the tokenizer was held.
    assert engine.gate_opened == [True]
