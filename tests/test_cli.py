"""assistantctl end to end: streaming to the terminal, stdin, --json, continuing, logprobs,
conversations, daemon control and autostart, a REPL in a real terminal (tmux)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT, Daemon
from tests.upstream import Upstream

HEAVY = {
    "pydantic",
    "openai",
    "keyring",
    "platformdirs",
    "httpx",
    "httpx2",
    "watchfiles",
    "trafilatura",
    "anyio",
    "sqlite3",
    "asyncio",
}


def ctl(
    d: Daemon | None,
    *args: str,
    input: str | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 30,
) -> subprocess.CompletedProcess[str]:
    sock = ["--socket", str(d.socket)] if d else []
    return subprocess.run(
        [sys.executable, "-m", "assistantd.cli", *sock, *args],
        input=input,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        env={**os.environ, **(env or {})},
    )


def test_chat_streams_to_stdout(daemon: Daemon) -> None:
    """`assistantctl chat MESSAGE` prints the answer and exits 0."""
    out = ctl(daemon, "chat", "hello", "there", input="")
    assert out.returncode == 0, out.stderr
    assert out.stdout == "You said: hello there\n"


def test_piped_stdin_is_context(daemon: Daemon, upstream: Upstream) -> None:
    """Piped stdin with a message is attached as context, as in `git diff | assistantctl chat`."""
    out = ctl(daemon, "chat", "review this", input="diff --git a/x b/x\n+new line\n")
    assert out.returncode == 0, out.stderr
    sent = upstream.requests[0]["body"]["messages"][-1]["content"]
    assert sent.startswith("review this") and "+new line" in sent and 'name="stdin"' in sent


def test_stdin_alone_is_the_message(daemon: Daemon) -> None:
    """With no message argument, piped stdin is the message."""
    out = ctl(daemon, "chat", input="from stdin\n")
    assert out.stdout == "You said: from stdin\n"


@pytest.mark.parametrize("locale", ["C.UTF-8", "C"])
def test_bytes_that_are_not_utf8_become_replacement_characters(
    daemon: Daemon, upstream: Upstream, locale: str
) -> None:
    """A byte that is not UTF-8, in the words or on stdin, reaches the model as U+FFFD
    (the wire is UTF-8 JSON) instead of a traceback, in a UTF-8 locale and in C's."""
    line = [sys.executable, "-m", "assistantd.cli", "--socket", str(daemon.socket), "chat"]
    env = {**os.environ, "LC_ALL": locale}
    for words, piped in ([b"bad \xff byte"], b""), ([], b"piped \xfe byte\n"):
        out = subprocess.run(
            [*line, *words], input=piped, capture_output=True, timeout=30, cwd=ROOT, env=env
        )
        assert out.returncode == 0, out.stderr.decode(errors="replace")
        said = "bad \ufffd byte" if words else "piped \ufffd byte"
        assert upstream.requests[-1]["body"]["messages"][-1]["content"] == said
        assert out.stdout.decode("utf-8") == f"You said: {said}\n"


def test_json_continue_and_logprobs(daemon: Daemon) -> None:
    """--json prints the result; -c and --continue continue; --logprobs prints the token table."""
    first = json.loads(ctl(daemon, "chat", "--json", "start", input="").stdout)
    cid = first["conversation_id"]
    again = json.loads(ctl(daemon, "chat", "--json", "-c", cid, "[[echo_count]]", input="").stdout)
    assert again["conversation_id"] == cid and again["text"] == "messages=3"
    latest = json.loads(
        ctl(daemon, "chat", "--json", "--continue", "[[echo_count]]", input="").stdout
    )
    assert latest["conversation_id"] == cid and latest["text"] == "messages=5"
    table = ctl(daemon, "chat", "--logprobs", "2", "tokens", input="").stdout
    lines = table.splitlines()
    assert lines[0] == "You said: tokens" and lines[1] == "'You'"
    assert lines[2].split()[1] == "'You'" and 0 < float(lines[2].split()[0]) <= 1


