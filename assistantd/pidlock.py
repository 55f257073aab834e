"""An exclusive lock file that names its holder: one daemon per socket, one per data folder."""

from __future__ import annotations

import errno
import fcntl
import os
from pathlib import Path


class Held(Exception):
    """Another process holds the lock; ``pid`` is what it wrote there ("?" if nothing)."""

    def __init__(self, pid: str) -> None:
        super().__init__(pid)
        self.pid = pid


class SymlinkRefused(Exception):
    """The lock's path is a symbolic link (someone planted it): not followed."""


def take(path: Path) -> int:
    """Open ``path`` (created 0600, never through a symbolic link), lock it without waiting
    and write this process's pid into it. The lock lasts while the returned fd is open."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise SymlinkRefused(f"{path} is a symbolic link; not following it") from None
        raise
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        owner = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
        os.close(fd)
        if e.errno in (errno.EAGAIN, errno.EACCES):
            raise Held(owner) from None
        raise
    os.ftruncate(fd, 0)
    os.pwrite(fd, str(os.getpid()).encode(), 0)
    return fd
