"""Server-sent events: framing on the hot path, and the one SSE response of both daemons.

Encoding by hand (not through a generic event class) keeps the per-token cost to one
`json.dumps` and a bytes join; the relay and the worker call this once per token.

`EventStream` is the only SSE response in llorch (orchestratord's /v2 and /v1 streams, the
worker's /execute). It exists because the cleanup of a stream must not depend on its body:
an async generator that was never iterated never runs its `finally`, so whatever a stream
must undo when it ends (cancel a task, give back a slot) goes in `on_close`, which runs when
the response ends however it ends: finished, client gone, failed, or never started.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import time
from collections.abc import (
    AsyncIterable,
    AsyncIterator,
    Awaitable,
    Callable,
    Coroutine,
    Mapping,
    Sequence,
)
from typing import Any

from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from shared.problem import ApiError

_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
_json_str = json.encoder.encode_basestring  # what _dumps writes a str as (ensure_ascii=False)
# JSON leaves these unescaped, but many SSE clients split lines with str.splitlines(), which
# breaks on them (the SSE spec itself splits only on CR and LF). Escaping keeps every client safe.
_LINE_BREAKERS = str.maketrans({"\u2028": "\\u2028", "\u2029": "\\u2029", "\x85": "\\u0085"})
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
OnClose = Callable[[], Awaitable[None] | None]
KEEPALIVE = b": keep-alive\n\n"
KEEPALIVE_S = 15.0  # an idle stream writes KEEPALIVE at least this often (ORCH-025)


def dumps(data: Mapping[str, Any] | list[Any] | str) -> str:
    """Compact JSON that is safe on one SSE `data:` line."""
    return _dumps(data).translate(_LINE_BREAKERS)


def encode_event(event: str, data: Mapping[str, Any], event_id: int | str | None = None) -> bytes:
    """Frame one SSE event. `data` is JSON without newlines, so one `data:` line suffices."""
    head = f"id: {event_id}\nevent: {event}\n" if event_id is not None else f"event: {event}\n"
    return (head + "data: " + dumps(data) + "\n\n").encode()


def encode_tokens(pieces: Sequence[str], first_index: int, first_id: int) -> bytes:
    """A run of worker `token` events, byte for byte what `encode_event("token", {"t": piece,
    "i": index}, id)` gives each, framed in one pass: the hot path of a fast stream."""
    frames = [
        f'id: {first_id + k}\nevent: token\ndata: {{"t":{_json_str(t)},"i":{first_index + k}}}\n\n'
        for k, t in enumerate(pieces)
    ]
    return "".join(frames).translate(_LINE_BREAKERS).encode()


def encode_tokens_with_ids(
    pieces: Sequence[str], ids: Sequence[Sequence[int]], first_index: int, first_id: int
) -> bytes:
    """`encode_tokens` with each event's token ids as its last member (WRK-161), byte for byte
    what `encode_event("token", {"t": piece, "i": index, "ids": ids}, id)` gives."""
    frames = [
        f'id: {first_id + k}\nevent: token\ndata: {{"t":{_json_str(t)},"i":{first_index + k},'
        f'"ids":[{",".join(map(str, ids[k]))}]}}\n\n'
        for k, t in enumerate(pieces)
    ]
    return "".join(frames).translate(_LINE_BREAKERS).encode()


def encode_data(data: Mapping[str, Any] | str) -> bytes:
    """A `data:`-only frame (OpenAI's stream shape); a str is sent as it is (`[DONE]`)."""
    return b"data: " + (data if isinstance(data, str) else dumps(data)).encode() + b"\n\n"


def encode_comment(text: str = "") -> bytes:
    """An SSE comment line, used as a keep-alive that clients ignore."""
    return f": {text}\n\n".encode()


class StreamStop:
    """Ends, from outside, every stream of the requests that carry it (a revoked API key,
    ORCH-302): whoever authenticates a request puts it in the ASGI scope's state under
    `STREAM_STOP`; `EventStream` waits on it beside the body, so a stream costs one waiting
    task and nothing per event, and `stop` ends them all at once, each with its error frame.
    """

    def __init__(self) -> None:
        self._event = asyncio.Event()
        self.error: ApiError | None = None

    def stop(self, error: ApiError) -> None:
        self.error = error
        self._event.set()

    @property
    def stopped(self) -> bool:
        return self._event.is_set()

    async def wait(self) -> ApiError:
        await self._event.wait()
        assert self.error is not None
        return self.error


STREAM_STOP = "stream_stop"  # the key of a request's StreamStop in scope["state"]


def error_frame(err: ApiError) -> bytes:
    """A stream's last frame when it is stopped: the `error` event of /v2 streams."""
    return encode_event("error", {"code": err.code, "message": err.detail, "retriable": False})


class Last(bytes):
    """A stream's last chunk: `EventStream` sends it with the end of the response, in one write
    (the reader gets one packet and one wake-up fewer). The body yields nothing after it."""


class EventStream(Response):
    """An SSE response over pre-framed chunks of bytes.

    - It listens for `http.disconnect` itself, so a client that goes away is noticed at once,
      not at the next write (a queued task writes nothing for a long time).
    - An empty chunk, or `keepalive_s` without a write, sends a keep-alive comment.
    - `on_close` runs exactly once when the response ends, whether or not the body was ever
      iterated, shielded from the cancellation that ends the response.
    - A `StreamStop` in the request's scope state ends it early with `stop_frame(error)` (the
      route's own error shape; /v2's `error` event by default).
    """

    media_type = "text/event-stream"

    def __init__(
        self,
        body: AsyncIterable[bytes],
        *,
        on_close: OnClose | None = None,
        headers: Mapping[str, str] | None = None,
        keepalive_s: float | None = None,
        stop_frame: Callable[[ApiError], bytes] = error_frame,
    ) -> None:
        self.body_iter = body
        self.on_close = on_close
        self.keepalive_s = keepalive_s
        self.stop_frame = stop_frame
        self.status_code = 200
        self.background = None
        self.init_headers({**SSE_HEADERS, **(headers or {})})
        self.completed = False  # True when the body ended and its last byte was sent
        self._closed = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # Plain asyncio, no anyio task group: a task group and its cancel scopes cost more per
        # response than the rest of a short stream. The response runs in the server's task for
        # the request (`me`); a watcher task cancels it when the client goes away, and that
        # cancellation is told apart from any other by `gone`.
        me = asyncio.current_task()
        assert me is not None
        # asyncio's lock takes an uncontended acquire without a trip through the event loop
        # (anyio's checkpoints on every acquire: a loop iteration per token written).
        lock = asyncio.Lock()
        last_write = time.monotonic()
        gone = False
        stopped: ApiError | None = None
        ending = False
        stop = scope.get("state", {}).get(STREAM_STOP)

        async def write(chunk: bytes, more: bool = True) -> None:
            nonlocal last_write, ending
            async with lock:
                ending = ending or not more  # nothing may follow the end, a stop frame neither
                await send({"type": "http.response.body", "body": chunk, "more_body": more})
                last_write = time.monotonic()

        async def watch() -> None:
            nonlocal gone
            while (await receive())["type"] != "http.disconnect":
                pass
            gone = True
            me.cancel()

        async def halt(switch: StreamStop) -> None:
            nonlocal stopped
            stopped = await switch.wait()
            me.cancel()

        async def ping(every: float) -> None:
            while True:
                await asyncio.sleep(max(0.0, last_write + every - time.monotonic()))
                if time.monotonic() - last_write >= every:
                    await write(KEEPALIVE)

        helpers = [asyncio.create_task(watch())]
        try:
            with contextlib.suppress(OSError):  # ASGI 2.4: a write to a closed connection
                await send(
                    {"type": "http.response.start", "status": 200, "headers": self.raw_headers}
                )
                if isinstance(stop, StreamStop):  # once started: the stop frame needs a start
                    helpers.append(asyncio.create_task(halt(stop)))
                if self.keepalive_s:
                    helpers.append(asyncio.create_task(ping(self.keepalive_s)))
                last = False
                async for chunk in self.body_iter:
                    last = isinstance(chunk, Last)
                    await write(chunk or KEEPALIVE, more=not last)
                    if last:
                        break
                if not last:
                    await write(b"", more=False)
                self.completed = True
        except asyncio.CancelledError:
            if not (gone or stopped) or me.uncancel() > 0:  # not (only) ours: pass it on
                raise
            if stopped is not None and not gone and not ending:
                for helper in helpers:  # nothing may cancel or interleave with the last write
                    helper.cancel()
                with contextlib.suppress(OSError):
                    await write(self.stop_frame(stopped), more=False)
        finally:
            for helper in helpers:  # no await since the body ended: `watch` cancels no more
                helper.cancel()
            await _shielded(self._end_body())

    async def _end_body(self) -> None:
        aclose = getattr(self.body_iter, "aclose", None)
        if aclose is not None:
            await aclose()
        await self.close()

    async def close(self) -> None:
        """Run `on_close` once (also for a response that was never sent)."""
        if self._closed:
            return
        self._closed = True
        if self.on_close is not None:
            result = self.on_close()
            if inspect.isawaitable(result):
                await result


async def _shielded(work: Coroutine[Any, Any, None]) -> None:
    """Run `work` to its end even if the calling task is cancelled meanwhile (then re-raise the
    cancellation afterwards): a stream's cleanup must not be cut short by what ended it."""
    task = asyncio.ensure_future(work)
    cancelled = False
    while not task.done():
        try:
            await asyncio.wait({task})  # unlike awaiting the task, never cancels it
        except asyncio.CancelledError:
            cancelled = True
    task.result()
    if cancelled:
        raise asyncio.CancelledError


async def chunks_of(frames: AsyncIterator[list[bytes]]) -> AsyncIterator[bytes]:
    """Join batches of frames into one chunk per batch (an empty batch: a keep-alive)."""
    async for batch in frames:
        yield b"".join(batch)