def test_a_question_given_to_c_is_not_taken_for_an_id(daemon: Daemon) -> None:
    """`chat -c "follow up"` (llm's -c continues the latest) says -c takes an ID and how to
    continue the latest, instead of "no message given"; nothing is sent."""
    before = daemon.call("conversations/list")["total"]
    out = ctl(daemon, "chat", "-c", "follow up", input="")
    assert out.returncode == 2
    assert "-c takes a conversation ID" in out.stderr
    assert "assistantctl chat --continue 'follow up'" in out.stderr
    assert daemon.call("conversations/list")["total"] == before


def test_conversation_commands(daemon: Daemon) -> None:
    """conversations list, search, show, rename, fork, export and rm work from the CLI."""
    cid = json.loads(ctl(daemon, "chat", "--json", "zebra facts", input="").stdout)[
        "conversation_id"
    ]
    assert cid in ctl(daemon, "conversations", "list").stdout
    assert cid in ctl(daemon, "conversations", "search", "zebra").stdout
    assert cid not in ctl(daemon, "conversations", "search", "giraffe").stdout
    assert (
        "## Assistant\n\nYou said: zebra facts" in ctl(daemon, "conversations", "show", cid).stdout
    )
    assert "Stripes" in ctl(daemon, "conversations", "rename", cid, "Stripes").stdout
    fork = ctl(daemon, "conversations", "fork", cid).stdout.strip()
    assert fork and fork != cid
    exported = json.loads(ctl(daemon, "conversations", "export", cid, "--format", "json").stdout)
    assert exported["title"] == "Stripes"
    assert ctl(daemon, "conversations", "rm", cid).returncode == 0
    missing = ctl(daemon, "conversations", "show", cid)
    assert missing.returncode == 1 and "(-32004)" in missing.stderr


def test_errors_are_one_line(daemon: Daemon) -> None:
    """An error is one line on stderr with the code, and exit status 1."""
    out = ctl(daemon, "chat", "-p", "nope", "hi", input="")
    assert out.returncode == 1 and out.stderr.count("\n") == 1 and "(-32004)" in out.stderr


def test_no_autostart(tmp_path: Path) -> None:
    """With no daemon and --no-autostart, a clear one-line error and exit 3."""
    out = ctl(None, "--no-autostart", "daemon", "status")
    assert out.returncode == 3
    assert "not running" in out.stderr and "autostart is disabled" in out.stderr


def test_no_autostart_from_env(tmp_path: Path) -> None:
    """ASSISTANTD_NO_AUTOSTART=1 forbids starting the daemon, as it does for the shell client."""
    out = ctl(None, "daemon", "status", env={"ASSISTANTD_NO_AUTOSTART": "1"})
    assert out.returncode == 3 and "autostart is disabled" in out.stderr
    assert not (Path(os.environ["XDG_RUNTIME_DIR"]) / "assistantd" / "assistantd.sock").exists()


def test_autostart_and_stop(upstream: Upstream) -> None:
    """With no daemon running, assistantctl starts one; daemon stop stops it."""
    out = ctl(None, "--json", "daemon", "status")
    assert out.returncode == 0, out.stderr
    pid = json.loads(out.stdout)["pid"]
    assert ctl(None, "daemon", "stop").returncode == 0
    deadline = time.monotonic() + 10
    while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text()


def test_client_imports_only_stdlib(daemon: Daemon) -> None:
    """assistantctl reaches the socket without importing any third-party package."""
    probe = (
        "import sys, runpy\n"
        f"sys.argv = ['assistantctl', '--socket', {str(daemon.socket)!r}, '--json', 'daemon', 'status']\n"
        "try:\n    runpy.run_module('assistantd.cli', run_name='__main__')\n"
        "except SystemExit:\n    pass\n"
        "print(sorted({m.split('.')[0] for m in sys.modules}))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT, timeout=30
    )
    loaded = set(json.loads(out.stdout.strip().splitlines()[-1].replace("'", '"')))
    assert loaded & HEAVY == set()
    assert '"pid"' in out.stdout


