"""Provider faults through a real daemon: each gets its contract error code, any partial
answer is stored as ``partial``, and the daemon keeps serving afterwards."""

from __future__ import annotations

import socket
from typing import Any

import pytest

from assistantd.client import RpcError
from tests.conftest import Daemon, fake_provider_config
from tests.upstream import Upstream


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def send_error(d: Daemon, message: str, **params: Any) -> RpcError:
    """chat/send that must fail; return its error (deltas are collected and ignored)."""
    with pytest.raises(RpcError) as info:
        d.call("chat/send", {"message": message, **params}, on_notify=lambda m, p: None)
    return info.value


def assert_serving(d: Daemon) -> None:
    """The daemon still answers a status call and has nothing left in flight."""
    status = d.call("daemon/status")
    assert status["pid"] == d.proc.pid
    assert status["active_requests"] == 0
    assert d.proc.poll() is None


def last_message(d: Daemon, cid: str) -> dict[str, Any]:
    msgs: list[dict[str, Any]] = d.call("conversations/get", {"id": cid})["messages"]
    return msgs[-1]


def test_429_once_is_retried_and_succeeds(daemon: Daemon, upstream: Upstream) -> None:
    """A single 429 with Retry-After is retried and the chat then succeeds."""
    r = daemon.call("chat/send", {"message": "[[error:429 x1]] [[retry_after:0.1]] hi"})
    assert r["text"] == "You said: hi"
    assert len(upstream.requests) == 2
    assert_serving(daemon)


def test_429_that_persists_is_rate_limited_with_retry_after(daemon: Daemon,
                                                           upstream: Upstream) -> None:  # fmt: skip
    """A 429 that outlasts the retries is -32008 carrying the provider's Retry-After."""
    err = send_error(daemon, "[[error:429]] [[retry_after:0.2]] hi")
    assert err.code == -32008
    assert err.data["retry_after"] == pytest.approx(0.2)
    assert err.data["provider"] == "fake"
    assert len(upstream.requests) == 3  # the first try and two retries
    assert_serving(daemon)


def test_500_is_retried_then_upstream_error(daemon: Daemon, upstream: Upstream) -> None:
    """A 500 is retried; one that persists is -32002 with the status; a single one heals."""
    err = send_error(daemon, "[[error:500]] boom")
    assert err.code == -32002
    assert err.data["status"] == 500
    assert len(upstream.requests) == 3
    upstream.reset()
    assert daemon.call("chat/send", {"message": "[[error:500 x1]] ok"})["text"] == "You said: ok"
    assert len(upstream.requests) == 2
    assert_serving(daemon)


def test_timeout_is_unreachable(make_daemon: Any, upstream: Upstream) -> None:
    """A provider that never answers within its timeout_s is -32003 with its base_url."""
    extra = f"""
[providers.slow]
base_url = "{upstream.base_url}"
models = ["slow-*"]
needs_key = false
timeout_s = 1
"""
    d = make_daemon(fake_provider_config(upstream, extra=extra))
    err = send_error(d, "[[hang]] anyone there?", model="slow-model")
    assert err.code == -32003
    assert err.data["provider"] == "slow"
    assert err.data["base_url"] == upstream.base_url
    assert_serving(d)


def test_connection_refused_is_unreachable(make_daemon: Any, upstream: Upstream) -> None:
    """A provider on a closed port is -32003 naming the base_url; nothing answered is kept."""
    url = f"http://127.0.0.1:{closed_port()}/v1"
    extra = f"""
[providers.gone]
base_url = "{url}"
models = ["gone-*"]
needs_key = false
"""
    d = make_daemon(fake_provider_config(upstream, extra=extra))
    err = send_error(d, "hello?", model="gone-model")
    assert err.code == -32003
    assert err.data["base_url"] == url
    convs = d.call("conversations/list")["conversations"]
    assert [c["message_count"] for c in convs] == [1]  # the question, no answer
    assert_serving(d)


@pytest.mark.parametrize(
    ("directive", "partial", "codes"),
    [
        ("[[words:10]] [[cut:3]]", "w1 w2 w3", (-32002, -32003)),
        ("[[words:10]] [[garbage:2]]", "w1 w2", (-32002,)),
        ("[[words:5]] [[noend]]", "w1 w2 w3 w4 w5", (-32002,)),
    ],
    ids=["cut", "garbage", "noend"],
)
def test_broken_stream_keeps_the_partial(daemon: Daemon, directive: str, partial: str,
                                         codes: tuple[int, ...]) -> None:  # fmt: skip
    """A stream that breaks off after tokens arrived errs with data.partial_text, and the
    partial answer is stored with status partial in the conversation the error names."""
    deltas: list[str] = []
    with pytest.raises(RpcError) as info, daemon.client() as c:
        c.call("chat/send", {"message": directive}, on_notify=lambda m, p: deltas.append(p["text"]))
    err = info.value
    assert err.code in codes
    assert err.data["partial_text"] == partial == "".join(deltas)
    stored = last_message(daemon, err.data["conversation_id"])
    assert stored["id"] == err.data["message_id"]
    assert (stored["role"], stored["status"]) == ("assistant", "partial")
    assert stored["content"] == partial
    assert_serving(daemon)
    # The same conversation goes on after the failure.
    cid = err.data["conversation_id"]
    r = daemon.call("chat/send", {"message": "again", "conversation_id": cid})
    assert r["text"] == "You said: again"
