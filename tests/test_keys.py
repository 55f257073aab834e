"""API keys: the real OS keyring (gnome-keyring's Secret Service), env fallback, no keyring."""

from __future__ import annotations

import json
import os
import secrets as pysecrets
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from assistantd.client import RpcError
from tests.conftest import ROOT, Daemon, fake_provider_config
from tests.upstream import Upstream


@pytest.fixture
def keyed_upstream() -> Iterator[tuple[Upstream, str]]:
    """An upstream that accepts one key only."""
    key = f"sk-test-{pysecrets.token_hex(16)}"
    with Upstream(api_key=key) as up:
        yield up, key


def _lookup(provider: str) -> str:
    out = subprocess.run(
        ["secret-tool", "lookup", "service", "assistantd", "username", provider],
        capture_output=True,
        text=True,
        timeout=10,
    )
    return out.stdout


def test_key_round_trip_in_keyring(
    secret_service: None, make_daemon: Any, keyed_upstream: tuple[Upstream, str]
) -> None:
    """keys/set stores the key in the Secret Service; chats use it; keys/delete removes it."""
    up, key = keyed_upstream
    d: Daemon = make_daemon(fake_provider_config(up, needs_key=True))
    with pytest.raises(RpcError) as e:
        d.call("chat/send", {"message": "hi"})
    assert e.value.code == -32001
    assert d.call("keys/set", {"provider": "fake", "key": key}) == {
        "provider": "fake",
        "source": "keyring",
    }
    assert _lookup("fake") == key
    assert d.call("chat/send", {"message": "hi"})["text"] == "You said: hi"
    assert up.requests[-1]["headers"]["authorization"] == f"Bearer {key}"
    listed = {k["provider"]: k for k in d.call("keys/list")["keys"]}
    assert listed["fake"]["source"] == "keyring" and listed["fake"]["hint"] == key[-4:]
    assert d.call("keys/delete", {"provider": "fake"}) == {"provider": "fake", "deleted": True}
    assert _lookup("fake") == ""
    assert d.call("keys/delete", {"provider": "fake"})["deleted"] is False


def _store_with_secret_tool(provider: str, secret: str) -> None:
    """Store a key as another tool would (secret-tool: the same two attributes as keyring,
    no `application`), byte for byte."""
    subprocess.run(
        ["secret-tool", "store", "--label", "x", "service", "assistantd", "username", provider],
        input=secret,
        text=True,
        check=True,
        timeout=10,
    )


_READ = """
import asyncio, json, sys
from assistantd import keystore
try:
    found = asyncio.run(keystore.get_key(sys.argv[1]))
except keystore.KeyringUnavailable as e:
    found = "unavailable: " + str(e)
print(json.dumps([found, sorted(m for m in ("keyring", "secretstorage", "cryptography")
                                if m in sys.modules)]))
"""


def _read_key(provider: str, env: dict[str, str] | None = None) -> tuple[str | None, list[str]]:
    """A key read as the daemon reads one, in a fresh process: (the key, which of keyring,
    secretstorage and cryptography it imported)."""
    out = subprocess.run(
        [sys.executable, "-c", _READ, provider],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=ROOT,
        env={**os.environ, **(env or {})},
    )
    assert out.returncode == 0, out.stderr
    found, imported = json.loads(out.stdout)
    return found, imported


def test_a_key_is_read_from_the_secret_service_without_keyring(secret_service: None) -> None:
    """A key keyring stored (with its `application` attribute) and one another tool stored
    with the same two attributes are both read straight from the Secret Service, with none
    of keyring, secretstorage or cryptography imported; a missing one is None the same way."""
    import keyring

    stored = f"sk-kr-{pysecrets.token_hex(12)}"
    keyring.set_password("assistantd", "via-keyring", stored)
    other = f"sk-st-{pysecrets.token_hex(12)}"
    _store_with_secret_tool("via-tool", other)
    try:
        assert _read_key("via-keyring") == (stored, [])
        assert _read_key("via-tool") == (other, [])
        assert _read_key("nobody") == (None, [])
    finally:
        keyring.delete_password("assistantd", "via-keyring")
        keyring.delete_password("assistantd", "via-tool")


_STORED = """
import asyncio, json, sys
from assistantd import keystore
found = asyncio.run(keystore.stored(sys.argv[1:]))
print(json.dumps([sorted(found), len(keystore._seen), "keyring" in sys.modules]))
"""


