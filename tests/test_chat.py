"""chat/send end to end: streaming, usage, logprobs, history, trimming, retries, partial
answers, and conversations that survive a restart. Every test runs twice: with streamed
answers through the real SDK (``streaming = "sdk"``) and in plain HTTP (``"http"``, how a
cold daemon sends its first answers), and checks that each streamed request went the
way its daemon was told to send it."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

from assistantd.client import RpcError
from tests.conftest import Daemon, fake_provider_config
from tests.upstream import Upstream


@pytest.fixture(params=["sdk", "http"])
def streaming(request: pytest.FixtureRequest) -> str:
    """How the test's daemons send streamed answers (the config's ``streaming``)."""
    return str(request.param)


@pytest.fixture
def daemon(make_daemon: Any, upstream: Upstream, streaming: str) -> Daemon:
    """A daemon whose ``fake`` provider is the loopback upstream, streaming as told."""
    d: Daemon = make_daemon(fake_provider_config(upstream, streaming=streaming))
    return d


@pytest.fixture(autouse=True)
def streamed_the_way_told(upstream: Upstream, streaming: str) -> Iterator[None]:
    """After each test: every streamed request reached the upstream the way the daemon was
    told to send it (the SDK names itself in User-Agent; plain HTTP names assistantd)."""
    yield
    agents = {
        r["headers"].get("user-agent", "") for r in upstream.requests if r["body"].get("stream")
    }
    want = "AsyncOpenAI/Python" if streaming == "sdk" else "assistantd/"
    assert all(a.startswith(want) for a in agents), (streaming, agents)


def send(d: Daemon, **params: Any) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    notes: list[dict[str, Any]] = []
    with d.client() as c:
        r = c.call("chat/send", params, on_notify=lambda m, p: notes.append({"method": m, **p}))
    return r, notes


def test_stream_usage_and_result(daemon: Daemon, upstream: Upstream) -> None:
    """Deltas concatenate to the text; usage comes from the provider; stream_options asked.
    (Chunks that arrive while a delta waits, e.g. for the question's write, join the next
    one, so the count of deltas is at most the count of chunks.)"""
    r, notes = send(daemon, message="count [[words:30]]")
    assert r["text"] == " ".join(f"w{i}" for i in range(1, 31))
    assert "".join(n["text"] for n in notes) == r["text"] and 1 <= len(notes) <= 30
    assert all(n["conversation_id"] == r["conversation_id"] for n in notes)
    assert r["usage"]["completion_tokens"] == 30
    assert r["usage"]["prompt_tokens"] == upstream.requests[0]["prompt_tokens"]
    assert r["finish_reason"] == "stop" and r["trimmed"] == 0 and r["logprobs"] is None
    assert upstream.requests[0]["body"]["stream_options"] == {"include_usage": True}


def test_non_streaming(daemon: Daemon, upstream: Upstream) -> None:
    """stream=false gets the whole answer with usage and no deltas."""
    r, notes = send(daemon, message="quiet", stream=False)
    assert r["text"] == "You said: quiet" and notes == [] and r["usage"]["completion_tokens"] == 3
    assert upstream.requests[0]["body"].get("stream") in (False, None)


def test_logprobs_per_delta_and_in_result(daemon: Daemon, upstream: Upstream) -> None:
    """top_logprobs N relays each token's logprobs with N alternatives, per delta and in the result."""
    r, notes = send(daemon, message="probs", top_logprobs=3)
    body = upstream.requests[0]["body"]
    assert body["logprobs"] is True and body["top_logprobs"] == 3
    lps = r["logprobs"]
    assert [lp["token"] for lp in lps] == ["You", " said:", " probs"]
    assert all(len(lp["top_logprobs"]) == 3 and lp["logprob"] <= 0 for lp in lps)
    assert [lp for n in notes for lp in n["logprobs"]] == lps
    stored = daemon.call("conversations/get", {"id": r["conversation_id"]})
    assert stored["messages"][-1]["content"] == r["text"]


def test_ignored_logprobs_warns(daemon: Daemon) -> None:
    """A provider that ignores logprobs (as LM Studio does) gives null and a warning, not an error."""
    r, _ = send(daemon, message="hi", model="nologprobs-echo", logprobs=True)
    assert r["logprobs"] is None and r["text"] == "You said: hi"
    assert any("ignored logprobs" in w for w in r["warnings"])


