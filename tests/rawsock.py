"""A raw socket to the daemon, for tests that need exact control over bytes."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


class Raw:
    # Every Raw made in a test, kept open until the test ends: conftest's autouse fixture then
    # closes them all (close_all), so a test need not close each one and none leaks its fd.
    opened: list[Raw] = []

    def __init__(self, path: Path, timeout: float = 10.0) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        Raw.opened.append(self)
        self.sock.settimeout(timeout)
        self.sock.connect(str(path))
        self.buf = b""

    def send(self, data: bytes | dict[str, Any] | list[Any]) -> None:
        if not isinstance(data, bytes):
            data = json.dumps(data).encode() + b"\n"
        self.sock.sendall(data)

    def line(self) -> dict[str, Any] | list[Any] | None:
        """The next newline-terminated message, or None when the daemon closed."""
        while b"\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                return None
            self.buf += chunk
        raw, _, self.buf = self.buf.partition(b"\n")
        value: dict[str, Any] | list[Any] = json.loads(raw)
        return value

    def response(self, id_: Any) -> dict[str, Any]:
        """Read until the response with ``id_``; notifications are collected in ``notes``."""
        self.notes: list[dict[str, Any]] = getattr(self, "notes", [])
        while True:
            msg = self.line()
            assert msg is not None, "connection closed before the response"
            assert isinstance(msg, dict)
            if "method" in msg:
                self.notes.append(msg)
            elif msg.get("id") == id_:
                return msg

    def notes_until(self, count: int) -> list[dict[str, Any]]:
        """Read notifications until ``count`` have arrived on this connection (a response in
        between is an error: the test expected the request to be still running)."""
        self.notes = getattr(self, "notes", [])
        while len(self.notes) < count:
            msg = self.line()
            assert isinstance(msg, dict) and "method" in msg, f"expected a notification: {msg}"
            self.notes.append(msg)
        return self.notes

    def closed(self) -> bool:
        try:
            return self.sock.recv(1) == b""
        except (ConnectionResetError, TimeoutError):
            return True

    def close(self) -> None:
        self.sock.close()

    @classmethod
    def close_all(cls) -> None:
        """Close every Raw opened since the last call (a test's teardown)."""
        while cls.opened:
            cls.opened.pop().close()


def req(id_: Any, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
    msg: dict[str, Any] = {"jsonrpc": "2.0", "id": id_, "method": method}
    if params is not None:
        msg["params"] = params
    return msg


def until(check: Callable[[], Any], timeout: float = 10.0, what: str = "the condition") -> Any:
    """Poll ``check`` until it returns a true value (returned), or fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)
