"""Providers.complete through an injected httpx2.MockTransport (in-process, no daemon, no
sockets): the SDK builds and sends the request, the daemon's own code reads the SSE body."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator
from typing import Any

import httpx2
import pytest

from assistantd import errors, keystore, providers
from assistantd.config import Config

KEY = "sk-unit-test-0123456789"
Handler = Callable[[httpx2.Request], httpx2.Response]


@pytest.fixture(autouse=True)
def _env_key(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    # No OS keyring in a unit test: keyring's own "fail" backend, so the env var is the key.
    monkeypatch.setenv("PYTHON_KEYRING_BACKEND", "keyring.backends.fail.Keyring")
    monkeypatch.setenv("UNIT_FAKE_KEY", KEY)
    yield
    # The backend chosen here is remembered process-wide (by keyring and by keystore):
    # forget it, so tests run after these in this process find the real Secret Service.
    from keyring import core

    core._keyring_backend = None
    keystore._chosen = None


def sse(*events: dict[str, Any] | str) -> httpx2.Response:
    """A streamed answer: one ``data:`` line per event, as tests/upstream.py sends them."""
    body = b"".join(
        f"data: {e if isinstance(e, str) else json.dumps(e)}\n\n".encode() for e in events
    )
    return httpx2.Response(200, headers={"content-type": "text/event-stream"}, content=body)


def chunk(content: str | None = None, *, lp: Any = None, reason: str | None = None) -> Any:
    delta = {} if content is None else {"content": content}
    choice = {"index": 0, "delta": delta, "logprobs": lp, "finish_reason": reason}
    return {
        "id": "c1",
        "object": "chat.completion.chunk",
        "model": "fake-echo",
        "choices": [choice],
    }


def logprob(token: str, value: float) -> dict[str, Any]:
    top = [{"token": token, "logprob": value, "bytes": list(token.encode())}]
    return {"content": [{**top[0], "top_logprobs": top}]}


def error_body(status: int, message: str) -> httpx2.Response:
    err = {"message": message, "type": "invalid_request_error", "param": None, "code": None}
    return httpx2.Response(status, json={"error": err}, headers={"retry-after": "0"})


async def run(handler: Handler, *, top_logprobs: int | None = None) -> providers.Completion:
    config = Config.model_validate(
        {
            "providers": {
                "unitfake": {
                    "base_url": "http://upstream.invalid/v1",
                    "models": ["fake-*"],
                    "key_env": "UNIT_FAKE_KEY",
                }
            }
        }
    )
    ps = providers.Providers(config, transport=httpx2.MockTransport(handler))
    try:
        p = ps.route("fake-echo")
        assert p.name == "unitfake"
        out = providers.Completion()
        messages = [{"role": "user", "content": "hi"}]
        return await ps.complete(p, "fake-echo", messages, out, top_logprobs=top_logprobs)
    finally:
        await ps.close()


def test_stream_joins_text_logprobs_and_usage() -> None:
    """A streamed answer's text, logprobs and usage arrive joined in the completion."""
    sent: list[dict[str, Any]] = []

    def serve(request: httpx2.Request) -> httpx2.Response:
        sent.append(json.loads(request.content))
        assert request.headers["authorization"] == f"Bearer {KEY}"
        usage = {"prompt_tokens": 7, "completion_tokens": 2, "total_tokens": 9}
        return sse(
            chunk(""),
            chunk("Hello", lp=logprob("Hello", -0.1)),
            chunk(" world", lp=logprob(" world", -0.2)),
            chunk(reason="stop"),
            {"id": "c1", "object": "chat.completion.chunk", "choices": [], "usage": usage},
            "[DONE]",
        )

    out = asyncio.run(run(serve, top_logprobs=1))
    assert out.text == "Hello world"
    assert out.finish_reason == "stop"
    assert [(e["token"], e["logprob"]) for e in out.logprobs] == [("Hello", -0.1), (" world", -0.2)]
    assert out.usage == {"prompt_tokens": 7, "completion_tokens": 2, "total_tokens": 9}
    assert sent[0]["stream"] is True and sent[0]["logprobs"] is True
    assert sent[0]["top_logprobs"] == 1
    assert sent[0]["stream_options"] == {"include_usage": True}


def test_stream_without_finish_reason_is_an_error() -> None:
    """A stream that ends after its text with no finish reason breaks off with -32002."""

    def serve(request: httpx2.Request) -> httpx2.Response:
        return sse(chunk("partial"), "[DONE]")

    with pytest.raises(providers.StreamBroken) as caught:
        asyncio.run(run(serve))
    assert caught.value.error.code == errors.UpstreamError.code
    assert "could not be read" in caught.value.error.message


def test_error_event_inside_the_stream_breaks_it_off() -> None:
    """An error event after the first token breaks the stream off with its message as -32002."""

    def serve(request: httpx2.Request) -> httpx2.Response:
        return sse(chunk("Hel"), {"error": {"message": "the model is overloaded"}})

    with pytest.raises(providers.StreamBroken) as caught:
        asyncio.run(run(serve))
    assert caught.value.error.code == errors.UpstreamError.code
    assert "the model is overloaded" in caught.value.error.message


def test_rate_limit_then_success_is_retried() -> None:
    """A 429 before the first token is retried, and the retry's answer is the result."""
    calls: list[int] = []

    def serve(request: httpx2.Request) -> httpx2.Response:
        calls.append(1)
        if len(calls) == 1:
            return error_body(429, "slow down")
        return sse(chunk("ok"), chunk(reason="stop"), "[DONE]")

    out = asyncio.run(run(serve))
    assert len(calls) == 2
    assert (out.text, out.finish_reason) == ("ok", "stop")


def test_unauthorized_maps_to_upstream_error_without_the_key() -> None:
    """A 401 maps to -32002 with status 401, its message saying the key was refused, not the key."""
    calls: list[int] = []

    def serve(request: httpx2.Request) -> httpx2.Response:
        calls.append(1)
        return error_body(401, f"Incorrect API key provided: {KEY}")

    with pytest.raises(errors.UpstreamError) as caught:
        asyncio.run(run(serve))
    err = caught.value
    assert err.code == -32002
    assert err.data["status"] == 401
    assert "refused the API key (401)" in err.message
    assert KEY not in json.dumps(err.to_json())
    assert len(calls) == 1  # a 401 is not retried


def test_a_half_imported_sdk_is_not_read_for_errors() -> None:
    """A plain-HTTP request that fails while the SDK is still importing on its thread (its
    module in sys.modules, not yet holding APIError) is mapped as usual, not turned into
    an internal error (seen under load: a local server's 503 "Loading model" right after
    a restart). In a fresh interpreter, whose ``openai`` module is left half made."""
    import subprocess
    import sys

    probe = (
        "import sys, types\n"
        "from assistantd import providers\n"
        "sys.modules['openai'] = types.ModuleType('openai')  # as mid-import\n"
        "print(providers.sdk_failure(providers.UpstreamFailure('x', status=503)))\n"
        "print(providers.sdk_failure(ValueError('y')))\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert (out.returncode, out.stdout) == (0, "None\nNone\n"), out.stderr
