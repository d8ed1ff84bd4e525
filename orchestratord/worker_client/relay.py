"""The worker side of the relay: POST /execute, then the worker's SSE frames as (event, raw data);
POST /embeddings, whose reply is one JSON body.

Frames are split by hand on bytes: a token's JSON data is never decoded here, so the task log
can pass it through to clients as is.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import httpx

from orchestratord.worker_client.http1 import BadUrl, HttpStatusError, ProtocolError, post_stream


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


async def iter_sse(chunks: AsyncIterator[bytes]) -> AsyncIterator[tuple[str, bytes]]:
    """Split an SSE byte stream into (event name, data bytes); comments are dropped."""
    buf = b""
    held = b""  # a trailing CR whose LF may come in the next chunk
    async for chunk in chunks:
        if held or b"\r" in chunk:
            chunk = held + chunk
            held = b""
            if chunk.endswith(b"\r"):
                chunk, held = chunk[:-1], b"\r"
            chunk = chunk.replace(b"\r\n", b"\n")
        buf = buf + chunk if buf else chunk
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
                yield event.decode(), b"\n".join(data)
        buf = buf[start:]


async def execute(
    url: str,
    token: str | None,
    body: dict[str, Any],
    *,
    connect_timeout: float,
    read_timeout: float,
) -> AsyncIterator[tuple[str, bytes]]:
    """Run one job on a worker and yield its events until the stream closes.

    Raises WorkerRefused for a non-200 answer and WorkerLost when the worker cannot be reached
    or the connection fails; closing the generator closes the connection, which the worker
    treats as a cancel.
    """
    stream = post_stream(
        url.rstrip("/") + "/execute",
        body,
        auth_headers(token),
        connect_timeout=connect_timeout,
        read_timeout=read_timeout,
    )
    try:
        async with contextlib.aclosing(stream) as chunks:
            async for item in iter_sse(chunks):
                yield item
    except HttpStatusError as e:
        raise WorkerRefused(e.status, e.body) from None
    except TimeoutError as e:
        raise WorkerLost(f"no answer within {read_timeout:g}s (or connect timeout)") from e
    except (OSError, ProtocolError) as e:
        raise WorkerLost(f"{type(e).__name__}: {e}") from e
    except BadUrl as e:
        raise WorkerLost(f"its URL is unusable: {e}") from e


async def embed(
    url: str,
    token: str | None,
    body: dict[str, Any],
    *,
    connect_timeout: float,
    read_timeout: float,
) -> bytes:
    """POST /embeddings on a worker and return its 200 body, with the same errors as `execute`
    (WorkerRefused for another status, WorkerLost when it cannot be reached or fails)."""
    stream = post_stream(
        url.rstrip("/") + "/embeddings",
        body,
        auth_headers(token),
        connect_timeout=connect_timeout,
        read_timeout=read_timeout,
    )
    try:
        async with contextlib.aclosing(stream) as chunks:
            return b"".join([chunk async for chunk in chunks])
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