def test_options_reach_the_provider(daemon: Daemon, upstream: Upstream) -> None:
    """system, temperature, max_tokens and context attachments are sent and stored."""
    r, _ = send(
        daemon,
        message="look [[echo_system]]",
        system="Be brief.",
        temperature=0.2,
        max_tokens=50,
        context=[{"name": "main.py", "text": "print(1)"}],
    )
    assert r["text"] == "Be brief."
    body = upstream.requests[0]["body"]
    assert body["temperature"] == 0.2 and body["max_tokens"] == 50
    assert body["messages"][0] == {"role": "system", "content": "Be brief."}
    assert '<context name="main.py">\nprint(1)\n</context>' in body["messages"][1]["content"]
    conv = daemon.call("conversations/get", {"id": r["conversation_id"]})
    assert conv["system"] == "Be brief."
    assert conv["messages"][0]["context"] == [{"name": "main.py", "text": "print(1)"}]


def test_history_is_sent(daemon: Daemon, upstream: Upstream) -> None:
    """A continued conversation sends the stored history before the new message."""
    r1, _ = send(daemon, message="one", system="S")
    r2, _ = send(daemon, message="two [[echo_count]]", conversation_id=r1["conversation_id"])
    assert r2["text"] == "messages=4"
    roles = [m["role"] for m in upstream.requests[1]["body"]["messages"]]
    assert roles == ["system", "user", "assistant", "user"]
    assert r2["model"] == "fake-echo" and r2["provider"] == "fake"


def test_dangling_user_message_replaced(daemon: Daemon, upstream: Upstream) -> None:
    """A question that never got an answer is replaced by the retry, not sent twice."""
    r1, _ = send(daemon, message="first")
    cid = r1["conversation_id"]
    with pytest.raises(RpcError):
        send(daemon, message="broken [[error:400]]", conversation_id=cid)
    msgs = daemon.call("conversations/get", {"id": cid})["messages"]
    assert [m["role"] for m in msgs] == ["user", "assistant", "user"]
    r3, _ = send(daemon, message="retry [[echo_count]]", conversation_id=cid)
    assert r3["text"] == "messages=3"
    msgs = daemon.call("conversations/get", {"id": cid})["messages"]
    assert [m["content"] for m in msgs][-2:] == ["retry [[echo_count]]", "messages=3"]
    assert "broken [[error:400]]" not in [m["content"] for m in msgs]


def test_retries_before_first_token(daemon: Daemon, upstream: Upstream) -> None:
    """429 and 5xx before the first token are retried, and the answer arrives."""
    r, _ = send(daemon, message="flaky [[error:500 x2]]")
    assert r["text"] == "You said: flaky" and len(upstream.requests) == 3
    upstream.reset()
    r, _ = send(daemon, message="limited [[error:429 x1]] [[retry_after:0.1]]")
    assert r["text"] == "You said: limited" and len(upstream.requests) == 2


def test_provider_errors_are_mapped_alike(
    make_daemon: Any, upstream: Upstream, streaming: str
) -> None:
    """An error answer, a dead provider and one that never answers get the same contract
    errors whichever way the answer was asked for: the status and the provider's own
    message (-32002), unreachable with its address (-32003), and a timeout (-32003)."""
    dead = "http://127.0.0.1:9/v1"  # the discard port: nothing listens there
    extra = f"""
[providers.dead]
base_url = "{dead}"
models = ["dead-*"]
needs_key = false
[providers.slowpoke]
base_url = "{upstream.base_url}"
models = ["slowpoke-*"]
needs_key = false
timeout_s = 0.5
"""
    d = make_daemon(fake_provider_config(upstream, extra=extra, streaming=streaming))
    with pytest.raises(RpcError) as e:
        send(d, message="[[error:403]] no")
    assert (e.value.code, e.value.data["status"]) == (-32002, 403)
    assert "Simulated error 403" in e.value.message
    with pytest.raises(RpcError) as e:
        send(d, message="anyone?", model="dead-echo")
    assert e.value.code == -32003 and e.value.data["base_url"] == dead
    assert "connection failed" in e.value.message
    with pytest.raises(RpcError) as e:
        send(d, message="[[hang]] wait", model="slowpoke-echo")
    assert e.value.code == -32003 and "timed out" in e.value.message
    assert send(d, message="still here")[0]["text"] == "You said: still here"