LEAN_PATH_AVOIDS = {"subprocess", "pathlib", "dataclasses", "inspect", "typing", "shutil"}
# A plain chat line (no option) is read without argparse and sent with the C halves of
# json and socket: their Python wrappers would import re, enum and selectors.
PLAIN_CHAT_AVOIDS = {"argparse", "json", "socket", "re", "enum", "selectors"}


@pytest.mark.parametrize(
    ("argv", "avoids"),
    [
        (["chat", "lean"], LEAN_PATH_AVOIDS | PLAIN_CHAT_AVOIDS),
        (["chat", "-v", "lean"], LEAN_PATH_AVOIDS),
    ],
    ids=["plain", "with-option"],
)
def test_chat_reaches_the_socket_on_a_lean_import_path(
    daemon: Daemon, argv: list[str], avoids: set[str]
) -> None:
    """`assistantctl chat` with a daemon running imports none of subprocess, pathlib,
    dataclasses, inspect, typing or shutil (run without ``site``, whose editable-install
    finder imports pathlib by itself); a plain chat line not argparse, json, socket, re,
    enum or selectors either. The answer is the same either way."""
    probe = (
        "import sys, runpy\n"
        f"sys.argv = ['assistantctl', *{argv!r}]\n"
        "try:\n    runpy.run_module('assistantd.cli', run_name='__main__')\n"
        "except SystemExit:\n    pass\n"
        "print(sorted(sys.modules))\n"
    )
    out = subprocess.run(
        [sys.executable, "-S", "-c", probe],
        capture_output=True, text=True, cwd=ROOT, timeout=30, stdin=subprocess.DEVNULL,
        env={**os.environ, "ASSISTANTD_SOCKET": str(daemon.socket)},
    )  # fmt: skip
    assert out.stdout.startswith("You said: lean\n"), out.stderr
    loaded = set(json.loads(out.stdout.strip().splitlines()[-1].replace("'", '"')))
    assert loaded & avoids == set()


def _pane(session: str) -> str:
    return subprocess.run(
        ["tmux", "capture-pane", "-p", "-t", session], capture_output=True, text=True, check=True
    ).stdout


def _wait_for(session: str, text: str, timeout: float = 15) -> str:
    deadline = time.monotonic() + timeout
    while True:
        pane = _pane(session)
        if text in pane:
            return pane
        assert time.monotonic() < deadline, pane
        time.sleep(0.05)


def test_repl_ctrl_c_cancels_the_answer_not_the_session(daemon: Daemon, tmp_path: Path) -> None:
    """In the REPL, Ctrl-C cancels the answer in flight and the session goes on."""
    assert shutil.which("tmux"), "tmux is needed (apt-get install tmux)"
    session = f"ad{os.getpid()}"
    cmd = f"{sys.executable} -m assistantd.cli --socket {daemon.socket} chat"
    env_args: list[str] = []
    for var in ("XDG_RUNTIME_DIR", "XDG_DATA_HOME", "XDG_CONFIG_HOME", "XDG_STATE_HOME"):
        env_args += ["-e", f"{var}={os.environ[var]}"]
    subprocess.run(
        [
            "tmux",
            "new-session",
            "-d",
            "-s",
            session,
            "-x",
            "200",
            "-y",
            "50",
            *env_args,
            "-c",
            str(ROOT),
            cmd,
        ],
        check=True,
    )
    try:
        _wait_for(session, "Ctrl-C cancels an answer")
        subprocess.run(["tmux", "send-keys", "-t", session, "first question", "Enter"], check=True)
        _wait_for(session, "You said: first question")
        subprocess.run(
            ["tmux", "send-keys", "-t", session, "[[words:500]] [[slow:0.05]]", "Enter"], check=True
        )
        _wait_for(session, "w3")
        subprocess.run(["tmux", "send-keys", "-t", session, "C-c"], check=True)
        _wait_for(session, "[cancelled]")
        subprocess.run(["tmux", "send-keys", "-t", session, "[[echo_count]]", "Enter"], check=True)
        pane = _wait_for(session, "messages=5")
        assert "Traceback" not in pane
        subprocess.run(["tmux", "send-keys", "-t", session, "/quit", "Enter"], check=True)
        conv = daemon.call("conversations/list")["conversations"]
        assert len(conv) == 1 and conv[0]["message_count"] == 6
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True)


