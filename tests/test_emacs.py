"""The Emacs package (clients/emacs) in a real ``emacs --batch`` against a real daemon.

Each test runs one Elisp scenario from tests/emacs/ with the package on the load-path;
the scenario drives the package as a user would (its commands and keys), keeps Emacs's
event loop running while it waits (process output, timers), and writes what it saw as
JSON, which the test asserts on. The daemon's provider is the loopback upstream
(tests/upstream.py), its pages come from tests/pages.py.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from assistantd.client import Client
from tests import editor_attach
from tests.conftest import ROOT, Daemon, fake_provider_config
from tests.pages import Pages
from tests.upstream import Upstream

EMACS_TIMEOUT = 90
PACKAGE = ROOT / "clients" / "emacs"
COMMANDS = (
    "assistant-chat",
    "assistant-ask-region",
    "assistant-replace-region",
    "assistant-summarize-url",
    "assistant-conversations",
    "assistant-cancel",
    "assistant-attach-file",
    "assistant-attach-buffer",
    "assistant-attach-clear",
)


def emacs() -> str:
    path = shutil.which("emacs")
    assert path, "emacs is not installed (apt-get install emacs-nox)"
    return path


def run_emacs(scenario: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run tests/emacs/<scenario> in ``emacs --batch -Q`` and return what it wrote."""
    out = Path(os.environ["XDG_STATE_HOME"]) / f"emacs-{scenario}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.unlink(missing_ok=True)
    proc = subprocess.run(
        [
            emacs(),
            "--batch",
            "-Q",
            "-L",
            str(PACKAGE),
            "-l",
            "tests/emacs/helpers.el",
            "-l",
            f"tests/emacs/{scenario}",
        ],
        cwd=ROOT,
        env={**os.environ, "EMACS_TEST_OUT": str(out), **(env or {})},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=EMACS_TIMEOUT,
    )
    assert out.exists(), f"emacs wrote no result (rc {proc.returncode}): {proc.stderr!r}"
    result: dict[str, Any] = json.loads(out.read_text())
    assert "error" not in result, result["error"]
    return result


def daemon_env(daemon: Daemon) -> dict[str, str]:
    return {"ASSISTANTD_SOCKET": str(daemon.socket)}


def test_chat_streams_without_blocking(daemon: Daemon) -> None:
    """A 300-token answer streams into the chat buffer delta by delta while a 10 ms timer
    keeps firing; the send returns at once and the buffer ends with the whole answer."""
    r = run_emacs("chat-stream.el", daemon_env(daemon))
    words = " ".join(f"w{i}" for i in range(1, 301))
    print(f"largest timer gap while streaming: {r['max_gap_ms']:.1f} ms ({r['ticks']} ticks)")
    assert r["send_returned_ms"] < 500 and r["busy_after_send"] is True  # at once, vs a 3 s stream
    assert r["stream_ms"] >= 300 * 0.01 * 1000 * 0.9  # the upstream's pace: 300 x 10 ms
    assert r["ticks"] >= 100, r["ticks"]  # the timer kept firing through a >= 3 s stream
    assert r["max_gap_ms"] < 500, r["max_gap_ms"]  # and was never held up for long
    assert r["distinct_sizes"] >= 50, r["distinct_sizes"]  # the buffer grew incrementally
    text = "\n".join(r["first_lines"])
    assert "## Assistant\n\n" + words + "\n\n## You\n" in text
    assert r["major_mode"] in ("markdown-mode", "text-mode")


def test_chat_continues_and_lists(daemon: Daemon) -> None:
    """A second message in the same chat buffer continues the same stored conversation,
    which `assistantctl conversations list` then shows."""
    r = run_emacs("chat-stream.el", daemon_env(daemon))
    cid = r["first_conversation"]
    assert cid and cid == r["second_conversation"]
    conv = daemon.call("conversations/get", {"id": cid})
    assert [m["role"] for m in conv["messages"]] == ["user", "assistant"] * 2
    assert conv["messages"][2]["content"] == "[[reply:second answer]] and again"
    assert conv["messages"][3]["content"] == "second answer"
    assert r["lines"][-4:] == ["second answer", "", "## You", ""]
    assert r["point_at_end"] is True  # ready for the next message
    ctl = [sys.executable, "-m", "assistantd.cli", "--socket", str(daemon.socket)]
    run: dict[str, Any] = {"capture_output": True, "text": True, "timeout": 30, "cwd": ROOT}
    listed = subprocess.run([*ctl, "--json", "conversations", "list"], check=True, **run)
    assert cid in [c["id"] for c in json.loads(listed.stdout)["conversations"]]
    plain = subprocess.run([*ctl, "conversations", "list"], check=True, **run)
    assert cid in plain.stdout  # and as a person reads it


