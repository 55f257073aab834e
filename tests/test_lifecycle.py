"""Lifecycle: one daemon per socket, stale sockets replaced, signals, shutdown, readiness."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from tests.conftest import ROOT, Daemon, fake_provider_config
from tests.rawsock import Raw, req
from tests.upstream import Upstream


def test_second_instance_refused(daemon: Daemon) -> None:
    """A second daemon for the same socket exits non-zero with one line; the first serves on."""
    out = subprocess.run(
        [sys.executable, "-m", "assistantd", "--quiet"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert out.returncode != 0
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and f"pid {daemon.proc.pid}" in lines[0]
    assert daemon.call("daemon/status")["pid"] == daemon.proc.pid


def test_stale_socket_replaced(make_daemon: Any, upstream: Upstream) -> None:
    """After kill -9 the socket file is stale; the next daemon replaces it and serves."""
    first = make_daemon(fake_provider_config(upstream))
    first.proc.kill()
    first.proc.wait()
    assert first.socket.exists()
    second = make_daemon(fake_provider_config(upstream))
    assert second.call("daemon/status")["pid"] == second.proc.pid


def test_sigterm_saves_partial_and_cleans_up(daemon: Daemon) -> None:
    """SIGTERM cancels a streaming chat (its partial answer is stored), removes the socket, exits 0."""
    r = Raw(daemon.socket)
    r.send(req(1, "chat/send", {"message": "[[words:300]] [[slow:0.03]]"}))
    note = r.line()
    assert isinstance(note, dict)
    cid = note["params"]["conversation_id"]
    r.notes_until(4)  # the answer is streaming
    daemon.proc.send_signal(signal.SIGTERM)
    reply = r.response(1)
    assert reply["result"]["finish_reason"] == "cancelled"
    assert daemon.proc.wait(10) == 0
    assert not daemon.socket.exists()
    again = Daemon(daemon.config_path.read_text())
    try:
        msgs = again.call("conversations/get", {"id": cid})["messages"]
        assert msgs[-1]["status"] == "partial" and msgs[-1]["content"] == reply["result"]["text"]
    finally:
        again.stop()


def test_shutdown_right_after_start_exits_cleanly(upstream: Upstream) -> None:
    """Stopped while its helper threads still import (httpx2, keyring and its Rust-built
    cryptography) or wait on D-Bus, the daemon exits 0. Finalizing the interpreter under
    such a thread aborted it ("FATAL: exception not rethrown", SIGABRT) in 1 of 15-40
    such shutdowns 0.05 s after the start, so this tries twelve, 0 to 0.11 s after it."""
    for i in range(12):
        d = Daemon(fake_provider_config(upstream))
        try:
            time.sleep(0.01 * i)
            assert d.call("daemon/shutdown") == {}
            code = d.proc.wait(10)
            assert (code, "FATAL" in d.stderr()) == (0, False), d.stderr()[-2000:]
        finally:
            d.stop()


def test_shutdown_method(daemon: Daemon) -> None:
    """daemon/shutdown answers {} and the process exits 0 without its socket."""
    assert daemon.call("daemon/shutdown") == {}
    assert daemon.proc.wait(10) == 0
    assert not daemon.socket.exists()


def test_sighup_reloads(daemon: Daemon) -> None:
    """SIGHUP re-reads the config."""
    daemon.config_path.write_text(
        daemon.config_path.read_text().replace(
            'default_model = "fake-echo"', 'default_model = "fake-other"'
        )
    )
    daemon.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 5
    while daemon.call("daemon/status")["default_model"] != "fake-other":
        assert time.monotonic() < deadline
        time.sleep(0.05)


def test_ready_notification(make_daemon: Any, upstream: Upstream, tmp_path: Path) -> None:
    """With NOTIFY_SOCKET set, the daemon sends READY=1 once it serves."""
    path = Path(f"/tmp/ad-notify-{os.getpid()}-{time.time_ns()}")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(20)
    got: list[bytes] = []
    t = threading.Thread(target=lambda: got.append(sock.recv(100)))
    t.start()
    try:
        make_daemon(fake_provider_config(upstream), env={"NOTIFY_SOCKET": str(path)})
        t.join(20)
        assert got == [b"READY=1"]
    finally:
        sock.close()
        path.unlink()
