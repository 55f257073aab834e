"""Tests for the fake OpenAI-compatible upstream (tests/upstream.py), driven by the real openai
SDK. They test the test tooling, not the product: scripts/test runs them as their own pytest
run before the product suite, and the default collection skips this folder."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from tests.upstream import Upstream, count_prompt_tokens, tokenize

UPSTREAM_PY = Path(__file__).parent.parent / "upstream.py"


@pytest.fixture
def up() -> Iterator[Upstream]:
    """A running upstream without an API key."""
    with Upstream(context_windows={"tiny": 30}) as server:
        yield server


@pytest.fixture
def client(up: Upstream) -> openai.OpenAI:
    """An SDK client for the `up` fixture that never retries."""
    return openai.OpenAI(base_url=up.base_url, api_key="k", max_retries=0)


def user(text: str) -> list[Any]:
    """Build a one-message conversation."""
    return [{"role": "user", "content": text}]


def ask(client: openai.OpenAI, text: str, **kw: Any) -> str:
    """Send a non-streaming request and return the reply text."""
    resp = client.chat.completions.create(model="fake-echo", messages=user(text), **kw)
    return resp.choices[0].message.content or ""


def raw_http(port: int, data: bytes) -> bytes:
    """Send raw bytes to the server and return everything it answers until close."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(data)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def test_tokenizer_rule() -> None:
    """Each word with its leading whitespace is one token; prompt adds 4 per message plus 2."""
    assert tokenize("You said: hi") == ["You", " said:", " hi"]
    assert tokenize("  a b  ") == ["  a", " b", "  "]
    msgs = [
        {"role": "system", "content": "x y"},
        {"role": "user", "content": [{"type": "text", "text": "z"}]},
    ]
    assert count_prompt_tokens(msgs) == (2 + 4) + (1 + 4) + 2


def test_non_stream_echo_usage_and_logprobs(up: Upstream, client: openai.OpenAI) -> None:
    """A non-streaming request echoes the text with usage, finish_reason and fixed logprobs."""
    resp = client.chat.completions.create(
        model="fake-echo", messages=user("hello there"), logprobs=True, top_logprobs=3
    )
    choice = resp.choices[0]
    assert choice.message.content == "You said: hello there"
    assert choice.finish_reason == "stop"
    assert resp.model == "fake-echo"
    assert resp.usage is not None
    assert (resp.usage.prompt_tokens, resp.usage.completion_tokens, resp.usage.total_tokens) == (
        8,
        4,
        12,
    )
    assert choice.logprobs is not None and choice.logprobs.content is not None
    entries = choice.logprobs.content
    assert [e.token for e in entries] == ["You", " said:", " hello", " there"]
    assert entries[0].logprob == pytest.approx(-0.1)
    assert entries[0].bytes == list(b"You")
    tops = entries[1].top_logprobs
    assert [t.token for t in tops] == [" said:", "alt1", "alt2"]
    assert tops[0].logprob == entries[1].logprob > tops[1].logprob > tops[2].logprob > -10
    assert up.requests[-1]["prompt_tokens"] == 8
    assert up.requests[-1]["headers"]["authorization"] == "Bearer k"


def test_stream_with_usage_and_logprobs(client: openai.OpenAI) -> None:
    """A stream sends a role chunk, a chunk per token with logprobs, a finish chunk, then usage."""
    stream = client.chat.completions.create(
        model="fake-echo",
        messages=user("hi [[words:5]]"),
        stream=True,
        stream_options={"include_usage": True},
        logprobs=True,
        top_logprobs=2,
    )
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    content = [c for c in chunks if c.choices and c.choices[0].delta.content]
    assert [c.choices[0].delta.content for c in content] == ["w1", " w2", " w3", " w4", " w5"]
    for c in content:
        lp = c.choices[0].logprobs
        assert lp is not None and lp.content is not None and len(lp.content[0].top_logprobs) == 2
    assert chunks[-2].choices[0].finish_reason == "stop"
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 5


def test_models_endpoint(up: Upstream, client: openai.OpenAI) -> None:
    """GET /v1/models lists the built-in fake models and configured ones."""
    ids = {m.id for m in client.models.list()}
    assert {"fake-echo", "fake-small", "nologprobs-echo", "tiny"} <= ids


def test_missing_or_wrong_key_gets_401() -> None:
    """With an api_key set, a wrong key gets 401 invalid_api_key and the key is never echoed."""
    with Upstream(api_key="sekrit-123") as server:
        bad = openai.OpenAI(base_url=server.base_url, api_key="wrong", max_retries=0)
        with pytest.raises(openai.AuthenticationError) as info:
            ask(bad, "hi")
        assert info.value.code == "invalid_api_key"
        assert "sekrit-123" not in info.value.response.text
        good = openai.OpenAI(base_url=server.base_url, api_key="sekrit-123", max_retries=0)
        assert ask(good, "hi") == "You said: hi"