def test_replace_region_one_undo_step(daemon: Daemon, upstream: Upstream) -> None:
    """assistant-replace-region swaps the region for the answer while text typed
    meanwhile stays, one `undo` takes back only the replacement, a fenced answer loses
    its fence, and a refused or cancelled request leaves the text untouched."""
    r = run_emacs("replace.el", daemon_env(daemon))
    assert r["before"] == "typed alpha\nbeta gamma\ndelta\n"
    assert r["after"] == "typed alpha\nREPLACED gamma\ndelta\n"
    assert r["undone"] == r["before"]  # the typing is kept, the word is back
    assert r["lines_after"] == "ONE TWO\nthree\n"
    assert r["lines_undone"] == "one\ntwo\nthree\n"
    assert r["kept"] == "keep me\n" and r["changed"] is False
    assert "Simulated error 400" in r["failed_echo"] and "unchanged" in r["failed_echo"]
    assert r["cancelled_echo"] == "assistant: cancelled; the text is unchanged"
    sent = [json.dumps(q["body"]["messages"]) for q in upstream.requests]
    assert "beta" in sent[0] and "gamma" not in sent[0]  # only the region went along
    assert "one\\ntwo\\n" in sent[1] and "three" not in sent[1]


def test_ask_region_answers_in_chat(daemon: Daemon) -> None:
    """assistant-ask-region sends the region as context and streams the answer into a
    chat buffer in another window (the source unchanged), where the conversation
    continues."""
    r = run_emacs("ask.el", daemon_env(daemon))
    assert r["windows"] == 2 and r["split_shows_chat"] is True
    assert r["source"] == "(setq x 1)\n(+ x 1)\n;; end\n"
    text = "\n".join(r["lines"])
    assert "```emacs-lisp\n(setq x 1)\n(+ x 1)\n```" in text  # the question shows its code
    assert "## Assistant\n\nIt returns two.\n\n## You" in text
    conv = daemon.call("conversations/get", {"id": r["conversation"]})
    first = conv["messages"][0]
    assert first["content"] == "[[reply:It returns two.]] what does this return?"
    assert first["context"] == [{"name": "calc.el:1-2", "text": "(setq x 1)\n(+ x 1)\n"}]
    assert r["followup_conversation"] == r["conversation"]
    contents = [m["content"] for m in conv["messages"]]
    assert contents[1:] == ["It returns two.", "[[reply:Yes.]] sure?", "Yes."]


def test_cancel_keeps_partial(daemon: Daemon) -> None:
    """C-c C-k in a chat buffer (and M-x assistant-cancel) ends a slow or hanging answer
    at once; the part already streamed stays in the buffer, marked cancelled, and is
    stored as a partial message."""
    r = run_emacs("cancel.el", daemon_env(daemon))
    assert r["binding"] == "assistant-cancel"
    for case in (r["key"], r["command"]):
        assert case["cancel_ms"] < 2000, case
        assert case["lines"][-4:] == ["_[cancelled]_", "", "## You", ""], case
        conv = daemon.call("conversations/get", {"id": case["conversation"]})
        assert conv["messages"][-1]["status"] == "partial"
    partial = r["key"]["lines"][7]
    assert partial.startswith("w1") and not partial.endswith("w50")  # cut short, kept
    conv = daemon.call("conversations/get", {"id": r["key"]["conversation"]})
    assert conv["messages"][-1]["content"] == partial


@pytest.fixture(scope="module")
def pages() -> Iterator[Pages]:
    with Pages() as server:
        yield server


