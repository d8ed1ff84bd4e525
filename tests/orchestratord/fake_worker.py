"""A stand-in worker on loopback, for what llorch-workerd never does: a stream that runs until
its reader goes away, an answer past orchestratord's caps. A real HTTP server (asyncio streams)
in a thread of its own, registered and heartbeating with a real orchestratord the way
llorch-workerd is; it records every request line it gets."""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx

from tests.orchestratord.cluster import AUTH, MODEL

# Writes the answer to POST /execute; the connection closes when it returns or raises.
Reply = Callable[[asyncio.StreamWriter], Coroutine[Any, Any, None]]
CHUNKED = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def sse(event: str, data: object) -> bytes:
    return chunk(f"event: {event}\ndata: {json.dumps(data)}\n\n".encode())


async def endless_tokens(writer: asyncio.StreamWriter) -> None:
    """`started`, then a token every 10 ms for as long as the reader stays."""
    writer.write(CHUNKED + sse("started", {"job_id": "j", "model": MODEL, "prompt_tokens": 1}))
    i = 0
    while True:
        writer.write(sse("token", {"t": "x", "i": i}))
        await writer.drain()
        await asyncio.sleep(0.01)
        i += 1


@dataclass
class FakeWorker:
    url: str
    requests: list[str] = field(default_factory=list)  # "POST /execute", "POST /cancel", ...
    executes_closed: int = 0  # /execute connections that orchestratord closed


@contextlib.contextmanager
def fake_worker(orch_url: str, worker_id: str, execute: Reply) -> Iterator[FakeWorker]:
    """Serve, register with `orch_url` and heartbeat every 0.25 s until the block ends."""
    ready = threading.Event()
    holder: list[FakeWorker] = []
    stop: list[Callable[[], object]] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        fake = holder[0]
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
            await reader.readexactly(length)
            line = head.split(b"\r\n", 1)[0].decode()
            fake.requests.append(line.rsplit(" ", 1)[0])
            if line.startswith("POST /execute"):
                replying = asyncio.create_task(execute(writer))
                with contextlib.suppress(ConnectionError, OSError):
                    await reader.read()  # until orchestratord closes the connection
                fake.executes_closed += 1
                replying.cancel()
                await asyncio.wait([replying])
                if not replying.cancelled():
                    replying.exception()  # a write to the closed connection failed: expected
            else:  # /cancel, as llorch-workerd answers it, without ending any stream
                body = b'{"job_id":"j","state":"cancelled","tokens_emitted":0}'
                writer.write(b"HTTP/1.1 202 Accepted\r\nContent-Length: %d\r\n" % len(body))
                writer.write(b"Connection: close\r\n\r\n" + body)
                await writer.drain()
        except (ConnectionError, OSError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    async def main() -> None:
        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        holder.append(FakeWorker(f"http://127.0.0.1:{port}"))
        done = asyncio.Event()
        loop = asyncio.get_running_loop()
        stop.append(lambda: loop.call_soon_threadsafe(done.set))
        body = {"worker_id": worker_id, "url": holder[0].url, "model": MODEL, "slots_total": 4}
        beat = {"state": "ready", "slots_total": 4, "slots_busy": 0}
        async with server, httpx.AsyncClient(headers=AUTH, timeout=5) as http:
            (await http.post(orch_url + "/v2/workers/register", json=body)).raise_for_status()
            ready.set()
            while not done.is_set():
                await http.post(f"{orch_url}/v2/workers/{worker_id}/heartbeat", json=beat)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(done.wait(), 0.25)

    thread = threading.Thread(target=asyncio.run, args=(main(),), daemon=True)
    thread.start()
    assert ready.wait(10), "the fake worker did not register"
    try:
        yield holder[0]
    finally:
        stop[0]()
        thread.join(10)
