"""Fake OpenAI-compatible chat-completions server on loopback, stdlib only.

Speaks just enough HTTP/1.1 for httpx and the ``openai`` SDK: keep-alive,
``Content-Length`` bodies, and ``Transfer-Encoding: chunked`` SSE streams.
Built on ``asyncio.start_server`` so hundreds of concurrent streams are cheap.
Request bodies need Content-Length (no chunked uploads); no pipelining.

Tokenizer: ``tokens(text) = re.findall(r"\\s*\\S+|\\s+$", text)``; every word
with its leading whitespace is one token. ``prompt_tokens`` is the sum over
messages of ``tokens(content) + 4``, plus 2. List contents use their text parts
joined by newlines. A request whose ``prompt_tokens + max_tokens`` exceeds the
model's context window gets HTTP 400 ``context_length_exceeded``.

The reply is steered by ``[[...]]`` directives in the last user message:
``reply:TEXT``, ``words:N``, ``echo_system``, ``echo_count``, ``recall``
(reply directives; the first one wins), ``error:CODE[ xK]``, ``retry_after:S``,
``cut:N``, ``noend``, ``garbage:N``, ``slow:SECONDS`` and ``hang``. Without a
reply directive the reply is ``"You said: " + text`` (directives stripped), or
``"Summary: " + first 12 tokens`` when the system message contains SUMMARIZE, or
``"Summary: " + every FACT-word`` when it contains COMPACT (a summarizer that keeps facts).
Logprobs are deterministic: token i has logprob ``-0.1 * (i % 5 + 1)``.
Models whose names start with ``nologprobs`` never return logprobs.

CLI: ``python tests/upstream.py --port 0`` prints ``READY <base_url>`` and
serves until SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import http
import itertools
import json
import re
import signal
import socket
import ssl
import sys
import threading
import time
from collections.abc import Iterable
from typing import Any, NamedTuple, Self

TOKEN_RE = re.compile(r"\s*\S+|\s+$")
DIRECTIVE_RE = re.compile(r"\[\[(\w+)(?::(.*?))?\]\]", re.DOTALL)
FACT_RE = re.compile(r"FACT-\w+")
ERROR_ARG_RE = re.compile(r"\s*(\d{3})\s*(?:x\s*(\d+))?\s*$")
BUILTIN_MODELS = ("fake-echo", "fake-small", "nologprobs-echo")
REPLY_DIRECTIVES = ("reply", "words", "echo_system", "echo_count", "recall")
MAX_BODY = 64 * 1024 * 1024
IDS = itertools.count(1)
Headers = Iterable[tuple[str, str]]
ERROR_KINDS: dict[int, tuple[str, str | None]] = {
    400: ("invalid_request_error", None),
    401: ("invalid_request_error", "invalid_api_key"),
    403: ("permission_error", None),
    404: ("invalid_request_error", "model_not_found"),
    429: ("rate_limit_error", "rate_limit_exceeded"),
    500: ("server_error", None),
    502: ("server_error", None),
    503: ("server_error", "service_unavailable"),
}


class BadRequest(Exception):
    """Unparseable HTTP request; the connection gets a 400 and is closed."""


class HttpRequest(NamedTuple):
    """A parsed HTTP/1.1 request."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    keep_alive: bool


def tokenize(text: str) -> list[str]:
    """Split text into tokens: each word with its leading whitespace."""
    return TOKEN_RE.findall(text)


