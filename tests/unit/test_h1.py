"""The providers' HTTP/1.1 transport (assistantd/h1.py) against real sockets on loopback:
servers scripted byte by byte here for the framings and the broken answers, the fake
upstream for keep-alive and a burst, and a TLS server with a certificate of its own."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx2
import pytest

from assistantd.h1 import MAX_PART, H1Transport
from tests.pages import localhost_tls
from tests.upstream import Upstream

Script = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


def transport(**kw: Any) -> H1Transport:
    return H1Transport(ssl.create_default_context(), **kw)


async def read_request(reader: asyncio.StreamReader) -> bytes:
    """A request's head and its Content-Length body."""
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    return head + await reader.readexactly(length)


class Server:
    """A loopback server that answers each connection with ``script``; counts the
    connections it accepted and the most open at once."""

    def __init__(self, script: Script, tls: ssl.SSLContext | None = None) -> None:
        self.script, self.tls = script, tls
        self.accepted = self.open = self.most_open = 0

    async def __aenter__(self) -> Server:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0, ssl=self.tls)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._server.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        self.open += 1
        self.most_open = max(self.most_open, self.open)
        try:
            await self.script(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self.open -= 1
            writer.close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1/x"


def answers(*raw: bytes, close: bool = False, dribble: bool = False) -> Script:
    """A script that answers each request on a connection with the next of ``raw``
    (one byte at a time with ``dribble``), then closes if ``close``."""

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for answer in raw:
            await read_request(reader)
            for piece in [answer[i : i + 1] for i in range(len(answer))] if dribble else [answer]:
                writer.write(piece)
                await writer.drain()
        if close:
            return
        await reader.read()  # until the client closes

    return script


CHUNKED = (
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-Seen: a\r\n\r\n"
    b"5;ext=1\r\nhello\r\n1\r\n \r\nA\r\n0123456789\r\n0\r\nTrailer: x\r\n\r\n"
)


async def fetch(t: H1Transport, url: str, method: str = "POST", **kw: Any) -> httpx2.Response:
    async with httpx2.AsyncClient(transport=t, timeout=kw.pop("timeout", 5.0)) as http:
        return await http.request(method, url, **kw)


@pytest.mark.parametrize("dribble", [False, True])
def test_chunked_answers_with_extensions_and_trailers_in_any_pieces(dribble: bool) -> None:
    async def main() -> None:
        async with Server(answers(CHUNKED, CHUNKED, dribble=dribble)) as s:
            t = transport()
            async with httpx2.AsyncClient(transport=t) as http:
                for _ in range(2):
                    r = await http.post(s.url, json={"a": 1})
                    assert (r.status_code, r.content) == (200, b"hello 0123456789")
                    assert r.headers["x-seen"] == "a"
            assert s.accepted == 1  # the second request went on the kept connection

    asyncio.run(main())


def test_length_close_and_bodyless_answers() -> None:
    async def main() -> None:
        length = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc"
        empty = b"HTTP/1.1 204 No Content\r\n\r\n"
        informational = b"HTTP/1.1 100 Continue\r\n\r\n" + length
        async with Server(answers(length, empty, informational)) as s:
            t = transport()
            async with httpx2.AsyncClient(transport=t) as http:
                assert (await http.post(s.url, content=b"x")).content == b"abc"
                assert (await http.post(s.url, content=b"x")).status_code == 204
                r = await http.post(s.url, content=b"x")
                assert (r.status_code, r.content) == (200, b"abc")
            assert s.accepted == 1
        to_close = b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil the end"
        async with Server(answers(to_close, close=True)) as s:
            r = await fetch(transport(), s.url)
            assert r.content == b"until the end"
        head = b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n"
        async with Server(answers(head)) as s:
            r = await fetch(transport(), s.url, method="HEAD")
            assert (r.status_code, r.content) == (200, b"")

    asyncio.run(main())


@pytest.mark.parametrize("framing", ["length", "chunked", "close"])
def test_a_large_body_is_read_whole_while_the_socket_pauses(framing: str) -> None:
    """6 MiB read slowly: the socket pauses past 1 MiB unread and resumes, and no read
    hands on more than ``MAX_PART`` (what bounds a stream whose client reads nothing)."""
    body = bytes(range(256)) * (6 * 4096)  # 6 MiB, past the 1 MiB pause mark
    if framing == "length":
        raw = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
    elif framing == "chunked":
        step = 3000
        chunks = b"".join(
            b"%x\r\n%s\r\n" % (len(body[i : i + step]), body[i : i + step])
            for i in range(0, len(body), step)
        )
        raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n%s0\r\n\r\n" % chunks
    else:
        raw = b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n%s" % body

    async def main() -> None:
        async with Server(answers(raw, close=framing == "close")) as s:
            got, sizes = bytearray(), []
            async with (
                httpx2.AsyncClient(transport=transport()) as http,
                http.stream("GET", s.url) as r,
            ):
                async for part in r.aiter_raw():
                    got += part
                    sizes.append(len(part))
                    await asyncio.sleep(0.001)  # a slow reader: the buffer fills
            assert got == body
            assert max(sizes) == MAX_PART  # the buffer held more, and it was split

    asyncio.run(main())


@pytest.mark.parametrize("framing", ["chunked", "close"])
def test_what_arrives_while_the_reader_is_busy_is_read_without_waiting_for_more(
    framing: str,
) -> None:
    """The server sends the whole answer and goes quiet (the connection open); a reader
    that pauses at each part still gets all of it at once, not after a read timeout."""
    parts = [b"part %03d;" % i for i in range(200)]
    if framing == "chunked":
        head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        body = [b"%x\r\n%s\r\n" % (len(p), p) for p in parts] + [b"0\r\n\r\n"]
    else:
        head, body = b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n", parts

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(head)
        for i in range(0, len(body), 10):
            writer.write(b"".join(body[i : i + 10]))
            await writer.drain()
            await asyncio.sleep(0.002)
        if framing == "close":
            writer.write_eof()
        await reader.read()

    async def main() -> None:
        async with Server(script) as s:
            got = bytearray()
            async with (
                httpx2.AsyncClient(transport=transport(), timeout=2.0) as http,
                http.stream("POST", s.url, content=b"x") as r,
            ):
                async for part in r.aiter_bytes():
                    got += part
                    await asyncio.sleep(0.01)
            assert got == b"".join(parts)

    asyncio.run(main())


@pytest.mark.parametrize(
    ("raw", "words"),
    [
        (b"HTTP/2 200 OK\r\n\r\n", "status line"),
        (b"HTTP/1.1 200 OK\r\nBad Header\r\n\r\n", "malformed header"),
        (b"HTTP/1.1 200 OK\r\nX: a\x01b\r\n\r\n", "control character"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 3, 4\r\n\r\nabc", "Content-Length"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", "Content-Length"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "chunk size"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcXY", "CRLF"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + b"1" * 5000, "too long"),
        (b"HTTP/1.1 200 OK\r\nX: " + b"a" * 70000 + b"\r\n\r\n", "too long"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n9\r\nabc", "closed"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nabc", "closed"),
        (b"HTTP/1.1 200 OK\r\nContent-Le", "ended inside its headers"),
        (b"", "without sending a response"),
    ],
)
def test_a_broken_answer_is_a_protocol_error_and_its_connection_is_dropped(
    raw: bytes, words: str
) -> None:
    async def main() -> None:
        good = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
        first = True

        async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            nonlocal first
            await read_request(reader)
            if first:
                first = False
                writer.write(raw)
                await writer.drain()
                return  # and close
            writer.write(good)
            await writer.drain()

        async with Server(script) as s:
            t = transport()
            async with httpx2.AsyncClient(transport=t) as http:
                with pytest.raises(httpx2.RemoteProtocolError) as e:
                    await http.post(s.url, content=b"x")
                assert words in str(e.value)
                assert t.idle == 0
                assert (await http.post(s.url, content=b"x")).content == b"ok"
            assert s.accepted == 2

    asyncio.run(main())


def test_a_kept_connection_closed_by_the_server_is_not_an_error() -> None:
    """Closed while idle (seen by the event loop), or closed as the next request arrives
    (the race: nothing answered): either way the request goes on a new connection."""
    ok = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"

    async def main() -> None:
        async with Server(answers(ok, close=True)) as s:  # closes right after answering
            t = transport()
            async with httpx2.AsyncClient(transport=t) as http:
                assert (await http.post(s.url, content=b"1")).content == b"ok"
                await asyncio.sleep(0.05)
                assert (await http.post(s.url, content=b"2")).content == b"ok"
            assert s.accepted == 2

        async def race(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            if s.accepted == 1:
                await read_request(reader)
                writer.write(ok)
                await writer.drain()
                await read_request(reader)  # the next request: closed unanswered
                return
            await answers(ok)(reader, writer)

        async with Server(race) as s:
            t = transport()
            async with httpx2.AsyncClient(transport=t) as http:
                assert (await http.post(s.url, content=b"1")).content == b"ok"
                assert (await http.post(s.url, content=b"2")).content == b"ok"
            assert s.accepted == 2

    asyncio.run(main())


def test_a_silent_server_times_out_and_a_refused_one_is_a_connect_error() -> None:
    async def main() -> None:
        async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.read()

        async with Server(silent) as s:
            with pytest.raises(httpx2.ReadTimeout):
                await fetch(transport(), s.url, timeout=0.3)
        with pytest.raises(httpx2.ConnectError):  # nothing listens on port 9
            await fetch(transport(), "http://127.0.0.1:9/v1/x")

    asyncio.run(main())


def test_a_header_that_would_split_the_request_is_refused() -> None:
    async def main() -> None:
        async with Server(answers()) as s:
            with pytest.raises(httpx2.LocalProtocolError):
                await fetch(transport(), s.url, headers={"X-Evil": "a\r\nInjected: yes"})
            assert s.accepted == 0

    asyncio.run(main())


def test_a_flood_keeps_to_the_connection_limit_and_a_cancel_gives_its_place_back(
    upstream: Upstream,
) -> None:
    async def main() -> None:
        t = transport(max_connections=5, max_idle=5)
        url = upstream.base_url + "/chat/completions"
        body = {"model": "fake-echo", "stream": True}
        async with httpx2.AsyncClient(transport=t, timeout=10) as http:

            async def one(i: int) -> bytes:
                msg = [{"role": "user", "content": f"[[words:20]] n{i}"}]
                async with http.stream("POST", url, json={**body, "messages": msg}) as r:
                    return b"".join([p async for p in r.aiter_bytes()])

            texts = await asyncio.gather(*(one(i) for i in range(40)))
            assert all(t.endswith(b"data: [DONE]\n\n") for t in texts)
            assert upstream.max_concurrent == 5
            assert len({q["peer"] for q in upstream.requests}) == 5  # each kept and reused

            started = asyncio.Event()

            async def slow() -> None:
                msg = [{"role": "user", "content": "[[slow:5]] a b c"}]
                async with http.stream("POST", url, json={**body, "messages": msg}) as r:
                    started.set()
                    async for _ in r.aiter_bytes():
                        pass

            tasks = [asyncio.create_task(slow()) for _ in range(5)]
            await asyncio.wait_for(started.wait(), 10)
            await asyncio.sleep(0.2)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            assert (await one(99)).endswith(b"data: [DONE]\n\n")  # all 5 places given back

    asyncio.run(main())


def test_tls_with_a_trusted_certificate_and_refused_without(tmp_path: Path) -> None:
    cert, server_tls = localhost_tls(tmp_path)
    raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n6\r\nsecret\r\n0\r\n\r\n"

    async def main() -> None:
        async with Server(answers(raw, raw), tls=server_tls) as s:
            url = f"https://localhost:{s.port}/v1/x"

            def trusting() -> H1Transport:
                return H1Transport(ssl.create_default_context(cafile=str(cert)))

            async with httpx2.AsyncClient(transport=trusting()) as http:
                for _ in range(2):
                    assert (await http.post(url, content=b"x")).content == b"secret"
            assert s.accepted == 1
            with pytest.raises(httpx2.ConnectError) as e:
                await fetch(transport(), url)
            assert "certificate" in str(e.value)
            with pytest.raises(httpx2.ConnectError) as e:  # the name is checked too
                await fetch(trusting(), f"https://127.0.0.1:{s.port}/v1/x")
            assert "127.0.0.1" in str(e.value)

    asyncio.run(main())
