"""The Unix socket: a private folder, one instance per socket, the peer's uid checked
before a byte is read, and one task group per connection that owns its requests.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import stat
import struct
import sys
from pathlib import Path
from typing import Any

from assistantd import errors, framing, pidlock
from assistantd.rpc import Registry, Session

log = logging.getLogger("assistantd.server")

WRITE_TIMEOUT_S = 60.0  # a client that reads nothing for this long is dropped
WRITE_HIGH_WATER = 64 * 1024  # bytes queued for a client before a write waits for it
SD_LISTEN_FDS_START = 3


class AlreadyRunning(Exception):
    """Another live daemon serves this socket."""


def peer_uid(sock: socket.socket) -> int | None:
    """The uid of the process at the other end (SO_PEERCRED, or LOCAL_PEERCRED on BSD/macOS)."""
    if hasattr(socket, "SO_PEERCRED"):
        raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        return int(struct.unpack("3i", raw)[1])
    local_peercred = getattr(socket, "LOCAL_PEERCRED", 0x001)
    if sys.platform == "darwin" or "bsd" in sys.platform:
        raw = sock.getsockopt(0, local_peercred, struct.calcsize("IIh16I"))
        return int(struct.unpack("IIh16I", raw)[1])
    return None


def prepare_dir(path: Path) -> None:
    """Create the socket's folder 0700, or check that an existing one is ours and private."""
    folder = path.parent
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    st = folder.stat()
    if st.st_uid != os.getuid():
        raise PermissionError(f"{folder} belongs to uid {st.st_uid}, not to us")
    if stat.S_IMODE(st.st_mode) & 0o077:
        os.chmod(folder, 0o700)


def _alive(path: Path) -> bool:
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(1.0)
    try:
        probe.connect(str(path))
        return True
    except OSError:
        return False
    finally:
        probe.close()


class Listener:
    """Owns the socket file and the lock that makes this the only daemon for it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lock_path = path.with_name(path.name + ".lock")
        self.activated = False
        self.sock: socket.socket | None = None
        self._lock_fd: int | None = None
        self._inode: int | None = None

    def acquire(self) -> None:
        """Take the lock and the socket: systemd's, or a new one replacing a stale file."""
        inherited = self._inherited()
        if inherited is None:
            prepare_dir(self.path)
        try:
            self._lock_fd = pidlock.take(self.lock_path)
        except pidlock.Held as e:
            raise AlreadyRunning(
                f"another assistantd (pid {e.pid}) is serving {self.path}"
            ) from None
        except pidlock.SymlinkRefused as e:
            raise PermissionError(str(e)) from None
        if inherited is not None:
            self.sock, self.activated = inherited, True
            return
        if self.path.exists() or self.path.is_symlink():
            if _alive(self.path):  # someone else answers without our lock: never steal it
                raise AlreadyRunning(f"something else is listening on {self.path}")
            log.info("replacing the stale socket %s", self.path)
            self.path.unlink()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o177)  # created 0600: no window where others could connect
        try:
            sock.bind(str(self.path))
        finally:
            os.umask(old)
        os.chmod(self.path, 0o600)
        sock.listen(128)
        sock.setblocking(False)
        self._inode = self.path.stat().st_ino
        self.sock = sock

    def _inherited(self) -> socket.socket | None:
        if os.environ.get("LISTEN_PID") != str(os.getpid()):
            return None
        if int(os.environ.get("LISTEN_FDS", "0")) < 1:
            return None
        for var in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
            os.environ.pop(var, None)
        sock = socket.socket(fileno=SD_LISTEN_FDS_START)
        sock.setblocking(False)
        return sock

    def release(self) -> None:
        """Remove the socket file if it is still ours, then drop the lock."""
        if self.sock is not None:
            self.sock.close()
        if not self.activated and self._inode is not None:
            try:
                if self.path.stat().st_ino == self._inode:
                    self.path.unlink()
            except FileNotFoundError:
                pass
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None


def notify_systemd(state: str) -> None:
    """sd_notify: tell a Type=notify unit we are ready (or stopping)."""
    target = os.environ.get("NOTIFY_SOCKET")
    if not target:
        return
    address = "\0" + target[1:] if target.startswith("@") else target
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        try:
            s.connect(address)
            s.sendall(state.encode())
        except OSError as e:
            log.warning("could not notify systemd: %s", e)


class Server:
    """Serves one listening socket; each connection is a ``Session`` of the registry."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self.connections: set[asyncio.Task[Any]] = set()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Serve one connection until it ends or the daemon drops it."""
        # Dropped at shutdown: ending normally keeps asyncio's stream callback (3.11) from
        # logging the cancelled task as an "Exception in callback".
        with contextlib.suppress(asyncio.CancelledError):
            await self._serve(reader, writer)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sock = writer.get_extra_info("socket")
        try:
            uid = peer_uid(sock) if sock is not None else None
        except OSError:
            uid = None
        if uid != os.getuid():
            log.warning("refused a connection from uid %s", uid)
            writer.transport.abort()
            return
        task = asyncio.current_task()
        assert task is not None
        self.connections.add(task)
        frames = framing.MessageReader(reader)

        async def send(message: Any) -> None:
            if writer.transport.is_closing():
                raise ConnectionResetError("connection lost")
            writer.write(framing.encode(message, frames.framing))
            # The per-delta path: wait only when the client has fallen behind (the buffer
            # is past its high-water mark), and then not for ever.
            if writer.transport.get_write_buffer_size() > WRITE_HIGH_WATER:
                async with asyncio.timeout(WRITE_TIMEOUT_S):
                    await writer.drain()

        try:
            async with asyncio.TaskGroup() as tg:
                session = Session(self.registry, send, tg.create_task)
                while not session.lost:
                    await session.queue.acquire()  # past the bound, read nothing until one ends
                    try:
                        raw = await frames.read()
                    except framing.TooLarge:
                        err = errors.InvalidRequest(
                            "message larger than 16 MiB", reason="too_large"
                        )
                        await session.send({"jsonrpc": "2.0", "id": None, "error": err.to_json()})
                        session.connection_lost()
                        break
                    except framing.FrameError as e:
                        err = errors.InvalidRequest(str(e), reason="bad_frame")
                        await session.send({"jsonrpc": "2.0", "id": None, "error": err.to_json()})
                        session.connection_lost()
                        break
                    except OSError:
                        session.connection_lost()
                        break
                    if raw is None:
                        session.end_background()  # requests in flight still finish
                        break
                    tg.create_task(session.handle(raw))  # gives back its place in the queue
        except* ConnectionResetError:
            pass
        except* OSError:
            session.connection_lost()
        finally:
            self.connections.discard(task)
            writer.close()