def content_text(content: Any) -> str:
    """Return the text of a message content (a string or a list of parts)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = [
            p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text"
        ]
        return "\n".join(p for p in parts if isinstance(p, str))
    return ""


def count_prompt_tokens(messages: Any) -> int:
    """Count prompt tokens: sum of (tokens(content) + 4) per message, plus 2."""
    if not isinstance(messages, list):
        return 0
    msgs = [m for m in messages if isinstance(m, dict)]
    return sum(len(tokenize(content_text(m.get("content")))) + 4 for m in msgs) + 2


def parse_directives(text: str) -> tuple[dict[str, str], str]:
    """Return the directives in text (first occurrence wins) and the stripped text."""
    found: dict[str, str] = {}
    for m in DIRECTIVE_RE.finditer(text):
        found.setdefault(m.group(1), m.group(2) or "")
    return found, DIRECTIVE_RE.sub("", text).strip()


def logprob_entry(token: str, index: int, top: int) -> dict[str, Any]:
    """Build the deterministic logprobs entry for the token at index."""
    lp = round(-0.1 * (index % 5 + 1), 4)
    alts = [{"token": token, "logprob": lp, "bytes": list(token.encode())}]
    for j in range(1, top):
        alt = f"alt{j}"
        alts.append({"token": alt, "logprob": round(lp - 0.4 * j, 4), "bytes": list(alt.encode())})
    return {**alts[0], "top_logprobs": alts[:top]}


def directive_number(d: dict[str, str], name: str) -> float | None:
    """Return a non-negative numeric directive argument, or None if absent or malformed."""
    try:
        return max(0.0, float(d[name])) if name in d else None
    except ValueError:
        return None


def http_head(
    status: int, ctype: str, length: int | None, close: bool, extra: Headers = ()
) -> bytes:
    """Render a response head; ``length=None`` means a chunked body."""
    try:
        phrase = http.HTTPStatus(status).phrase
    except ValueError:
        phrase = "Error"
    lines = [
        f"HTTP/1.1 {status} {phrase}",
        f"Content-Type: {ctype}",
        f"x-request-id: req_{next(IDS)}",
    ]
    lines.append("Connection: close" if close else "Connection: keep-alive")
    if length is None:
        lines += ["Transfer-Encoding: chunked", "Cache-Control: no-cache"]
    else:
        lines.append(f"Content-Length: {length}")
    lines += [f"{k}: {v}" for k, v in extra]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


async def read_request(reader: asyncio.StreamReader) -> HttpRequest | None:
    """Read one request; None on a clean EOF, BadRequest on malformed input."""
    line = b"\r\n"
    while line in (b"\r\n", b"\n"):
        line = await reader.readline()
        if not line:
            return None
    parts = line.decode("latin-1").split()
    if len(parts) != 3 or not parts[2].startswith("HTTP/"):
        raise BadRequest("Malformed request line")
    headers: dict[str, str] = {}
    for _ in range(200):
        raw = await reader.readline()
        if not raw:
            return None
        if raw in (b"\r\n", b"\n"):
            break
        name, sep, value = raw.decode("latin-1").partition(":")
        if not sep or not name.strip():
            raise BadRequest("Malformed header line")
        headers[name.strip().lower()] = value.strip()
    else:
        raise BadRequest("Too many headers")
    if "transfer-encoding" in headers:
        raise BadRequest("Chunked request bodies are not supported")
    length = headers.get("content-length", "0")
    if not length.isdigit() or int(length) > MAX_BODY:
        raise BadRequest("Invalid Content-Length")
    body = await reader.readexactly(int(length))
    conn = headers.get("connection", "").lower()
    keep = conn != "close" and (parts[2] != "HTTP/1.0" or conn == "keep-alive")
    return HttpRequest(parts[0].upper(), parts[1].split("?", 1)[0], headers, body, keep)


class Conn:
    """One client connection: writes responses and notices when the client goes away."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.close = False
        self.gone = asyncio.Event()
        self._watcher: asyncio.Task[None] | None = None

    async def send(self, status: int, obj: Any, extra: Headers = ()) -> bool:
        """Send a JSON response; return whether the connection stays open."""
        data = json.dumps(obj).encode()
        self.writer.write(
            http_head(status, "application/json", len(data), self.close, extra) + data
        )
        await self.writer.drain()
        return not self.close

    async def fail(self, status: int, message: str, code: str | None = None, **kw: Any) -> bool:
        """Send an OpenAI-shaped error (``etype``, ``param`` and ``extra`` via kw)."""
        etype, param = kw.get("etype", "invalid_request_error"), kw.get("param")
        err = {"message": message, "type": etype, "param": param, "code": code}
        return await self.send(status, {"error": err}, kw.get("extra", ()))

    async def event(self, data: str) -> None:
        """Send one SSE event as one HTTP chunk and flush it."""
        payload = f"data: {data}\n\n".encode()
        self.writer.write(b"%x\r\n%s\r\n" % (len(payload), payload))
        await self.writer.drain()

    def watch(self) -> None:
        """Start noticing a client disconnect (sets ``gone``) while a response is produced."""
        self._watcher = asyncio.create_task(self._watch())

    async def _watch(self) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            while await self.reader.read(65536):
                pass  # httpx never pipelines, so nothing else should arrive
        self.gone.set()

    async def unwatch(self) -> None:
        """Stop the watcher; must happen before the client can send its next request."""
        watcher, self._watcher = self._watcher, None
        if watcher is not None and not watcher.done():
            watcher.cancel()
            await asyncio.wait([watcher])

    async def wait_gone(self, seconds: float) -> bool:
        """Sleep up to ``seconds``; return True if the client disconnected meanwhile."""
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self.gone.wait(), seconds)
        return self.gone.is_set()


