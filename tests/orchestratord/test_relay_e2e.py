"""A real orchestratord relaying from a stand-in worker (tests/orchestratord/fake_worker.py):
how a task is cancelled on its worker, and what a worker that answers past the relay's caps
costs (nothing but its own task)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from orchestratord.worker_client.relay import MAX_SSE_EVENT
from tests.orchestratord.cluster import (
    MODEL,
    open_task_stream,
    orchestratord,
    read_events,
    wait_for,
)
from tests.orchestratord.fake_worker import CHUNKED, chunk, endless_tokens, fake_worker, sse
from tests.support import Proc

LONG = {"model": MODEL, "prompt": "go on", "max_tokens": 1000}


@pytest.fixture
def orch(tmp_path: Path) -> Iterator[Proc]:
    # No retries, a long read timeout: a failure here is the cap's, not a timeout's.
    with orchestratord(tmp_path, "--retry-attempts", "0", "--read-timeout-s", "120") as p:
        yield p


def status(url: str, task_id: str) -> str:
    return str(httpx.get(f"{url}/v2/tasks/{task_id}").json()["status"])


def test_orch_015_a_cancel_closes_the_worker_connection_and_sends_no_cancel_request(
    orch: Proc,
) -> None:
    """ORCH-015: cancelling a running task (here a stream the worker would never end by
    itself) closes its worker connection, which is the job's cancel (WRK-053); orchestratord
    sends no POST /cancel and waits for no echo."""
    with fake_worker(orch.url, "fw", endless_tokens) as fake:
        with open_task_stream(orch.url, LONG, head=1) as s:
            assert [e.event for e in s.head] == ["queued", "started", "token"]
            r = httpx.post(f"{orch.url}/v2/tasks/{s.task_id}/cancel")
            assert r.status_code == 204
            assert status(orch.url, s.task_id) == "cancelled"  # ended when the 204 came
            rest = read_events(s.lines)
        assert rest[-1].event == "end" and rest[-1].data["stop_reason"] == "CANCELLED"
        wait_for(lambda: fake.executes_closed == 1, what="the worker connection to close")
        assert fake.requests == ["POST /execute"]


def test_orch_015_a_v1_client_that_disconnects_cancels_through_the_same_path(
    orch: Proc,
) -> None:
    """ORCH-015, ORCH-024: a /v1 streaming client that goes away cancels its task the same
    way: the worker connection closes, no POST /cancel."""
    body = {"model": MODEL, "prompt": "go on", "max_tokens": 1000, "stream": True}
    with fake_worker(orch.url, "fw", endless_tokens) as fake:
        with httpx.stream("POST", orch.url + "/v1/completions", json=body, timeout=30) as r:
            task_id = r.headers["x-llorch-task-id"]
            lines = r.iter_lines()
            for line in lines:
                if '"text":"x"' in line.replace(" ", ""):
                    break
        wait_for(lambda: status(orch.url, task_id) == "cancelled", what="the task to cancel")
        wait_for(lambda: fake.executes_closed == 1, what="the worker connection to close")
        assert fake.requests == ["POST /execute"]


async def giant_token(writer: asyncio.StreamWriter) -> None:
    """A token, then one that never ends, 4x past the cap; then silence."""
    writer.write(CHUNKED + sse("started", {"job_id": "j", "model": MODEL, "prompt_tokens": 1}))
    writer.write(sse("token", {"t": "x", "i": 0}) + chunk(b'event: token\ndata: {"t":"'))
    for _ in range(4 * MAX_SSE_EVENT // 65536):
        writer.write(chunk(b"y" * 65536))
        await writer.drain()
    await asyncio.sleep(3600)


def test_orch_054_a_worker_past_a_cap_fails_its_task_retriably_and_nothing_else(
    orch: Proc,
) -> None:
    """ORCH-054: an SSE event past MAX_SSE_EVENT ends the exchange as a lost worker's: the
    task, which had a token, ends `error{WORKER_RESET, retriable}` naming the cap; the worker
    connection is closed; orchestratord serves on."""
    with fake_worker(orch.url, "fw", giant_token) as fake:
        task_id = httpx.post(orch.url + "/v2/tasks", json=LONG).json()["task_id"]
        wait_for(lambda: status(orch.url, task_id) == "failed", what="the task to fail")
        record = httpx.get(f"{orch.url}/v2/tasks/{task_id}").json()
        assert record["error_code"] == "WORKER_RESET"
        assert "TooLarge" in record["error_message"]
        with httpx.stream("GET", f"{orch.url}/v2/tasks/{task_id}/events", timeout=10) as s:
            events = read_events(s.iter_lines())
        assert events[-1].event == "error" and events[-1].data["retriable"] is True
        wait_for(lambda: fake.executes_closed == 1, what="the worker connection to close")
    assert httpx.get(orch.url + "/health").status_code == 200