def test_autostarted_daemon_does_not_run_in_the_callers_folder(tmp_path: Path) -> None:
    """The autostarted daemon runs in /, not where the user stood: it imports nothing from
    that folder and keeps no directory busy."""
    out = subprocess.run(
        [sys.executable, "-m", "assistantd.cli", "--json", "daemon", "status"],
        capture_output=True, text=True, timeout=30, cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    pid = json.loads(out.stdout)["pid"]
    try:
        assert Path(f"/proc/{pid}/cwd").resolve() == Path("/")
    finally:
        ctl(None, "daemon", "stop")


def test_search_takes_all_the_words(daemon: Daemon) -> None:
    """`conversations search zebra stripes` finds conversations with both words, not every
    one with "zebra"; `rename ID` takes a title of many words."""
    both = json.loads(ctl(daemon, "chat", "--json", "zebra stripes", input="").stdout)
    one = json.loads(ctl(daemon, "chat", "--json", "zebra only", input="").stdout)
    found = ctl(daemon, "conversations", "search", "zebra", "stripes")
    assert found.returncode == 0, found.stderr
    assert both["conversation_id"] in found.stdout
    assert one["conversation_id"] not in found.stdout
    renamed = ctl(daemon, "conversations", "rename", one["conversation_id"], "Plains", "animals")
    assert renamed.returncode == 0, renamed.stderr
    got = daemon.call("conversations/get", {"id": one["conversation_id"]})
    assert got["title"] == "Plains animals"
    extra = ctl(daemon, "conversations", "show", one["conversation_id"], "stray")
    assert extra.returncode == 2 and "takes one ID" in extra.stderr


def test_show_and_export_honour_json(daemon: Daemon) -> None:
    """`conversations show --json` prints the conversation as JSON and `export --json` the
    export result (format and content)."""
    cid = json.loads(ctl(daemon, "chat", "--json", "json please", input="").stdout)[
        "conversation_id"
    ]
    shown = json.loads(ctl(daemon, "conversations", "show", cid, "--json").stdout)
    assert shown["id"] == cid and shown["messages"][-1]["content"] == "You said: json please"
    exported = json.loads(ctl(daemon, "conversations", "export", cid, "--json").stdout)
    assert exported["format"] == "markdown" and "You said: json please" in exported["content"]


def test_daemon_start_stop_restart_honour_json(upstream: Upstream) -> None:
    """`daemon start|restart|stop --json` print what they did as JSON on stdout."""
    started = ctl(None, "daemon", "start", "--json")
    assert started.returncode == 0, started.stderr
    first = json.loads(started.stdout)
    assert first["action"] == "start" and first["started"] is True and first["pid"] > 0
    try:
        again = json.loads(ctl(None, "daemon", "start", "--json").stdout)
        assert again["started"] is False and again["pid"] == first["pid"]
        restarted = json.loads(ctl(None, "daemon", "restart", "--json").stdout)
        assert restarted["stopped"] is True and restarted["started"] is True
        assert restarted["pid"] != first["pid"]
    finally:
        stopped = json.loads(ctl(None, "daemon", "stop", "--json").stdout)
    assert stopped == {"action": "stop", "socket": first["socket"], "stopped": True}
    gone = json.loads(ctl(None, "daemon", "stop", "--json").stdout)
    assert gone["stopped"] is False