def test_cut_stream_keeps_partial(daemon: Daemon) -> None:
    """A stream cut mid-way stores the text so far as partial and says so in the error."""
    with pytest.raises(RpcError) as e:
        send(daemon, message="[[words:10]] [[cut:4]]")
    assert e.value.code in (-32002, -32003)
    data = e.value.data
    assert data["partial_text"] == "w1 w2 w3 w4"
    msgs = daemon.call("conversations/get", {"id": data["conversation_id"]})["messages"]
    assert msgs[-1]["id"] == data["message_id"]
    assert (msgs[-1]["status"], msgs[-1]["content"]) == ("partial", "w1 w2 w3 w4")
    assert daemon.call("daemon/status")["active_requests"] == 0


@pytest.mark.parametrize("directive", ["[[noend]]", "[[garbage:2]]"])
def test_unfinished_stream_is_an_error(daemon: Daemon, directive: str) -> None:
    """A stream that ends without a finish reason, or with garbage, is -32002 with the partial kept."""
    with pytest.raises(RpcError) as e:
        send(daemon, message=f"[[words:5]] {directive}")
    assert e.value.code == -32002 and e.value.data["partial_text"].startswith("w1 w2")


def test_trimming_fits_the_window(daemon: Daemon, upstream: Upstream) -> None:
    """A conversation longer than the window keeps working: oldest turns are left out, the system
    prompt never, and no request exceeds the window."""
    cid = None
    trimmed = []
    for i in range(12):
        r, _ = send(
            daemon,
            message=f"FACT-{i} " + "filler " * 15,
            model="fake-small",
            system="SYSTEM-PROMPT kept",
            conversation_id=cid,
        )
        cid = r["conversation_id"]
        trimmed.append(r["trimmed"])
    assert trimmed[0] == 0 and trimmed[-1] > 0
    assert all(req["prompt_tokens"] <= 300 for req in upstream.requests)
    assert all(
        req["body"]["messages"][0]["content"] == "SYSTEM-PROMPT kept" for req in upstream.requests
    )
    r, _ = send(daemon, message="[[recall]]", model="fake-small", conversation_id=cid)
    assert "FACT-11" in r["text"] and "FACT-0" not in r["text"]
    assert len(daemon.call("conversations/get", {"id": cid})["messages"]) == 26


def test_context_exceeded_gets_a_tighter_trim(
    make_daemon: Any, upstream: Upstream, streaming: str
) -> None:
    """When the provider says the prompt is too long, one tighter trim is tried before giving up."""
    extra = '[models."fake-tiny-liar"]\ncontext_window = 100000\n'
    d = make_daemon(
        fake_provider_config(upstream, streaming=streaming).replace(
            '[models."fake-tiny"]\ncontext_window = 120',
            '[models."fake-tiny"]\ncontext_window = 4000',
        )
        + extra
    )
    cid = None
    for i in range(6):
        r, _ = send(d, message=f"turn {i} " + "x " * 12, model="fake-tiny", conversation_id=cid)
        cid = r["conversation_id"]
    statuses = [req["prompt_tokens"] > 120 for req in upstream.requests]
    assert any(statuses)  # the provider refused some prompts...
    assert r["trimmed"] > 0  # ...and the retry trimmed and succeeded
    with pytest.raises(RpcError) as e:
        send(d, message="y " * 200, model="fake-tiny", conversation_id=cid)
    assert e.value.code == -32002 and e.value.data["reason"] == "context_length_exceeded"


def test_huge_message_refused_and_nothing_stored(daemon: Daemon) -> None:
    """A message bigger than the model's window gets -32602 too_long and stores nothing."""
    with pytest.raises(RpcError) as e:
        send(daemon, message="word " * 2000, model="fake-small")
    assert e.value.code == -32602 and e.value.data["reason"] == "too_long"
    assert daemon.call("conversations/list")["total"] == 0


