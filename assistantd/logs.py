"""The daemon's logging: a private rotating file and, in the foreground, stderr; every
line goes through ``keystore.ScrubFilter``, so no key the process has seen is written."""

from __future__ import annotations

import logging
import logging.handlers
import os
import sys
from pathlib import Path
from typing import Any

from assistantd import keystore

MAX_BYTES = 2_000_000


class PrivateLog(logging.handlers.RotatingFileHandler):
    """The daemon's rotating log: every file it opens, the first one and each one a
    rotation starts, is created 0600 whatever the umask (and never through a symlink)."""

    def _open(self) -> Any:
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW
        fd = os.open(self.baseFilename, flags, 0o600)
        os.fchmod(fd, 0o600)  # a file left by an older version may be wider
        return open(fd, "a", encoding=self.encoding, errors=self.errors)


def setup(log_dir: Path, level: str, foreground: bool, max_bytes: int = MAX_BYTES) -> None:
    """Log to a private rotating file (and to stderr in the foreground), every line
    passed through the key scrubber."""
    log_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    root = logging.getLogger("assistantd")
    root.setLevel(level)
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    handlers: list[logging.Handler] = [
        PrivateLog(log_dir / "assistantd.log", maxBytes=max_bytes, backupCount=3, encoding="utf-8")
    ]
    if foreground:
        handlers.append(logging.StreamHandler(sys.stderr))
    for h in handlers:
        h.setFormatter(fmt)
        h.addFilter(keystore.ScrubFilter())
        root.addHandler(h)
