"""The relay's HTTP/1.1 client against real sockets serving canned responses."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from orchestratord.worker_client.http1 import HttpStatusError, ProtocolError, post_stream

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


async def serve(handler: Handler) -> tuple[asyncio.Server, str]:
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    return server, f"http://127.0.0.1:{port}/execute"


async def read_request(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
    return head + await reader.readexactly(length)


async def collect(url: str, read_timeout: float = 5.0) -> bytes:
    out = b""
    async for piece in post_stream(
        url, {"x": "é"}, {"Authorization": "Bearer t"}, connect_timeout=2, read_timeout=read_timeout
    ):
        out += piece
    return out


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

    async def scenario() -> None:
        server, url = await serve(handler)
        async with server:
            with pytest.raises(HttpStatusError) as e:
                await collect(url)
            assert (e.value.status, e.value.body) == (503, b"busy")

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
