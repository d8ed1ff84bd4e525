"""A reservation (a worker slot, a tenant's running count) is released exactly once, however
its task ends (ORCH-141)."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from orchestratord.domain.registry import Registry, Worker
from orchestratord.domain.reservations import Ledger
from orchestratord.domain.tasks import parse_task_request
from orchestratord.domain.tenancy import Caller
from orchestratord.metrics import Metrics
from orchestratord.policy import PolicyEngine, PolicyHolder
from orchestratord.runtime.dispatch import dispatch_pass
from orchestratord.runtime.service import TaskService
from orchestratord.settings import Settings
from orchestratord.worker_client.relay import execute


def test_orch_141_a_reservation_releases_once() -> None:
    registry = Registry(100, 1000)
    registry.register(Worker("w1", "http://127.0.0.1:1", "m", slots_total=2), 0)
    ledger = Ledger(registry)
    with ledger.reserve("w1", "t1", "acme") as r:
        worker = registry.get("w1")
        assert worker is not None and worker.inflight == {"t1"}
        assert ledger.running_by_tenant == {"acme": 1}
    assert worker.inflight == set() and ledger.running_by_tenant == {}
    assert r.release() is False  # twice: nothing more is given back
    assert ledger.running_by_tenant == {}


@pytest.mark.anyio
async def test_orch_141_a_runner_cancelled_before_its_first_step_frees_its_slot(
    tmp_path: object,
) -> None:
    """The issue-8 leak: `cancel` cancelled a runner that `dispatch` had created but that had
    not started; its `finally` never ran, so the slot and the tenant's count stayed taken."""
    settings = Settings(state_dir=tmp_path)  # type: ignore[arg-type]
    async with httpx.AsyncClient() as client:
        service = TaskService(
            settings,
            policy=PolicyHolder(PolicyEngine.from_file(None)),
            metrics=Metrics(),
            client=client,
        )
        service.register_worker(Worker("w1", "http://127.0.0.1:1", "m", slots_total=1))
        req = parse_task_request({"model": "m", "prompt": "hi"}, caller=Caller("acme"))
        record = await service.submit(req)
        # Placed by the submission itself (ORCH-050): a runner exists, and has not run a step.
        assert dispatch_pass(service) == 0 and record.status == "running"
        assert service.tasks[record.id].runner is not None
        assert service.running_by_tenant == {"acme": 1}
        await service.cancel(record.id)
        worker = service.registry.get("w1")
        assert worker is not None and worker.inflight == set() and worker.slots_busy == 0
        assert service.running_by_tenant == {}
        got = await service.get(record.id)
        assert got.status == "cancelled" and got.stop_reason == "CANCELLED"
        await service.stop()


@pytest.mark.anyio
async def test_orch_050_051_a_submission_sends_its_request_at_once_and_a_cancel_closes_it(
    tmp_path: object,
) -> None:
    """With a kept-alive connection to the worker, the request is written by the submission
    itself, before its runner ran a step; cancelling the task then (the runner never runs)
    closes that connection, which the worker takes as a cancel, and frees the slot."""
    got: list[bytes] = []
    closed = asyncio.Event()

    async def worker(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await serve(reader, writer)
        finally:
            writer.close()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
            got.append(head + await reader.readexactly(length))
            if len(got) == 1:  # the warm-up: a whole stream, and the connection stays open
                writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
                frame = b"event: end\ndata: {}\n\n"
                writer.write(b"%x\r\n%s\r\n0\r\n\r\n" % (len(frame), frame))
                await writer.drain()
                continue
            await reader.read()  # the task's request: no answer; wait for the close
            closed.set()
            return

    server = await asyncio.start_server(worker, "127.0.0.1", 0)
    url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    settings = Settings(state_dir=tmp_path)  # type: ignore[arg-type]
    async with server, httpx.AsyncClient() as client:
        service = TaskService(
            settings,
            policy=PolicyHolder(PolicyEngine.from_file(None)),
            metrics=Metrics(),
            client=client,
        )
        await execute(
            url,
            None,
            {},
            lambda name, _: name == "end",
            connect_timeout=2,
            read_timeout=2,
            pool=service.connections,
        )
        assert service.connections.idle() == 1  # the stream ended whole: its connection kept
        service.register_worker(Worker("w1", url, "m", slots_total=1))
        req = parse_task_request({"model": "m", "prompt": "hi"}, caller=Caller("acme"))
        record = await service.submit(req)
        assert service.connections.idle() == 0  # taken, and the request written to it
        await service.cancel(record.id)
        await asyncio.wait_for(closed.wait(), 5)
        assert b'"job_id":"' + record.id.encode() + b'.1"' in got[1]
        assert service.running_by_tenant == {}
        assert (await service.get(record.id)).status == "cancelled"
        await service.stop()
