"""Keys read from the Secret Service over D-Bus, without keyring's imports.

keyring's read imports keyring, secretstorage and cryptography, opens two D-Bus
connections and a session with a Diffie-Hellman exchange: 40-60 ms of a cold daemon's
first answer from a provider that needs a key, against about 6 ms for this read (both
after the daemon's imports, medians of 5). It asks what keyring's Secret Service backend
asks (the default collection, the attributes keyring stores) and reads the secret in a
"plain" session. The encrypted session protects nothing here: the secret crosses a Unix
socket to the user's own session bus, and any process that could watch that bus runs as
the user and could call GetSecret itself. Which providers have a key at all is read from
the items' attributes (``stored``), with no secret asked for.

Anything but the common case (a keyring backend the user chose, no default collection, a
locked one, any D-Bus error) raises ``KeyringDecides`` and keyring is asked, so its unlock
prompt and its errors are unchanged. A bus that does not answer raises ``TimeoutError``:
keyring would wait on it too.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

_SS = "org.freedesktop.secrets"
_DEFAULT = "/org/freedesktop/secrets/aliases/default"


class KeyringDecides(Exception):
    """Not the common case: keyring reads this key (and prompts, or says what failed)."""


def usable() -> bool:
    """Whether keyring would pick the Secret Service itself: Linux, a session bus, and no
    backend chosen by ``PYTHON_KEYRING_BACKEND`` or keyring's config file."""
    if not sys.platform.startswith("linux") or not os.environ.get("DBUS_SESSION_BUS_ADDRESS"):
        return False
    if os.environ.get("PYTHON_KEYRING_BACKEND"):
        return False
    config = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    return not (config / "python_keyring" / "keyringrc.cfg").exists()


@contextlib.contextmanager
def _session_bus(timeout: float) -> Iterator[Callable[[Any], tuple[Any, ...]]]:
    """``ask(message) -> body`` on one connection to the session bus, every reply due
    within ``timeout`` of the start. D-Bus errors and broken replies raise
    ``KeyringDecides``; a bus that does not answer, ``TimeoutError``."""
    from jeepney import HeaderFields, MessageType, Parser
    from jeepney.bus import get_bus
    from jeepney.bus_messages import message_bus
    from jeepney.io.blocking import prep_socket

    deadline = time.monotonic() + timeout
    try:
        sock = prep_socket(get_bus("SESSION"), timeout=timeout)
    except TimeoutError:
        raise
    except Exception as e:
        raise KeyringDecides from e
    parser = Parser()
    serial = 0

    def ask(message: Any) -> tuple[Any, ...]:
        nonlocal serial
        serial += 1
        sock.sendall(message.serialise(serial=serial))
        while True:
            while (msg := parser.get_next_message()) is not None:
                if msg.header.fields.get(HeaderFields.reply_serial) == serial:
                    if msg.header.message_type == MessageType.error:
                        raise LookupError(msg.header.fields.get(HeaderFields.error_name))
                    return tuple(msg.body)
            sock.settimeout(max(deadline - time.monotonic(), 0.001))
            try:
                data = sock.recv(65536)
            except TimeoutError:
                raise TimeoutError("the session bus did not answer") from None
            if not data:
                raise ConnectionError("the session bus closed the connection")
            parser.add_data(data)

    try:
        ask(message_bus.Hello())
        yield ask
    except TimeoutError:
        raise
    except (LookupError, OSError, ValueError, TypeError) as e:
        raise KeyringDecides from e
    finally:
        sock.close()


def _search(ask: Callable[[Any], tuple[Any, ...]], query: dict[str, str]) -> list[str]:
    """The paths of the default collection's items that match ``query``; a locked
    collection is keyring's to unlock (it asks the user)."""
    from jeepney import DBusAddress, Properties
    from jeepney import new_method_call as call

    collection = DBusAddress(_DEFAULT, _SS, "org.freedesktop.Secret.Collection")
    if ask(Properties(collection).get("Locked"))[0][1]:
        raise KeyringDecides("locked")
    (items,) = ask(call(collection, "SearchItems", "a{ss}", (query,)))
    return list(items)


def read(service: str, username: str, timeout: float) -> str | None:
    """The secret keyring stores for (service, username), or None if there is none."""
    from jeepney import DBusAddress
    from jeepney import new_method_call as call

    with _session_bus(timeout) as ask:
        items = _search(ask, {"username": username, "service": service})
        if not items:
            return None
        secrets = DBusAddress("/org/freedesktop/secrets", _SS, "org.freedesktop.Secret.Service")
        _, session = ask(call(secrets, "OpenSession", "sv", ("plain", ("s", ""))))
        item = DBusAddress(items[0], _SS, "org.freedesktop.Secret.Item")
        (secret,) = ask(call(item, "GetSecret", "o", (session,)))
        return bytes(secret[2]).decode("utf-8")


def stored(service: str, timeout: float) -> set[str]:
    """The usernames that have a secret stored for ``service``, read from the items'
    attributes: no secret is asked for."""
    from jeepney import DBusAddress, Properties

    with _session_bus(timeout) as ask:
        names: set[str] = set()
        for path in _search(ask, {"service": service}):
            item = DBusAddress(path, _SS, "org.freedesktop.Secret.Item")
            attributes = ask(Properties(item).get("Attributes"))[0][1]
            if attributes.get("username"):
                names.add(attributes["username"])
        return names
