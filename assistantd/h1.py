"""Provider connections in plain HTTP/1.1 on asyncio, under httpx's client.

httpx's own transport (httpcore on anyio) cost the daemon most of its time per request
and a third of it per streamed chunk: each request polled the socket of every idle
connection of its pool (thousands of polls for 100 streams at once), and each chunk
went through five layers and a cancel scope. This transport does what a provider needs
and no more: HTTP/1.1 over TCP or TLS; Content-Length, chunked and close-delimited
bodies; keep-alive, each origin's idle connections on a stack. The event loop watches
an idle connection, so one the server closes is dropped then, never polled. A request
that finds its reused connection closed before any byte of the answer is sent once
more on a new one (the server closed it while idle: it saw nothing). Proxies stay with
httpx (``providers._new_http``).
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator
from ssl import SSLContext

import httpx2

MAX_HEAD = 64 * 1024  # a response's status line and headers
MAX_LINE = 4 * 1024  # a chunk-size line, a trailer line
MAX_TRAILERS = 100
PAUSE_AT = 1 << 20  # unread bytes past which the socket is not read until they are
# The most of a body one read hands on: the reader (the relay) then decides whether to
# read on, so a client that reads nothing holds up at most this much more per stream.
MAX_PART = 64 * 1024

_STATUS = re.compile(rb"HTTP/1\.([01]) ([0-9]{3})(?: ([^\x00-\x08\x0a-\x1f\x7f]*))?")
_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_BAD_VALUE = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")  # controls but tab
_HEX = re.compile(rb"[0-9A-Fa-f]{1,16}")

Origin = tuple[str, str, int]
# status, reason, headers, HTTP version, (framing, length, keep the connection)
Head = tuple[int, bytes, list[tuple[bytes, bytes]], bytes, tuple[str, int, bool]]


class _Conn(asyncio.Protocol):
    """One connection: what has arrived and not been read, and who waits for more."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.eof = False  # the server sent its last byte (or the connection is gone)
        self.error: Exception | None = None
        self.idle_since = 0.0
        self._waiter: asyncio.Future[None] | None = None
        self._writable: asyncio.Future[None] | None = None
        self._paused = False

    # -- asyncio's side --------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if len(self.buf) > PAUSE_AT and not self._paused and self.transport is not None:
            self._paused = True
            self.transport.pause_reading()
        self._wake()

    def eof_received(self) -> bool:
        self.eof = True
        self._wake()
        return False  # close it

    def connection_lost(self, exc: Exception | None) -> None:
        self.eof, self.error = True, exc
        self._wake()
        if self._writable is not None and not self._writable.done():
            self._writable.set_result(None)

    def pause_writing(self) -> None:
        self._writable = asyncio.get_running_loop().create_future()

    def resume_writing(self) -> None:
        if self._writable is not None and not self._writable.done():
            self._writable.set_result(None)
        self._writable = None

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    # -- ours ------------------------------------------------------------------

    @property
    def usable(self) -> bool:
        """Still open, and nothing arrived since its last answer."""
        return not self.eof and not self.buf and self.transport is not None

    def taken(self, n: int) -> None:
        """``n`` bytes were read: read the socket again once they are few."""
        del self.buf[:n]
        if self._paused and len(self.buf) < PAUSE_AT // 2 and self.transport is not None:
            self._paused = False
            self.transport.resume_reading()

    async def more(self, read_s: float | None) -> bool:
        """Wait until more bytes arrive (True) or the server is done sending (False)."""
        if self.eof:
            return False
        have = len(self.buf)
        self._waiter = asyncio.get_running_loop().create_future()
        try:
            async with asyncio.timeout(read_s):
                await self._waiter
        except TimeoutError:
            raise httpx2.ReadTimeout("timed out reading the answer") from None
        finally:
            self._waiter = None
        return len(self.buf) > have

    async def write(self, data: bytes, write_s: float | None) -> None:
        if self.eof or self.transport is None or self.transport.is_closing():
            raise httpx2.WriteError("the connection was closed")
        self.transport.write(data)
        if self._writable is not None:
            try:
                async with asyncio.timeout(write_s):
                    await self._writable
            except TimeoutError:
                raise httpx2.WriteTimeout("timed out sending the request") from None
            if self.eof:
                raise httpx2.WriteError("the connection was closed")

    def close(self) -> None:
        self.eof = True
        if self.transport is not None:
            self.transport.close()


