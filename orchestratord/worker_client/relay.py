"""The worker side of the relay: POST /execute, whose SSE frames go to a callback as (event, raw
data); POST /embeddings, whose reply is one JSON body.

Frames are split by hand on bytes: a token's JSON data is never decoded here, so the task log
can pass it through to clients as is. The callback runs inside the socket's read callback
(worker_client/http1.py): no task switch and no async generator hop per token.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx

from orchestratord.worker_client.http1 import (
    BadUrl,
    Call,
    ConnectionPool,
    HttpStatusError,
    ProtocolError,
)

# (event name, raw data) -> True when the stream has given all the caller needs.
OnEvent = Callable[[str, bytes], bool]


class WorkerRefused(Exception):
    """The worker answered /execute with an error status instead of a stream."""

    def __init__(self, status: int, body: bytes) -> None:
        super().__init__(f"worker answered {status}: {body[:200]!r}")
        self.status = status
        self.body = body


class WorkerLost(Exception):
    """The worker could not be reached (its URL included), or its connection failed or went
    silent."""


class StreamBroken(Exception):
    """The worker's stream ended without an end or error event."""


def auth_headers(token: str | None) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"} if token else {}


class SseSplitter:
    """Split an SSE byte stream, fed in arbitrary pieces, into (event name, data bytes) frames;
    comments are dropped. CRLF line ends are accepted, also when a piece ends between them."""

    __slots__ = ("_buf", "_held")

    def __init__(self) -> None:
        self._buf = b""
        self._held = b""  # a trailing CR whose LF may come in the next piece

    def feed(self, chunk: bytes) -> list[tuple[str, bytes]]:
        if self._held or b"\r" in chunk:
            chunk = self._held + chunk
            self._held = b""
            if chunk.endswith(b"\r"):
                chunk, self._held = chunk[:-1], b"\r"
            chunk = chunk.replace(b"\r\n", b"\n")
        buf = self._buf + chunk if self._buf else chunk
        out: list[tuple[str, bytes]] = []
        start = 0
        while True:
            end = buf.find(b"\n\n", start)
            if end < 0:
                break
            frame = buf[start:end]
            start = end + 2
            event = b"message"
            data: list[bytes] = []
            for line in frame.split(b"\n"):
                if line.startswith(b"data:"):
                    data.append(line[6:] if line[5:6] == b" " else line[5:])
                elif line.startswith(b"event:"):
                    event = line[6:].strip()
            if data:
                out.append((event.decode(), b"\n".join(data)))
        self._buf = buf[start:]
        return out


class Execution:
    """One job on a worker: its events go to `on_event` as they arrive, until `on_event` returns
    True. In the two steps of http1.Call: `send_now()` puts the request on a kept-alive
    connection from synchronous code (the dispatch), `run()` does the rest.

    `run()` raises WorkerRefused for a non-200 answer, WorkerLost when the worker cannot be
    reached (its URL included) or the connection fails or goes silent, StreamBroken when the
    stream ends before `on_event` said it was done, and whatever `on_event` raises. Cancelling
    it closes the connection, which the worker treats as a cancel; a stream read to its end
    leaves its connection in `pool` for the next job. `close()` ends a job that was sent but
    whose `run()` will never be awaited.
    """

    def __init__(
        self,
        url: str,
        token: str | None,
        body: dict[str, Any],
        on_event: OnEvent,
        *,
        connect_timeout: float,
        read_timeout: float,
        pool: ConnectionPool | None = None,
    ) -> None:
        self._splitter = SseSplitter()
        self._on_event = on_event
        self.finished = False
        self._read_timeout = read_timeout
        self._call: Call | BadUrl
        try:
            self._call = Call(
                url.rstrip("/") + "/execute",
                body,
                auth_headers(token),
                self._on_body,
                connect_timeout=connect_timeout,
                read_timeout=read_timeout,
                pool=pool,
            )
        except BadUrl as e:
            self._call = e

    def _on_body(self, piece: bytes) -> bool:
        for name, raw in self._splitter.feed(piece):
            if self._on_event(name, raw):
                self.finished = True
                return True
        return False

    def send_now(self) -> bool:
        return isinstance(self._call, Call) and self._call.send_now()

    def close(self) -> None:
        if isinstance(self._call, Call):
            self._call.close()

    async def run(self) -> None:
        await _run(self._call, self._read_timeout)
        if not self.finished:
            raise StreamBroken("the worker closed its stream without an end or error event")


async def execute(
    url: str,
    token: str | None,
    body: dict[str, Any],
    on_event: OnEvent,
    *,
    connect_timeout: float,
    read_timeout: float,
    pool: ConnectionPool | None = None,
) -> None:
    """Run one job on a worker in one step (see Execution)."""
    execution = Execution(
        url,
        token,
        body,
        on_event,
        connect_timeout=connect_timeout,
        read_timeout=read_timeout,
        pool=pool,
    )
    await execution.run()


async def embed(
    url: str,
    token: str | None,
    body: dict[str, Any],
    *,
    connect_timeout: float,
    read_timeout: float,
    pool: ConnectionPool | None = None,
) -> bytes:
    """POST /embeddings on a worker and return its 200 body, with the same errors as an
    Execution (WorkerRefused for another status, WorkerLost when it cannot be reached or fails)."""
    pieces: list[bytes] = []

    def on_body(piece: bytes) -> bool:
        pieces.append(piece)
        return False

    call: Call | BadUrl
    try:
        call = Call(
            url.rstrip("/") + "/embeddings",
            body,
            auth_headers(token),
            on_body,
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            pool=pool,
        )
    except BadUrl as e:
        call = e
    await _run(call, read_timeout)
    return b"".join(pieces)


async def _run(call: Call | BadUrl, read_timeout: float) -> None:
    """Run one POST to a worker, its failures mapped to WorkerRefused and WorkerLost."""
    try:
        if isinstance(call, BadUrl):
            raise call
        await call.run()
    except HttpStatusError as e:
        raise WorkerRefused(e.status, e.body) from None
    except TimeoutError as e:
        raise WorkerLost(f"no answer within {read_timeout:g}s (or connect timeout)") from e
    except (OSError, ProtocolError) as e:
        raise WorkerLost(f"{type(e).__name__}: {e}") from e
    except BadUrl as e:
        raise WorkerLost(f"its URL is unusable: {e}") from e


async def cancel_job(
    client: httpx.AsyncClient, url: str, token: str | None, job_id: str, wait_s: float = 2.0
) -> bool:
    """Best-effort POST /cancel; True when the worker says it cancelled the running job (its
    stream then ends with `end{CANCELLED}`), False when it did not know the job or failed."""
    try:
        r = await client.post(
            url.rstrip("/") + "/cancel",
            json={"job_id": job_id},
            headers=auth_headers(token),
            timeout=wait_s,
        )
        return r.status_code < 300 and r.json().get("state") == "cancelled"
    except (httpx.HTTPError, ValueError, AttributeError):
        return False
