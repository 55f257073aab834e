"""A small blocking JSON-RPC client for the daemon's socket. Standard library only:
``assistantctl``, the tests and users' scripts share it, and it must start fast.

    from assistantd.client import Client
    with Client() as c:
        print(c.call("daemon/status"))
"""

from __future__ import annotations

import _socket  # the C half of socket: its Python wrapper imports enum and selectors
import itertools
import os
import sys
import time

from assistantd import paths

TYPE_CHECKING = False  # typing costs an import that the socket path does without
if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path
    from typing import Any

    Notify = Callable[[str, dict[str, Any]], None]


def _codec() -> tuple[Callable[[Any], str], Callable[[str], Any]]:
    """``json.dumps`` (compact, not ASCII-only) and ``json.loads`` made from CPython's C
    ``_json`` directly: the ``json`` package imports ``re``, which with ``socket``'s
    wrapper was a third of what ``assistantctl chat`` cost before the daemon answered.
    Anywhere that does not match (another Python, a changed signature): ``json``."""
    try:
        from _json import encode_basestring, make_encoder, make_scanner

        def unserializable(value: Any) -> Any:
            raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")

        class Options:  # what make_scanner reads from a decoder: json.loads's defaults
            strict = True
            object_hook = object_pairs_hook = None
            parse_float, parse_int, parse_constant = float, int, float

        encode = make_encoder(
            None, unserializable, encode_basestring, None, ":", ",", False, False, True
        )
        scan = make_scanner(Options())  # type: ignore[arg-type]  # read by attribute
        if "".join(encode({"a": [1.5, None, True, "é"]}, 0)) != '{"a":[1.5,null,true,"é"]}':
            raise TypeError("not the encoder this was written for")

        def loads(text: str) -> Any:
            text = text.strip()
            try:
                value, end = scan(text, 0)
            except StopIteration:
                raise ValueError("not JSON") from None
            if end != len(text):
                raise ValueError(f"extra data after the JSON value at {end}")
            return value

        return (lambda value: "".join(encode(value, 0))), loads
    except (ImportError, TypeError):  # pragma: no cover
        import json

        return (lambda value: json.dumps(value, ensure_ascii=False)), json.loads


dumps, loads = _codec()


class RpcError(Exception):
    """An error response from the daemon."""

    def __init__(self, code: int, message: str, data: Any = None) -> None:
        super().__init__(message)
        self.code, self.message, self.data = code, message, data


class DaemonUnavailable(Exception):
    """Nothing answers on the socket (and it was not, or could not be, started)."""


class ForeignDaemon(DaemonUnavailable):
    """The socket is served by a process of another user: nothing may be sent to it."""


def peer_uid(sock: _socket.socket) -> int:
    """The uid of the process at the other end of a connected Unix socket.

    Linux: ``SO_PEERCRED``, a ``struct ucred`` (pid, uid, gid); OpenBSD's is (uid, gid,
    pid). macOS, FreeBSD and the other BSDs: ``LOCAL_PEERCRED`` at level ``SOL_LOCAL``
    (0), a ``struct xucred`` whose second field is the uid; it is what their
    ``getpeereid(3)`` reads."""
    import struct

    if hasattr(_socket, "SO_PEERCRED"):
        creds = sock.getsockopt(_socket.SOL_SOCKET, _socket.SO_PEERCRED, struct.calcsize("3i"))
        return int(struct.unpack("3i", creds)[0 if sys.platform.startswith("openbsd") else 1])
    option = getattr(_socket, "LOCAL_PEERCRED", 1)
    creds = sock.getsockopt(0, option, struct.calcsize("IIh16I"))
    return int(struct.unpack_from("II", creds)[1])


def check_peer(sock: _socket.socket, path: str) -> None:
    """Refuse a socket that another user serves: a key or a question sent there would go
    to them (any user can create a socket where ours is expected, say when the runtime
    folder is missing or shared)."""
    uid = peer_uid(sock)
    if uid != os.getuid():
        raise ForeignDaemon(
            f"refusing {path}: it is served by uid {uid}, not by you (uid {os.getuid()})"
        )


