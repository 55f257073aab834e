"""API keys in the OS keyring (service ``assistantd``, username = provider name).

Keyring calls go through D-Bus on Linux and can hang (a locked collection waiting for
a prompt, a D-Bus without a Secret Service): each runs off the event loop under a
timeout. A read asks the Secret Service directly where keyring would use it
(``secretservice``: about 6 ms of a cold first answer, keyring's read 40-60 ms). Every
key this process has seen is remembered only so that ``scrub`` can blank it out of any
log line, error message or reply.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
import threading
from collections.abc import Callable
from typing import Any

from assistantd import secretservice
from assistantd.threads import off_loop

SERVICE = "assistantd"
TIMEOUT_S = 5.0
_seen: set[str] = set()
_chosen: Any = None  # the backend _linux_secret_service found (False: none), once asked


def remember(key: str) -> None:
    if len(key) >= 4:
        _seen.add(key)


def scrub(text: str) -> str:
    """``text`` with every key this process has seen replaced by ``***``."""
    for key in _seen:
        if key in text:
            text = text.replace(key, "***")
    return text


def hint(key: str) -> str:
    """At most the last 4 characters, and none of a short key."""
    return key[-4:] if len(key) >= 12 else ""


class ScrubFilter(logging.Filter):
    """Blanks known keys out of every log record, tracebacks included."""

    def filter(self, record: logging.LogRecord) -> bool:
        if _seen:
            record.msg = scrub(record.getMessage())
            record.args = None
            if record.exc_info:
                formatted = logging.Formatter().formatException(record.exc_info)
                record.exc_text = scrub(formatted)
                record.exc_info = None
        return True


class KeyringUnavailable(Exception):
    """No usable OS keyring: none installed, locked, or not answering."""


def _backend() -> Any:
    import keyring
    from keyring.backends import fail

    global _chosen
    if _chosen is None and sys.platform.startswith("linux"):
        _chosen = _linux_secret_service() or False  # False: none answered, not asked again
    kr = _chosen or keyring.get_keyring()
    if isinstance(kr, fail.Keyring):
        raise KeyringUnavailable(
            "no OS keyring is available (on Linux: a Secret Service such as gnome-keyring "
            "in a D-Bus session)"
        )
    return kr


def _linux_secret_service() -> Any:
    """On Linux, when the user has not chosen a backend (``PYTHON_KEYRING_BACKEND``,
    ``keyringrc.cfg``): the Secret Service, if one answers. That is what keyring's own
    search picks among the backends this package installs (KWallet's and libsecret's
    need dbus-python and PyGObject, which it does not), found without the search: that
    imports every backend, the macOS one running ``ldconfig``, and cost a cold daemon's
    first answer 70-110 ms. None: no Secret Service, so the search decides (and says
    what is missing)."""
    from keyring import core

    if (kr := core.load_env() or core.load_config()) is not None:
        core.set_keyring(kr)
        return kr
    from keyring.backends import SecretService

    try:
        SecretService.Keyring.priority  # noqa: B018  (raises when no Secret Service answers)
    except RuntimeError:
        return None
    kr = SecretService.Keyring()  # type: ignore[no-untyped-call]
    core.set_keyring(kr)
    return kr


_serial = threading.Lock()  # one D-Bus conversation with the keyring at a time


def _direct() -> bool:
    """Whether reads ask the Secret Service directly (``secretservice``): where keyring
    would use it, and keyring's own search has not found it missing."""
    return _chosen is not False and secretservice.usable()


async def _in_thread(call: Callable[[], Any]) -> Any:
    """``call`` on a keyring thread, one at a time, under the keyring's timeout. A bus
    that never answers raises TimeoutError from the thread too: both say so alike."""
    try:
        async with asyncio.timeout(TIMEOUT_S):
            return await off_loop(call, "keyring", _serial)
    except TimeoutError:
        raise KeyringUnavailable(f"the OS keyring did not answer within {TIMEOUT_S:g} s") from None


async def _run(func_name: str, *args: str) -> Any:
    def call() -> Any:
        if func_name == "get_password" and _direct():
            with contextlib.suppress(secretservice.KeyringDecides):
                return secretservice.read(SERVICE, args[0], TIMEOUT_S)
        from keyring.errors import KeyringError

        try:
            return getattr(_backend(), func_name)(SERVICE, *args)
        except KeyringError as e:
            if type(e).__name__ == "PasswordDeleteError":
                raise
            raise KeyringUnavailable(f"the OS keyring refused: {type(e).__name__}: {e}") from None
        except KeyringUnavailable:
            raise
        except Exception as e:  # D-Bus failures surface as many types
            raise KeyringUnavailable(f"the OS keyring failed: {type(e).__name__}: {e}") from None

    return await _in_thread(call)


def sendable(key: str) -> bool:
    """Whether ``key`` can go in an HTTP header: printable ASCII, no space. One with a
    control character (an escape sequence pasted along) or a non-ASCII one never could."""
    return bool(key) and key.isascii() and key.isprintable() and " " not in key


async def get_key(provider: str) -> str | None:
    """The stored key, without the newline ``echo KEY | secret-tool store`` keeps."""
    value: str | None = await _run("get_password", provider)
    value = value.strip() if value else None
    if value:
        remember(value)
    return value or None


async def stored(providers: list[str]) -> set[str]:
    """Which of ``providers`` have a key in the keyring. Where the Secret Service answers,
    the items' attributes say so and no secret is read; otherwise each key is read. A
    keyring that cannot say counts as holding none."""
    if _direct():
        try:
            listed: set[str] = await _in_thread(lambda: secretservice.stored(SERVICE, TIMEOUT_S))
            return set(providers) & listed
        except KeyringUnavailable:
            return set()  # keyring would wait on the same bus
        except secretservice.KeyringDecides:
            pass
    found: set[str] = set()

    async def one(name: str) -> None:
        with contextlib.suppress(KeyringUnavailable):
            if await get_key(name):
                found.add(name)

    async with asyncio.TaskGroup() as tg:
        for name in providers:
            tg.create_task(one(name))
    return found


async def set_key(provider: str, key: str) -> None:
    remember(key)
    await _run("set_password", provider, key)


async def delete_key(provider: str) -> bool:
    from keyring.errors import PasswordDeleteError

    try:
        await _run("delete_password", provider)
    except PasswordDeleteError:
        return False
    return True


def env_key(env_var: str | None) -> str | None:
    value = os.environ.get(env_var, "").strip() if env_var else None
    if value:
        remember(value)
    return value or None