def test_summarize_url_at_point(daemon: Daemon, pages: Pages) -> None:
    """assistant-summarize-url takes the URL at point (without the prose's full stop),
    shows the fetch/extract/map/reduce stages in the echo area, streams the summary into
    a chat buffer in another window titled after the page, and stores it as a
    conversation that a follow-up continues."""
    url = pages.url("/doc/library/bisect.html")
    r = run_emacs(
        "summarize.el",
        {**daemon_env(daemon), "EMACS_TEST_URL": url, "EMACS_TEST_MODEL": "fake-small"},
    )
    assert r["url_at_point"] == url
    assert r["windows"] == 2 and r["shown"] is True
    progress = [re.fullmatch(r"assistant: (\w+) (\d+)/(\d+)", m) for m in r["echoed"]]
    stages = [m[1] for m in progress if m]
    seen = [s for i, s in enumerate(stages) if i == 0 or stages[i - 1] != s]
    assert seen == ["fetch", "extract", "map", "reduce"], r["echoed"]
    assert r["lines"][0] == "# bisect — Array bisection algorithm"
    text = "\n".join(r["lines"])
    assert f"## You\nSummarize {url}\n\n## Assistant\n\nSummary: " in text
    assert r["conversation"] and r["after"] == r["conversation"]
    conv = daemon.call("conversations/get", {"id": r["conversation"]})
    assert conv["source"]["url"] == url
    assert conv["messages"][-1]["content"] == "follow-up answer"
    assert r["final_lines"][-4:] == ["follow-up answer", "", "## You", ""]


def test_conversation_picker_reopens_and_continues(daemon: Daemon) -> None:
    """assistant-conversations offers the stored conversations newest first through
    completing-read; the pick opens as a chat buffer with its messages, and a new
    message continues it."""
    old = daemon.call("chat/send", {"message": "[[reply:older answer]] first"})
    new = daemon.call("chat/send", {"message": "[[reply:newer answer]] second topic"})
    r = run_emacs("conversations.el", daemon_env(daemon))
    assert r["prompt"] == "Conversation: "
    assert [o.split()[-1] for o in r["offered"]] == [
        new["conversation_id"],
        old["conversation_id"],
    ]
    assert "(2 messages)" in r["offered"][0] and "second topic" in r["offered"][0]
    assert r["opened"] == r["after"] == new["conversation_id"]
    text = "\n".join(r["lines"])
    assert "## You\n[[reply:newer answer]] second topic\n\n## Assistant\nnewer answer" in text
    assert r["lines"][-2:] == ["## You", ""]
    conv = daemon.call("conversations/get", {"id": new["conversation_id"]})
    assert [m["content"] for m in conv["messages"]][-2:] == [
        "[[reply:continued]] go on",
        "continued",
    ]


ROLES = """
[roles.pirate]
description = "Talk like a pirate"
system = "PIRATE PROMPT"
"""


def test_roles(make_daemon: Any, upstream: Upstream) -> None:
    """A default role reaches the provider as the new chat's system prompt and stays with
    its conversation; a prefix argument completes over the daemon's roles; replacing a
    region uses the daemon's code-edit role, and a [roles.code-edit] added to config.toml
    changes what Emacs sends without a restart."""
    d: Daemon = make_daemon(fake_provider_config(upstream, extra=ROLES))
    r = run_emacs("roles.el", {**daemon_env(d), "EMACS_TEST_CONFIG": str(d.config_path)})
    assert r["default_first"] == r["default_second"] == "PIRATE PROMPT"
    conv = d.call("conversations/get", {"id": r["default_conversation"]})
    assert [m["content"] for m in conv["messages"]][1::2] == ["PIRATE PROMPT"] * 2
    assert "pirate  Talk like a pirate" in r["offered"]
    assert any(o.startswith("code-edit  ") for o in r["offered"])
    assert r["prefix_answer"] == "PIRATE PROMPT"
    assert r["code_edit_before"] == "builtin"
    assert r["replaced_builtin"].startswith("You rewrite the text given as context")
    assert r["replaced_edited"] == "EDITED PROMPT: answer in capitals"