def start_daemon(path: str | Path, timeout: float = 15.0) -> None:
    """Start ``assistantd`` in the background for ``path`` and wait until it answers."""
    import subprocess  # only here: the usual path to a running daemon needs no child

    proc = subprocess.Popen(
        [sys.executable, "-m", "assistantd", "--quiet", "--socket", str(path)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
        # Not the caller's folder: ``-m`` would import from it first, and a daemon should
        # not keep a directory busy (an unmountable drive) for its whole life.
        cwd="/",
    )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        probe = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
        try:
            probe.connect(str(path))
            return
        except OSError:
            pass
        finally:
            probe.close()
        if proc.poll() is not None:
            err = proc.stderr.read().decode(errors="replace").strip() if proc.stderr else ""
            if "another assistantd" in err:
                continue  # a concurrent start won the race; wait for it to answer
            raise DaemonUnavailable(f"the daemon exited at start ({proc.returncode}): {err[-300:]}")
        time.sleep(0.005)  # a refused connect costs microseconds; the first answer waits on it
    raise DaemonUnavailable(f"the daemon did not answer on {path} within {timeout:g} s")


class Client:
    def __init__(
        self,
        path: str | Path | None = None,
        *,
        autostart: bool = False,
        timeout: float | None = None,
    ) -> None:
        self.path: str = paths.client_socket(str(path) if path else None)
        self.autostart = autostart
        self.timeout = timeout
        self._sock: _socket.socket | None = None
        self._buf = b""
        self._ids = itertools.count(1)
        self._pending: dict[Any, dict[str, Any]] = {}

    def __enter__(self) -> Client:
        self.connect()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def connect(self) -> None:
        if self._sock is not None:
            return
        sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
        try:
            sock.connect(self.path)
        except (FileNotFoundError, ConnectionRefusedError) as e:
            sock.close()
            if not self.autostart:
                raise DaemonUnavailable(
                    f"the daemon is not running on {self.path} and autostart is disabled"
                ) from e
            start_daemon(self.path)
            sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
            sock.connect(self.path)
        except OSError as e:
            sock.close()
            raise DaemonUnavailable(f"cannot connect to {self.path}: {e}") from e
        try:
            check_peer(sock, self.path)
        except BaseException:
            sock.close()
            raise
        sock.settimeout(self.timeout)
        self._sock = sock

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def send(self, message: Any) -> None:
        self.connect()
        assert self._sock is not None
        self._sock.sendall(dumps(message).encode() + b"\n")

    def notify(self, method: str, params: dict[str, Any] | None = None) -> None:
        self.send({"jsonrpc": "2.0", "method": method, "params": params or {}})

    def cancel(self, request_id: Any) -> None:
        self.notify("$/cancelRequest", {"id": request_id})

    def _read(self) -> dict[str, Any]:
        assert self._sock is not None
        while b"\n" not in self._buf:
            chunk = self._sock.recv(65536)
            if not chunk:
                raise DaemonUnavailable("the daemon closed the connection")
            self._buf += chunk
        line, _, self._buf = self._buf.partition(b"\n")
        message: dict[str, Any] = loads(line.decode())
        return message

    def call(
        self,
        method: str,
        params: dict[str, Any] | None = None,
        *,
        on_notify: Notify | None = None,
        cancel_on_interrupt: bool = False,
    ) -> Any:
        """Send a request and wait for its response, passing its notifications to
        ``on_notify``. With ``cancel_on_interrupt``, Ctrl-C sends ``$/cancelRequest`` and
        still returns the (cancelled) answer; a second Ctrl-C gives up."""
        request_id = next(self._ids)
        self.send({"jsonrpc": "2.0", "id": request_id, "method": method, "params": params or {}})
        cancelled = False
        while True:
            try:
                message = self._pending.pop(request_id, None) or self._read()
            except KeyboardInterrupt:
                if not cancel_on_interrupt or cancelled:
                    raise
                cancelled = True
                self.cancel(request_id)
                continue
            if "method" in message:
                p = message.get("params") or {}
                if on_notify is not None and p.get("request_id") == request_id:
                    on_notify(message["method"], p)
                continue
            if message.get("id") != request_id:
                self._pending[message.get("id")] = message
                continue
            if "error" in message:
                e = message["error"]
                raise RpcError(e.get("code", 0), e.get("message", ""), e.get("data"))
            return message.get("result")
