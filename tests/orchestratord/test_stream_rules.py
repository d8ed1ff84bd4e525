"""How a task's SSE stream is written (ORCH-025): keep-alive comments while it is idle, and
tokens after the first in bursts of `--stream-coalesce-ms`, the first never held back."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, MutableMapping
from types import SimpleNamespace
from typing import Any

import pytest

from orchestratord.http import events as fleet_events
from orchestratord.http.tasks import frames
from orchestratord.runtime import service as service_module
from orchestratord.runtime.follow import follow
from orchestratord.runtime.tasklog import TaskLog
from orchestratord.settings import Settings
from shared.sse import KEEPALIVE, EventStream, Last
from tests.orchestratord.conftest import AppFactory

TASK = {"model": "m", "prompt": "hello", "max_tokens": 4}


async def stays() -> dict[str, Any]:
    """An ASGI `receive` whose client never leaves."""
    await asyncio.Event().wait()
    raise AssertionError


async def spin(turns: int = 50) -> None:
    """Let the event loop run everything that is ready (no timer is waited for)."""
    for _ in range(turns):
        await asyncio.sleep(0)


def test_orch_025_an_idle_task_stream_sends_keepalive_comments(
    orchd: AppFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ORCH-025: a task stream with nothing to send (a task queued with no worker) writes SSE
    comments while it waits, both the events stream and the submitting stream. The interval is
    shortened here from the routes' default (whose value is checked in the next test)."""
    monkeypatch.setattr(service_module, "KEEPALIVE_S", 0.05)
    with orchd() as c:
        tid = c.post("/v2/tasks", json={**TASK, "deadline_ms": 600}).json()["task_id"]
        with c.stream("GET", f"/v2/tasks/{tid}/events") as r:
            read = r.read().decode()
        with c.stream(
            "POST",
            "/v2/tasks",
            json={**TASK, "deadline_ms": 600},
            headers={"accept": "text/event-stream"},
        ) as r:
            submitted = r.read().decode()
    for text in (read, submitted):
        # queued, then comments while nothing happens, then the deadline's error.
        shape = re.sub(r"id: \d+\nevent: (\w+)\ndata: .*\n\n", r"<\1>", text)
        assert re.fullmatch(r"<queued>(: keep-alive\n\n)+<error>", shape), shape
        assert '"DEADLINE_UNMET"' in text


def test_orch_025_the_routes_keepalive_interval_is_at_most_15_s() -> None:
    """ORCH-025: the task streams (/v2 and /v1, through `TaskService.frames`) and the fleet feed
    send a keep-alive after at most 15 s without a write."""
    assert 0 < service_module.KEEPALIVE_S <= 15
    assert 0 < fleet_events.KEEPALIVE_S <= 15


def test_orch_025_event_stream_pings_an_idle_body() -> None:
    """ORCH-025: `EventStream(keepalive_s=...)` (the fleet feed's) writes a keep-alive comment
    whenever its body has written nothing for that long."""

    async def scenario() -> list[bytes]:
        sent: list[bytes] = []
        pinged = asyncio.Event()

        async def send(message: MutableMapping[str, Any]) -> None:
            if message["type"] == "http.response.body":
                sent.append(message["body"])
                if sent.count(KEEPALIVE) >= 2:
                    pinged.set()

        async def body() -> AsyncIterator[bytes]:
            yield b"event: hello\ndata: {}\n\n"
            await pinged.wait()  # idle until two keep-alives went out (or the timeout below)
            yield Last(b"event: end\ndata: {}\n\n")

        response = EventStream(body(), keepalive_s=0.02)
        await asyncio.wait_for(response({"type": "http"}, stays, send), 10)
        return sent

    sent = asyncio.run(scenario())
    assert sent == [
        b"event: hello\ndata: {}\n\n",
        KEEPALIVE,
        KEEPALIVE,
        b"event: end\ndata: {}\n\n",
    ]


async def _writes(coalesce_ms: float) -> list[list[str]]:
    """A task stream from its event log to the ASGI `send` (follow -> the route's frames ->
    EventStream), fed a task's events one by one; returns each write's event names."""
    tlog = TaskLog()
    core: Any = SimpleNamespace(settings=Settings(stream_coalesce_ms=coalesce_ms))
    active: Any = SimpleNamespace(log=tlog, grace=None)
    writes: list[list[str]] = []

    async def send(message: MutableMapping[str, Any]) -> None:
        if message["type"] == "http.response.body" and message["body"]:
            writes.append(re.findall(r"event: (\w+)", message["body"].decode()))

    response = EventStream(frames(follow(core, active, None, None)))
    streaming = asyncio.create_task(response({"type": "http"}, stays, send))
    tlog.append("queued", {"queue_position": 0})
    await spin()
    tlog.append("started", {"worker_id": "w1", "queue_ms": 0})
    await spin()
    tlog.append("token", {"t": "a", "i": 0})
    await spin()
    # The first token is out before the next one exists, whatever the window.
    assert writes[-1] == ["token"], writes
    tlog.append("token", {"t": "b", "i": 1})
    await spin()
    tlog.append("token", {"t": "c", "i": 2})
    await spin()
    tlog.append("end", {"tokens_out": 3, "stop_reason": "MAX_TOKENS"})  # not held back
    await asyncio.wait_for(streaming, 10)
    return writes


def test_orch_025_tokens_after_the_first_go_out_in_one_write_per_window() -> None:
    """ORCH-025: with `--stream-coalesce-ms`, the first token is written at once; the tokens
    that come while the window is open are written together, in one write, and the final
    event does not wait for the window. With a window of 0 every token is its own write."""
    assert asyncio.run(_writes(1000)) == [
        ["queued"],
        ["started"],
        ["token"],
        ["token", "token", "end"],
    ]
    assert asyncio.run(_writes(0)) == [
        ["queued"],
        ["started"],
        ["token"],
        ["token"],
        ["token"],
        ["end"],
    ]