def test_rate_limit_with_retry_after(client: openai.OpenAI) -> None:
    """[[error:429]] answers 429 with Retry-After 1, and [[retry_after:S]] overrides it."""
    with pytest.raises(openai.RateLimitError) as info:
        ask(client, "[[error:429]] slow down")
    assert info.value.response.headers["retry-after"] == "1"
    assert "x-request-id" in info.value.response.headers
    with pytest.raises(openai.RateLimitError) as info:
        ask(client, "[[error:429]][[retry_after:7]]")
    assert info.value.response.headers["retry-after"] == "7"


def test_context_length_exceeded(client: openai.OpenAI) -> None:
    """Prompt tokens plus max_tokens over the model's window gives 400 context_length_exceeded."""
    model = "tiny"  # window of 30 tokens
    ok = client.chat.completions.create(model=model, messages=user("one two three"))
    assert ok.choices[0].message.content == "You said: one two three"
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model=model, messages=user("one two three"), max_tokens=25)
    assert info.value.code == "context_length_exceeded"
    assert "maximum context length is 30 tokens" in str(info.value)
    assert "resulted in 9 tokens" in str(info.value)


def test_cut_mid_stream_raises(client: openai.OpenAI) -> None:
    """[[cut:3]] aborts the connection after 3 content chunks and the SDK raises."""
    got: list[str] = []
    stream = client.chat.completions.create(
        model="fake-echo", messages=user("[[words:50]][[cut:3]]"), stream=True
    )
    with pytest.raises(openai.APIConnectionError):
        for chunk in stream:
            got.append(chunk.choices[0].delta.content or "")
    assert "".join(got) == "w1 w2 w3"


def test_error_x2_succeeds_third_time(up: Upstream, client: openai.OpenAI) -> None:
    """[[error:500 x2]] fails twice for one message, then succeeds; reset() restarts the count."""
    for _ in range(2):
        with pytest.raises(openai.InternalServerError):
            ask(client, "flaky [[error:500 x2]]")
    assert ask(client, "flaky [[error:500 x2]]") == "You said: flaky"
    up.reset()
    assert up.requests == []
    with pytest.raises(openai.InternalServerError):
        ask(client, "flaky [[error:500 x2]]")


def test_sdk_retries_through_transient_errors(up: Upstream) -> None:
    """The SDK's own retries get through [[error:503 x1]] with a short Retry-After."""
    retrying = openai.OpenAI(base_url=up.base_url, api_key="k", max_retries=2)
    assert ask(retrying, "again [[error:503 x1]][[retry_after:0.05]]") == "You said: again"
    assert len(up.requests) == 2


def test_words_500_gives_500_chunks(client: openai.OpenAI) -> None:
    """[[words:500]] streams exactly 500 content chunks."""
    stream = client.chat.completions.create(
        model="fake-echo", messages=user("[[words:500]]"), stream=True
    )
    content = [
        c.choices[0].delta.content for c in stream if c.choices and c.choices[0].delta.content
    ]
    assert len(content) == 500
    assert content[-1] == " w500"


def test_nologprobs_model_ignores_logprobs(client: openai.OpenAI) -> None:
    """Models named nologprobs* never return logprobs, streaming or not."""
    resp = client.chat.completions.create(
        model="nologprobs-echo", messages=user("hi"), logprobs=True, top_logprobs=2
    )
    assert resp.choices[0].logprobs is None
    stream = client.chat.completions.create(
        model="nologprobs-echo", messages=user("hi"), logprobs=True, top_logprobs=2, stream=True
    )
    assert all(c.choices[0].logprobs is None for c in stream if c.choices)


def test_reply_directives(client: openai.OpenAI) -> None:
    """reply, echo_system, echo_count, recall and SUMMARIZE shape the reply text."""

    def reply(messages: list[Any]) -> str:
        resp = client.chat.completions.create(model="fake-echo", messages=messages)
        return resp.choices[0].message.content or ""

    assert ask(client, "x [[reply:exactly this]] y") == "exactly this"
    msgs: list[Any] = [
        {"role": "system", "content": "be nice FACT-alpha"},
        {"role": "user", "content": "remember FACT-beta"},
        {"role": "assistant", "content": "ok"},
        {"role": "user", "content": "[[echo_system]]"},
    ]
    assert reply(msgs) == "be nice FACT-alpha"
    msgs[-1]["content"] = "[[echo_count]]"
    assert reply(msgs) == "messages=4"
    msgs[-1]["content"] = "[[recall]] FACT-gamma"
    assert reply(msgs) == "FACT-alpha FACT-beta FACT-gamma"
    assert ask(client, "[[recall]]") == "none"
    letters = " ".join("abcdefghijklmnop")
    summary = reply([{"role": "system", "content": "SUMMARIZE this"}, *user(letters)])
    assert summary == "Summary: a b c d e f g h i j k l"


def test_max_tokens_truncates_with_length(client: openai.OpenAI) -> None:
    """max_tokens truncates the reply and sets finish_reason to length."""
    resp = client.chat.completions.create(
        model="fake-echo", messages=user("[[words:10]]"), max_tokens=3
    )
    assert resp.choices[0].message.content == "w1 w2 w3"
    assert resp.choices[0].finish_reason == "length"


