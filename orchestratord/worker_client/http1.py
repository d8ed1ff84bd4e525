"""A minimal HTTP/1.1 client for POSTs to workers: the relay's hot path.

httpx parses each chunk of a response through h11 in pure Python, and a stream reader costs a
task wake-up, a timeout context and a generator hop per socket read; on a stream of small token
chunks that is more CPU than the rest of the relay together. This client is an asyncio
`Protocol`: the event loop hands it each socket read directly, it undoes chunked transfer
encoding with bytes operations and passes the body to a callback, with no task switch per read.
The read timeout is one timer per exchange that looks at the time of the last read, not a
timeout armed and cancelled per read.

Connections are kept alive in a `ConnectionPool`: opening one costs both daemons a connect,
an accept and a new protocol per task, and in a burst of submissions that was the relay's
largest single cost. A connection goes back to the pool only after a 200 response was read to
its last byte; an exchange that ends any other way (cancelled, refused, cut, timed out)
closes its connection, which the worker takes as a cancel. A request that fails on a reused
connection before any byte of the answer came is sent once more on a new connection: the
worker closed that connection while it was idle, so it never read the request.
What a worker's answer can make this client hold is capped (ORCH-054): the head, the number of
its fields, a chunk-size line and the trailers; chunk data is passed on as it arrives.
"""

from __future__ import annotations

import asyncio
import functools
import json
import ssl
from collections.abc import Callable, Mapping
from typing import Any, cast
from urllib.parse import urlsplit

MAX_ERROR_BODY = 1 << 16
# Caps on what a worker's answer may make this client hold (ORCH-054): a host with the cluster
# token can register any URL, and what answers there must not exhaust orchestratord's memory.
MAX_HEAD = 1 << 16  # the status line and header fields, CRLFs included
MAX_HEADER_FIELDS = 100
MAX_CHUNK_LINE = 1 << 10  # a chunk-size line (hex size and extensions), and each trailer line

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


class TooLarge(ProtocolError):
    """A part of the response went past its cap (ORCH-054): the worker misbehaves."""


class BadUrl(Exception):
    """The URL names no host and port that a connection can be opened to."""


# `_Exchange._chunk_left` when no chunk data is due: a size line next, or the CRLF after data.
_CHUNK_SIZE_LINE = -1
_CHUNK_CRLF = -2

Key = tuple[bool, str, int]  # (tls, host, port)
IDLE_S = 2.0  # under uvicorn's keep-alive (5 s): the worker does not close it first, as a rule
MAX_IDLE = 64  # idle connections kept per worker
DRAIN_S = 1.0  # after the caller's last event, how long the rest of the response may take


class ConnectionPool:
    """Idle keep-alive connections, per worker address, newest first. Owned by one event loop;
    `close()` drops them all."""

    def __init__(self, idle_s: float = IDLE_S, max_idle: int = MAX_IDLE) -> None:
        self.idle_s = idle_s
        self.max_idle = max_idle
        self._idle: dict[Key, list[_Connection]] = {}
        self.opened = 0  # connections opened, for tests and metrics
        self.closed = False

    def take(self, key: Key) -> _Connection | None:
        conns = self._idle.get(key)
        while conns:
            conn = conns.pop()
            if conn.usable():
                conn.disarm()
                return conn
            conn.abort()
        return None

    def give(self, key: Key, conn: _Connection) -> None:
        if self.closed:  # a response drained after shutdown: nothing more to keep
            conn.abort()
            return
        conns = self._idle.setdefault(key, [])
        if not conn.usable() or len(conns) >= self.max_idle:
            conn.abort()
            return
        conns.append(conn)
        conn.arm(self.idle_s, lambda: self._expire(key, conn))

    def _expire(self, key: Key, conn: _Connection) -> None:
        conns = self._idle.get(key, [])
        if conn in conns:
            conns.remove(conn)
        if not conns:
            self._idle.pop(key, None)
        conn.abort()

    def idle(self) -> int:
        return sum(len(c) for c in self._idle.values())

    def close(self) -> None:
        self.closed = True
        for conns in self._idle.values():
            for conn in conns:
                conn.abort()
        self._idle.clear()


