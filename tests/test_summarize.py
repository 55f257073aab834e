"""summarize/url and summarize/text through a real daemon, real trafilatura and httpx2,
against real documentation pages and hostile ones on a loopback web server."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from assistantd.client import RpcError
from tests.conftest import ROOT, Daemon, fake_provider_config
from tests.pages import Pages
from tests.upstream import Upstream

LONG_PAGE = "/doc/reference/datamodel.html"  # 379 KB of HTML, about 100 KB of text
SMALL_PAGE = "/doc/library/bisect.html"
WINDOWS = {"fake-4k": 4096, "fake-small": 300, "fake-echo": 128_000}
CONFIG_4K = '[models."fake-4k"]\ncontext_window = 4096\n'


@pytest.fixture(scope="module")
def pages() -> Iterator[Pages]:
    with Pages() as server:
        yield server


@pytest.fixture
def sd(make_daemon: Any, upstream: Upstream) -> Daemon:
    """A daemon with the 4k-window model and a 2-second fetch deadline."""
    d: Daemon = make_daemon(
        fake_provider_config(upstream, extra=CONFIG_4K + "[summarize]\ntimeout_s = 2\n")
    )
    return d


def summarize(
    d: Daemon, method: str, params: dict[str, Any]
) -> tuple[dict[str, Any], list[tuple[str, dict[str, Any]]]]:
    """The result and every notification of one request."""
    notes: list[tuple[str, dict[str, Any]]] = []
    with d.client() as c:
        r = c.call(method, params, on_notify=lambda m, p: notes.append((m, p)))
    return r, notes


def within_window(up: Upstream, model: str) -> None:
    for req in up.requests:
        assert req["body"]["model"] == model
        room = req["prompt_tokens"] + (req["body"].get("max_tokens") or 0)
        assert room <= WINDOWS[model], f"a request of {room} tokens exceeds {WINDOWS[model]}"


def check_progress(
    notes: list[tuple[str, dict[str, Any]]], stages: list[str]
) -> dict[str, list[tuple[int, int]]]:
    """Progress comes stage by stage in order, each counting up to its total."""
    progress = [p for m, p in notes if m == "summarize/progress"]
    seen = [p["stage"] for p in progress]
    assert [s for i, s in enumerate(seen) if i == 0 or seen[i - 1] != s] == stages
    by: dict[str, list[tuple[int, int]]] = {}
    for p in progress:
        by.setdefault(p["stage"], []).append((p["done"], p["total"]))
    for steps in by.values():
        dones = [d for d, _ in steps]
        assert dones == sorted(dones) and steps[-1][0] == steps[-1][1]
    return by


def test_long_page_map_reduce(sd: Daemon, upstream: Upstream, pages: Pages) -> None:
    """A 379 KB page with a 4k-window model is summarized in several chunks and one reduce,
    with progress in order, deltas that make up the text, and no request over the window."""
    r, notes = summarize(sd, "summarize/url", {"url": pages.url(LONG_PAGE), "model": "fake-4k"})
    assert (
        r["title"] == "3. Data model" and r["chars"] > 90_000 and r["url"] == pages.url(LONG_PAGE)
    )
    assert r["chunks"] > 10 and r["finish_reason"] == "stop"
    by = check_progress(notes, ["fetch", "extract", "map", "reduce"])
    assert by["map"][-1] == (r["chunks"], r["chunks"])
    deltas = "".join(p["text"] for m, p in notes if m == "chat/delta")
    assert deltas == r["text"] and r["text"].startswith("Summary: Summary:")
    assert all(p["conversation_id"] == r["conversation_id"] for m, p in notes if m == "chat/delta")
    within_window(upstream, "fake-4k")
    assert len(upstream.requests) == r["chunks"] + by["reduce"][-1][1]
    assert r["usage"]["prompt_tokens"] == sum(q["prompt_tokens"] for q in upstream.requests)
    assert "SUMMARIZE" in upstream.requests[0]["body"]["messages"][0]["content"]


def test_small_window_reduces_in_rounds(make_daemon: Any, upstream: Upstream, pages: Pages) -> None:
    """With a 300-token window the partial summaries need more than one reduce round, and
    no request exceeds the window (the upstream refuses any that would)."""
    d = make_daemon(fake_provider_config(upstream))
    r, notes = summarize(
        d,
        "summarize/url",
        {
            "url": pages.url(SMALL_PAGE),
            "model": "fake-small",
            "instructions": "Keep the function names.",
        },
    )
    by = check_progress(notes, ["fetch", "extract", "map", "reduce"])
    assert r["chunks"] > 20 and by["reduce"][-1][1] > 2
    within_window(upstream, "fake-small")
    assert "Keep the function names." in upstream.requests[-1]["body"]["messages"][0]["content"]
    assert r["text"].startswith("Summary:") and r["finish_reason"] == "stop"


HOSTILE = [  # path, reason, a word the message must hold
    ("/huge", "too_large", "limit"),
    ("/huge-declared", "too_large", "50,000,000"),
    ("/drip", "timeout", "2 s"),
    ("/silent", "timeout", "2 s"),
    ("/loop", "too_many_redirects", "5"),
    ("/redirect/6", "too_many_redirects", "5"),
    ("/to-ftp", "not_http", "ftp"),
    ("/pdf", "unsupported_type", "application/pdf"),
    ("/png", "unsupported_type", "image/png"),
    ("/binary", "unsupported_type", "binary"),
    ("/empty", "no_text", "no text"),
    ("/notext", "no_text", "no text"),
    ("/status/404", "status_404", "404"),
    ("/status/500", "status_500", "500"),
]


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_hostile_urls_fail_fast(sd: Daemon, upstream: Upstream, pages: Pages) -> None:
    """Every bad URL gets -32006 with the right reason within seconds, and the daemon keeps serving."""
    cases = [(pages.url(p), reason, word) for p, reason, word in HOSTILE] + [
        ("ftp://127.0.0.1/file.html", "not_http", "ftp"),
        ("file:///etc/passwd", "not_http", "file"),
        ("example.com/page", "not_http", "http"),
        ("http://", "bad_url", "host"),
        (f"http://127.0.0.1:{closed_port()}/", "unreachable", "connect"),
    ]
    for url, reason, word in cases:
        start = time.monotonic()
        with pytest.raises(RpcError) as err:
            sd.call("summarize/url", {"url": url, "model": "fake-4k"})
        took = time.monotonic() - start
        e = err.value
        assert (e.code, e.data["reason"], e.data["url"]) == (-32006, reason, url), (url, e.message)
        assert word in e.message, (url, e.message)
        assert took < 5, (url, took)
        assert sd.call("daemon/status")["config_ok"]
    assert upstream.requests == []
    r = sd.call("summarize/url", {"url": pages.url("/redirect/5"), "model": "fake-4k"})
    assert r["title"].startswith("bisect") and r["text"].startswith("Summary:")
    assert sd.call("conversations/list")["total"] == 1  # failures leave no conversation


def test_slow_drip_is_cut_by_the_low_speed_rule(
    make_daemon: Any, upstream: Upstream, pages: Pages
) -> None:
    """With the default 30 s deadline, a body that drips in is given up on after about 5 s."""
    d = make_daemon(fake_provider_config(upstream))
    start = time.monotonic()
    with pytest.raises(RpcError) as err:
        d.call("summarize/url", {"url": pages.url("/drip")})
    assert err.value.data["reason"] == "timeout" and "bytes/s" in err.value.message
    assert 4.5 < time.monotonic() - start < 8


@pytest.mark.parametrize(
    ("path", "needle"),
    [("/sjis", "吾輩は猫である"), ("/sjis-meta", "吾輩は猫である"), ("/latin1", "Café crème")],
)
def test_charsets(sd: Daemon, pages: Pages, path: str, needle: str) -> None:
    """A page in Shift_JIS (named in the header or a <meta>) or Latin-1 is decoded correctly."""
    r = sd.call("summarize/url", {"url": pages.url(path), "model": "fake-4k", "stream": False})
    assert needle in r["text"]
    if path.startswith("/sjis"):
        assert r["title"] == "日本語のページ"


def test_cache_honours_etag(sd: Daemon, upstream: Upstream, pages: Pages) -> None:
    """A second summary of a page with an ETag costs one conditional GET answered 304, not a download."""
    path = "/doc/library/json.html"
    first = sd.call("summarize/url", {"url": pages.url(path), "model": "fake-4k"})
    second = sd.call(
        "summarize/url",
        {"url": pages.url(path), "model": "fake-small", "instructions": "One sentence."},
    )
    assert pages.count(path, 200) == 1 and pages.count(path, 304) == 1
    conditional = [h for h in pages.hits if h.path == path][-1]
    assert conditional.headers["if-none-match"].startswith('"')
    assert first["chars"] == second["chars"] and first["title"] == second["title"]
    assert first["conversation_id"] != second["conversation_id"]


def test_cache_without_validators(sd: Daemon, pages: Pages) -> None:
    """A page with no validators is reused from the cache without any request for a while."""
    path = "/fresh/library/bisect.html"
    for _ in range(2):
        sd.call("summarize/url", {"url": pages.url(path), "model": "fake-4k"})
    assert pages.count(path) == 1


def test_follow_up_sees_the_page(sd: Daemon, upstream: Upstream, pages: Pages) -> None:
    """chat/send on the summary's conversation sends the page's text along with the question."""
    r = sd.call("summarize/url", {"url": pages.url(SMALL_PAGE)})
    upstream.reset()
    answer = sd.call(
        "chat/send", {"conversation_id": r["conversation_id"], "message": "What is it?"}
    )
    assert answer["text"] == "You said: What is it?"
    sent = upstream.requests[0]["body"]["messages"]
    assert [m["role"] for m in sent] == ["system", "user", "assistant", "user"]
    assert "insertion point" in sent[1]["content"] and sent[2]["content"] == r["text"]
    conv = sd.call("conversations/get", {"id": r["conversation_id"]})
    assert len(conv["messages"]) == 4 and "bisect" in conv["title"]


def test_summarize_text(sd: Daemon, upstream: Upstream) -> None:
    """summarize/text splits long text into chunks, and without streaming sends no deltas."""
    text = "\n\n".join(
        f"Paragraph {i} tells of FACT-{i} " + "and more words " * 30 for i in range(40)
    )
    r, notes = summarize(
        sd,
        "summarize/text",
        {"text": text, "title": "Notes", "model": "fake-small", "stream": False},
    )
    assert r["url"] is None and r["title"] == "Notes" and r["chars"] == len(text.strip())
    assert r["chunks"] >= 20 and r["text"].startswith("Summary:")
    assert not [m for m, _ in notes if m == "chat/delta"]
    check_progress(notes, ["map", "reduce"])
    within_window(upstream, "fake-small")
    with pytest.raises(RpcError) as err:
        sd.call("summarize/text", {"text": "   \n "})
    assert err.value.code == -32602


def test_cancel_mid_map(sd: Daemon, upstream: Upstream) -> None:
    """$/cancelRequest during the map stage returns at once with what exists, stored as partial."""
    text = "\n\n".join(f"[[slow:0.3]] Part {i} " + "word " * 400 for i in range(12))
    c = sd.client()
    got: dict[str, Any] = {}

    def on_notify(method: str, p: dict[str, Any]) -> None:
        if method == "summarize/progress" and p["stage"] == "map" and "at" not in got:
            got["at"] = time.monotonic()
            threading.Timer(0.3, lambda: c.cancel(1)).start()

    r = c.call("summarize/text", {"text": text, "model": "fake-4k"}, on_notify=on_notify)
    took = time.monotonic() - got["at"]
    c.close()
    assert r["finish_reason"] == "cancelled" and took < 1.5, took
    msgs = sd.call("conversations/get", {"id": r["conversation_id"]})["messages"]
    assert msgs[-1]["status"] == "partial" and msgs[-1]["content"] == r["text"]
    assert sd.call("daemon/status")["active_requests"] == 0


def test_cancel_while_streaming(sd: Daemon, upstream: Upstream) -> None:
    """Cancelled while the summary streams, the result holds exactly the deltas sent so far."""
    c = sd.client()
    deltas: list[str] = []

    def on_notify(method: str, p: dict[str, Any]) -> None:
        if method == "chat/delta":
            deltas.append(p["text"])
            if len(deltas) == 3:
                c.cancel(1)

    r = c.call(
        "summarize/text",
        {"text": "[[slow:0.2]] " + "word " * 200, "model": "fake-4k"},
        on_notify=on_notify,
    )
    c.close()
    assert r["finish_reason"] == "cancelled" and r["chunks"] == 1
    assert r["text"] == "".join(deltas) and 3 <= len(deltas) < 10
    msgs = sd.call("conversations/get", {"id": r["conversation_id"]})["messages"]
    assert msgs[-1]["status"] == "partial" and msgs[-1]["content"] == r["text"]


def test_summary_into_a_conversation(sd: Daemon) -> None:
    """With conversation_id the summary is appended to that conversation; an unknown id is -32004."""
    chat = sd.call("chat/send", {"message": "hello"})
    r = sd.call(
        "summarize/text",
        {"text": "A short note about FACT-7.", "conversation_id": chat["conversation_id"]},
    )
    assert r["conversation_id"] == chat["conversation_id"]
    msgs = sd.call("conversations/get", {"id": r["conversation_id"]})["messages"]
    assert [m["role"] for m in msgs] == ["user", "assistant", "user", "assistant"]
    assert msgs[-1]["content"] == r["text"] == "Summary: A short note about FACT-7."
    with pytest.raises(RpcError) as err:
        sd.call("summarize/text", {"text": "x", "conversation_id": "c-nope"})
    assert err.value.code == -32004


def ctl(d: Daemon, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    cmd = [
        sys.executable,
        "-c",
        "from assistantd.cli import main; main()",
        "--socket",
        str(d.socket),
        "--no-autostart",
        *args,
    ]
    return subprocess.run(
        cmd, input=stdin, capture_output=True, text=True, env=dict(os.environ), cwd=ROOT, timeout=60
    )


def test_assistantctl_summarize(sd: Daemon, pages: Pages) -> None:
    """`assistantctl summarize` streams a URL's summary to stdout (no progress when stderr is
    not a terminal), reads text from stdin for -, and prints the result with --json."""
    out = ctl(sd, "summarize", pages.url(LONG_PAGE), "-m", "fake-4k", "--instructions", "Short.")
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("Summary: Summary:") and out.stderr == ""
    piped = ctl(sd, "summarize", "-", "-m", "fake-4k", stdin="Some text from a pipe.\n")
    assert piped.returncode == 0 and piped.stdout == "Summary: Some text from a pipe.\n"
    js = ctl(sd, "--json", "summarize", pages.url(SMALL_PAGE), "-m", "fake-4k")
    result = json.loads(js.stdout)
    assert result["title"].startswith("bisect") and result["chunks"] >= 1
    bad = ctl(sd, "summarize", pages.url("/pdf"))
    assert bad.returncode == 1 and "application/pdf" in bad.stderr and "-32006" in bad.stderr


def test_assistantctl_progress_on_a_terminal(sd: Daemon, pages: Pages) -> None:
    """With stderr on a terminal, assistantctl shows a progress line ("map 3/12") there."""
    import pty

    master, slave = pty.openpty()
    cmd = [
        sys.executable,
        "-c",
        "from assistantd.cli import main; main()",
        "--socket",
        str(sd.socket),
        "summarize",
        pages.url(LONG_PAGE),
        "-m",
        "fake-4k",
    ]
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=slave, env=dict(os.environ), cwd=ROOT
    )
    os.close(slave)
    seen = b""
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:
            break
        if not chunk:
            break
        seen += chunk
    stdout = proc.communicate(timeout=30)[0].decode()
    os.close(master)
    assert proc.returncode == 0
    assert b"fetch 0/1" in seen and b"map 1/" in seen and b"follow up: assistantctl chat -c" in seen
    assert stdout.startswith("Summary:")
