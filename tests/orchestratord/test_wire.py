"""The relay's HTTP/1.1 client against real sockets serving canned (or misbehaving) responses."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from orchestratord.worker_client.http1 import (
    DRAIN_S,
    MAX_CHUNK_LINE,
    MAX_HEAD,
    MAX_HEADER_FIELDS,
    ConnectionPool,
    HttpStatusError,
    ProtocolError,
    TooLarge,
    post,
)
from orchestratord.worker_client.relay import (
    MAX_SMALL_REPLY,
    MAX_SSE_EVENT,
    WorkerLost,
    count_tokens,
    embed,
    embeddings_cap,
    execute,
)

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


# --- kept-alive connections (ORCH-051) ------------------------------------------------------

SSE_END = chunk(b"event: end\ndata: {}\n\n") + b"0\r\n\r\n"


async def keep_alive_server(
    requests_per_connection: int, seen: list[tuple[int, bytes]], *, tail: bytes = SSE_END
) -> tuple[asyncio.Server, str]:
    """Answers up to `requests_per_connection` requests per connection with a chunked 200
    stream, then closes it without saying so (as a server whose keep-alive ran out); `seen`
    gets (connection number, request) per request."""
    connections = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        number = connections
        for _ in range(requests_per_connection):
            try:
                seen.append((number, await read_request(reader)))
            except asyncio.IncompleteReadError:
                return
            writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
            writer.write(chunk(b"event: token\ndata: {}\n\n"))
            await writer.drain()
            await asyncio.sleep(0.01)  # the end comes in a read of its own, after the token
            writer.write(tail)
            await writer.drain()

    return await serve(handler)


async def post_until_end(url: str, pool: ConnectionPool, read_timeout: float = 5.0) -> bytes:
    """The relay's way: stop at the `end` event, before the stream's last chunk."""
    pieces: list[bytes] = []

    def on_body(piece: bytes) -> bool:
        pieces.append(piece)
        return b"event: end" in piece

    await post(url, {}, {}, on_body, connect_timeout=2, read_timeout=read_timeout, pool=pool)
    return b"".join(pieces)


def test_orch_051_a_complete_response_leaves_its_connection_for_the_next_request() -> None:
    """Three jobs in a row go over one connection: the relay stops reading at `end`, the rest
    of the response (the last chunk) is read afterwards and the connection pooled."""
    seen: list[tuple[int, bytes]] = []

    async def scenario() -> None:
        server, url = await keep_alive_server(10, seen)
        async with server:
            pool = ConnectionPool()
            for _ in range(3):
                assert (await post_until_end(url, pool)).endswith(b"event: end\ndata: {}\n\n")
                for _ in range(100):  # the last chunk arrives after `end`
                    if pool.idle() == 1:
                        break
                    await asyncio.sleep(0.01)
                assert pool.idle() == 1
            assert pool.opened == 1
            pool.close()
            assert pool.idle() == 0
            await post_until_end(url, pool)  # after close: used once, not kept
            await asyncio.sleep(0.05)
            assert pool.idle() == 0 and pool.opened == 2

    asyncio.run(scenario())
    assert [number for number, _ in seen] == [1, 1, 1, 2]
    assert all(b"Connection: close" not in request for _, request in seen)


def test_orch_051_a_request_on_a_connection_the_worker_closed_is_sent_again_on_a_new_one() -> None:
    """The worker closed the idle connection (its keep-alive ran out) without saying so: the
    next request fails before any answer and goes once more on a new connection."""
    seen: list[tuple[int, bytes]] = []

    async def scenario() -> None:
        server, url = await keep_alive_server(1, seen)
        async with server:
            pool = ConnectionPool()
            await post_until_end(url, pool)
            for _ in range(100):
                if pool.idle() == 1:
                    break
                await asyncio.sleep(0.01)
            await asyncio.sleep(0.05)  # the server's close reaches us, or not: both must work
            assert (await post_until_end(url, pool)).endswith(b"data: {}\n\n")
            assert pool.opened == 2
            pool.close()

    asyncio.run(scenario())
    assert [number for number, _ in seen] == [1, 2]


def test_orch_051_refusals_cut_streams_and_connection_close_are_never_pooled() -> None:
    """Only a 200 read to its end is reused: a refusal, a stream that does not end in time
    after the caller's last event, and an answer with `Connection: close` close the socket."""

    async def refuse(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 4\r\n\r\nbusy")
        await writer.drain()
        await reader.read()

    async def closing(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n")
        writer.write(SSE_END)
        await writer.drain()
        await reader.read()

    async def scenario() -> None:
        pool = ConnectionPool()
        server, url = await serve(refuse)
        async with server:
            with pytest.raises(HttpStatusError):
                await post_until_end(url, pool)
            assert pool.idle() == 0
        server, url = await serve(closing)
        async with server:
            await post_until_end(url, pool)
            await asyncio.sleep(0.05)
            assert pool.idle() == 0
        # `end` came but the stream never finishes: given up after DRAIN_S, not pooled.
        server, url = await keep_alive_server(1, [], tail=chunk(b"event: end\ndata: {}\n\n"))
        async with server:
            await post_until_end(url, pool)
            await asyncio.sleep(DRAIN_S + 0.3)
            assert pool.idle() == 0
        assert pool.opened == 3

    asyncio.run(scenario())


# --- caps on what a worker's answer may make the client hold (ORCH-054) --------------------


def misbehaving(head: bytes, piece: bytes, total: int) -> Handler:
    """Answer with `head`, then `piece` again and again up to about `total` bytes (well past
    the cap in question), then stay silent until the client closes."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        try:
            writer.write(head)
            for _ in range(total // len(piece) + 1):
                writer.write(piece)
                await writer.drain()
            await reader.read()
        except (ConnectionError, OSError):
            pass  # the client closed the connection, as it should

    return handler


OK_CHUNKED = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"


@pytest.mark.parametrize(
    ("case", "head", "piece", "cap"),
    [
        ("endless head", b"HTTP/1.1 200 OK\r\n", b"X-Pad: " + b"a" * 1000 + b"\r\n", MAX_HEAD),
        ("many fields", b"HTTP/1.1 200 OK\r\n", b"X: y\r\n", MAX_HEAD),
        ("endless size line", OK_CHUNKED, b"0" * 4096, MAX_CHUNK_LINE),
        ("endless trailers", OK_CHUNKED + b"0\r\n", b"X-T: " + b"b" * 1000 + b"\r\n", MAX_HEAD),
    ],
)
def test_orch_054_an_endless_head_or_framing_line_stops_at_its_cap(
    case: str, head: bytes, piece: bytes, cap: int
) -> None:
    """A server that never ends its head, a chunk-size line or its trailers: the client gives
    up at the cap with TooLarge (a ProtocolError) and closes the connection."""

    async def scenario() -> None:
        server, url = await serve(misbehaving(head, piece, 4 * cap))
        async with server:
            with pytest.raises(TooLarge):
                await collect(url, read_timeout=2)  # no cap: a timeout, after 4x the cap held

    asyncio.run(scenario())


def test_orch_054_too_many_header_fields_is_refused() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        fields = b"".join(b"X-%d: y\r\n" % i for i in range(MAX_HEADER_FIELDS + 1))
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n" + fields + b"\r\n")
        await writer.drain()
        await reader.read()

    async def scenario() -> None:
        server, url = await serve(handler)
        async with server:
            with pytest.raises(TooLarge, match="header fields"):
                await collect(url)

    asyncio.run(scenario())


def test_orch_054_a_huge_chunk_streams_through_without_being_held_whole() -> None:
    """A chunk that says it is 1 TiB is passed on as its bytes come, never held whole: what
    the caller gets bounds what the client holds."""
    got: list[int] = []
    handler = misbehaving(OK_CHUNKED + b"%x\r\n" % (1 << 40), b"z" * 65536, 16 * MAX_HEAD)

    async def scenario() -> None:
        server, url = await serve(handler)
        async with server:

            def on_body(piece: bytes) -> bool:
                got.append(len(piece))
                return sum(got) > 8 * MAX_HEAD

            await post(url, {}, {}, on_body, connect_timeout=2, read_timeout=2)

    asyncio.run(scenario())
    assert max(got) <= 8 * MAX_HEAD  # no piece waited for the whole chunk


def test_orch_054_a_giant_sse_event_fails_the_exchange_as_a_lost_worker() -> None:
    """One SSE line that never ends: the relay stops at MAX_SSE_EVENT with WorkerLost, what
    the runner treats as any broken worker (retry elsewhere, the worker marked failed)."""
    events: list[str] = []

    def on_event(name: str, _: bytes) -> bool:
        events.append(name)
        return False

    async def scenario() -> None:
        head = OK_CHUNKED + chunk(b'event: started\ndata: {}\n\nevent: token\ndata: "')
        server, url = await serve(misbehaving(head, chunk(b"t" * 65536), 4 * MAX_SSE_EVENT))
        async with server:
            with pytest.raises(WorkerLost, match="TooLarge"):
                await execute(
                    url.removesuffix("/execute"),
                    None,
                    {},
                    on_event,
                    connect_timeout=2,
                    read_timeout=2,
                )

    asyncio.run(scenario())
    assert events == ["started"]


def test_orch_054_an_embeddings_reply_past_its_cap_fails_as_a_lost_worker() -> None:
    """The cap follows the number of inputs: a reply one input's cap allows is taken, a reply
    past it (here an endless body) is not."""
    fits = b'{"data": []}'

    async def honest(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(fits), fits))
        await writer.drain()

    async def scenario() -> None:
        server, url = await serve(honest)
        async with server:
            base = url.removesuffix("/execute")
            got = await embed(base, None, {"input": ["a"]}, connect_timeout=2, read_timeout=5)
            assert got == fits
        head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n["
        server, url = await serve(misbehaving(head, b"0.1," * 16384, 2 * embeddings_cap(2)))
        async with server:
            with pytest.raises(WorkerLost, match="TooLarge"):
                await embed(
                    url.removesuffix("/execute"),
                    None,
                    {"input": ["a", "b"]},
                    connect_timeout=2,
                    read_timeout=2,
                )

    asyncio.run(scenario())


def test_orch_054_a_tokenize_reply_past_its_cap_fails_as_a_lost_worker() -> None:
    """`POST /tokenize`'s answer (ORCH-163) is capped too: an endless body is refused at
    MAX_SMALL_REPLY rather than held."""

    async def scenario() -> None:
        head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n{"
        server, url = await serve(misbehaving(head, b" " * 4096, 4 * MAX_SMALL_REPLY))
        async with server:
            with pytest.raises(WorkerLost, match="TooLarge"):
                await count_tokens(
                    url.removesuffix("/execute"),
                    None,
                    {"prompt": "x"},
                    connect_timeout=2,
                    read_timeout=2,
                )

    asyncio.run(scenario())