async def post(
    url: str,
    payload: Mapping[str, Any],
    headers: Mapping[str, str],
    on_body: OnBody,
    *,
    connect_timeout: float,
    read_timeout: float,
    pool: ConnectionPool | None = None,
    ssl_context: ssl.SSLContext | None = None,
) -> None:
    """POST `payload` as JSON to `url`; hand the 200 response's body to `on_body` as it arrives.

    Returns when the body ended or `on_body` returned True. Raises BadUrl for a URL with no
    usable host or port, HttpStatusError for a non-200 answer, ProtocolError for a malformed or
    cut response, TimeoutError when connecting takes longer than `connect_timeout` or the
    server is silent for `read_timeout`, OSError for socket errors, and whatever `on_body`
    raises. Without a `pool` the connection is used once.
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
    ]
    if pool is None:
        head.append("Connection: close")
    head += [f"{k}: {v}" for k, v in headers.items()]
    request = ("\r\n".join(head) + "\r\n\r\n").encode() + body
    key: Key = (tls, host, port)
    conn = pool.take(key) if pool is not None else None
    while True:
        reused = conn is not None
        if conn is None:
            conn = await _connect(host, port, tls, ssl_context, connect_timeout, url)
            if pool is not None:
                pool.opened += 1
        exchange = conn.begin(request, on_body, read_timeout)
        try:
            await exchange.done
        except (OSError, ProtocolError) as e:
            conn.abort()
            if reused and not exchange.answered and not isinstance(e, TimeoutError):
                conn = None  # closed by the worker while idle: it never read this request
                continue
            raise
        except BaseException:  # cancelled (the worker takes the closed connection as a cancel)
            conn.abort()
            raise
        if pool is not None and exchange.reusable:
            exchange.when_complete(functools.partial(pool.give, key, conn))
        else:
            conn.abort()
        return


async def _connect(
    host: str,
    port: int,
    tls: bool,
    ssl_context: ssl.SSLContext | None,
    connect_timeout: float,
    url: str,
) -> _Connection:
    loop = asyncio.get_running_loop()
    async with asyncio.timeout(connect_timeout):
        try:
            _, conn = await loop.create_connection(
                _Connection,
                host,
                port,
                ssl=(ssl_context or ssl.create_default_context()) if tls else None,
            )
        except ValueError as e:  # a NUL in the host, or one IDNA cannot encode (UnicodeError)
            raise BadUrl(f"{url!r}: {e}") from None
    return conn


class _Connection(asyncio.Protocol):
    """One connection to a worker, carrying one exchange at a time."""

    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.transport: asyncio.WriteTransport | None = None
        self.exchange: _Exchange | None = None
        self.lost = False
        self._idle_timer: asyncio.TimerHandle | None = None

    def begin(self, request: bytes, on_body: OnBody, read_timeout: float) -> _Exchange:
        assert self.transport is not None and self.exchange is None
        self.exchange = _Exchange(self, on_body, read_timeout)
        self.transport.write(request)
        return self.exchange

    def finished(self) -> None:
        """The exchange read its response to the end: the connection carries no exchange."""
        self.exchange = None

    def usable(self) -> bool:
        return (
            not self.lost
            and self.exchange is None
            and self.transport is not None
            and not self.transport.is_closing()
        )

    def arm(self, idle_s: float, expire: Callable[[], None]) -> None:
        self._idle_timer = self._loop.call_later(idle_s, expire)

    def disarm(self) -> None:
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None

    def abort(self) -> None:
        self.disarm()
        if self.exchange is not None:
            self.exchange.close()
        if self.transport is not None:
            # Do not wait for a TLS close handshake or a slow peer; the exchange is over.
            self.transport.abort()

    # -- asyncio.Protocol --------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not subclasses of asyncio's: no isinstance check here.
        self.transport = cast(asyncio.WriteTransport, transport)

    def data_received(self, data: bytes) -> None:
        if self.exchange is None:  # nothing was asked: a server must not send this
            self.abort()
            return
        self.exchange.data_received(data)

    def eof_received(self) -> bool | None:
        return None  # close the transport; connection_lost decides what the end means

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self.disarm()
        if self.exchange is not None:
            self.exchange.connection_lost(exc)


class _Exchange:
    """One request and its response, parsed as the bytes arrive.

    States: "head" until the status line and fields are in, then "chunked" or "plain" (by
    Content-Length, or until the connection closes). A non-200 answer's body is collected
    (capped) instead of handed over, and the exchange ends in HttpStatusError. `done` resolves
    when the exchange is over for the caller, one way or another. When `on_body` ends it early,
    the rest of the response (the worker's last chunk) is read and dropped, within DRAIN_S, so
    that the connection can carry another exchange.
    """

    def __init__(self, conn: _Connection, on_body: OnBody, read_timeout: float) -> None:
        self._conn = conn
        self._loop = conn._loop
        self.done: asyncio.Future[None] = self._loop.create_future()
        self._on_body = on_body
        self._read_timeout = read_timeout
        self._buf = bytearray()
        self._state = "head"
        self._status = 0
        self._keep_alive = True
        self._error = bytearray()  # a non-200 answer's body
        self._remaining: int | None = None  # body bytes left ("plain" with a Content-Length)
        self._chunk_left = _CHUNK_SIZE_LINE  # "chunked": data bytes left in the current chunk
        self.answered = False  # a byte of the response came
        self.ended = False  # the response was read to its end...
        self.complete = False  # ...and nothing came after it
        self._on_complete: Callable[[], None] | None = None
        self._last_read = self._loop.time()
        self._timer: asyncio.TimerHandle | None = self._loop.call_at(
            self._last_read + read_timeout, self._check_silence
        )

    @property
    def reusable(self) -> bool:
        """Whether the connection may carry another exchange once this one is complete: the
        caller got a 200 body without error, and the server did not ask to close."""
        return (
            self.done.done()
            and not self.done.cancelled()
            and self.done.exception() is None
            and self._keep_alive
            and (self._state == "chunked" or self._remaining is not None)
            and self.complete == self.ended
        )

    def when_complete(self, then: Callable[[], None]) -> None:
        """Run `then` once the response was read to its end (now, if it was); abort the
        connection if that takes longer than DRAIN_S."""
        if self.complete:
            then()
            return
        self._on_complete = then
        self._arm(DRAIN_S)

    def data_received(self, data: bytes) -> None:
        self.answered = True
        self._last_read = self._loop.time()
        try:
            self._feed(data)
        except BaseException as e:  # a bad response, or the callback failed: end here
            self._end(e)
            self._conn.abort()

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
            end = buf.find(b"\r\n\r\n", 0, MAX_HEAD)
            if end < 0:
                if len(buf) >= MAX_HEAD:
                    raise TooLarge(f"response head over {MAX_HEAD} bytes")
                return
            self._status, fields = _parse_head(bytes(buf[:end]))
            del buf[: end + 4]
            self._keep_alive = "close" not in fields.get("connection", "")
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

    def _deliver(self, piece: bytes) -> None:
        """Hand a piece of the body to the caller, unless it already has all it wanted."""
        if piece and not self.done.done() and self._on_body(piece):
            self._end(None)

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
        self._deliver(piece)
        if self._remaining == 0:
            self._finish()

    def _dechunk(self) -> None:
        """Hand over the chunk data in the buffer, in one call. A chunk's data is passed on as
        it arrives, not held until the chunk is whole: what the buffer keeps is bounded by
        MAX_CHUNK_LINE (a size line) or MAX_HEAD (the trailers), whatever size a chunk says."""
        buf = self._buf
        out = bytearray()
        pos = 0
        last = False
        while pos < len(buf):
            left = self._chunk_left
            if left > 0:  # inside a chunk's data
                take = min(left, len(buf) - pos)
                out += buf[pos : pos + take]
                pos += take
                self._chunk_left = left - take or _CHUNK_CRLF
                continue
            if left == _CHUNK_CRLF:  # the CRLF after a chunk's data
                if len(buf) - pos < 2:
                    break
                if buf[pos : pos + 2] != b"\r\n":
                    raise ProtocolError("chunk data longer than its size")
                pos += 2
                self._chunk_left = _CHUNK_SIZE_LINE
                continue
            eol = buf.find(b"\r\n", pos, pos + MAX_CHUNK_LINE + 2)
            if eol < 0:
                if len(buf) - pos > MAX_CHUNK_LINE + 1:  # + 1: a CR whose LF may follow
                    raise TooLarge(f"chunk-size line over {MAX_CHUNK_LINE} bytes")
                break
            try:
                size = int(bytes(buf[pos:eol]).split(b";", 1)[0], 16)
            except ValueError:
                raise ProtocolError("bad chunk size line") from None
            if size < 0:
                raise ProtocolError("bad chunk size line")
            if size == 0:  # the last chunk; the message ends at the empty line after trailers
                end = buf.find(b"\r\n\r\n", eol, eol + MAX_HEAD)
                if end >= 0:
                    pos, last = end + 4, True
                elif len(buf) - eol >= MAX_HEAD:
                    raise TooLarge(f"trailers over {MAX_HEAD} bytes")
                break
            pos = eol + 2
            self._chunk_left = size
        del buf[:pos]
        self._deliver(bytes(out))
        if last:
            self._finish()

    # -- the end -----------------------------------------------------------------------------

    def _finish(self) -> None:
        """The response was read to its end."""
        self.ended = True
        self.complete = not self._buf  # bytes after the message: the connection is unusable
        if not self.done.done():
            self._end(None)
        self.close()
        if self.complete:
            self._conn.finished()
        then, self._on_complete = self._on_complete, None
        if then is not None:
            if self.complete:
                then()
            else:
                self._conn.abort()

    def _arm(self, wait_s: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._last_read = self._loop.time()
        self._read_timeout = wait_s
        self._timer = self._loop.call_at(self._last_read + wait_s, self._check_silence)

    def _check_silence(self) -> None:
        self._timer = None
        due = self._last_read + self._read_timeout
        if self._loop.time() < due:
            self._timer = self._loop.call_at(due, self._check_silence)
        elif self.done.done():  # the rest of the response did not come: give up on it
            self._on_complete = None
            self._conn.abort()
        else:
            self._end(TimeoutError(f"no data for {self._read_timeout:g}s"))

    def _end(self, error: BaseException | None) -> None:
        if self.done.done():
            return
        if self._status not in (0, 200):  # whatever else happened, the answer was a refusal
            error = HttpStatusError(self._status, bytes(self._error[:MAX_ERROR_BODY]))
            self._keep_alive = False
        if error is None:
            self.done.set_result(None)
        else:
            self.close()
            self.done.set_exception(error)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


def _parse_head(head: bytes) -> tuple[int, dict[str, str]]:
    lines = head.decode("latin-1").split("\r\n")
    if len(lines) > MAX_HEADER_FIELDS + 1:
        raise TooLarge(f"over {MAX_HEADER_FIELDS} header fields")
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
