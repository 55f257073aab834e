"""Pushed changes: a subscribed connection hears of config reloads and of conversations
created, answered, renamed and deleted by other clients."""

from __future__ import annotations

import time
from typing import Any

from tests.conftest import Daemon
from tests.rawsock import Raw, req


def _events(r: Raw, count: int, timeout: float = 5) -> list[dict[str, Any]]:
    got: list[dict[str, Any]] = []
    r.sock.settimeout(timeout)
    while len(got) < count:
        msg = r.line()
        assert isinstance(msg, dict)
        if "method" in msg:
            got.append(msg)
    return got


def test_second_client_sees_changes(daemon: Daemon) -> None:
    """A rename, an answer and a delete by one client reach a subscribed second client at once."""
    watcher = Raw(daemon.socket)
    watcher.send(req(1, "daemon/subscribe", {"events": ["conversations/changed"]}))
    assert watcher.response(1)["result"] == {"events": ["conversations/changed"]}
    cid = daemon.call("chat/send", {"message": "hello"})["conversation_id"]
    created, answered = _events(watcher, 2)
    assert created["params"] == {"id": cid, "change": "created"}
    assert answered["params"] == {"id": cid, "change": "answered"}
    t0 = time.monotonic()
    daemon.call("conversations/rename", {"id": cid, "title": "Renamed"})
    (renamed,) = _events(watcher, 1)
    assert renamed["params"] == {"id": cid, "change": "renamed"}
    assert time.monotonic() - t0 < 1.0
    assert "request_id" not in renamed["params"]
    daemon.call("conversations/delete", {"id": cid})
    assert _events(watcher, 1)[0]["params"]["change"] == "deleted"


def test_config_changed(daemon: Daemon) -> None:
    """A hot reload is pushed as config/changed with config_ok, good or broken."""
    watcher = Raw(daemon.socket)
    watcher.send(req(1, "daemon/subscribe", {"events": ["config/changed"]}))
    watcher.response(1)
    good = daemon.config_path.read_text()
    daemon.config_path.write_text(good + "\n[broken\n")
    note = _events(watcher, 1, timeout=10)[0]
    assert note["method"] == "config/changed" and note["params"]["config_ok"] is False
    daemon.config_path.write_text(good)
    assert _events(watcher, 1, timeout=10)[0]["params"]["config_ok"] is True


def test_unsubscribed_hear_nothing(daemon: Daemon) -> None:
    """A connection that did not subscribe gets no events; unknown event names are -32602."""
    quiet = Raw(daemon.socket, timeout=1)
    daemon.call("chat/send", {"message": "x"})
    quiet.send(req(2, "daemon/subscribe", {"events": ["nope/never"]}))
    reply = quiet.line()
    assert isinstance(reply, dict) and reply["error"]["code"] == -32602


def test_subscriber_half_close_ends(daemon: Daemon) -> None:
    """A subscribed client that ends its input is answered and then closed, not held open."""
    r = Raw(daemon.socket)
    r.send(req(1, "daemon/subscribe", {"events": ["conversations/changed"]}))
    r.response(1)
    r.sock.shutdown(2 - 1)  # SHUT_WR
    assert r.line() is None
