"""assistantctl on a real pseudo-terminal, and against a socket someone else serves:
control characters from the daemon never reach a terminal raw (``--raw`` and ``--json``
keep the exact text), and nothing is sent to a socket served by another uid."""

from __future__ import annotations

import json
import os
import pty
import re
import select
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from assistantd.client import Client
from tests.conftest import ROOT, Daemon
from tests.test_cli import ctl

CLI = (sys.executable, "-m", "assistantd.cli")
# The clipboard (OSC 52), the window title (OSC 0), hidden text (CSI 8 m), an 8-bit CSI
# (C1, U+009B) and a carriage return that would overwrite the line.
HOSTILE = "\x1b]52;c;c2VjcmV0\x07copied \x1b]0;pwned\x07titled \x1b[8mhidden\x1b[0m \x9b2J\rend"


def on_pty(d: Daemon, *args: str, timeout: float = 30) -> tuple[int, bytes]:
    """Run assistantctl with stdin, stdout and stderr on a new pseudo-terminal; its exit
    status and every byte it wrote there."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [*CLI, "--socket", str(d.socket), *args],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        cwd=ROOT,
        start_new_session=True,
    )
    os.close(slave)
    out = b""
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.5)
            if not ready:
                if proc.poll() is not None:
                    break
                continue
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: every writer of the terminal is gone
                break
            if not chunk:
                break
            out += chunk
        return proc.wait(timeout=10), out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)


def assert_inert(out: bytes) -> None:
    """No byte a terminal would obey: no C0 but newline, tab and the terminal's own CR of
    CRLF, no DEL, no C1 (in UTF-8, 0xC2 0x80..0x9F)."""
    text = out.decode()
    bad = [
        c
        for c in text.replace("\r\n", "\n")
        if c not in "\n\t" and (ord(c) < 0x20 or 0x7F <= ord(c) < 0xA0)
    ]
    assert bad == [], (bad, out)


def test_answer_title_and_stored_message_are_inert_on_a_terminal(daemon: Daemon) -> None:
    """On a terminal, an answer, a conversation's title and its stored messages are shown
    with their control characters replaced; the visible text stays."""
    code, out = on_pty(daemon, "chat", f"[[reply:{HOSTILE}]] {HOSTILE}")
    assert code == 0, out
    assert_inert(out)
    assert b"copied" in out and b"hidden" in out and b"end" in out
    cid = daemon.call("conversations/list")["conversations"][0]["id"]
    for args in (("conversations", "list"), ("conversations", "show", cid)):
        code, out = on_pty(daemon, *args)
        assert code == 0, out
        assert_inert(out)
        assert b"hidden" in out


def test_raw_and_json_keep_the_exact_text(daemon: Daemon) -> None:
    """--raw prints the answer's exact characters on a terminal; --json prints exact JSON."""
    code, out = on_pty(daemon, "chat", "--raw", f"[[reply:{HOSTILE}]]")
    assert code == 0, out
    assert HOSTILE.encode() in out
    code, out = on_pty(daemon, "chat", "--json", f"[[reply:{HOSTILE}]]")
    assert code == 0, out
    assert_inert(out)  # \u escapes in the JSON, which still decodes to the exact text
    assert json.loads(out.decode().replace("\r\n", "\n"))["text"] == HOSTILE


def test_a_pipe_gets_the_exact_text(daemon: Daemon) -> None:
    """Written to a pipe (not a terminal), the answer is exact."""
    out = subprocess.run(
        [*CLI, "--socket", str(daemon.socket), "chat", f"[[reply:{HOSTILE}]]"],
        input=b"",
        capture_output=True,
        cwd=ROOT,
        timeout=30,
    )
    assert out.returncode == 0 and out.stdout == HOSTILE.encode() + b"\n"


@pytest.fixture
def foreign_socket() -> Iterator[tuple[Path, Path]]:
    """A socket served by uid ``nobody``, which records every byte a client sends it."""
    assert shutil.which("setpriv"), "setpriv is needed (util-linux)"
    folder = Path(tempfile.mkdtemp(prefix="ad-foreign-", dir="/tmp"))
    shutil.chown(folder, "nobody", "nogroup")
    sock, got = folder / "s.sock", folder / "got"
    listener = (
        "import os, socket, sys\n"
        "s = socket.socket(socket.AF_UNIX)\n"
        "s.bind(sys.argv[1]); os.chmod(sys.argv[1], 0o666); s.listen()\n"
        "c, _ = s.accept(); c.settimeout(20); data = b''\n"
        "while chunk := c.recv(65536):\n    data += chunk\n"
        "open(sys.argv[2], 'wb').write(data)\n"
    )
    proc = subprocess.Popen(
        [
            *("setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"),
            *("/usr/bin/python3", "-I", "-c", listener, str(sock), str(got)),
        ]
    )
    try:
        deadline = time.monotonic() + 10
        while not sock.exists():
            assert proc.poll() is None and time.monotonic() < deadline, "listener did not start"
            time.sleep(0.02)
        yield sock, got
    finally:
        proc.kill()
        proc.wait()
        shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.parametrize(
    ("args", "stdin"),
    [(("keys", "set", "openai"), "sk-test-SECRET-1234\n"), (("chat", "my private question"), "")],
)
def test_socket_of_another_user_is_refused(
    foreign_socket: tuple[Path, Path], args: tuple[str, ...], stdin: str
) -> None:
    """A socket served by another uid gets not a byte (no key, no question): one clear
    line and exit status 3."""
    sock, got = foreign_socket
    out = ctl(None, "--socket", str(sock), *args, input=stdin)
    assert out.returncode == 3, out
    assert out.stderr.count("\n") == 1 and "served by uid" in out.stderr, out.stderr
    deadline = time.monotonic() + 10
    while not got.exists():
        assert time.monotonic() < deadline, "the client never closed the connection"
        time.sleep(0.02)
    assert got.read_bytes() == b""


def test_a_partial_list_says_how_many_there_are_and_pages_on(daemon: Daemon) -> None:
    """On a terminal, a list cut at --limit says how many there are in all and the cursor
    for the next page, and --before CURSOR lists that page."""
    for word in ("first", "second", "third"):
        daemon.call("chat/send", {"message": word, "stream": False})
    code, out = on_pty(daemon, "conversations", "list", "--limit", "2")
    assert code == 0 and b"(2 shown, 3 in all; the next page: --before " in out, out
    found = re.search(rb"--before (\S+)\)", out)
    assert found is not None
    code, out = on_pty(daemon, "conversations", "list", "--before", found[1].decode())
    assert code == 0, out
    oldest = daemon.call("conversations/list")["conversations"][-1]
    assert oldest["id"].encode() in out
    assert len([line for line in out.splitlines()[1:] if line.strip()]) == 1, out
    code, out = on_pty(daemon, "conversations", "search", "second")
    assert code == 0 and b" in all" not in out, out


def test_a_search_past_the_count_bound_shows_a_lower_bound(daemon: Daemon) -> None:
    """A search matching more conversations than the daemon counts shows its total as
    a lower bound ("1000+") on a terminal."""
    cid = daemon.call("chat/send", {"message": "zebra", "stream": False})["conversation_id"]
    with Client(daemon.socket, timeout=60) as c:
        for _ in range(1000):
            c.call("conversations/fork", {"id": cid})
    listed = daemon.call("conversations/list", {"query": "zebra", "limit": 5})
    assert listed["total_exact"] is False
    code, out = on_pty(daemon, "conversations", "search", "zebra", "--limit", "5")
    assert code == 0, out
    assert f"(5 shown, {listed['total']}+ in all; --limit N for more)".encode() in out, out