def test_which_providers_have_keys_is_read_without_their_secrets(secret_service: None) -> None:
    """The no-key default's question, which providers have a key, is answered from the
    items' attributes: no secret is read (none is remembered) and keyring is not imported.
    With a backend the user chose, keyring answers it, key by key, the same way."""
    import keyring

    keyring.set_password("assistantd", "has-kr", "sk-has-kr-0123456789")
    _store_with_secret_tool("has-tool", "sk-has-tool-0123456789")
    try:
        names = ["has-kr", "has-tool", "has-none"]

        def stored(env: dict[str, str]) -> list[Any]:
            out = subprocess.run(
                [sys.executable, "-c", _STORED, *names],
                capture_output=True,
                text=True,
                timeout=30,
                cwd=ROOT,
                env={**os.environ, **env},
            )
            assert out.returncode == 0, out.stderr
            result: list[Any] = json.loads(out.stdout)
            return result

        assert stored({}) == [["has-kr", "has-tool"], 0, False]
        chosen = {"PYTHON_KEYRING_BACKEND": "keyring.backends.SecretService.Keyring"}
        assert stored(chosen) == [["has-kr", "has-tool"], 2, True]
    finally:
        keyring.delete_password("assistantd", "has-kr")
        keyring.delete_password("assistantd", "has-tool")


def test_a_keyring_backend_the_user_chose_is_still_used(
    secret_service: None, tmp_path: Path
) -> None:
    """keyring's config file or PYTHON_KEYRING_BACKEND choosing another backend is obeyed:
    the key in the Secret Service is not read around that choice."""
    import keyring

    keyring.set_password("assistantd", "chosen", "sk-chosen-0123456789")
    try:
        (tmp_path / "python_keyring").mkdir()
        (tmp_path / "python_keyring" / "keyringrc.cfg").write_text(
            "[backend]\ndefault-keyring=keyring.backends.null.Keyring\n"
        )
        assert _read_key("chosen", {"XDG_CONFIG_HOME": str(tmp_path)}) == (None, ["keyring"])
        found, imported = _read_key(
            "chosen", {"PYTHON_KEYRING_BACKEND": "keyring.backends.fail.Keyring"}
        )
        assert found is not None and found.startswith("unavailable: no OS keyring")
        assert "keyring" in imported
        assert _read_key("chosen") == ("sk-chosen-0123456789", [])
    finally:
        keyring.delete_password("assistantd", "chosen")


def test_refused_key_is_401(
    secret_service: None, make_daemon: Any, keyed_upstream: tuple[Upstream, str]
) -> None:
    """A key the provider refuses gives -32002 status 401 that says so, without the key."""
    up, _ = keyed_upstream
    d: Daemon = make_daemon(fake_provider_config(up, needs_key=True))
    wrong = f"sk-wrong-{pysecrets.token_hex(8)}"
    d.call("keys/set", {"provider": "fake", "key": wrong})
    with pytest.raises(RpcError) as e:
        d.call("chat/send", {"message": "hi"})
    assert e.value.code == -32002 and e.value.data["status"] == 401
    assert "refused the API key" in e.value.message
    assert wrong not in repr(e.value.data) + e.value.message
    d.call("keys/delete", {"provider": "fake"})


def test_a_keyless_provider_asked_for_a_key_gets_the_stored_one(
    secret_service: None, make_daemon: Any, keyed_upstream: tuple[Upstream, str]
) -> None:
    """A keyless provider (a local server, say) is sent no key until it asks for one: then
    the key stored for it is read from the keyring and the request sent again with it,
    and later requests carry it from the start."""
    up, key = keyed_upstream
    d: Daemon = make_daemon(fake_provider_config(up, name="keyless"))
    try:
        d.call("keys/set", {"provider": "keyless", "key": key})
        seen = len(up.requests)
        assert d.call("chat/send", {"message": "one"})["text"] == "You said: one"
        sent = [r["headers"]["authorization"] for r in up.requests[seen:]]
        assert sent == ["Bearer no-key", f"Bearer {key}"]
        assert d.call("chat/send", {"message": "two"})["text"] == "You said: two"
        assert up.requests[-1]["headers"]["authorization"] == f"Bearer {key}"
        assert len(up.requests) == seen + 3
    finally:
        d.call("keys/delete", {"provider": "keyless"})


