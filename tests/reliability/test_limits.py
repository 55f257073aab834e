"""Resource limits: many idle connections, a client that never reads, a line over
16 MiB and an attachment far over the model's window. None of them starves the others
or makes the daemon buffer or store without bound."""

from __future__ import annotations

import json
import socket
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from assistantd.client import RpcError
from assistantd.h1 import MAX_PART
from assistantd.providers import RELAY_BACKLOG
from assistantd.server import WRITE_HIGH_WATER
from tests.conftest import Daemon
from tests.upstream import Upstream

MiB = 1024 * 1024


def rss_kib(pid: int) -> int:
    """The process's resident set size, from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def connect(path: Path, timeout: float = 10) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(str(path))  # blocking, as Client does: a full backlog waits, not EAGAIN
    s.settimeout(timeout)
    return s


def read_line(s: socket.socket) -> dict[str, Any]:
    """One newline-terminated message (byte by byte: the rest stays in the socket)."""
    buf = bytearray()
    while not buf.endswith(b"\n"):
        chunk = s.recv(1)
        assert chunk, f"connection closed after {bytes(buf)!r}"
        buf += chunk
    message: dict[str, Any] = json.loads(buf)
    return message


def closed_by_peer(s: socket.socket) -> bool:
    """Whether the other end closes the connection (EOF or reset) with nothing more to say."""
    try:
        return s.recv(65536) == b""
    except ConnectionResetError:
        return True


def timed_status(d: Daemon) -> float:
    t = time.perf_counter()
    assert d.call("daemon/status")["pid"] == d.proc.pid
    return time.perf_counter() - t


def test_500_idle_connections_do_not_slow_status(daemon: Daemon) -> None:
    """With 500 idle connections open (some mid-line, some mid-LSP-header), a status call
    still answers at once, and again after they all go away."""
    idle: list[socket.socket] = []
    try:
        for i in range(500):
            s = connect(daemon.socket)
            if i % 3 == 1:
                s.sendall(b'{"jsonrpc": "2.0", "id": 1, "meth')  # a line never finished
            elif i % 3 == 2:
                s.sendall(b"Content-Length: 40\r\n")  # LSP headers never finished
            idle.append(s)
        assert timed_status(daemon) < 1.0
    finally:
        for s in idle:
            s.close()
    assert timed_status(daemon) < 1.0


def test_client_that_never_reads_is_not_buffered_without_bound(
    daemon: Daemon, upstream: Upstream
) -> None:
    """A client that asks for long streams and never reads them costs the daemon bounded
    memory (the stream waits for the reader), and other clients are served meanwhile."""
    daemon.call("chat/send", {"message": "warm up"})  # the provider SDK loads on first use
    before = rss_kib(daemon.proc.pid)
    hog = connect(daemon.socket)
    hog.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    # 8 streams of 50,000 words: about 50 MB of chat/delta lines if all were buffered.
    for i in range(8):
        request = {"jsonrpc": "2.0", "id": i, "method": "chat/send",
                   "params": {"message": f"[[words:50000]] flood {i}"}}  # fmt: skip
        hog.sendall(json.dumps(request).encode() + b"\n")
    try:
        peak = before
        for _ in range(10):
            time.sleep(0.3)
            peak = max(peak, rss_kib(daemon.proc.pid))
            r = daemon.call("chat/send", {"message": "[[words:5]] meanwhile"})
            assert r["text"] == "w1 w2 w3 w4 w5"
        growth_mb = (peak - before) / 1024
        assert growth_mb < 50, f"the daemon grew {growth_mb:.0f} MB for a client that never reads"
        assert upstream.in_flight >= 1  # the floods wait for their reader, upstream included
    finally:
        hog.close()
    # The reader went away: its streams end, their partials are stored, nothing hangs.
    deadline = time.monotonic() + 20
    while daemon.call("daemon/status")["active_requests"] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert daemon.call("daemon/status")["active_requests"] == 0
    floods = daemon.call("conversations/list", {"query": "flood"})["conversations"]
    assert len(floods) == 8
    # What reached the stored partials is what the daemon produced. It is bounded in bytes,
    # not by the 400,000 words (2.7 MB) asked for: the socket's send buffer and the
    # connection's write buffer, shared by the 8, and per stream one delta being written,
    # the relay's backlog and one read of the provider's stream. (Counted in words it was
    # a flaky bound: joined deltas put more words in the same socket buffer.)
    sndbuf = int(Path("/proc/sys/net/core/wmem_default").read_text())
    bound = sndbuf + WRITE_HIGH_WATER + 8 * (2 * RELAY_BACKLOG + MAX_PART)
    relayed = 0
    for conv in floods:
        answer = daemon.call("conversations/get", {"id": conv["id"]})["messages"][-1]
        assert (answer["role"], answer["status"]) == ("assistant", "partial")
        relayed += len(answer["content"])
    assert relayed < bound, f"{relayed:,} characters were produced for a client that read none"


def test_line_over_16_mib_is_refused_and_others_go_on(daemon: Daemon) -> None:
    """A 17 MiB line gets -32600 too_large and its connection is closed, while another
    connection is served during and after it."""
    big = connect(daemon.socket, timeout=30)
    other = connect(daemon.socket)
    line = b'{"jsonrpc":"2.0","id":1,"method":"daemon/status","params":{"x":"'
    line += b"x" * (17 * MiB) + b'"}}\n'
    sent: list[BaseException] = []

    def push() -> None:
        try:
            big.sendall(line)
        except OSError as e:  # the daemon may close before we finish: that is the point
            sent.append(e)

    writer = threading.Thread(target=push, daemon=True)
    writer.start()
    other.sendall(b'{"jsonrpc":"2.0","id":"o1","method":"daemon/status"}\n')
    assert "result" in read_line(other)
    err = read_line(big)
    assert err["id"] is None
    assert err["error"]["code"] == -32600
    assert err["error"]["data"]["reason"] == "too_large"
    assert closed_by_peer(big)
    writer.join(30)
    big.close()
    other.sendall(b'{"jsonrpc":"2.0","id":"o2","method":"daemon/status"}\n')
    assert read_line(other)["id"] == "o2"
    other.close()
    assert timed_status(daemon) < 1.0


def test_huge_attachment_on_a_small_window_stores_nothing(daemon: Daemon,
                                                          upstream: Upstream) -> None:  # fmt: skip
    """A 3 MB attachment to a model with a 300-token window is -32602 too_long, and
    neither a new nor an existing conversation gains a message; the provider is not called."""
    huge = [{"name": "big.txt", "text": "lorem ipsum dolor sit amet\n" * 116_000}]
    assert len(huge[0]["text"]) > 3_000_000
    with pytest.raises(RpcError) as info:
        daemon.call("chat/send", {"message": "summarize", "model": "fake-small", "context": huge})
    assert info.value.code == -32602
    assert info.value.data["reason"] == "too_long"
    assert daemon.call("conversations/list")["total"] == 0

    cid = daemon.call("chat/send", {"message": "hi", "model": "fake-small"})["conversation_id"]
    upstream.reset()
    with pytest.raises(RpcError) as info:
        daemon.call("chat/send", {"message": "and this?", "conversation_id": cid, "context": huge})
    assert info.value.code == -32602
    assert info.value.data["reason"] == "too_long"
    assert len(daemon.call("conversations/get", {"id": cid})["messages"]) == 2
    assert upstream.requests == []
    assert daemon.call("daemon/status")["active_requests"] == 0