def test_no_daemon_errors(tmp_path: Path) -> None:
    """With no daemon, a chat message ends with an error in the buffer: at once when
    autostart is off or the start command does not exist, and within seconds (not the
    whole start timeout) when the started command exits at once, with its stderr."""
    r = run_emacs("unavailable.el", {"ASSISTANTD_SOCKET": str(tmp_path / "none.sock")})
    for case, words, limit in (
        ("off", "autostart is off", 2000),
        ("missing", "cannot start /nonexistent/assistantd", 2000),
        ("exits", "exited with code 3: no config here", 8000),
    ):
        errors = [ln for ln in r[case]["lines"] if ln.startswith("> **error:**")]
        assert len(errors) == 1 and words in errors[0], r[case]
        assert r[case]["ms"] < limit, r[case]
        assert r[case]["lines"][-2:] == ["## You", ""]


def test_daemon_lost_mid_answer(daemon: Daemon) -> None:
    """When the daemon dies while an answer streams, the chat buffer keeps the part that
    arrived and says the connection was lost, at once; the next message says that no
    daemon runs (autostart off)."""
    r = run_emacs("lost.el", daemon_env(daemon))
    assert r["lost_ms"] < 2000, r["lost_ms"]
    lines = r["lost_lines"]
    assert lines[7].startswith("w1 w2 w3") and not lines[7].endswith("w100")
    assert lines[-4:] == ["> **error:** the daemon closed the connection", "", "## You", ""]
    errors = [ln for ln in r["lines"] if ln.startswith("> **error:**")]
    assert len(errors) == 2 and "autostart is off" in errors[1], r["lines"]
    assert r["lines"][-2:] == ["## You", ""]


def test_autostart_starts_daemon(upstream: Upstream) -> None:
    """With no daemon running, the package starts `assistantd` on the default socket
    ($XDG_RUNTIME_DIR/assistantd/assistantd.sock), detached so that it outlives Emacs;
    after that daemon shuts down, the next message starts a new one."""
    config = Path(os.environ["XDG_CONFIG_HOME"]) / "assistantd" / "config.toml"
    config.parent.mkdir(parents=True)
    config.write_text(fake_provider_config(upstream))
    sock = Path(os.environ["XDG_RUNTIME_DIR"]) / "assistantd" / "assistantd.sock"
    path = f"{Path(sys.executable).parent}:{os.environ['PATH']}"  # where `assistantd` is
    try:
        r = run_emacs("autostart.el", {"PATH": path})
        assert r["socket"] == str(sock)
        text = "\n".join(r["lines"])
        assert "## Assistant\n\nstarted for you\n\n## You" in text
        assert "## Assistant\n\nback again\n\n## You" in text
        assert r["pids"][0] != r["pids"][1]
        with Client(sock) as c:  # Emacs has exited; the daemon it started has not
            assert c.call("daemon/status")["pid"] == r["pids"][1]
    finally:
        stop_daemon(sock)