class H1Transport(httpx2.AsyncBaseTransport):
    """HTTP/1.1 with keep-alive: at most ``max_connections`` open, ``max_idle`` of them
    kept idle for ``keepalive_s`` after their last answer."""

    def __init__(
        self,
        ssl_context: SSLContext,
        *,
        max_connections: int = 1000,
        max_idle: int = 100,
        keepalive_s: float = 5.0,
    ) -> None:
        self._ssl = ssl_context
        self._idle: dict[Origin, list[_Conn]] = {}
        self._n_idle = 0
        self._max_idle, self._keepalive_s = max_idle, keepalive_s
        self._slots = asyncio.Semaphore(max_connections)
        self._closed = False

    @property
    def idle(self) -> int:
        """How many connections are kept for the next request."""
        return self._n_idle

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        if self._closed:
            raise RuntimeError("the transport is closed")
        timeouts: dict[str, float | None] = request.extensions.get("timeout", {})
        url = request.url
        scheme = url.scheme
        if scheme not in ("http", "https"):
            raise httpx2.UnsupportedProtocol(f"{scheme!r} is not http or https")
        host = url.raw_host.decode("ascii")
        origin = (scheme, host, url.port or (443 if scheme == "https" else 80))
        head = _request_head(request)
        body = [part async for part in request.stream]  # type: ignore[union-attr]
        chunked = any(k.lower() == b"transfer-encoding" for k, _ in request.headers.raw)
        try:
            async with asyncio.timeout(timeouts.get("pool")):
                await self._slots.acquire()
        except TimeoutError:
            raise httpx2.PoolTimeout("no connection free in time") from None
        try:
            conn = self._take_idle(origin) or await self._connect(origin, timeouts.get("connect"))
            try:
                status = await self._exchange(conn, request, head, body, chunked, timeouts)
            except _Stale:
                conn = await self._connect(origin, timeouts.get("connect"))
                status = await self._exchange(conn, request, head, body, chunked, timeouts)
        except BaseException:
            self._slots.release()
            raise
        code, reason, headers, version, (framing, length, keep) = status
        stream = _Body(self, origin, conn, framing, length, keep, timeouts.get("read"))
        return httpx2.Response(
            code,
            headers=headers,
            stream=stream,
            extensions={"http_version": version, "reason_phrase": reason},
        )

    async def _exchange(
        self,
        conn: _Conn,
        request: httpx2.Request,
        head: bytes,
        body: list[bytes],
        chunked: bool,
        timeouts: dict[str, float | None],
    ) -> Head:
        """Send the request and read the answer's head. A kept connection that the
        server closed before answering is ``_Stale``."""
        kept = conn.idle_since != 0.0
        try:
            payload = _chunk_body(body) if chunked else b"".join(body)
            await conn.write(head + payload, timeouts.get("write"))
            return await _read_head(conn, request.method, timeouts.get("read"))
        except _Closed:
            conn.close()
            if kept:
                raise _Stale() from None
            raise httpx2.RemoteProtocolError(
                "Server disconnected without sending a response."
            ) from None
        except httpx2.WriteError:
            conn.close()
            if kept:
                raise _Stale() from None
            raise
        except BaseException:
            conn.close()
            raise

    def _take_idle(self, origin: Origin) -> _Conn | None:
        stack = self._idle.get(origin)
        now = time.monotonic()
        while stack:
            conn = stack.pop()
            self._n_idle -= 1
            if conn.usable and now - conn.idle_since < self._keepalive_s:
                return conn
            conn.close()
        return None

    def _put_idle(self, origin: Origin, conn: _Conn) -> None:
        now = time.monotonic()
        stack = self._idle.setdefault(origin, [])
        while stack and (now - stack[0].idle_since >= self._keepalive_s or not stack[0].usable):
            stack.pop(0).close()
            self._n_idle -= 1
        if self._closed or self._n_idle >= self._max_idle:
            conn.close()
            return
        conn.idle_since = now
        stack.append(conn)
        self._n_idle += 1

    def _done(self, origin: Origin, conn: _Conn, reuse: bool) -> None:
        if reuse and conn.usable:
            self._put_idle(origin, conn)
        else:
            conn.close()
        self._slots.release()

    async def _connect(self, origin: Origin, connect_s: float | None) -> _Conn:
        scheme, host, port = origin
        tls = scheme == "https"
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(connect_s):
                _, conn = await loop.create_connection(
                    _Conn,
                    host,
                    port,
                    ssl=self._ssl if tls else None,
                    server_hostname=host if tls else None,
                )
        except TimeoutError:
            raise httpx2.ConnectTimeout(f"timed out connecting to {host}:{port}") from None
        except OSError as e:  # refused, unreachable, no such name, TLS refused
            raise httpx2.ConnectError(str(e) or type(e).__name__) from e
        return conn

    async def aclose(self) -> None:
        self._closed = True
        for stack in self._idle.values():
            for conn in stack:
                conn.close()
        self._idle.clear()
        self._n_idle = 0


