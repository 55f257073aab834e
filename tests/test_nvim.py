"""The Neovim plugin (clients/nvim) in a real ``nvim --headless`` against a real daemon.

Each test runs one Lua scenario from tests/nvim/; the scenario drives the plugin the
way a user would (commands, keys), waits with ``vim.wait`` (the event loop keeps
running) and writes what it saw as JSON, which the test asserts on.
"""

from __future__ import annotations

import http.server
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from assistantd.client import Client
from assistantd.roles import BUILTIN
from tests import editor_attach
from tests.conftest import ROOT, Daemon, fake_provider_config
from tests.upstream import Upstream

NVIM_TIMEOUT = 60


def nvim_command(script: str) -> tuple[list[str], Path]:
    """The command that runs tests/nvim/<script> in a headless Neovim with the plugin on
    its runtimepath, and the file the script writes its result to."""
    nvim = shutil.which("nvim")
    assert nvim, "nvim is not installed (apt-get install neovim)"
    out = Path(os.environ["XDG_STATE_HOME"]) / f"nvim-{script}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.unlink(missing_ok=True)
    cmd = [
        nvim,
        "--headless",
        "-u",
        "NONE",
        "-i",
        "NONE",
        "-n",
        "--cmd",
        "set rtp^=clients/nvim",
        "-c",
        f"luafile tests/nvim/{script}",
    ]
    return cmd, out


def read_result(out: Path, why: str) -> dict[str, Any]:
    assert out.exists(), f"nvim wrote no result ({why})"
    result: dict[str, Any] = json.loads(out.read_text())
    assert "error" not in result, result["error"]
    return result


