"""The relay's HTTP/1.1 client against real sockets serving canned responses."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from orchestratord.worker_client.http1 import HttpStatusError, ProtocolError, post

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


async def serve(handler: Handler) -> tuple[asyncio.Server, str]:
    async def closing(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await handler(reader, writer)
        finally:
            writer.close()

    server = await asyncio.start_server(closing, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    return server, f"http://127.0.0.1:{port}/execute"


async def read_request(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
    return head + await reader.readexactly(length)


async def collect(url: str, read_timeout: float = 5.0) -> bytes:
    pieces: list[bytes] = []

    def on_body(piece: bytes) -> bool:
        pieces.append(piece)
        return False

    await post(
        url,
        {"x": "é"},
        {"Authorization": "Bearer t"},
        on_body,
        connect_timeout=2,
        read_timeout=read_timeout,
    )
    return b"".join(pieces)


def test_chunked_stream_split_anywhere_is_reassembled() -> None:
    seen: list[bytes] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append(await read_request(reader))
        body = chunk(b"event: a\n") + chunk(b"data: {}\n\n") + b"0\r\n\r\n"
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        for i in range(len(body)):  # one byte at a time: every split point
            writer.write(body[i : i + 1])
            await writer.drain()
            await asyncio.sleep(0)
        writer.close()

    async def scenario() -> bytes:
        server, url = await serve(handler)
        async with server:
            return await collect(url)

    assert asyncio.run(scenario()) == b"event: a\ndata: {}\n\n"
    assert b"POST /execute HTTP/1.1" in seen[0] and b"Bearer t" in seen[0]
    assert seen[0].endswith('{"x":"é"}'.encode())


def test_error_status_and_plain_body() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 4\r\n\r\nbusy")
        writer.close()

    async def chunked(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 400 Bad Request\r\nTransfer-Encoding: chunked\r\n\r\n")
        writer.write(chunk(b'{"detail":') + chunk(b'"bad"}') + b"0\r\n\r\n")
        await writer.drain()

    async def scenario() -> None:
        server, url = await serve(handler)
        async with server:
            with pytest.raises(HttpStatusError) as e:
                await collect(url)
            assert (e.value.status, e.value.body) == (503, b"busy")
        server, url = await serve(chunked)  # the detail arrives whole, without the framing
        async with server:
            with pytest.raises(HttpStatusError) as e:
                await collect(url)
            assert (e.value.status, e.value.body) == (400, b'{"detail":"bad"}')

    asyncio.run(scenario())


def test_cut_stream_and_silence_and_refused_connection() -> None:
    async def cut(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + chunk(b"x"))
        await writer.drain()
        writer.close()

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        await reader.read()  # until the client gives up and closes
        writer.close()

    async def scenario() -> None:
        server, url = await serve(cut)
        async with server:
            with pytest.raises(ProtocolError):
                await collect(url)
        server, url = await serve(silent)
        async with server:
            with pytest.raises(TimeoutError):
                await collect(url, read_timeout=0.2)
        with pytest.raises(OSError):
            await collect(url)  # the server is closed: nothing listens there now

    asyncio.run(scenario())


def test_steady_data_keeps_the_read_timeout_off_and_silence_after_it_trips_it() -> None:
    """The read timeout is silence between reads, not the length of the stream (ORCH-051)."""

    async def trickle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        for _ in range(8):  # 0.4 s of data, a piece every 0.05 s, against a 0.2 s timeout
            writer.write(chunk(b"x"))
            await writer.drain()
            await asyncio.sleep(0.05)
        writer.write(b"0\r\n\r\n")
        await writer.drain()
        await reader.read()
        writer.close()

    async def then_silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + chunk(b"x"))
        await writer.drain()
        await reader.read()
        writer.close()

    async def scenario() -> None:
        server, url = await serve(trickle)
        async with server:
            assert await collect(url, read_timeout=0.2) == b"x" * 8
        server, url = await serve(then_silent)
        async with server:
            with pytest.raises(TimeoutError):
                await collect(url, read_timeout=0.2)

    asyncio.run(scenario())


def test_a_callback_that_has_enough_or_a_cancelled_caller_closes_the_connection() -> None:
    """Ending the exchange early closes the socket, which the worker takes as a cancel
    (ORCH-015, ORCH-051)."""
    closed: list[str] = []

    async def endless(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        try:
            while True:
                writer.write(chunk(b"data: {}\n\n"))
                await writer.drain()
                await asyncio.sleep(0.01)
        except (ConnectionError, OSError):
            closed.append("server saw the close")
        finally:
            writer.close()

    async def scenario() -> None:
        server, url = await serve(endless)
        async with server:
            seen: list[bytes] = []

            def enough(piece: bytes) -> bool:
                seen.append(piece)
                return len(seen) >= 3

            await post(url, {}, {}, enough, connect_timeout=2, read_timeout=5)
            assert len(seen) == 3
            for _ in range(100):
                if closed:
                    break
                await asyncio.sleep(0.02)
            assert closed == ["server saw the close"]
            task = asyncio.create_task(
                post(url, {}, {}, lambda _: False, connect_timeout=2, read_timeout=5)
            )
            await asyncio.sleep(0.1)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            for _ in range(100):
                if len(closed) == 2:
                    break
                await asyncio.sleep(0.02)
            assert len(closed) == 2

    asyncio.run(scenario())
