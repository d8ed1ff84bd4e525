"""The one SSE response (shared.sse.EventStream): its `on_close` runs however the response
ends, also when its body was never iterated (ORCH-142); frames are escaped (ORCH-143)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, MutableMapping
from typing import Any

import anyio
import pytest

from shared.problem import Unauthorized
from shared.sse import (
    STREAM_STOP,
    EventStream,
    Last,
    StreamStop,
    encode_data,
    encode_event,
    encode_tokens,
    encode_tokens_with_ids,
)


async def receive() -> dict[str, Any]:
    await anyio.sleep(3600)  # the client stays: no http.disconnect
    raise AssertionError


def _never_started_body(log: list[str]) -> AsyncIterator[bytes]:
    async def body() -> AsyncIterator[bytes]:
        try:
            log.append("body started")
            yield b"data: {}\n\n"
        finally:
            log.append("body finally")

    return body()


@pytest.mark.anyio
async def test_orch_142_on_close_runs_when_the_body_was_never_iterated() -> None:
    log: list[str] = []

    async def send(message: MutableMapping[str, Any]) -> None:
        raise OSError("the client is gone")  # before the first byte: the body never starts

    response = EventStream(_never_started_body(log), on_close=lambda: log.append("on_close"))
    await response({"type": "http"}, receive, send)
    # A generator's own `finally` never runs when it never started: that is why on_close exists.
    assert log == ["on_close"]
    assert not response.completed


@pytest.mark.anyio
async def test_orch_142_on_close_runs_once_after_a_complete_stream() -> None:
    log: list[str] = []
    sent: list[MutableMapping[str, Any]] = []

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(message)

    async def closing() -> None:
        log.append("on_close")

    response = EventStream(_never_started_body(log), on_close=closing)
    await response({"type": "http"}, receive, send)
    await response.close()
    assert log == ["body started", "body finally", "on_close"]
    assert response.completed and sent[-1]["more_body"] is False


def _recorder(sent: list[MutableMapping[str, Any]]) -> Any:
    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(message)

    return send


@pytest.mark.anyio
async def test_a_last_chunk_goes_out_with_the_end_of_the_response() -> None:
    """A body's `Last` chunk is sent with `more_body: False`: one write, not the chunk and then
    an empty end of body; the body is not read past it. Without one, the end is its own
    message, as before."""
    read: list[bytes] = []

    async def body(chunks: list[bytes]) -> AsyncIterator[bytes]:
        for chunk in chunks:
            read.append(chunk)
            yield chunk

    for chunks, want in (
        ([b"a", Last(b"end"), b"never"], [(b"a", True), (b"end", False)]),
        ([b"a", b"end"], [(b"a", True), (b"end", True), (b"", False)]),
    ):
        read.clear()
        sent: list[MutableMapping[str, Any]] = []
        response = EventStream(body(chunks))
        await response({"type": "http"}, receive, _recorder(sent))
        assert [(m["body"], m["more_body"]) for m in sent[1:]] == want
        assert response.completed and b"never" not in read


def test_orch_143_frames_escape_unicode_line_separators() -> None:
    text = "a\u2028b\u2029c\x85d"
    for frame in (encode_event("token", {"t": text}), encode_data({"t": text})):
        line = frame.decode().split("data: ", 1)[1]
        assert "\u2028" not in line and "\u2029" not in line and "\x85" not in line
        assert len(line.strip().splitlines()) == 1
        assert json.loads(line)["t"] == text


def test_orch_143_wrk080_a_run_of_token_events_is_framed_as_encode_event_frames_each() -> None:
    """`encode_tokens` (the worker's hot path) writes exactly the bytes of one `encode_event`
    per token: quotes, backslashes, control characters, line separators, non-ASCII, empty."""
    pieces = ["a", '"q"\n\\', "\u2028x\u2029\x85", "é漢😀", "\x00\x1f\t", ""]
    want = b"".join(
        encode_event("token", {"t": t, "i": 7 + k}, 3 + k) for k, t in enumerate(pieces)
    )
    assert encode_tokens(pieces, 7, 3) == want
    assert encode_tokens([], 0, 0) == b""


def _endless_body(log: list[str]) -> AsyncIterator[bytes]:
    async def body() -> AsyncIterator[bytes]:
        try:
            while True:
                yield b"data: {}\n\n"
                await asyncio.sleep(0.01)
        finally:
            log.append("body finally")

    return body()


@pytest.mark.anyio
async def test_orch_142_a_client_that_leaves_mid_stream_ends_the_body_and_on_close_once() -> None:
    """The disconnect ends the response quietly (no cancellation escapes to the server), the
    body's `finally` runs, and `on_close` runs once."""
    log: list[str] = []
    sent: list[MutableMapping[str, Any]] = []

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(message)

    async def leaves() -> dict[str, Any]:
        await asyncio.sleep(0.1)
        return {"type": "http.disconnect"}

    response = EventStream(_endless_body(log), on_close=lambda: log.append("on_close"))
    await response({"type": "http"}, leaves, send)
    await response.close()
    assert log == ["body finally", "on_close"]
    assert not response.completed and len(sent) > 2


@pytest.mark.anyio
async def test_orch_142_on_close_runs_to_its_end_when_the_response_is_cancelled() -> None:
    """A cancellation from outside (the server shutting down) is passed on, but only after
    the cleanup finished, even when it is cancelled again during the cleanup."""
    log: list[str] = []
    closing = asyncio.Event()

    async def send(message: MutableMapping[str, Any]) -> None:
        pass

    async def slow_close() -> None:
        log.append("on_close started")
        closing.set()
        await asyncio.sleep(0.1)
        log.append("on_close done")

    response = EventStream(_endless_body(log), on_close=slow_close)
    task = asyncio.create_task(response({"type": "http"}, receive, send))
    await asyncio.sleep(0.05)
    task.cancel()
    await closing.wait()
    task.cancel()  # again, in the middle of the cleanup
    with pytest.raises(asyncio.CancelledError):
        await task
    assert log == ["body finally", "on_close started", "on_close done"]


@pytest.mark.anyio
async def test_orch_302_a_stream_stop_ends_the_stream_with_its_frame_and_runs_on_close() -> None:
    """ORCH-302: a `StreamStop` in the scope's state ends a stream whose body waits for ever:
    the route's stop frame is its last write, with the end of the response; the body is closed
    and on_close runs. A stream of another request (no stop) is untouched."""
    log: list[str] = []
    sent: list[MutableMapping[str, Any]] = []

    async def idle_body() -> AsyncIterator[bytes]:
        try:
            yield b"data: first\n\n"
            await anyio.sleep(3600)  # a queued task: nothing to write for a long time
            yield b"data: never\n\n"
        finally:
            log.append("body finally")

    stop = StreamStop()

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(message)
        if message.get("body") == b"data: first\n\n":
            stop.stop(Unauthorized("the API key key_1 was revoked"))

    response = EventStream(
        idle_body(),
        on_close=lambda: log.append("on_close"),
        stop_frame=lambda err: b"data: " + err.detail.encode() + b"\n\n",
    )
    with anyio.fail_after(10):
        await response({"type": "http", "state": {STREAM_STOP: stop}}, receive, send)
    bodies = [(m.get("body"), m.get("more_body")) for m in sent[1:]]
    assert bodies == [
        (b"data: first\n\n", True),
        (b"data: the API key key_1 was revoked\n\n", False),
    ]
    assert log == ["body finally", "on_close"] and not response.completed
    # The default frame is /v2's error event.
    default = EventStream(idle_body()).stop_frame(Unauthorized("revoked"))
    assert default.startswith(b"event: error\ndata: ")
    assert json.loads(default.split(b"data: ", 1)[1]) == {
        "code": "UNAUTHORIZED",
        "message": "revoked",
        "retriable": False,
    }


def test_wrk_161_token_events_with_ids_are_framed_as_encode_event_frames_each() -> None:
    """WRK-161: `encode_tokens_with_ids` (orchestratord's jobs) writes exactly the bytes of one
    `encode_event` per token, `ids` last, for the same awkward texts."""
    pieces = ["a", '"q"\n\\', "\u2028x\u2029\x85", "é漢😀", "\x00\x1f\t", ""]
    ids = [[1], [2, 3], [], [40000, 5, 6], [7], [8]]
    want = b"".join(
        encode_event("token", {"t": t, "i": 7 + k, "ids": ids[k]}, 3 + k)
        for k, t in enumerate(pieces)
    )
    assert encode_tokens_with_ids(pieces, ids, 7, 3) == want
    assert encode_tokens_with_ids([], [], 0, 0) == b""
