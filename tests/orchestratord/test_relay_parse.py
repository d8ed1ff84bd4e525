from __future__ import annotations

import asyncio

import pytest

from orchestratord.worker_client.http1 import TooLarge
from orchestratord.worker_client.relay import SseSplitter, WorkerLost, execute


def parse(chunks: list[bytes]) -> list[tuple[str, bytes]]:
    splitter = SseSplitter()
    return [frame for c in chunks for frame in splitter.feed(c)]


def test_frames_split_across_chunks_and_batched_in_one() -> None:
    stream = (
        b'id: 0\nevent: started\ndata: {"a":1}\n\n'
        b'id: 1\nevent: token\ndata: {"t":"x","i":0}\n\n'
        b": ping\n\n"
        b'id: 2\nevent: end\ndata: {"tokens_out":1}\n\n'
    )
    expected = [
        ("started", b'{"a":1}'),
        ("token", b'{"t":"x","i":0}'),
        ("end", b'{"tokens_out":1}'),
    ]
    assert parse([stream]) == expected
    assert parse([stream[i : i + 1] for i in range(len(stream))]) == expected


def test_crlf_framing_even_when_split_between_cr_and_lf() -> None:
    stream = b'event: token\r\ndata: {"t":"y"}\r\n\r\n: ping\r\n\r\n'
    for cut in range(1, len(stream)):
        assert parse([stream[:cut], stream[cut:]]) == [("token", b'{"t":"y"}')]


@pytest.mark.parametrize(
    "url",
    ["http://127.0.0.1:99999", "http://h:port", "http://[", "http://\u0000", "http://" + "x" * 70],
)
def test_a_url_with_no_usable_host_or_port_is_a_lost_worker(url: str) -> None:
    # Not a ValueError out of the relay: that left the task open and its client waiting.
    async def run() -> None:
        await execute(url, None, {}, lambda *_: False, connect_timeout=1.0, read_timeout=1.0)

    with pytest.raises(WorkerLost, match="unusable"):
        asyncio.run(run())


@pytest.mark.parametrize(
    "frame",
    [
        b"event: token\ndata: 12345\n\n",
        b"id: 7\nevent: token\ndata: 12345\n\n",  # the worker's own shape, read in one match
    ],
)
def test_orch_054_an_event_past_the_cap_whole_or_pending_raises(frame: bytes) -> None:
    """The splitter holds at most `max_event` bytes of one event, whether the event came whole
    in one piece or is still waiting for its end."""
    size = len(frame) - 2  # the bytes before the blank line
    assert SseSplitter(max_event=size).feed(frame) == [("token", b"12345")]
    with pytest.raises(TooLarge):
        SseSplitter(max_event=size - 1).feed(frame)
    splitter = SseSplitter(max_event=size - 1)
    splitter.feed(frame[: size - 1])
    with pytest.raises(TooLarge):
        splitter.feed(frame[size - 1 : size])