def test_a_keyless_provider_that_asks_for_a_key_says_how_to_set_one(
    secret_service: None, make_daemon: Any, keyed_upstream: tuple[Upstream, str]
) -> None:
    """A keyless provider that refuses a request without a key, none being stored, gives
    -32002 status 401 that says which command sets one (not that a key was refused)."""
    up, _ = keyed_upstream
    d: Daemon = make_daemon(fake_provider_config(up, name="keyless"))
    with pytest.raises(RpcError) as e:
        d.call("chat/send", {"message": "hi"})
    assert e.value.code == -32002 and e.value.data["status"] == 401
    assert "keyless asks for an API key (401): run `assistantctl keys set keyless`" in (
        e.value.message
    )


def test_env_fallback(make_daemon: Any, keyed_upstream: tuple[Upstream, str]) -> None:
    """With no key in the keyring, the provider's env var is used, and keys/list says env."""
    up, key = keyed_upstream
    d: Daemon = make_daemon(fake_provider_config(up, needs_key=True), env={"FAKE_API_KEY": key})
    assert d.call("chat/send", {"message": "env"})["text"] == "You said: env"
    listed = {k["provider"]: k for k in d.call("keys/list")["keys"]}
    assert listed["fake"]["source"] == "env" and listed["fake"]["env_var"] == "FAKE_API_KEY"
    assert len(listed["fake"]["hint"]) <= 4


def test_no_keyring_is_clear(make_daemon: Any, keyed_upstream: tuple[Upstream, str]) -> None:
    """Without a usable keyring, keys/set says so clearly, and chats fall back to the env var."""
    up, key = keyed_upstream
    env = {"FAKE_API_KEY": key, "PYTHON_KEYRING_BACKEND": "keyring.backends.fail.Keyring"}
    d: Daemon = make_daemon(fake_provider_config(up, needs_key=True), env=env)
    with pytest.raises(RpcError) as e:
        d.call("keys/set", {"provider": "fake", "key": "sk-whatever-123456"})
    assert e.value.code == -32001 and e.value.data["reason"] == "keyring_unavailable"
    assert "no OS keyring is available" in e.value.message
    assert d.call("chat/send", {"message": "fallback"})["text"] == "You said: fallback"
    assert "no OS keyring" in (d.call("keys/list")["keyring_error"] or "")


def test_no_dbus_falls_back(make_daemon: Any, keyed_upstream: tuple[Upstream, str]) -> None:
    """With no D-Bus session at all, the daemon still serves and uses the env var."""
    up, key = keyed_upstream
    env = {"FAKE_API_KEY": key, "DBUS_SESSION_BUS_ADDRESS": "unix:path=/nonexistent/bus"}
    d: Daemon = make_daemon(fake_provider_config(up, needs_key=True), env=env)
    assert d.call("chat/send", {"message": "nobus"})["text"] == "You said: nobus"


def test_ctl_keys_set_reads_stdin(secret_service: None, daemon: Daemon) -> None:
    """`assistantctl keys set` reads the key from stdin, never from argv."""
    key = f"sk-ctl-{pysecrets.token_hex(12)}"
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "assistantd.cli",
            "--socket",
            str(daemon.socket),
            "keys",
            "set",
            "fake",
        ],
        input=key + "\n",
        capture_output=True,
        text=True,
        timeout=30,
        cwd=ROOT,
    )
    assert out.returncode == 0, out.stderr
    assert key not in out.stdout + out.stderr
    assert _lookup("fake") == key
    daemon.call("keys/delete", {"provider": "fake"})


@pytest.mark.parametrize(
    "key", ["sk-two words", "sk-line\nbreak", "sk-\x1b]52;c;ZXZpbA==\x07x", "sk-clé-0123456"]
)
def test_a_key_that_cannot_go_in_a_header_is_refused(
    secret_service: None, daemon: Daemon, key: str
) -> None:
    """keys/set refuses a key with a space, a newline, a control character (an escape
    sequence pasted along) or a non-ASCII one, and stores nothing."""
    with pytest.raises(RpcError) as e:
        daemon.call("keys/set", {"provider": "fake", "key": key})
    assert e.value.code == -32602 and e.value.data["reason"] == "bad_key"
    assert "printable ASCII" in e.value.message
    assert _lookup("fake") == ""