class _Stale(Exception):
    """A kept connection turned out closed before the answer began."""


class _Closed(Exception):
    """The server closed the connection before the answer's head was complete."""


def _request_head(request: httpx2.Request) -> bytes:
    lines = [b"%s %s HTTP/1.1" % (request.method.encode("ascii"), request.url.raw_path)]
    for name, value in request.headers.raw:
        if not _TOKEN.fullmatch(name) or _BAD_VALUE.search(value):
            raise httpx2.LocalProtocolError(f"a header that cannot be sent: {name!r}")
        lines.append(name + b": " + value)
    return b"\r\n".join(lines) + b"\r\n\r\n"


def _chunk_body(parts: list[bytes]) -> bytes:
    return b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in parts if p) + b"0\r\n\r\n"


async def _read_head(conn: _Conn, method: str, read_s: float | None) -> Head:
    """The answer's status, reason, headers, HTTP version and framing (``_framing``);
    informational (1xx) answers are skipped."""
    while True:
        while (end := conn.buf.find(b"\r\n\r\n")) < 0:
            if len(conn.buf) > MAX_HEAD:
                raise httpx2.RemoteProtocolError("the answer's headers are too long")
            if not await conn.more(read_s):
                if conn.buf:
                    raise httpx2.RemoteProtocolError("the answer ended inside its headers")
                raise _Closed()
        if end > MAX_HEAD:
            raise httpx2.RemoteProtocolError("the answer's headers are too long")
        lines = bytes(conn.buf[:end]).split(b"\r\n")
        conn.taken(end + 4)
        m = _STATUS.fullmatch(lines[0])
        if m is None:
            raise httpx2.RemoteProtocolError(f"not an HTTP/1.x status line: {lines[0][:80]!r}")
        headers: list[tuple[bytes, bytes]] = []
        for line in lines[1:]:
            name, colon, value = line.partition(b":")
            if not colon or not _TOKEN.fullmatch(name):
                raise httpx2.RemoteProtocolError(f"a malformed header line: {line[:80]!r}")
            value = value.strip(b" \t")
            if _BAD_VALUE.search(value):
                raise httpx2.RemoteProtocolError(f"a control character in header {name!r}")
            headers.append((name, value))
        code = int(m[2])
        if 100 <= code < 200 and code != 101:
            continue
        version = b"HTTP/1.1" if m[1] == b"1" else b"HTTP/1.0"
        return code, m[3] or b"", headers, version, _framing(m[1] == b"1", code, method, headers)


def _framing(
    http11: bool, code: int, method: str, headers: list[tuple[bytes, bytes]]
) -> tuple[str, int, bool]:
    """RFC 9112 section 6.3: how the body ends (``"length"``, ``"chunked"``, ``"close"``
    or ``"none"``), its length, and whether the connection may be kept after it."""
    lengths: set[bytes] = set()
    codings: list[bytes] = []
    keep = http11
    for name, value in headers:
        n = name.lower()
        if n == b"content-length":
            lengths.update(v.strip() for v in value.split(b","))
        elif n == b"transfer-encoding":
            codings += [c.strip().lower() for c in value.split(b",")]
        elif n == b"connection":
            tokens = {t.strip().lower() for t in value.split(b",")}
            keep = (keep or b"keep-alive" in tokens) and b"close" not in tokens
    if method == "HEAD" or code in (101, 204, 304):
        return "none", 0, keep and code != 101
    if codings:
        if codings[-1] == b"chunked":
            return "chunked", 0, keep and not lengths
        return "close", 0, False
    if lengths:
        if len(lengths) != 1 or not (v := lengths.pop()).isdigit() or len(v) > 18:
            raise httpx2.RemoteProtocolError("an invalid Content-Length")
        return "length", int(v), keep
    return "close", 0, False