def run_nvim(script: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run tests/nvim/<script> to its end and return what it wrote."""
    cmd, out = nvim_command(script)
    proc = subprocess.run(
        cmd,
        cwd=ROOT,
        env={**os.environ, "NVIM_TEST_OUT": str(out), **(env or {})},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=NVIM_TIMEOUT,
    )
    return read_result(out, f"rc {proc.returncode}: {proc.stderr!r}")


class Turns:
    """A Lua scenario that runs beside the test and takes turns with it through files in
    $NVIM_TEST_SIGNALS: the test writes go-STEP.json, the scenario answers seen-STEP.json."""

    def __init__(self, script: str, env: dict[str, str], folder: Path) -> None:
        cmd, self.out = nvim_command(script)
        self.folder = folder
        folder.mkdir()
        self.stderr = folder / "nvim-stderr.log"
        with self.stderr.open("wb") as err:
            self.proc = subprocess.Popen(
                cmd,
                cwd=ROOT,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=err,
                env={
                    **os.environ,
                    **env,
                    "NVIM_TEST_OUT": str(self.out),
                    "NVIM_TEST_SIGNALS": str(folder),
                },
            )

    def go(self, step: str, **data: Any) -> None:
        tmp = self.folder / f"go-{step}.tmp"
        tmp.write_text(json.dumps(data))
        tmp.rename(self.folder / f"go-{step}.json")  # the scenario never reads half a file

    def seen(self, step: str, timeout: float = 15) -> dict[str, Any]:
        """Wait for the scenario's answer to `step` (polled every 10 ms)."""
        path = self.folder / f"seen-{step}.json"
        deadline = time.monotonic() + timeout
        while not path.exists():
            if self.proc.poll() is not None:
                read_result(self.out, f"it exited {self.proc.returncode} before {step}")
                raise AssertionError(f"the scenario ended before {step}")
            assert time.monotonic() < deadline, f"no answer to {step} within {timeout} s"
            time.sleep(0.01)
        answer: dict[str, Any] = json.loads(path.read_text())
        return answer

    def result(self) -> dict[str, Any]:
        self.proc.wait(NVIM_TIMEOUT)
        return read_result(self.out, f"rc {self.proc.returncode}: {self.stderr.read_text()!r}")

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def daemon_env(daemon: Daemon) -> dict[str, str]:
    return {"ASSISTANTD_SOCKET": str(daemon.socket)}


def test_chat_streams_without_blocking(daemon: Daemon) -> None:
    """A slow answer streams into the chat buffer delta by delta while the editor's
    event loop keeps ticking, and the buffer ends with the whole answer."""
    r = run_nvim("chat_stream.lua", daemon_env(daemon))
    words = " ".join(f"w{i}" for i in range(1, 21))
    assert r["send_returned_ms"] < 200 and r["busy_after_send"] is True
    assert r["stream_ms"] >= 20 * 0.05 * 1000 * 0.9  # the upstream's pace: 20 x 50 ms
    assert r["ticks"] >= 50, r  # a 10 ms timer kept firing during a >= 1 s stream
    assert r["max_gap_ms"] < 250, r  # and was never held up for long
    assert r["distinct_sizes"] >= 10, r  # the buffer grew incrementally
    text = "\n".join(r["first_lines"])
    assert "## Assistant\n\n" + words + "\n\n## You\n" in text


def test_chat_continues_conversation(daemon: Daemon) -> None:
    """A second message in the same chat buffer continues the same stored conversation."""
    r = run_nvim("chat_stream.lua", daemon_env(daemon))
    assert r["first_conversation"] and r["first_conversation"] == r["second_conversation"]
    conv = daemon.call("conversations/get", {"id": r["first_conversation"]})
    assert [m["role"] for m in conv["messages"]] == ["user", "assistant"] * 2
    assert conv["messages"][2]["content"] == "[[reply:second answer]] and again"
    assert conv["messages"][3]["content"] == "second answer"
    assert r["lines"][-4:] == ["second answer", "", "## You", ""]
    assert r["cursor"][0] == len(r["lines"])  # ready to type the next message


def test_replace_selection_undoable(daemon: Daemon, upstream: Upstream) -> None:
    """:AssistantReplace swaps a charwise or linewise selection for the answer, sends the
    selection as context, and a single `u` restores the original text."""
    r = run_nvim("replace.lua", daemon_env(daemon))
    original = ["alpha", "beta gamma", "delta"]
    assert r["charwise"] == {
        "before": original,
        "after": ["alpha", "REPLACED gamma", "delta"],
        "undone": original,
    }
    assert r["linewise"] == {"before": original, "after": ["ONE TWO", "delta"], "undone": original}
    assert r["windows"] == 1  # no split: the answer went into the text
    sent = [json.dumps(q["body"]["messages"]) for q in upstream.requests]
    assert "beta" in sent[0] and "gamma" not in sent[0]  # only the selected word
    assert "alpha\\nbeta gamma" in sent[1]
    systems = [q["body"]["messages"][0] for q in upstream.requests]
    assert systems == [{"role": "system", "content": BUILTIN["code-edit"].system}] * 2


def test_edited_role_changes_what_replace_sends(make_daemon: Any, upstream: Upstream) -> None:
    """Editing `[roles.code-edit]` in config.toml while the daemon runs changes the prompt
    :AssistantReplace sends next, with no restart: the plugin carries no prompt of its own."""
    base = fake_provider_config(upstream)
    d = make_daemon(base + '\n[roles.code-edit]\nsystem = "EDIT-ONE"\n')
    run_nvim("replace.lua", daemon_env(d))
    first = {q["body"]["messages"][0]["content"] for q in upstream.requests}
    upstream.reset()
    d.config_path.write_text(base + '\n[roles.code-edit]\nsystem = "EDIT-TWO"\n')
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        roles = {r["name"]: r for r in d.call("roles/list")["roles"]}
        if roles["code-edit"]["system"] == "EDIT-TWO":
            break
        time.sleep(0.05)
    assert roles["code-edit"]["system"] == "EDIT-TWO", "the config edit was not applied"
    run_nvim("replace.lua", daemon_env(d))
    second = {q["body"]["messages"][0]["content"] for q in upstream.requests}
    assert (first, second) == ({"EDIT-ONE"}, {"EDIT-TWO"})


ROLES = """
[roles.poet]
system = "POET-PROMPT"
temperature = 0.7

[roles.code-edit]
system = "EDIT-PROMPT from the config"
"""


def test_roles_from_commands(make_daemon: Any, upstream: Upstream) -> None:
    """`@role` as the first argument of :AssistantChat, :AssistantAsk and :AssistantReplace
    sends that role (its prompt and settings reach the provider), a continued chat keeps
    it, role names complete, and :AssistantReplace otherwise uses the daemon's code-edit."""
    d = make_daemon(fake_provider_config(upstream, extra=ROLES))
    r = run_nvim("roles.lua", daemon_env(d))
    assert r["completion"] == ["@poet"] and r["completion_later_word"] == []
    assert r["chat_role"] == "poet"
    assert "first" in r["chat_lines"] and "second" in r["chat_lines"]
    bodies = [q["body"] for q in upstream.requests]
    systems = [b["messages"][0]["content"] for b in bodies]
    assert systems == ["POET-PROMPT"] * 4 + ["EDIT-PROMPT from the config"]
    assert [b.get("temperature") for b in bodies] == [0.7] * 4 + [None]
    assert (
        d.call("conversations/get", {"id": r["chat_conversation"]})["messages"][-1]["content"]
        == "second"
    )
    assert r["source"] == ["ALPHA", "BETA"]


def test_ask_selection_answers_in_split(daemon: Daemon) -> None:
    """:AssistantAsk sends the selection as context and streams the answer into a new
    chat split (the source text unchanged), where the conversation can continue."""
    r = run_nvim("ask.lua", daemon_env(daemon))
    assert r["windows"] == 2 and r["split_is_new"] and r["filetype"] == "markdown"
    assert r["source"] == ["local x = 1", "return x + 1", "-- end"]
    text = "\n".join(r["lines"])
    assert "```lua\nlocal x = 1\nreturn x + 1\n```" in text  # the question shows its code
    assert "## Assistant\n\nIt returns two.\n\n## You" in text
    conv = daemon.call("conversations/get", {"id": r["conversation"]})
    first = conv["messages"][0]
    assert first["content"] == "[[reply:It returns two.]] what does this return?"
    assert first["context"] == [{"name": "buffer:1-2", "text": "local x = 1\nreturn x + 1"}]
    assert r["followup_conversation"] == r["conversation"]
    contents = [m["content"] for m in conv["messages"]]
    assert contents[1:] == ["It returns two.", "[[reply:Yes.]] sure?", "Yes."]


def test_cancel(daemon: Daemon) -> None:
    """:AssistantCancel and the chat buffer's <C-c> end a hanging or slow answer at once
    (the buffer says cancelled; the partial answer is stored), and a cancelled
    :AssistantReplace leaves the text as it was."""
    r = run_nvim("cancel.lua", daemon_env(daemon))
    for case in (r["command"], r["key"]):
        assert case["cancel_ms"] < 1000, case
        assert case["lines"][-4:] == ["_[cancelled]_", "", "## You", ""], case
        conv = daemon.call("conversations/get", {"id": case["conversation"]})
        assert conv["messages"][-1]["status"] == "partial"
    key_answer = r["key"]["lines"][-6]
    assert key_answer.startswith("w1") and not key_answer.endswith("w50")  # cut short
    assert r["replace_lines"] == ["keep me"] and r["replace_changed"] is False


def test_conversation_picker_reopens_and_continues(daemon: Daemon) -> None:
    """:AssistantConversations offers the stored conversations newest first; the pick
    opens as a chat buffer with its messages, and a new message continues it."""
    old = daemon.call("chat/send", {"message": "[[reply:older answer]] first"})
    new = daemon.call("chat/send", {"message": "[[reply:newer answer]] second topic"})
    r = run_nvim("conversations.lua", daemon_env(daemon))
    assert [o["id"] for o in r["offered"]] == [new["conversation_id"], old["conversation_id"]]
    assert "(2 messages)" in r["offered"][0]["shown"]
    assert r["opened"] == r["after"] == new["conversation_id"]
    text = "\n".join(r["lines"])
    assert "## You\n[[reply:newer answer]] second topic\n\n## Assistant\nnewer answer" in text
    assert r["lines"][-2:] == ["## You", ""]
    conv = daemon.call("conversations/get", {"id": new["conversation_id"]})
    assert [m["content"] for m in conv["messages"]][-2:] == [
        "[[reply:continued]] go on",
        "continued",
    ]


def test_conversation_list_follows_other_clients(daemon: Daemon, tmp_path: Path) -> None:
    """:AssistantConversations! lists the stored conversations and, from pushed
    conversations/changed events alone, shows another client's rename, new conversation
    and delete within 2 s each, also after its connection was lost and made again; <CR>
    continues the conversation under the cursor."""
    sent = daemon.call("chat/send", {"message": "[[reply:one]] the first topic"})
    first = sent["conversation_id"]
    turns = Turns("conversation_list.lua", daemon_env(daemon), tmp_path / "turns")
    try:
        turns.go("open", id=first)
        opened = turns.seen("open")["lines"]
        assert opened[0] == "# Conversations: 1, newest first"
        assert opened[2].endswith(first)
        assert "   2 msgs  [[reply:one]] the first topic  " in opened[2]

        def change(step: str, method: str, params: dict[str, Any], **expect: list[str]) -> Any:
            result = daemon.call(method, params)
            t0 = time.monotonic()
            turns.go(step, **expect)
            shown = turns.seen(step)
            assert time.monotonic() - t0 < 2.0, (step, shown)
            return result

        change(
            "rename",
            "conversations/rename",
            {"id": first, "title": "Renamed elsewhere"},
            present=["Renamed elsewhere"],
            absent=["the first topic"],
        )
        new = change(
            "create",
            "chat/send",
            {"message": "[[reply:two]] a brand new topic"},
            present=["a brand new topic"],
        )["conversation_id"]
        change("delete", "conversations/delete", {"id": first}, absent=[first])
        turns.seen("reconnect")
        change(
            "rename_again",
            "conversations/rename",
            {"id": new, "title": "Heard again"},
            present=["Heard again"],
        )

        good = daemon.config_path.read_text()
        daemon.config_path.write_text(good + "\n[broken\n")
        turns.go("config_broken")
        turns.seen("config_broken")
        daemon.proc.send_signal(signal.SIGHUP)  # the same broken config read again
        turns.go("config_again")
        turns.seen("config_again")
        daemon.config_path.write_text(good)
        turns.go("config_fixed")
        r = turns.result()
    finally:
        turns.close()
    assert r["name"] == "assistant://conversations" and r["modifiable"] is False
    lines = r["create"]["lines"]
    assert lines[0] == "# Conversations: 2, newest first"
    assert lines[2].endswith(new) and lines[3].endswith(first)  # newest first
    assert "Renamed elsewhere" in lines[3]
    assert r["delete"]["lines"][2:] == [lines[2]]
    assert r["open_cursor"] == 3  # on the newest conversation
    assert r["create"]["cursor"] == 4  # still on the one it was on
    assert r["delete"]["cursor"] == 3  # that one gone: on the line that is left
    assert r["cursor_id"] == new and r["opened"]["id"] == new
    assert r["opened"]["windows"] == 2 and r["opened"]["list_shown"] == 1  # a split
    assert "## Assistant\ntwo" in "\n".join(r["opened"]["lines"])
    assert r["disconnected_header"].startswith("! not connected: connection closed")
    warnings = [n["msg"] for n in r["notes"] if n["level"] == 3]  # vim.log.levels.WARN
    assert r["broken_events"] >= 2  # the daemon said twice that it could not apply it
    assert len(warnings) == 1, r["notes"]  # and the user was told once
    assert "did not apply its changed config" in warnings[0]
    assert r["notes"][-1]["msg"] == "assistant: the daemon applied its config again"


def test_checkhealth_live_daemon(daemon: Daemon) -> None:
    """:checkhealth assistant reports OK for the socket, the daemon's version and
    protocol, the config and the default model of a live daemon, and no error."""
    lines = run_nvim("health.lua", daemon_env(daemon))["lines"]
    text = "\n".join(lines)
    oks = [ln for ln in lines if "OK" in ln]
    assert any(str(daemon.socket) in ln for ln in oks), text
    assert any("protocol 1" in ln for ln in oks), text
    assert any("config" in ln for ln in oks), text
    assert any("default model: fake-echo" in ln for ln in oks), text
    assert "ERROR" not in text


def test_checkhealth_missing_socket(tmp_path: Path) -> None:
    """With no daemon socket (a path given to setup()), :checkhealth assistant reports
    an ERROR that names the path, and starts nothing."""
    missing = tmp_path / "nothing-here.sock"
    lines = run_nvim("health.lua", {"NVIM_TEST_SOCKET": str(missing)})["lines"]
    errors = [ln for ln in lines if "ERROR" in ln]
    assert errors and str(missing) in errors[0], lines
    assert not missing.exists()


def test_checkhealth_stale_socket(tmp_path: Path) -> None:
    """A socket file nobody listens on is an ERROR (the daemon does not answer), and the
    health check does not start a daemon on it."""
    stale = tmp_path / "stale.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.bind(str(stale))
    lines = run_nvim("health.lua", {"NVIM_TEST_SOCKET": str(stale)})["lines"]
    assert any("OK" in ln and str(stale) in ln for ln in lines), lines
    errors = [ln for ln in lines if "ERROR" in ln]
    assert errors and "does not answer daemon/status" in errors[0], lines
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s, pytest.raises(OSError):
        s.connect(str(stale))  # still nobody there


def test_concurrent_chats_routed_by_id(daemon: Daemon) -> None:
    """Two chat buffers streaming at once over one connection each get only their own
    answer and their own conversation."""
    r = run_nvim("concurrent.lua", daemon_env(daemon))
    assert r["both_busy"] is True
    one, two = "\n".join(r["one"]), "\n".join(r["two"])
    assert "## Assistant\n\na1 a2 a3 a4 a5 a6 a7 a8 a9 a10\n\n## You" in one
    assert "## Assistant\n\nb1 b2 b3 b4 b5 b6 b7 b8 b9 b10\n\n## You" in two
    assert "b1" not in one and "a1" not in two
    assert len(set(r["conversations"])) == 2


def test_no_daemon_errors(tmp_path: Path) -> None:
    """With no daemon, a chat message ends with an error in the buffer: at once when
    autostart is off or the start command cannot run, and within seconds (not the
    whole start timeout) when the started daemon exits at once."""
    r = run_nvim("unavailable.lua", {"ASSISTANTD_SOCKET": str(tmp_path / "none.sock")})
    for case, words, limit in (
        ("off", "autostart is off", 2000),
        ("missing", "cannot start /nonexistent/assistantd", 2000),
        ("exits", "exited with code 1", 5000),
    ):
        errors = [ln for ln in r[case]["lines"] if ln.startswith("> **error:**")]
        assert len(errors) == 1 and words in errors[0], r[case]
        assert r[case]["ms"] < limit, r[case]
        assert r[case]["lines"][-2:] == ["## You", ""]


PAGE = b"""<!doctype html><html><head><title>Otters</title></head><body>
<nav>Home | About | Contact</nav>
<article><h1>Otters</h1><p>Sea otters hold hands while they sleep so that they do not
drift apart. They use stones as tools to open shells, and they keep a favourite stone
in a pouch of skin under the forearm.</p></article>
<footer>Copyright nobody</footer></body></html>"""


@pytest.fixture
def page_url() -> Iterator[str]:
    """A small HTML page served from a loopback http.server thread."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(PAGE)))
            self.end_headers()
            self.wfile.write(PAGE)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/otters.html"
    server.shutdown()
    server.server_close()
    thread.join()


def test_summarize_url_under_cursor(daemon: Daemon, page_url: str) -> None:
    """:AssistantSummarize finds the URL under the cursor (without the prose's
    punctuation), streams the summary into a split and lets the chat continue."""
    r = run_nvim("summarize.lua", {**daemon_env(daemon), "NVIM_TEST_URL": page_url})
    assert r["url_at_cursor"] == page_url
    assert r["windows"] == 2
    text = "\n".join(r["lines"])
    assert f"## You\nSummarize {page_url}\n\n## Assistant\n\nSummary: " in text, text
    assert r["lines"][0] == "# Otters"  # the page's title
    assert r["conversation"] and r["after"] == r["conversation"]
    conv = daemon.call("conversations/get", {"id": r["conversation"]})
    assert conv["messages"][-1]["content"] == "follow-up answer"


def test_autostart_starts_daemon(upstream: Upstream) -> None:
    """With no daemon running, the plugin starts `assistantd` on the default socket
    ($XDG_RUNTIME_DIR/assistantd/assistantd.sock) and gets its answer; after that daemon
    shuts down, the next request reconnects to a newly started one."""
    config = Path(os.environ["XDG_CONFIG_HOME"]) / "assistantd" / "config.toml"
    config.parent.mkdir(parents=True)
    config.write_text(fake_provider_config(upstream))
    sock = Path(os.environ["XDG_RUNTIME_DIR"]) / "assistantd" / "assistantd.sock"
    path = f"{Path(sys.executable).parent}:{os.environ['PATH']}"  # where `assistantd` is
    try:
        r = run_nvim("autostart.lua", {"PATH": path})
        assert r["socket"] == str(sock)
        text = "\n".join(r["lines"])
        assert "## Assistant\n\nstarted for you\n\n## You" in text
        assert "## Assistant\n\nback again\n\n## You" in text
        assert r["pids"][0] != r["pids"][1]  # a second daemon, started after the first left
    finally:
        stop_daemon(sock)


def stop_daemon(socket: Path) -> None:
    """Shut down the daemon the plugin started, and wait until it is gone."""
    if not socket.exists():
        return
    with Client(socket) as c:
        pid = c.call("daemon/status")["pid"]
        c.call("daemon/shutdown")
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    os.kill(pid, 9)


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"ASSISTANTD_SOCKET": "/tmp/x/a.sock"}, "/tmp/x/a.sock"),
        ({"XDG_RUNTIME_DIR": "/tmp/rt"}, "/tmp/rt/assistantd/assistantd.sock"),
        ({"XDG_RUNTIME_DIR": ""}, f"/run/user/{os.getuid()}/assistantd/assistantd.sock"),
    ],
)
def test_setup_after_startup(env: dict[str, str], expected: str) -> None:
    """With clients/nvim added to 'runtimepath' after startup (as lazy.nvim does),
    setup() defines every command and applies its options; the socket path follows
    the contract's rule, and setup's `socket` overrides it."""
    env = {"ASSISTANTD_SOCKET": "", **env}
    nvim = shutil.which("nvim")
    assert nvim, "nvim is not installed (apt-get install neovim)"
    out = Path(os.environ["XDG_STATE_HOME"]) / "nvim-setup.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [
            nvim,
            "--headless",
            "-u",
            "NONE",
            "-i",
            "NONE",
            "-n",
            "-c",
            "luafile tests/nvim/setup.lua",
        ],
        cwd=ROOT,
        env={**os.environ, **env, "NVIM_TEST_OUT": str(out)},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=NVIM_TIMEOUT,
        check=True,
    )
    r = json.loads(out.read_text())
    assert "error" not in r, r["error"]
    assert r["commands_before"] is False and all(r["commands"].values()), r
    assert r["from_env"] == expected
    assert r["from_setup"] == str(Path.home() / "my.sock")
    assert r["cmd"] == ["/opt/bin/assistantd"]  # a list option replaces the default
    assert r["keys"] == {"send": "<C-s>", "send_insert": "<M-CR>", "cancel": "<C-c>"}
    assert r["send_map"] and not r["cr_map"] and r["cancel_map"]


def test_help_tags(tmp_path: Path) -> None:
    """doc/assistant.txt is a valid help file: :helptags builds its tags without error,
    and every command has a tag."""
    doc = tmp_path / "doc"
    shutil.copytree(ROOT / "clients" / "nvim" / "doc", doc)
    nvim = shutil.which("nvim")
    assert nvim, "nvim is not installed (apt-get install neovim)"
    proc = subprocess.run(
        [nvim, "--headless", "-u", "NONE", "-i", "NONE", "-c", f"helptags {doc}", "-c", "qa!"],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=NVIM_TIMEOUT,
    )
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr  # E154 etc. land here
    tags = {line.split("\t")[0] for line in (doc / "tags").read_text().splitlines()}
    for name in ("Chat", "Ask", "Replace", "Summarize", "Conversations", "Cancel", "Attach"):
        assert f":Assistant{name}" in tags
    assert {":AssistantConversations!", ":AssistantAttach!", "assistant-list"} <= tags
    assert "assistant-events" in tags
    assert {"assistant-setup", "assistant-health", "assistant.txt"} <= tags


def test_lua_lint() -> None:
    """The plugin and the Lua test scenarios pass luacheck (no undefined globals, no
    unused variables, lines within 120 columns)."""
    luacheck = shutil.which("luacheck")
    assert luacheck, "luacheck is not installed (apt-get install lua-check)"
    proc = subprocess.run(
        [
            luacheck,
            "--no-color",
            "--config",
            "clients/nvim/.luacheckrc",
            "clients/nvim",
            "tests/nvim",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=NVIM_TIMEOUT,
    )
    assert proc.returncode == 0, proc.stdout


def test_attach_files_and_unsaved_buffers(
    daemon: Daemon, upstream: Upstream, tmp_path: Path
) -> None:
    """:AssistantAttach queues the current file or a given one for the next chat message
    (shown as "📎 name" lines): a text file reaches the provider as text and a PNG as an
    image_url part; an unnamed or modified buffer goes as its text; in a chat buffer a
    path is asked for (with file completion); ! drops the queue; one attached while an
    answer streams shows under the next "## You" and goes next; a file queued before
    :AssistantAsk goes with the question; a reopened conversation shows its attachments."""
    image = editor_attach.files(tmp_path)
    r = run_nvim("attach.lua", {**daemon_env(daemon), "ATTACH_DIR": str(tmp_path)})
    assert r["input"] == {"prompt": "Attach: ", "completion": "file"}
    editor_attach.check(
        r,
        daemon,
        upstream,
        tmp_path,
        image,
        unsaved_name="buffer",
        cleared=("before_drop", "after_drop"),
        asked='[[reply:asked]] what is in it?\n\n<context name="notes.txt">\nremember FACT-7\n\n'
        "</context>",
    )
