"""Where things live. Standard library only: ``assistantctl`` imports this on its way
to the socket, and the shell client computes the same socket path without Python.

The socket path follows the contract's shell rule exactly
(``${XDG_RUNTIME_DIR:-/run/user/$(id -u)}/assistantd/assistantd.sock``) rather than
platformdirs' longer fallback chain, so every client, with or without Python, agrees.
The daemon-only folders (data, cache, logs) come from platformdirs in ``dirs()``.

The client's functions work on strings with ``os.path``: ``pathlib`` (and the ``re``,
``fnmatch`` and ``urllib`` it pulls in) would cost ``assistantctl`` 15 ms before it
sends a byte. The daemon's functions return ``Path`` objects.
"""

# ruff: noqa: PTH111, PTH118  (os.path on the client's path: see above)
from __future__ import annotations

import os
import sys

TYPE_CHECKING = False  # typing and pathlib cost imports the client does without
if TYPE_CHECKING:
    from pathlib import Path

APP = "assistantd"
SOCKET_NAME = "assistantd.sock"


def _runtime_dir() -> str:
    if xdg := os.environ.get("XDG_RUNTIME_DIR"):
        return xdg
    if sys.platform == "darwin":
        return os.path.expanduser("~/Library/Caches/TemporaryItems")
    return f"/run/user/{os.getuid()}"


def _config_dir() -> str:
    if sys.platform == "darwin":
        return os.path.expanduser(f"~/Library/Application Support/{APP}")
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.expanduser("~/.config")
    return os.path.join(base, APP)


def _config_path(override: str | None = None) -> str:
    return override or os.environ.get("ASSISTANTD_CONFIG") or _config_dir() + "/config.toml"


def _socket_path(override: str | None = None, config_socket: str | None = None) -> str:
    chosen = override or os.environ.get("ASSISTANTD_SOCKET") or config_socket
    if chosen:
        return os.path.expanduser(chosen)
    return os.path.join(_runtime_dir(), APP, SOCKET_NAME)


def runtime_dir() -> Path:
    """The per-user runtime folder that holds the socket's folder."""
    from pathlib import Path

    return Path(_runtime_dir())


def config_dir() -> Path:
    from pathlib import Path

    return Path(_config_dir())


def config_path(override: str | None = None) -> Path:
    """``--config``, then ``$ASSISTANTD_CONFIG``, then the platform config folder."""
    from pathlib import Path

    return Path(_config_path(override))


def socket_path(override: str | None = None, config_socket: str | None = None) -> Path:
    """``--socket``, then ``$ASSISTANTD_SOCKET``, then the config's ``socket``, then the default."""
    from pathlib import Path

    return Path(_socket_path(override, config_socket))


def socket_from_config_file(path: str | Path) -> str | None:
    """The ``socket`` key of the config file, or None. A file that never spells
    ``socket`` cannot set it, so the common case skips tomllib (6 ms of imports)."""
    try:
        with open(path, "rb") as f:
            data = f.read()
        if b"socket" not in data:
            return None
        import tomllib

        value = tomllib.loads(data.decode("utf-8")).get("socket")
    except (OSError, ValueError):
        return None
    return value if isinstance(value, str) else None


def client_socket(override: str | None = None) -> str:
    """The socket a client should connect to, by the contract's rule (a string: the
    client's path to the socket stays free of pathlib)."""
    if override or os.environ.get("ASSISTANTD_SOCKET"):
        return _socket_path(override)
    return _socket_path(config_socket=socket_from_config_file(_config_path()))


def client_socket_path(override: str | None = None) -> Path:
    """``client_socket`` as a ``Path``."""
    from pathlib import Path

    return Path(client_socket(override))


class Dirs:
    """The daemon's folders (a plain class: ``dataclasses`` costs the client 8 ms)."""

    __slots__ = ("cache", "data", "log")

    def __init__(self, data: Path, cache: Path, log: Path) -> None:
        self.data, self.cache, self.log = data, cache, log


def dirs() -> Dirs:
    """The daemon's folders, from platformdirs (imported here, not at start-up)."""
    from pathlib import Path

    import platformdirs

    return Dirs(
        data=Path(platformdirs.user_data_dir(APP, appauthor=False)),
        cache=Path(platformdirs.user_cache_dir(APP, appauthor=False)),
        log=Path(platformdirs.user_log_dir(APP, appauthor=False)),
    )
