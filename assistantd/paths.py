"""Where things live. Standard library only: ``assistantctl`` imports this on its way
to the socket, and the shell client computes the same socket path without Python.

The socket path follows the contract's shell rule exactly
(``${XDG_RUNTIME_DIR:-/run/user/$(id -u)}/assistantd/assistantd.sock``) rather than
platformdirs' longer fallback chain, so every client, with or without Python, agrees.
The daemon-only folders (data, cache, logs) come from platformdirs in ``dirs()``.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

APP = "assistantd"
SOCKET_NAME = "assistantd.sock"


def runtime_dir() -> Path:
    """The per-user runtime folder that holds the socket's folder."""
    if xdg := os.environ.get("XDG_RUNTIME_DIR"):
        return Path(xdg)
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Caches" / "TemporaryItems"
    return Path(f"/run/user/{os.getuid()}")


def config_dir() -> Path:
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Application Support" / APP
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / APP


def config_path(override: str | None = None) -> Path:
    """``--config``, then ``$ASSISTANTD_CONFIG``, then the platform config folder."""
    return Path(override or os.environ.get("ASSISTANTD_CONFIG") or config_dir() / "config.toml")


def socket_path(override: str | None = None, config_socket: str | None = None) -> Path:
    """``--socket``, then ``$ASSISTANTD_SOCKET``, then the config's ``socket``, then the default."""
    chosen = override or os.environ.get("ASSISTANTD_SOCKET") or config_socket
    if chosen:
        return Path(chosen).expanduser()
    return runtime_dir() / APP / SOCKET_NAME


def socket_from_config_file(path: Path) -> str | None:
    """The ``socket`` key of the config file, read cheaply (tomllib is stdlib), or None."""
    try:
        import tomllib

        with open(path, "rb") as f:
            value = tomllib.load(f).get("socket")
    except (OSError, ValueError):
        return None
    return value if isinstance(value, str) else None


def client_socket_path(override: str | None = None) -> Path:
    """The socket a client should connect to, by the contract's rule."""
    if override or os.environ.get("ASSISTANTD_SOCKET"):
        return socket_path(override)
    return socket_path(config_socket=socket_from_config_file(config_path()))


@dataclass(frozen=True)
class Dirs:
    data: Path
    cache: Path
    log: Path
    state: Path


def dirs() -> Dirs:
    """The daemon's folders, from platformdirs (imported here, not at start-up)."""
    import platformdirs

    return Dirs(
        data=Path(platformdirs.user_data_dir(APP, appauthor=False)),
        cache=Path(platformdirs.user_cache_dir(APP, appauthor=False)),
        log=Path(platformdirs.user_log_dir(APP, appauthor=False)),
        state=Path(platformdirs.user_state_dir(APP, appauthor=False)),
    )
