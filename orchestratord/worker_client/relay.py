"""The worker side of the relay: POST /execute, whose SSE frames go to a callback as (event, raw
data); POST /embeddings, whose reply is one JSON body.

Frames are split by hand on bytes: a token's JSON data is never decoded here, so the task log
can pass it through to clients as is. The callback runs inside the socket's read callback
(worker_client/http1.py): no task switch and no async generator hop per token.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from orchestratord.worker_client.http1 import (
    BadUrl,
    ConnectionPool,
    HttpStatusError,
    ProtocolError,
    TooLarge,
    post,
)

# (event name, raw data) -> True when the stream has given all the caller needs.
OnEvent = Callable[[str, bytes], bool]

# Caps on what a worker's answer may make orchestratord hold (ORCH-054); past one, the
# exchange fails as a lost worker's. An SSE event (a started/end, or a batch of tokens) is
# a few hundred bytes; 1 MiB leaves room for any honest one.
MAX_SSE_EVENT = 1 << 20
# A small JSON answer (`/tokenize`'s count) is tens of bytes.
MAX_SMALL_REPLY = 1 << 16
# An /embeddings reply carries one vector per input: up to EMBED_MAX_DIM floats, each at most
# EMBED_FLOAT_BYTES of JSON ("-1.2345678901234567e-05," is 24), plus the object around it.
EMBED_MAX_DIM = 16384
EMBED_FLOAT_BYTES = 32
EMBED_ITEM_BYTES = 256
EMBED_REPLY_BYTES = 1 << 16


def embeddings_cap(n_inputs: int) -> int:
    """The largest /embeddings reply accepted for `n_inputs` inputs (about 16 MiB for 32)."""
    per_input = EMBED_MAX_DIM * EMBED_FLOAT_BYTES + EMBED_ITEM_BYTES
    return EMBED_REPLY_BYTES + max(1, n_inputs) * per_input


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


# A frame as the worker writes every one (shared.sse): an id, an event and one data line. Such
# a frame is read with one match; any other shape goes through the general parse below, and
# both give the same result for it. (Per event, on the relay's hot path: ~60 per task.)
_WORKER_FRAME = re.compile(rb"id: [0-9]+\nevent: ([a-z_]+)\ndata: ([^\n]*)\n\n")


class SseSplitter:
    """Split an SSE byte stream, fed in arbitrary pieces, into (event name, data bytes) frames;
    comments are dropped. CRLF line ends are accepted, also when a piece ends between them.
    A frame longer than `max_event` bytes (whole or still incomplete) raises TooLarge."""

    __slots__ = ("_buf", "_held", "max_event")

    def __init__(self, max_event: int = MAX_SSE_EVENT) -> None:
        self._buf = b""
        self._held = b""  # a trailing CR whose LF may come in the next piece
        self.max_event = max_event

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
        match = _WORKER_FRAME.match
        while True:
            m = match(buf, start)
            if m is not None and m.end() - 2 - start <= self.max_event:
                out.append((m[1].decode(), m[2]))
                start = m.end()
                continue
            end = buf.find(b"\n\n", start)
            if end < 0:
                break
            if end - start > self.max_event:
                raise TooLarge(f"an SSE event over {self.max_event} bytes")
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
        if len(self._buf) > self.max_event:
            raise TooLarge(f"an SSE event over {self.max_event} bytes")
        return out


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
    """Run one job on a worker, handing each of its events to `on_event` as it arrives, until
    `on_event` returns True (the connection is then closed).

    Raises WorkerRefused for a non-200 answer, WorkerLost when the worker cannot be reached
    or the connection fails or goes silent, StreamBroken when the stream ends before `on_event`
    said it was done, and whatever `on_event` raises. Cancelling the call closes the
    connection, which the worker treats as a cancel; a stream read to its end leaves its
    connection in `pool` for the next job.
    """
    splitter = SseSplitter()
    finished = False

    def on_body(piece: bytes) -> bool:
        nonlocal finished
        for name, raw in splitter.feed(piece):
            if on_event(name, raw):
                finished = True
                return True
        return False

    url = url.rstrip("/") + "/execute"
    await _post(url, token, body, on_body, connect_timeout, read_timeout, pool)
    if not finished:
        raise StreamBroken("the worker closed its stream without an end or error event")


async def embed(
    url: str,
    token: str | None,
    body: dict[str, Any],
    *,
    connect_timeout: float,
    read_timeout: float,
    pool: ConnectionPool | None = None,
) -> bytes:
    """POST /embeddings on a worker and return its 200 body, with the same errors as `execute`
    (WorkerRefused for another status, WorkerLost when it cannot be reached or fails, or
    answers more than `embeddings_cap` of the body's inputs)."""
    cap = embeddings_cap(len(body.get("input") or ()))
    url = url.rstrip("/") + "/embeddings"
    return await _post_whole(url, token, body, cap, connect_timeout, read_timeout, pool)


async def count_tokens(
    url: str,
    token: str | None,
    body: dict[str, Any],
    *,
    connect_timeout: float,
    read_timeout: float,
    pool: ConnectionPool | None = None,
) -> int:
    """POST /tokenize on a worker: the prompt's length in the model's tokens (WRK-032), with the
    same errors as `embed`."""
    return (
        await tokenize(
            url,
            token,
            body,
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            pool=pool,
        )
    ).n_tokens


@dataclass(frozen=True, slots=True)
class Tokenized:
    n_tokens: int
    block_size: int = 0  # 0: the worker sent no block hashes (WRK-173)
    block_hashes: tuple[int, ...] = ()


async def tokenize(
    url: str,
    token: str | None,
    body: dict[str, Any],
    *,
    connect_timeout: float,
    read_timeout: float,
    pool: ConnectionPool | None = None,
) -> Tokenized:
    """POST /tokenize on a worker: the prompt's length and its token-block hashes (WRK-032,
    WRK-173), with the same errors as `embed`."""
    url = url.rstrip("/") + "/tokenize"
    answer = await _post_whole(
        url, token, body, MAX_SMALL_REPLY, connect_timeout, read_timeout, pool
    )
    try:
        reply = json.loads(answer)
        n = reply["n_tokens"]
    except (ValueError, TypeError, KeyError) as e:
        raise WorkerLost(f"/tokenize answered without n_tokens: {e}") from e
    if not isinstance(n, int) or isinstance(n, bool):
        raise WorkerLost("/tokenize answered a non-integer n_tokens")
    size, hashes = reply.get("block_size"), reply.get("block_hashes")
    if (
        isinstance(size, int)
        and size > 0
        and isinstance(hashes, list)
        and all(isinstance(h, int) and not isinstance(h, bool) for h in hashes)
    ):
        return Tokenized(n, size, tuple(hashes))
    return Tokenized(n)


async def _post_whole(
    url: str,
    token: str | None,
    body: dict[str, Any],
    cap: int,
    connect_timeout: float,
    read_timeout: float,
    pool: ConnectionPool | None,
) -> bytes:
    """One POST to a worker and its whole 200 body, which may not pass `cap` bytes (ORCH-054:
    past it the exchange fails as a lost worker's)."""
    pieces: list[bytes] = []
    left = cap

    def on_body(piece: bytes) -> bool:
        nonlocal left
        left -= len(piece)
        if left < 0:
            raise TooLarge(f"a reply over {cap} bytes from {url}")
        pieces.append(piece)
        return False

    await _post(url, token, body, on_body, connect_timeout, read_timeout, pool)
    return b"".join(pieces)


async def _post(
    url: str,
    token: str | None,
    body: dict[str, Any],
    on_body: Callable[[bytes], bool],
    connect_timeout: float,
    read_timeout: float,
    pool: ConnectionPool | None,
) -> None:
    """One POST to a worker, its failures mapped to WorkerRefused and WorkerLost."""
    try:
        await post(
            url,
            body,
            auth_headers(token),
            on_body,
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            pool=pool,
        )
    except HttpStatusError as e:
        raise WorkerRefused(e.status, e.body) from None
    except TimeoutError as e:
        raise WorkerLost(f"no answer within {read_timeout:g}s (or connect timeout)") from e
    except (OSError, ProtocolError) as e:
        raise WorkerLost(f"{type(e).__name__}: {e}") from e
    except BadUrl as e:
        raise WorkerLost(f"its URL is unusable: {e}") from e