class Upstream:
    """OpenAI-compatible fake server; run it in a thread or inside a running loop."""

    def __init__(
        self,
        *,
        api_key: str | None = None,
        context_windows: dict[str, int] | None = None,
        default_context_window: int = 1_000_000,
        host: str = "127.0.0.1",
        port: int = 0,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.api_key = api_key
        self.tls = tls  # with a context: HTTPS, its base URL named ``localhost``
        self.context_windows = dict(context_windows or {})
        self.default_context_window = default_context_window
        self.host, self.port = host, port
        self.requests: list[dict[str, Any]] = []
        self.max_concurrent = self.in_flight = self.cancelled_streams = 0
        self.errors: list[str] = []  # unexpected handler exceptions, for debugging
        self._seen: dict[str, int] = {}
        self._server: asyncio.Server | None = None
        self._conns: set[asyncio.Task[Any]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        """Return the OpenAI base URL, e.g. ``http://127.0.0.1:PORT/v1``."""
        if self.tls is not None:
            return f"https://localhost:{self.port}/v1"
        return f"http://{self.host}:{self.port}/v1"

    def reset(self) -> None:
        """Clear recorded requests, counters and per-message directive state."""
        self.requests.clear()
        self._seen.clear()
        self.errors.clear()
        self.max_concurrent, self.cancelled_streams = self.in_flight, 0

    # ----------------------------------------------------------------- lifecycle
    async def astart(self) -> Self:
        """Start listening in the running event loop."""
        self._server = await asyncio.start_server(self._handle, self.host, self.port, ssl=self.tls)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def astop(self) -> None:
        """Stop listening and drop every open connection."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
        tasks = list(self._conns)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if server is not None:
            await server.wait_closed()

    async def serve(self) -> None:
        """Start (if needed) and serve until cancelled."""
        server = self._server or (await self.astart())._server
        assert server is not None
        try:
            await server.serve_forever()
        finally:
            await self.astop()

    def start(self) -> Self:
        """Run the server on its own event loop in a daemon thread."""
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, name="fake-upstream", daemon=True)
        thread.start()
        try:
            asyncio.run_coroutine_threadsafe(self.astart(), loop).result(10)
        except BaseException:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(10)
            loop.close()
            raise
        self._loop, self._thread = loop, thread
        return self

    def stop(self) -> None:
        """Stop a server started with start()."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        self._loop = self._thread = None
        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(self.astop(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---------------------------------------------------------------- HTTP layer
    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._conns.add(task)
        with contextlib.suppress(OSError, AttributeError):
            writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn = Conn(reader, writer)
        try:
            while not conn.close:
                try:
                    req = await read_request(reader)
                except BadRequest as exc:
                    conn.close = True
                    await conn.fail(400, str(exc))
                    break
                if req is None:
                    break
                conn.close = not req.keep_alive
                if not await self._dispatch(conn, req):
                    break
        except (ConnectionError, asyncio.IncompleteReadError, ValueError, OSError):
            pass  # client went away or sent garbage
        except asyncio.CancelledError:
            pass  # astop(); returning normally avoids noisy logs on Python 3.11
        except Exception as exc:  # the server must survive any input
            self.errors.append(repr(exc))
        finally:
            if task is not None:
                self._conns.discard(task)
            if not writer.transport.is_closing():
                writer.close()

    async def _dispatch(self, conn: Conn, req: HttpRequest) -> bool:
        path = req.path.rstrip("/")
        is_chat = req.method == "POST" and path == "/v1/chat/completions"
        body: Any = None
        if is_chat:
            with contextlib.suppress(ValueError):
                body = json.loads(req.body)
            if isinstance(body, dict):
                tokens = count_prompt_tokens(body.get("messages"))
                peer = conn.writer.get_extra_info("peername")
                self.requests.append(
                    {"body": body, "headers": req.headers, "prompt_tokens": tokens, "peer": peer}
                )
        key = self.api_key
        if key is not None and req.headers.get("authorization") != f"Bearer {key}":
            return await conn.fail(401, "Incorrect API key provided", "invalid_api_key")
        if req.method == "GET" and path == "/v1/models":
            ids = dict.fromkeys([*BUILTIN_MODELS, *self.context_windows])
            data = [{"id": m, "object": "model", "created": 0, "owned_by": "fake"} for m in ids]
            return await conn.send(200, {"object": "list", "data": data})
        if not is_chat:
            return await conn.fail(404, f"Unknown endpoint {req.method} {req.path}", "unknown_url")
        if not isinstance(body, dict):
            return await conn.fail(400, "Request body is not a valid JSON object")
        self.in_flight += 1
        self.max_concurrent = max(self.max_concurrent, self.in_flight)
        try:
            return await self._chat(conn, body)
        finally:
            self.in_flight -= 1
            await conn.unwatch()

    # ------------------------------------------------------------ chat endpoint
    @staticmethod
    def _invalid(req: dict[str, Any]) -> str | None:
        def bad_int(v: Any, hi: int) -> bool:
            return v is not None and (type(v) is not int or not 0 <= v <= hi)

        msgs = req.get("messages")
        if not isinstance(req.get("model"), str) or not req["model"]:
            return "you must provide a model parameter"
        if (
            not msgs
            or not isinstance(msgs, list)
            or not all(isinstance(m, dict) and "role" in m for m in msgs)
        ):
            return "'messages' must be a non-empty array of message objects"
        if bad_int(req.get("max_completion_tokens", req.get("max_tokens")), 1 << 40):
            return "max_tokens must be a non-negative integer"
        if bad_int(req.get("top_logprobs"), 20):
            return "top_logprobs must be an integer between 0 and 20"
        return None

    @staticmethod
    def _reply(messages: list[dict[str, Any]], d: dict[str, str], last: str) -> str:
        texts = [content_text(m.get("content")) for m in messages]
        for name in (n for n in d if n in REPLY_DIRECTIVES):
            if name == "reply":
                return d[name]
            if name == "words" and (n := directive_number(d, "words")) is not None:
                return " ".join(f"w{i}" for i in range(1, int(n) + 1))
            if name == "echo_system":
                sys_texts = [
                    t for m, t in zip(messages, texts, strict=True) if m["role"] == "system"
                ]
                return "\n\n".join(sys_texts)
            if name == "echo_count":
                return f"messages={len(messages)}"
            if name == "recall":
                return " ".join(dict.fromkeys(FACT_RE.findall("\n".join(texts)))) or "none"
        if messages[0].get("role") == "system" and "SUMMARIZE" in texts[0]:
            return "Summary: " + "".join(tokenize(last)[:12]).strip()
        if messages[0].get("role") == "system" and "COMPACT" in texts[0]:
            # A faithful summarizer: it keeps every FACT word of what it was given.
            facts = dict.fromkeys(re.findall(r"FACT-\w+", last))
            return "Summary: " + (" ".join(facts) or "nothing")
        return "You said: " + last

    async def _chat(self, conn: Conn, req: dict[str, Any]) -> bool:
        if problem := self._invalid(req):
            return await conn.fail(400, problem)
        model: str = req["model"]
        messages: list[dict[str, Any]] = req["messages"]
        prompt_tokens = count_prompt_tokens(messages)
        max_tokens: int | None = req.get("max_completion_tokens", req.get("max_tokens"))
        window = self.context_windows.get(model, self.default_context_window)
        if prompt_tokens + (max_tokens or 0) > window:
            msg = (
                f"This model's maximum context length is {window} tokens. "
                f"However, your messages resulted in {prompt_tokens} tokens."
            )
            return await conn.fail(400, msg, "context_length_exceeded", param="messages")
        users = [content_text(m.get("content")) for m in messages if m.get("role") == "user"]
        raw_last = users[-1] if users else ""
        d, last = parse_directives(raw_last)
        if "error" in d and (em := ERROR_ARG_RE.match(d["error"])):
            self._seen[raw_last] = seen = self._seen.get(raw_last, 0) + 1
            if em.group(2) is None or seen <= int(em.group(2)):
                code = int(em.group(1))
                retry = [("Retry-After", d.get("retry_after") or "1")]
                extra = retry if code == 429 or "retry_after" in d else []
                etype, ecode = ERROR_KINDS.get(code, ("api_error", None))
                return await conn.fail(
                    code, f"Simulated error {code}", ecode, etype=etype, extra=extra
                )
        conn.watch()
        if "hang" in d:
            await conn.gone.wait()
            return False
        toks = tokenize(self._reply(messages, d, last))
        finish = "stop"
        if max_tokens is not None and len(toks) > max_tokens:
            toks, finish = toks[:max_tokens], "length"
        want_lp = bool(req.get("logprobs")) and not model.startswith("nologprobs")
        top = (req.get("top_logprobs") or 0) if want_lp else None  # None: no logprobs
        n = len(toks)
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": n,
            "total_tokens": prompt_tokens + n,
        }
        base = {"id": f"chatcmpl-{next(IDS)}", "created": int(time.time()), "model": model}
        if req.get("stream"):
            opts = req.get("stream_options")
            usage_on = isinstance(opts, dict) and bool(opts.get("include_usage"))
            return await self._stream(conn, d, toks, finish, top, usage if usage_on else None, base)
        slow = directive_number(d, "slow") or 0.0
        if slow and await conn.wait_gone(slow * n):
            return False
        await conn.unwatch()
        lp = (
            None
            if top is None
            else {"content": [logprob_entry(t, i, top) for i, t in enumerate(toks)]}
        )
        message = {"role": "assistant", "content": "".join(toks)}
        choice = {"index": 0, "message": message, "logprobs": lp, "finish_reason": finish}
        obj = {**base, "object": "chat.completion", "choices": [choice], "usage": usage}
        return await conn.send(200, obj)

    async def _stream(
        self,
        conn: Conn,
        d: dict[str, str],
        toks: list[str],
        finish: str,
        top: int | None,
        usage: dict[str, int] | None,
        base: dict[str, Any],
    ) -> bool:
        """Send the SSE stream; return whether the connection may be reused."""

        def chunk(delta: dict[str, Any], lp: Any = None, reason: str | None = None) -> str:
            choice = {"index": 0, "delta": delta, "logprobs": lp, "finish_reason": reason}
            return json.dumps({**base, "object": "chat.completion.chunk", "choices": [choice]})

        slow = directive_number(d, "slow") or 0.0
        cut, garbage = (directive_number(d, k) for k in ("cut", "garbage"))
        cut_at = -1 if cut is None else min(int(cut), len(toks))
        garbage_at = -1 if garbage is None else min(int(garbage), len(toks))
        try:
            conn.writer.write(http_head(200, "text/event-stream", None, conn.close))
            await conn.event(chunk({"role": "assistant", "content": ""}))
            for i in range(len(toks) + 1):
                if i == cut_at:
                    conn.writer.transport.abort()
                    return False
                if i == garbage_at:
                    await conn.event("{not json")
                if i == len(toks):
                    break
                if (slow and await conn.wait_gone(slow)) or conn.gone.is_set():
                    self.cancelled_streams += 1
                    return False
                lp = None if top is None else {"content": [logprob_entry(toks[i], i, top)]}
                await conn.event(chunk({"content": toks[i]}, lp))
                if not slow:
                    await asyncio.sleep(0)  # let other streams and the watcher run
            if "noend" not in d:
                await conn.event(chunk({}, None, finish))
            if usage is not None:
                obj = {**base, "object": "chat.completion.chunk", "choices": [], "usage": usage}
                await conn.event(json.dumps(obj))
            await conn.event("[DONE]")
            await conn.unwatch()
            conn.writer.write(b"0\r\n\r\n")
            await conn.writer.drain()
        except (ConnectionError, OSError):
            self.cancelled_streams += 1
            return False
        return not conn.close


def main(argv: list[str] | None = None) -> int:
    """Run the fake upstream until SIGTERM/SIGINT; print ``READY <base_url>``."""
    parser = argparse.ArgumentParser(description="Fake OpenAI-compatible upstream")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--api-key", default=None)
    parser.add_argument(
        "--context-window", action="extend", nargs="+", default=[], metavar="MODEL=N"
    )
    parser.add_argument("--default-context-window", type=int, default=1_000_000)
    args = parser.parse_args(argv)
    windows: dict[str, int] = {}
    for spec in args.context_window:
        name, sep, value = spec.rpartition("=")
        if not sep or not name or not value.isdigit():
            parser.error(f"bad --context-window {spec!r}; expected MODEL=N")
        windows[name] = int(value)

    async def run() -> None:
        up = Upstream(
            api_key=args.api_key,
            context_windows=windows,
            default_context_window=args.default_context_window,
            host=args.host,
            port=args.port,
        )
        await up.astart()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        print(f"READY {up.base_url}", flush=True)
        await stop.wait()
        await up.astop()

    asyncio.run(run())
    return 0


if __name__ == "__main__":
    sys.exit(main())