def stop_daemon(socket: Path) -> None:
    """Shut down a daemon the package started, and wait until it is gone."""
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
    ("env", "setting", "expected"),
    [
        ({"ASSISTANTD_SOCKET": "/tmp/x/a.sock"}, "nil", "/tmp/x/a.sock"),
        ({"XDG_RUNTIME_DIR": "/tmp/rt"}, "nil", "/tmp/rt/assistantd/assistantd.sock"),
        ({"XDG_RUNTIME_DIR": ""}, "nil", f"/run/user/{os.getuid()}/assistantd/assistantd.sock"),
        ({"ASSISTANTD_SOCKET": "/tmp/x/a.sock"}, '"~/my.sock"', str(Path.home() / "my.sock")),
    ],
)
def test_socket_path_rule(env: dict[str, str], setting: str, expected: str) -> None:
    """The socket path follows the protocol's rule ($ASSISTANTD_SOCKET, then
    $XDG_RUNTIME_DIR, then /run/user/UID), and `assistant-socket` overrides it."""
    env = {"ASSISTANTD_SOCKET": "", **env}
    show = f"(let ((assistant-socket {setting})) (princ (assistant-rpc-socket-path)))"
    proc = subprocess.run(
        [emacs(), "--batch", "-Q", "-L", str(PACKAGE), "-l", "assistant-rpc", "--eval", show],
        capture_output=True,
        text=True,
        timeout=EMACS_TIMEOUT,
        env={**os.environ, **env},
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == expected


def test_byte_compile_without_warnings(tmp_path: Path) -> None:
    """Every .el file of the package byte-compiles with `byte-compile-error-on-warn`."""
    files = sorted(PACKAGE.glob("*.el"))
    assert len(files) >= 3
    for f in files:
        shutil.copy(f, tmp_path)
    compile_all = ["--eval", "(setq byte-compile-error-on-warn t)", "-f", "batch-byte-compile"]
    proc = subprocess.run(
        [emacs(), "--batch", "-Q", "-L", str(tmp_path), *compile_all]
        + [str(tmp_path / f.name) for f in files],
        capture_output=True,
        text=True,
        timeout=EMACS_TIMEOUT,
    )
    assert proc.returncode == 0, proc.stderr
    assert all((tmp_path / f.name).with_suffix(".elc").exists() for f in files)


def test_checkdoc_clean() -> None:
    """checkdoc (Emacs's documentation conventions) finds nothing to say in any file."""
    for f in sorted(PACKAGE.glob("*.el")):
        proc = subprocess.run(
            [
                emacs(),
                "--batch",
                "-Q",
                "-L",
                str(PACKAGE),
                "-l",
                "checkdoc",
                "--eval",
                f'(checkdoc-file "{f}")',
            ],
            capture_output=True,
            text=True,
            timeout=EMACS_TIMEOUT,
        )
        assert proc.returncode == 0 and "Warning" not in proc.stderr, proc.stderr


def test_commands_are_autoloaded(tmp_path: Path) -> None:
    """The autoloads generated from the package define every command without loading
    it, and calling one loads it (as package.el, package-vc and straight.el do)."""
    for f in PACKAGE.glob("*.el"):
        shutil.copy(f, tmp_path)
    names = " ".join(COMMANDS)
    script = f"""
(progn
  (make-directory-autoloads "{tmp_path}" "{tmp_path}/assistant-autoloads.el")
  (load "{tmp_path}/assistant-autoloads.el" nil t)
  (let ((out (list (cons "loaded_before" (featurep 'assistant)))))
    (dolist (name '({names}))
      (push (cons (symbol-name name)
                  (and (fboundp name) (autoloadp (symbol-function name))
                       (commandp name)))
            out))
    (add-to-list 'load-path "{tmp_path}")
    (with-temp-buffer (call-interactively #'assistant-cancel))
    (push (cons "loaded_after" (featurep 'assistant)) out)
    (princ (json-encode out))))
"""
    proc = subprocess.run(
        [emacs(), "--batch", "-Q", "--eval", "(require 'json)", "--eval", script],
        capture_output=True,
        text=True,
        timeout=EMACS_TIMEOUT,
    )
    assert proc.returncode == 0, proc.stderr
    r = json.loads(proc.stdout)
    assert r["loaded_before"] is None and r["loaded_after"] is True
    assert all(r[name] is True for name in COMMANDS), r


def test_attach_files_and_unsaved_buffers(
    daemon: Daemon, upstream: Upstream, tmp_path: Path
) -> None:
    """assistant-attach-file (default: this buffer's file; C-c C-a in a chat) queues files
    for a chat's next message, shown as "📎 name" lines: a text file reaches the provider
    as text and a PNG as an image_url part; an unnamed or modified buffer goes as its
    text; C-c C-a in a chat reads a file name; assistant-attach-clear drops the queue; one
    attached while an answer streams shows under the next "## You" and goes next; a
    file queued before assistant-ask-region goes with the question; a reopened
    conversation shows them."""
    image = editor_attach.files(tmp_path)
    r = run_emacs("attach.el", {**daemon_env(daemon), "ATTACH_DIR": str(tmp_path)})
    assert r["key"] == "assistant-attach-file"
    editor_attach.check(
        r,
        daemon,
        upstream,
        tmp_path,
        image,
        unsaved_name="draft",
        cleared=("before_clear", "after_clear"),
        asked='[[reply:asked]] what is in it?\n\n<context name="notes.txt:1-1">\n'
        'remember FACT-7\n\n</context>\n\n<context name="notes.txt">\nremember FACT-7\n\n'
        "</context>",
    )