def test_a_key_read_with_a_newline_is_sent_without_it(
    secret_service: None, make_daemon: Any, keyed_upstream: tuple[Upstream, str]
) -> None:
    """A key stored by `echo KEY | secret-tool store` (a newline kept) or exported with one
    is sent without it, as keys/set would have stored it."""
    up, key = keyed_upstream
    d: Daemon = make_daemon(
        fake_provider_config(up, needs_key=True), env={"FAKE_API_KEY": f"{key}\n"}
    )
    assert d.call("chat/send", {"message": "env"})["text"] == "You said: env"
    _store_with_secret_tool("fake", f"{key}\n")
    try:
        d.call("daemon/reload")
        assert d.call("chat/send", {"message": "kr"})["text"] == "You said: kr"
        assert up.requests[-1]["headers"]["authorization"] == f"Bearer {key}"
        listed = {k["provider"]: k for k in d.call("keys/list")["keys"]}
        assert listed["fake"]["source"] == "keyring"
    finally:
        d.call("keys/delete", {"provider": "fake"})


@pytest.mark.parametrize("where", ["env", "keyring"])
def test_a_key_stored_elsewhere_that_cannot_go_in_a_header_is_named(
    secret_service: None, make_daemon: Any, upstream: Upstream, where: str
) -> None:
    """A key that keys/set would have refused, set in the env var or stored by another tool,
    fails the request with -32001 `bad_key` naming where it is and how to fix it (it failed
    as "connection failed" after three tries), without the key in the message; the daemon
    keeps serving."""
    bad = "sk-\x1b]52;c;ZXZpbA==\x07-0123456789"
    env = {"FAKE_API_KEY": bad} if where == "env" else {}
    d: Daemon = make_daemon(fake_provider_config(upstream, needs_key=True), env=env)
    if where == "keyring":
        _store_with_secret_tool("fake", bad)
    try:
        with pytest.raises(RpcError) as e:
            d.call("chat/send", {"message": "hi"})
        assert e.value.code == -32001 and e.value.data["reason"] == "bad_key"
        named = "$FAKE_API_KEY" if where == "env" else "the keyring"
        assert f"fake's key in {named} cannot go in an HTTP header" in e.value.message
        assert "assistantctl keys set fake" in e.value.message
        assert "ZXZpbA" not in e.value.message and upstream.requests == []
        assert d.call("daemon/status")["pid"] > 0
    finally:
        if where == "keyring":
            d.call("keys/delete", {"provider": "fake"})


def test_unknown_provider_key(daemon: Daemon) -> None:
    """keys/set for a provider that does not exist is -32004."""
    with pytest.raises(RpcError) as e:
        daemon.call("keys/set", {"provider": "nope", "key": "sk-123456789"})
    assert e.value.code == -32004


