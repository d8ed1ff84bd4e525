"""A minimal HTTP/1.1 client for one POST per connection: the relay's hot path to a worker.

httpx parses each chunk of a response through h11 in pure Python, and a stream reader costs a
task wake-up, a timeout context and a generator hop per socket read; on a stream of small token
chunks that is more CPU than the rest of the relay together. This client is an asyncio
`Protocol`: the event loop hands it each socket read directly, it undoes chunked transfer
encoding with bytes operations and passes the body to a callback, with no task switch per read.
The read timeout is one timer per connection that looks at the time of the last read, not a
timeout armed and cancelled per read. It writes one request on its own connection
(`Connection: close`); ending the exchange, or cancelling the awaiting task, closes the socket,
which the worker treats as a cancel. Everything else (cancel, health) still goes through httpx.
"""

from __future__ import annotations

import asyncio
import json
import ssl
from collections.abc import Callable, Mapping
from typing import Any, cast
from urllib.parse import urlsplit

MAX_ERROR_BODY = 1 << 16

# Called with each piece of the response body as it arrives; True ends the exchange there.
OnBody = Callable[[bytes], bool]


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


async def post(
    url: str,
    payload: Mapping[str, Any],
    headers: Mapping[str, str],
    on_body: OnBody,
    *,
    connect_timeout: float,
    read_timeout: float,
    ssl_context: ssl.SSLContext | None = None,
) -> None:
    """POST `payload` as JSON to `url`; hand the 200 response's body to `on_body` as it arrives.

    Returns when the body ended or `on_body` returned True. Raises BadUrl for a URL with no
    usable host or port, HttpStatusError for a non-200 answer, ProtocolError for a malformed or
    cut response, TimeoutError when connecting takes longer than `connect_timeout` or the
    server is silent for `read_timeout`, OSError for socket errors, and whatever `on_body`
    raises.
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
    loop = asyncio.get_running_loop()
    exchange = _Exchange(("\r\n".join(head) + "\r\n\r\n").encode() + body, on_body, read_timeout)
    async with asyncio.timeout(connect_timeout):
        try:
            transport, _ = await loop.create_connection(
                lambda: exchange,
                host,
                port,
                ssl=(ssl_context or ssl.create_default_context()) if tls else None,
            )
        except ValueError as e:  # a NUL in the host, or one IDNA cannot encode (UnicodeError)
            raise BadUrl(f"{url!r}: {e}") from None
    try:
        await exchange.done
    finally:
        # Do not wait for a TLS close handshake or a slow peer; the exchange is over.
        exchange.close()
        transport.abort()


class _Exchange(asyncio.Protocol):
    """One request and its response, parsed as the bytes arrive.

    States: "head" until the status line and fields are in, then "chunked" or "plain" (by
    Content-Length, or until the connection closes). A non-200 answer's body is collected
    (capped) instead of handed over, and the exchange ends in HttpStatusError. `done` resolves
    when the exchange is over, one way or another.
    """

    def __init__(self, request: bytes, on_body: OnBody, read_timeout: float) -> None:
        self._loop = asyncio.get_running_loop()
        self.done: asyncio.Future[None] = self._loop.create_future()
        self._request = request
        self._on_body = on_body
        self._read_timeout = read_timeout
        self._buf = bytearray()
        self._state = "head"
        self._status = 0
        self._error = bytearray()  # a non-200 answer's body
        self._remaining: int | None = None  # body bytes left ("plain" with a Content-Length)
        self._last_read = self._loop.time()
        self._timer: asyncio.TimerHandle | None = None

    # -- asyncio.Protocol --------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not subclasses of asyncio's: no isinstance check here.
        cast(asyncio.WriteTransport, transport).write(self._request)
        self._last_read = self._loop.time()
        self._timer = self._loop.call_at(self._last_read + self._read_timeout, self._check_silence)

    def data_received(self, data: bytes) -> None:
        self._last_read = self._loop.time()
        if self.done.done():
            return
        try:
            self._feed(data)
        except BaseException as e:  # a bad response, or the callback failed: end here
            self._end(e)

    def eof_received(self) -> bool | None:
        return None  # close the transport; connection_lost decides what the end means

    def connection_lost(self, exc: Exception | None) -> None:
        if self.done.done():
            self.close()
            return
        if (self._state == "plain" and self._remaining is None) or self._status not in (0, 200):
            self._end(None)  # a body delimited by the connection's end, or an error's detail
        elif exc is not None:
            self._end(exc)
        elif self._state == "head":
            self._end(ProtocolError("connection closed before the response headers"))
        else:
            self._end(ProtocolError("connection closed mid-body"))

    # -- parsing -----------------------------------------------------------------------------

    def _feed(self, data: bytes) -> None:
        buf = self._buf
        buf += data
        if self._state == "head":
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            self._status, fields = _parse_head(bytes(buf[:end]))
            del buf[: end + 4]
            if self._status != 200:  # the body (framed like any other) is the error's detail
                self._on_body = self._collect_error
            if "chunked" in fields.get("transfer-encoding", ""):
                self._state = "chunked"
            else:
                self._state = "plain"
                if "content-length" in fields:
                    try:
                        self._remaining = int(fields["content-length"])
                    except ValueError:
                        raise ProtocolError("bad Content-Length") from None
        if self._state == "chunked":
            self._dechunk()
        elif self._state == "plain":
            self._plain()

    def _collect_error(self, piece: bytes) -> bool:
        self._error += piece
        return len(self._error) >= MAX_ERROR_BODY

    def _plain(self) -> None:
        buf = self._buf
        if self._remaining is None:
            piece = bytes(buf)
            buf.clear()
        else:
            piece = bytes(buf[: self._remaining])
            del buf[: self._remaining]
            self._remaining -= len(piece)
        if (piece and self._on_body(piece)) or self._remaining == 0:
            self._end(None)

    def _dechunk(self) -> None:
        """Hand over the data of every complete chunk in the buffer, in one call."""
        buf = self._buf
        out = bytearray()
        pos = 0
        last = False
        while True:
            eol = buf.find(b"\r\n", pos)
            if eol < 0:
                break
            try:
                size = int(bytes(buf[pos:eol]).split(b";", 1)[0], 16)
            except ValueError:
                raise ProtocolError("bad chunk size line") from None
            if size == 0:
                last = True  # trailers, if any, are not needed
                break
            start, stop = eol + 2, eol + 2 + size
            if len(buf) < stop + 2:
                break
            out += buf[start:stop]
            pos = stop + 2
        del buf[:pos]
        if (out and self._on_body(bytes(out))) or last:
            self._end(None)

    # -- the end -----------------------------------------------------------------------------

    def _check_silence(self) -> None:
        self._timer = None
        if self.done.done():
            return
        due = self._last_read + self._read_timeout
        if self._loop.time() >= due:
            self._end(TimeoutError(f"no data for {self._read_timeout:g}s"))
        else:
            self._timer = self._loop.call_at(due, self._check_silence)

    def _end(self, error: BaseException | None) -> None:
        self.close()
        if self.done.done():
            return
        if self._status not in (0, 200):  # whatever else happened, the answer was a refusal
            error = HttpStatusError(self._status, bytes(self._error[:MAX_ERROR_BODY]))
        if error is None:
            self.done.set_result(None)
        else:
            self.done.set_exception(error)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


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