def test_conversations_crud(daemon: Daemon) -> None:
    """List, search, rename, fork, export and delete stored conversations."""
    a, _ = send(daemon, message="alpha about penguins")
    b, _ = send(daemon, message="beta about volcanoes")
    send(daemon, message="more on lava", conversation_id=b["conversation_id"])
    listed = daemon.call("conversations/list")
    assert listed["total"] == 2 and listed["conversations"][0]["id"] == b["conversation_id"]
    assert listed["conversations"][0]["message_count"] == 4
    assert listed["conversations"][1]["title"] == "alpha about penguins"
    found = daemon.call("conversations/list", {"query": "lava"})
    assert [c["id"] for c in found["conversations"]] == [b["conversation_id"]]
    assert daemon.call("conversations/list", {"query": 'penguin" OR *'})["total"] == 0
    assert (
        daemon.call("conversations/rename", {"id": a["conversation_id"], "title": "Birds"})["title"]
        == "Birds"
    )
    assert daemon.call("conversations/list", {"query": "birds"})["total"] == 1
    conv = daemon.call("conversations/get", {"id": b["conversation_id"]})
    fork = daemon.call(
        "conversations/fork", {"id": b["conversation_id"], "message_id": conv["messages"][1]["id"]}
    )
    forked = daemon.call("conversations/get", {"id": fork["id"]})
    assert [m["content"] for m in forked["messages"]] == [
        m["content"] for m in conv["messages"][:2]
    ]
    md = daemon.call("conversations/export", {"id": b["conversation_id"], "format": "markdown"})
    assert "## User\n\nmore on lava" in md["content"]
    js = json.loads(
        daemon.call("conversations/export", {"id": b["conversation_id"], "format": "json"})[
            "content"
        ]
    )
    assert len(js["messages"]) == 4
    assert daemon.call("conversations/delete", {"id": a["conversation_id"]}) == {
        "id": a["conversation_id"],
        "deleted": True,
    }
    with pytest.raises(RpcError) as e:
        daemon.call("conversations/fork", {"id": b["conversation_id"], "message_id": "m-none"})
    assert e.value.code == -32004 and e.value.data["kind"] == "message"


def test_continue_after_restart(make_daemon: Any, upstream: Upstream, streaming: str) -> None:
    """Conversations live on disk: after a restart they continue and fork."""
    d = make_daemon(fake_provider_config(upstream, streaming=streaming))
    r, _ = send(d, message="remember FACT-blue")
    d.stop()
    d2 = make_daemon(fake_provider_config(upstream, streaming=streaming))
    r2, _ = send(d2, message="[[recall]]", conversation_id=r["conversation_id"])
    assert r2["text"] == "FACT-blue"
    assert d2.call("conversations/fork", {"id": r["conversation_id"]})["id"] != r["conversation_id"]


def test_models_and_providers(daemon: Daemon) -> None:
    """models/list asks each provider's /models; failures are listed, not fatal."""
    r = daemon.call("models/list", {"provider": "fake"})
    assert {"fake-echo", "nologprobs-echo"} <= {m["id"] for m in r["models"]}
    all_ = daemon.call("models/list")
    assert any(e["provider"] == "openai" and e["code"] == -32001 for e in all_["errors"])
    provs = {p["name"]: p for p in daemon.call("providers/list")["providers"]}
    assert provs["fake"]["models"] == ["fake-*", "nologprobs-*"]
    assert (
        provs["lmstudio"]["base_url"] == "http://localhost:1234/v1" and provs["lmstudio"]["local"]
    )
    assert provs["openai"]["key_source"] == "none"


def test_concurrent_conversations(daemon: Daemon) -> None:
    """Twenty chats at once all complete, each with its own answer."""
    import threading

    results: dict[int, str] = {}

    def one(i: int) -> None:
        results[i] = daemon.call("chat/send", {"message": f"n{i} [[slow:0.01]]"})["text"]

    threads = [threading.Thread(target=one, args=(i,)) for i in range(20)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == {i: f"You said: n{i}" for i in range(20)}
    assert time.monotonic() - t0 < 10


def test_local_answers_are_capped(make_daemon: Any, upstream: Upstream, streaming: str) -> None:
    """A local server's answer is capped at the room reserved for it (or its configured
    max_tokens); a remote provider gets no cap the user did not ask for."""
    extra = f"""
[providers.localfake]
base_url = "{upstream.base_url}"
kind = "ollama"
needs_key = false
models = ["tiny-local"]
"""
    d = make_daemon(fake_provider_config(upstream, extra=extra, streaming=streaming))
    d.call("chat/send", {"message": "remote"})
    d.call("chat/send", {"message": "local", "model": "tiny-local"})
    d.call("chat/send", {"message": "asked", "model": "tiny-local", "max_tokens": 7})
    caps = [req["body"].get("max_tokens") for req in upstream.requests]
    assert caps == [None, 1024, 7]


def test_the_connection_is_kept_between_messages_of_a_chat(
    daemon: Daemon, upstream: Upstream
) -> None:
    """A message sent some seconds after the one before goes on the same connection to the
    provider (httpx's 5 s keep-alive would have closed it: a new TCP and TLS handshake
    before every message of a chat)."""
    first = daemon.call("chat/send", {"message": "one"})
    time.sleep(6)
    daemon.call("chat/send", {"message": "two", "conversation_id": first["conversation_id"]})
    peers = [r["peer"] for r in upstream.requests if r["body"].get("stream")]
    assert len(peers) == 2 and peers[0] == peers[1], peers