class _Body(httpx2.AsyncByteStream):
    """An answer's body, read as it arrives; closing it gives its connection back."""

    def __init__(
        self,
        owner: H1Transport,
        origin: Origin,
        conn: _Conn,
        framing: str,
        length: int,
        keep: bool,
        timeout: float | None,
    ) -> None:
        self._owner, self._origin, self._conn = owner, origin, conn
        self._framing, self._length, self._keep = framing, length, keep
        self._timeout = timeout
        self._complete = framing == "none"
        self._open = True

    async def __aiter__(self) -> AsyncIterator[bytes]:
        if self._framing == "length":
            reader = self._by_length()
        elif self._framing == "chunked":
            reader = self._chunked()
        elif self._framing == "close":
            reader = self._to_close()
        else:
            return
        async for part in reader:
            yield part
        self._complete = True

    async def _more(self) -> None:
        """More bytes of a body that has not ended yet: none coming is an error."""
        if not await self._conn.more(self._timeout):
            raise httpx2.RemoteProtocolError(
                "the server closed the connection before the answer was complete"
            )

    async def _by_length(self) -> AsyncIterator[bytes]:
        left, conn = self._length, self._conn
        while left:
            if not conn.buf:
                await self._more()
            part = bytes(conn.buf[: min(left, MAX_PART)])
            conn.taken(len(part))
            left -= len(part)
            yield part

    async def _to_close(self) -> AsyncIterator[bytes]:
        conn = self._conn
        while True:
            if conn.buf:
                part = bytes(conn.buf[:MAX_PART])
                conn.taken(len(part))
                yield part
                continue
            if not await conn.more(self._timeout):
                if conn.error is not None:
                    raise httpx2.ReadError(str(conn.error) or "the connection broke")
                return

    async def _chunked(self) -> AsyncIterator[bytes]:
        """Decode chunks as they arrive; the data already here goes out at once, up to
        ``MAX_PART`` at a time."""
        conn, buf, out = self._conn, self._conn.buf, bytearray()
        left = -1  # bytes of the current chunk still to come; -1: a size line is next
        while True:
            if len(out) >= MAX_PART:
                yield bytes(out)
                out.clear()
            if left > 0 and buf:
                n = min(left, len(buf), MAX_PART - len(out))
                out += buf[:n]
                conn.taken(n)
                left -= n
                continue
            if left == 0:
                if len(buf) >= 2:
                    if buf[:2] != b"\r\n":
                        raise httpx2.RemoteProtocolError("a chunk not followed by CRLF")
                    conn.taken(2)
                    left = -1
                    continue
            elif left < 0 and (i := buf.find(b"\r\n", 0, MAX_LINE + 2)) >= 0:
                size = bytes(buf[:i]).partition(b";")[0].strip(b" \t")
                if not _HEX.fullmatch(size):
                    raise httpx2.RemoteProtocolError(f"a bad chunk size: {size[:20]!r}")
                conn.taken(i + 2)
                left = int(size, 16)
                if left == 0:
                    if out:
                        yield bytes(out)
                    await self._trailers()
                    return
                continue
            elif left < 0 and len(buf) > MAX_LINE:
                raise httpx2.RemoteProtocolError("a chunk-size line too long")
            if out:  # what came while it was read is looked at before waiting for more
                yield bytes(out)
                out.clear()
                continue
            await self._more()

    async def _trailers(self) -> None:
        conn = self._conn
        for _ in range(MAX_TRAILERS):
            while (i := conn.buf.find(b"\r\n")) < 0:
                if len(conn.buf) > MAX_LINE:
                    raise httpx2.RemoteProtocolError("a trailer line too long")
                await self._more()
            conn.taken(i + 2)
            if i == 0:
                return
        raise httpx2.RemoteProtocolError("too many trailer lines")

    async def aclose(self) -> None:
        if self._open:
            self._open = False
            self._owner._done(self._origin, self._conn, self._keep and self._complete)
