"""A minimal HTTP/1.1 client for one streaming POST: the relay's hot path to a worker.

httpx parses each chunk of a response through h11 in pure Python; on a stream of small token
chunks that costs more CPU than the rest of the relay together. This client writes one request
on its own connection (`Connection: close`), reads whatever the socket has (so a burst of
chunks is decoded in one pass), and undoes chunked transfer encoding with bytes operations.
Every read has a timeout; closing the generator closes the socket, which the worker treats as
a cancel. Everything else (cancel, health) still goes through httpx.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
from collections.abc import AsyncGenerator, Mapping
from typing import Any
from urllib.parse import urlsplit

READ_SIZE = 1 << 16


class HttpStatusError(Exception):
    """The server answered with a status other than 200; `body` is what it sent (capped)."""

    def __init__(self, status: int, body: bytes) -> None:
        super().__init__(f"HTTP {status}: {body[:200]!r}")
        self.status = status
        self.body = body


class ProtocolError(Exception):
    """The response was not valid HTTP/1.1, or the connection ended mid-message."""


class BadUrl(Exception):
    """The URL names no host and port that a connection can be opened to."""


async def post_stream(
    url: str,
    payload: Mapping[str, Any],
    headers: Mapping[str, str],
    *,
    connect_timeout: float,
    read_timeout: float,
    ssl_context: ssl.SSLContext | None = None,
) -> AsyncGenerator[bytes, None]:
    """POST `payload` as JSON to `url` and yield the response body as it arrives.

    Raises BadUrl for a URL with no usable host or port, HttpStatusError for a non-200 answer,
    ProtocolError for a malformed or cut response, TimeoutError when connecting or any read takes
    too long, OSError for socket errors.
    """
    try:
        parts = urlsplit(url)
        tls = parts.scheme == "https"
        host = parts.hostname or "127.0.0.1"
        port = parts.port or (443 if tls else 80)
    except ValueError as e:  # a port out of range or not a number, a broken IPv6 literal
        raise BadUrl(f"{url!r}: {e}") from None
    body = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()
    head = [
        f"POST {parts.path or '/'} HTTP/1.1",
        f"Host: {parts.netloc}",
        "Content-Type: application/json",
        f"Content-Length: {len(body)}",
        "Accept: text/event-stream",
        "Connection: close",
    ]
    head += [f"{k}: {v}" for k, v in headers.items()]
    async with asyncio.timeout(connect_timeout):
        try:
            reader, writer = await asyncio.open_connection(
                host,
                port,
                ssl=(ssl_context or ssl.create_default_context()) if tls else None,
                limit=READ_SIZE,
            )
        except ValueError as e:  # a NUL in the host, or one IDNA cannot encode (UnicodeError)
            raise BadUrl(f"{url!r}: {e}") from None
    try:
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + body)
        buf = bytearray()
        async with asyncio.timeout(read_timeout):
            while (end := buf.find(b"\r\n\r\n")) < 0:
                if not (data := await reader.read(READ_SIZE)):
                    raise ProtocolError("connection closed before the response headers")
                buf += data
        status, fields = _parse_head(bytes(buf[:end]))
        del buf[: end + 4]
        chunked = "chunked" in fields.get("transfer-encoding", "")
        length = int(fields["content-length"]) if "content-length" in fields else None
        body_iter = (
            _chunked(reader, buf, read_timeout)
            if chunked
            else _plain(reader, buf, length, read_timeout)
        )
        async with contextlib.aclosing(body_iter) as pieces:
            if status != 200:
                collected = b""
                async for piece in pieces:
                    collected += piece
                    if len(collected) > 65536:
                        break
                raise HttpStatusError(status, collected)
            async for piece in pieces:
                yield piece
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            # Do not wait for a TLS close handshake or a slow peer; the socket is gone.
            writer.transport.abort()


def _parse_head(head: bytes) -> tuple[int, dict[str, str]]:
    lines = head.decode("latin-1").split("\r\n")
    try:
        version, code, *_ = lines[0].split(" ", 2)
        status = int(code)
    except ValueError:
        raise ProtocolError(f"bad status line {lines[0]!r}") from None
    if not version.startswith("HTTP/1."):
        raise ProtocolError(f"not an HTTP/1.x response: {lines[0]!r}")
    fields: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            fields[name.strip().lower()] = value.strip().lower()
    return status, fields


async def _plain(
    reader: asyncio.StreamReader, buf: bytearray, length: int | None, read_timeout: float
) -> AsyncGenerator[bytes, None]:
    remaining = length
    if buf:
        piece = bytes(buf if remaining is None else buf[:remaining])
        if remaining is not None:
            remaining -= len(piece)
        yield piece
    while remaining is None or remaining > 0:
        async with asyncio.timeout(read_timeout):
            data = await reader.read(READ_SIZE if remaining is None else min(remaining, READ_SIZE))
        if not data:
            if remaining:
                raise ProtocolError("connection closed mid-body")
            return
        if remaining is not None:
            remaining -= len(data)
        yield data


async def _chunked(
    reader: asyncio.StreamReader, buf: bytearray, read_timeout: float
) -> AsyncGenerator[bytes, None]:
    """Decode chunked transfer encoding, yielding all complete chunk data per socket read."""
    while True:
        out = bytearray()
        pos = 0
        while True:
            eol = buf.find(b"\r\n", pos)
            if eol < 0:
                break
            try:
                size = int(bytes(buf[pos:eol]).split(b";", 1)[0], 16)
            except ValueError:
                raise ProtocolError("bad chunk size line") from None
            if size == 0:
                if out:
                    yield bytes(out)
                return  # trailers, if any, are not needed
            start, stop = eol + 2, eol + 2 + size
            if len(buf) < stop + 2:
                break
            out += buf[start:stop]
            pos = stop + 2
        del buf[:pos]
        if out:
            yield bytes(out)
        async with asyncio.timeout(read_timeout):
            data = await reader.read(READ_SIZE)
        if not data:
            raise ProtocolError("connection closed mid-stream")
        buf += data
