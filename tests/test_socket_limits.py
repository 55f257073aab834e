"""Hostile clients on the socket: floods of blank bytes do not hold other connections,
one connection runs a bounded number of requests at once, and the lock file is never
reached through a symbolic link."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import pytest

from assistantd.rpc import MAX_INFLIGHT
from tests.conftest import Daemon
from tests.rawsock import Raw, req
from tests.upstream import Upstream

FLOOD = 64 * 1024 * 1024  # bytes of blanks
STALL_BOUND_S = 0.5  # generous for a loaded 2-core machine; the old reader stalled 1-2 s


@pytest.mark.parametrize("blank", [b"\n", b" "], ids=["newlines", "spaces"])
def test_blank_flood_does_not_hold_other_connections(daemon: Daemon, blank: bytes) -> None:
    """While one connection sends 64 MiB of blank bytes, another's daemon/status keeps
    answering promptly, and the flooding connection still gets its own answer after."""
    flooder = Raw(daemon.socket, timeout=60)
    done = threading.Event()
    answer: list[Any] = []

    def flood() -> None:
        block = blank * (1024 * 1024 // len(blank))
        for _ in range(FLOOD // len(block)):
            flooder.send(block)
        flooder.send(req("after", "daemon/status"))
        answer.append(flooder.response("after"))
        done.set()

    probe = daemon.client()
    probe.call("daemon/status")
    worst = 0.0
    rounds = 0
    thread = threading.Thread(target=flood)
    thread.start()
    try:
        while not done.is_set():
            t = time.perf_counter()
            probe.call("daemon/status")
            worst = max(worst, time.perf_counter() - t)
            rounds += 1
    finally:
        thread.join(60)
        probe.close()
        flooder.close()
    assert answer and answer[0]["result"]["protocol"] == 1
    assert rounds > 0
    assert worst < STALL_BOUND_S, f"status took {worst * 1000:.0f} ms during the flood"


def _slow_send(i: int, seconds: float) -> dict[str, Any]:
    return req(i, "chat/send", {"message": f"[[reply:ok]] [[slow:{seconds}]] {i}", "stream": False})


@pytest.mark.parametrize("shape", ["batch", "lines"])
def test_requests_in_flight_per_connection_are_bounded(
    daemon: Daemon, upstream: Upstream, shape: str
) -> None:
    """200 slow chat/send on one connection (one batch, or 200 lines) never have more
    than MAX_INFLIGHT requests open upstream at once, and every one is answered."""
    n = 200
    requests = [_slow_send(i, 0.3) for i in range(n)]
    r = Raw(daemon.socket, timeout=120)
    try:
        if shape == "batch":
            r.send(requests)
            replies = r.line()
            assert isinstance(replies, list)
        else:
            r.send(b"".join(json.dumps(q).encode() + b"\n" for q in requests))
            replies = [r.line() for _ in range(n)]
    finally:
        r.close()
    assert sorted(m["id"] for m in replies if isinstance(m, dict) and "result" in m) == list(
        range(n)
    )
    assert upstream.max_concurrent <= MAX_INFLIGHT
    assert upstream.max_concurrent >= 2  # they did run side by side, up to the bound


def test_cancel_reaches_a_request_waiting_for_its_turn(daemon: Daemon, upstream: Upstream) -> None:
    """With MAX_INFLIGHT hanging requests running, one more waits its turn, and a
    $/cancelRequest for it still answers it at once (-32800)."""
    r = Raw(daemon.socket, timeout=30)
    try:
        for i in range(MAX_INFLIGHT + 1):
            r.send(req(i, "chat/send", {"message": f"[[hang]] {i}", "stream": False}))
        deadline = time.monotonic() + 20
        while upstream.in_flight < MAX_INFLIGHT and time.monotonic() < deadline:
            time.sleep(0.02)
        assert upstream.in_flight == MAX_INFLIGHT
        r.send({"jsonrpc": "2.0", "method": "$/cancelRequest", "params": {"id": MAX_INFLIGHT}})
        reply = r.response(MAX_INFLIGHT)
        assert reply["error"]["code"] == -32800
        assert upstream.in_flight == MAX_INFLIGHT  # the waiting one never went upstream
    finally:
        r.close()