def test_noend_and_garbage_streams(client: openai.OpenAI) -> None:
    """[[noend]] omits the finish_reason chunk and [[garbage:N]] injects an undecodable event."""
    stream = client.chat.completions.create(
        model="fake-echo", messages=user("[[words:3]][[noend]]"), stream=True
    )
    chunks = list(stream)
    assert all(c.choices[0].finish_reason is None for c in chunks)
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == "w1 w2 w3"
    stream = client.chat.completions.create(
        model="fake-echo", messages=user("[[words:3]][[garbage:1]]"), stream=True
    )
    with pytest.raises(json.JSONDecodeError):
        list(stream)


def test_client_disconnect_cancels_stream(up: Upstream, client: openai.OpenAI) -> None:
    """Closing a slow stream early stops generation and counts a cancelled stream."""
    stream = client.chat.completions.create(
        model="fake-echo", messages=user("[[words:200]][[slow:0.02]]"), stream=True
    )
    for i, _ in enumerate(stream):
        if i == 3:
            break
    stream.close()
    deadline = time.monotonic() + 5
    while up.cancelled_streams < 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert up.cancelled_streams == 1


def test_hang_times_out(up: Upstream) -> None:
    """[[hang]] never answers, so a client timeout fires."""
    impatient = openai.OpenAI(base_url=up.base_url, api_key="k", max_retries=0, timeout=0.3)
    with pytest.raises(openai.APITimeoutError):
        ask(impatient, "[[hang]]")


def test_bad_input_never_kills_server(up: Upstream, client: openai.OpenAI) -> None:
    """Malformed JSON or HTTP gets 400, unknown paths 404, and the server keeps serving."""
    body = b"{not json"
    head = (
        "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    answer = raw_http(up.port, head.encode() + body)
    assert answer.startswith(b"HTTP/1.1 400 ") and b'"error"' in answer
    answer = raw_http(up.port, b"GET /nope HTTP/1.1\r\nConnection: close\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 404 ") and b"x-request-id" in answer
    assert raw_http(up.port, b"\x00\xff garbage\r\n\r\n").startswith(b"HTTP/1.1 400 ")
    chunked = b"POST /v1/chat/completions HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
    assert raw_http(up.port, chunked).startswith(b"HTTP/1.1 400 ")
    assert raw_http(
        up.port, b"POST /v1/chat/completions HTTP/1.1\r\nContent-Length: zz\r\n\r\n"
    ).startswith(b"HTTP/1.1 400 ")
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="fake-echo", messages=[])
    assert ask(client, "still alive") == "You said: still alive"
    assert up.errors == []


def test_concurrent_streams_in_process() -> None:
    """Inside a running loop, astart() serves 100 concurrent streams and tracks max_concurrent."""

    async def run() -> tuple[list[int], int]:
        server = await Upstream().astart()
        try:
            aclient = openai.AsyncOpenAI(base_url=server.base_url, api_key="k", max_retries=0)

            async def one() -> int:
                stream = await aclient.chat.completions.create(
                    model="fake-echo", messages=user("[[words:100]]"), stream=True
                )
                return len([c async for c in stream if c.choices and c.choices[0].delta.content])

            counts = await asyncio.gather(*(one() for _ in range(100)))
            await aclient.close()
            return counts, server.max_concurrent
        finally:
            await server.astop()

    counts, peak = asyncio.run(run())
    assert counts == [100] * 100
    assert peak > 1


def test_serve_inside_running_loop() -> None:
    """After astart(), serve() runs inside an existing event loop until its task is cancelled."""

    async def run() -> str:
        server = await Upstream().astart()
        task = asyncio.create_task(server.serve())
        aclient = openai.AsyncOpenAI(base_url=server.base_url, api_key="k", max_retries=0)
        resp = await aclient.chat.completions.create(model="fake-small", messages=user("yo"))
        await aclient.close()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        return resp.choices[0].message.content or ""

    assert asyncio.run(run()) == "You said: yo"


def test_cli_prints_ready_and_serves() -> None:
    """The CLI prints one READY line with the base URL, answers requests and exits on SIGTERM."""
    argv = [sys.executable, str(UPSTREAM_PY), "--port", "0", "--api-key", "K"]
    with subprocess.Popen(
        [*argv, "--context-window", "mini=20"], stdout=subprocess.PIPE, text=True
    ) as proc:
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline().strip()
            assert line.startswith("READY http://127.0.0.1:") and line.endswith("/v1")
            cli_client = openai.OpenAI(base_url=line.split()[1], api_key="K", max_retries=0)
            assert ask(cli_client, "over the wire") == "You said: over the wire"
            assert "mini" in {m.id for m in cli_client.models.list()}
            cli_client.close()
        finally:
            proc.terminate()
        assert proc.wait(timeout=10) == 0
        assert proc.stdout.read() == ""  # exactly one line was printed