def test_locked_keyring(
    make_daemon: Any, keyed_upstream: tuple[Upstream, str], tmp_path: Any
) -> None:
    """With the keyring's collection locked (no prompt can unlock it), keys/set says so
    within seconds, the daemon keeps serving, and chats use the env var."""
    up, key = keyed_upstream
    kr = tmp_path / "kr"
    # First session: a login keyring created with a password, written to disk.
    create = (
        'unset GNOME_KEYRING_CONTROL; export XDG_DATA_HOME="$0"; '
        'eval "$(printf pw | gnome-keyring-daemon --unlock --components=secrets 2>/dev/null)"; '
        f'{sys.executable} -c \'import keyring; keyring.set_password("probe", "p", "x")\''
    )
    subprocess.run(
        ["dbus-run-session", "--", "bash", "-c", create, str(kr)],
        check=True,
        capture_output=True,
        timeout=60,
    )
    assert (kr / "keyrings" / "login.keyring").exists()
    # Second session: the same keyring started without its password, so it stays locked.
    locked = (
        'unset GNOME_KEYRING_CONTROL; export XDG_DATA_HOME="$KR_HOME"; '
        'eval "$(gnome-keyring-daemon --start --components=secrets 2>/dev/null)"; '
        'export XDG_DATA_HOME="$REAL_DATA"; exec "$@"'
    )
    env = {"FAKE_API_KEY": key, "KR_HOME": str(kr), "REAL_DATA": os.environ["XDG_DATA_HOME"]}
    d: Daemon = make_daemon(fake_provider_config(up, needs_key=True), env=env, wait=False)
    d.proc.kill()  # replaced by a daemon inside the locked session
    d.proc.wait()
    d.proc = subprocess.Popen(
        [
            "dbus-run-session",
            "--",
            "bash",
            "-c",
            locked,
            "bash",
            sys.executable,
            "-m",
            "assistantd",
            "--quiet",
        ],
        env=d.env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        d.wait_ready()
        t0 = time.monotonic()
        with pytest.raises(RpcError) as e:
            d.call("keys/set", {"provider": "fake", "key": "sk-locked-0123456789"})
        assert e.value.code == -32001 and e.value.data["reason"] == "keyring_unavailable"
        assert "KeyringLocked" in e.value.message
        assert time.monotonic() - t0 < 10
        assert d.call("chat/send", {"message": "locked"})["text"] == "You said: locked"
        assert "KeyringLocked" in d.call("keys/list")["keyring_error"]
    finally:
        os.killpg(d.proc.pid, signal.SIGTERM)


def _silent_bus(path: Path, held: list[Any]) -> Any:
    """A D-Bus address that authenticates clients (SASL EXTERNAL) and then never answers
    a method call: the way a wedged session bus or Secret Service looks to a client."""
    import socket as socketlib
    import threading

    srv = socketlib.socket(socketlib.AF_UNIX)
    srv.bind(str(path))
    srv.listen(64)

    def serve(conn: Any) -> None:
        buf = b""
        while True:
            try:
                data = conn.recv(4096)
            except OSError:
                return
            if not data:
                return
            buf += data
            while b"\r\n" in buf:
                line, _, buf = buf.partition(b"\r\n")
                line = line.lstrip(b"\0")
                if line.startswith(b"AUTH"):
                    conn.sendall(b"OK 0123456789abcdef0123456789abcdef\r\n")
                elif line.startswith(b"NEGOTIATE_UNIX_FD"):
                    conn.sendall(b"AGREE_UNIX_FD\r\n")
                elif line.startswith(b"BEGIN"):
                    buf = b""  # from here on: binary messages, never answered

    def accept() -> None:
        while True:
            try:
                conn = srv.accept()[0]
            except OSError:
                return
            held.append(conn)
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    return srv


def test_a_keyless_providers_answer_does_not_wait_for_a_hung_keyring(
    make_daemon: Any, upstream: Upstream
) -> None:
    """A keyless provider's first answer does not wait for the keyring (which never
    answers here): no keyring call is made for it, so none has failed by the time the
    answer is in (one made would have failed after 5 s, and said so in the status)."""
    bus = Path(tempfile.mkdtemp(prefix="ad-bus-", dir="/tmp")) / "bus"
    held: list[Any] = []
    srv = _silent_bus(bus, held)
    env = {"DBUS_SESSION_BUS_ADDRESS": f"unix:path={bus}"}
    d: Daemon = make_daemon(fake_provider_config(upstream), env=env)
    try:
        assert d.call("chat/send", {"message": "quick"})["text"] == "You said: quick"
        assert d.call("daemon/status")["keyring_error"] is None
        assert upstream.requests[-1]["headers"]["authorization"] == "Bearer no-key"
    finally:
        d.call("daemon/shutdown")
        d.proc.wait(5)
        srv.close()
        for conn in held:
            conn.close()


def test_hung_dbus_neither_blocks_requests_nor_exit(
    make_daemon: Any, keyed_upstream: tuple[Upstream, str]
) -> None:
    """A session bus that accepts and never answers: key lookups give up after 5 s with a
    clear reason, chats use the env var, and the daemon still exits at once when asked."""
    up, key = keyed_upstream
    bus = Path(tempfile.mkdtemp(prefix="ad-bus-", dir="/tmp")) / "bus"
    held: list[Any] = []
    srv = _silent_bus(bus, held)
    env = {"FAKE_API_KEY": key, "DBUS_SESSION_BUS_ADDRESS": f"unix:path={bus}"}
    d: Daemon = make_daemon(fake_provider_config(up, needs_key=True), env=env)
    try:
        t0 = time.monotonic()
        assert d.call("chat/send", {"message": "hung"})["text"] == "You said: hung"
        assert 4.5 < time.monotonic() - t0 < 10  # the keyring's 5 s timeout, then the env var
        assert "did not answer within 5 s" in (d.call("daemon/status")["keyring_error"] or "")
        t1 = time.monotonic()
        d.call("daemon/shutdown")
        assert d.proc.wait(5) == 0  # the hung keyring thread does not hold the exit
        assert time.monotonic() - t1 < 3
        # With that thread alive, the process ends without finalizing the interpreter
        # (daemon.leave): its log is flushed all the same.
        log = Path(os.environ["XDG_STATE_HOME"]) / "assistantd" / "log" / "assistantd.log"
        assert log.read_text().rstrip().endswith("assistantd stopped")
    finally:
        srv.close()
        for conn in held:
            conn.close()
