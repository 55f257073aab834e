"""The shell widgets in real bash, zsh and fish, driven in tmux against a real daemon
and the loopback upstream; and their stdlib-only client on its own."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from assistantd import paths
from assistantd.client import Client
from tests.conftest import ROOT, Daemon, fake_provider_config
from tests.tmux import Tmux
from tests.upstream import Upstream

SHELL_DIR = ROOT / "clients" / "shell"
HELPER = SHELL_DIR / "assistant-ask"
PROMPT = "READY$"
SHELLS = ("bash", "zsh", "fish")
MakeShell = Callable[..., Tmux]


def start_shell(shell: str, home: Path, env: dict[str, str]) -> Tmux:
    """An interactive ``shell`` with the widgets sourced and the prompt ``READY$``."""
    assert shutil.which(shell), f"{shell} must be installed (apt-get install -y {shell})"
    assert shutil.which("tmux"), "tmux must be installed (apt-get install -y tmux)"
    home.mkdir(parents=True, exist_ok=True)
    widget = SHELL_DIR / f"assistant.{shell}"
    if shell == "bash":
        rc = home / ".bashrc"
        rc.write_text(f"PS1='{PROMPT} '\nHISTFILE=/dev/null\nsource {widget}\n")
        command = ["bash", "--rcfile", str(rc), "--noprofile", "-i"]
    elif shell == "zsh":
        (home / ".zshrc").write_text(f"PS1='{PROMPT} '\nsource {widget}\n")
        command = ["zsh", "-i"]
    else:
        init = (
            f"function fish_prompt; echo -n '{PROMPT} '; end; set -g fish_greeting; "
            f"set -g fish_autosuggestion_enabled 0; source {widget}"
        )
        command = ["fish", "--no-config", "-C", init]
    full_env = {
        **os.environ,
        "HOME": str(home),
        "ZDOTDIR": str(home),
        "TERM": "xterm-256color",
        **env,
    }
    term = Tmux(command, env=full_env, socket=Path(os.environ["XDG_RUNTIME_DIR"]) / "tmux.sock")
    term.wait_line(PROMPT, timeout=15)
    return term


@pytest.fixture
def make_shell(tmp_path: Path) -> Iterator[MakeShell]:
    """Start shells in tmux; their tmux server is killed at the end of the test."""
    started: list[Tmux] = []

    def make(shell: str, **env: str) -> Tmux:
        term = start_shell(shell, tmp_path / f"home-{shell}", env)
        started.append(term)
        return term

    yield make
    for term in started:
        term.close()


def wait_idle(daemon: Daemon, upstream: Upstream, timeout: float = 10) -> None:
    """Wait until neither the daemon nor the upstream has a request in flight."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if daemon.call("daemon/status")["active_requests"] == 0 and upstream.in_flight == 0:
            return
        time.sleep(0.05)
    raise AssertionError("a request is still in flight")


def helper(
    *args: str,
    input: str | None = None,
    env: dict[str, str] | None = None,
    python: str = sys.executable,
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [python, "-I", "-S", str(HELPER), *args],
        input=input,
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, **(env or {})},
    )


# -- the widgets in a terminal --------------------------------------------------------


@pytest.mark.parametrize("shell", SHELLS)
def test_command_widget_replaces_the_line(
    shell: str, daemon: Daemon, upstream: Upstream, make_shell: MakeShell
) -> None:
    """Alt-a sends the line with a system prompt naming the shell and puts the answer in its place."""
    term = make_shell(shell)
    term.type("list every file here [[reply:ls -la]]")
    term.keys("M-a")
    term.wait_line(f"{PROMPT} ls -la")
    body = upstream.requests[-1]["body"]
    assert body["messages"][0]["role"] == "system"
    assert f"one shell command for {shell} on Linux" in body["messages"][0]["content"]
    assert "list every file here" in body["messages"][-1]["content"]


@pytest.mark.parametrize("shell", SHELLS)
def test_thinking_state_shows_while_waiting(
    shell: str, daemon: Daemon, make_shell: MakeShell
) -> None:
    """While the daemon works the terminal shows "⏳ asking…", then the answer replaces it."""
    term = make_shell(shell)
    term.type("greet me [[reply:echo hi]] [[slow:0.6]]")
    term.keys("M-a")
    term.wait_text("⏳ asking…")
    term.wait_line(f"{PROMPT} echo hi")
    assert "⏳" not in term.screen()


@pytest.mark.parametrize("shell", SHELLS)
def test_ctrl_c_cancels_and_restores_the_line(
    shell: str, daemon: Daemon, upstream: Upstream, make_shell: MakeShell
) -> None:
    """Ctrl-C while asking gives the original line back, ends the request upstream, and
    leaves the terminal as it was (Ctrl-C interrupts a command again)."""
    term = make_shell(shell)
    line = "delete the old logs [[hang]]"
    term.type(line)
    term.keys("M-a")
    term.wait_text("⏳ asking…")
    wait = time.monotonic() + 10
    while upstream.in_flight == 0 and time.monotonic() < wait:
        time.sleep(0.02)
    assert upstream.in_flight == 1
    term.keys("C-c")
    term.wait_line(f"{PROMPT} {line}")
    wait_idle(daemon, upstream)
    term.keys("C-a", "C-k")  # clear the line (emacs keys in all three shells)
    term.wait_line(PROMPT)
    term.type("echo started; sleep 30")
    term.keys("Enter")
    term.wait_text("started")
    term.keys("C-c")
    term.wait_line(PROMPT)


@pytest.mark.parametrize("shell", SHELLS)
def test_explain_widget_prints_below_and_keeps_the_line(
    shell: str, daemon: Daemon, upstream: Upstream, make_shell: MakeShell
) -> None:
    """Alt-e prints the explanation under the prompt and leaves the command line as it was."""
    term = make_shell(shell)
    term.type("tar xzf backup.tgz")
    term.keys("M-e")
    term.wait_text("You said: tar xzf backup.tgz")
    term.wait_line(f"{PROMPT} tar xzf backup.tgz")
    lines = term.lines()
    assert lines.index(f"{PROMPT} tar xzf backup.tgz") < lines.index("You said: tar xzf backup.tgz")
    assert "Explain" in upstream.requests[-1]["body"]["messages"][0]["content"]


@pytest.mark.parametrize("shell", SHELLS)
def test_daemon_error_keeps_the_line_and_says_why(
    shell: str, daemon: Daemon, make_shell: MakeShell
) -> None:
    """An upstream error leaves the line untouched and shows the daemon's error on screen."""
    term = make_shell(shell)
    term.type("do something [[error:400]]")
    term.keys("M-a")
    term.wait_text("(-32002)")
    term.wait(lambda t: f"{PROMPT} do something [[error:400]]" in t.lines(), what="the line kept")
    assert "assistant: " in term.screen()


@pytest.mark.parametrize("shell", ["bash", "zsh"])
def test_code_fences_are_stripped(shell: str, daemon: Daemon, make_shell: MakeShell) -> None:
    """A fenced, multi-line answer becomes the bare command on the line."""
    term = make_shell(shell)
    term.type("[[reply:```bash")
    term.keys("C-v", "C-j")  # a literal newline inside the description (quoted insert)
    term.type("du -sh *")
    term.keys("C-v", "C-j")
    term.type("```]] disk use")
    term.keys("M-a")
    term.wait_line(f"{PROMPT} du -sh *")


@pytest.mark.parametrize("shell", SHELLS)
def test_no_daemon_is_a_clear_message(shell: str, tmp_path: Path, make_shell: MakeShell) -> None:
    """With nothing on the socket (and autostart off) the widget says so and keeps the line."""
    missing = tmp_path / "none.sock"
    term = make_shell(shell, ASSISTANTD_SOCKET=str(missing), ASSISTANTD_NO_AUTOSTART="1")
    term.type("find big files")
    term.keys("M-a")
    term.wait_text(f"no daemon answers on {missing}")
    term.wait(lambda t: f"{PROMPT} find big files" in t.lines(), what="the line kept")


def test_bindings_are_overridable(tmp_path: Path) -> None:
    """ASSISTANT_KEY_* choose the keys in each shell, and an empty one binds nothing."""
    env = {
        **os.environ,
        "HOME": str(tmp_path),
        "ASSISTANT_KEY_COMMAND": r"\C-xa",
        "ASSISTANT_KEY_EXPLAIN": "",
    }
    bash = subprocess.run(
        ["bash", "--norc", "-i", "-c", f"source {SHELL_DIR}/assistant.bash; bind -X"],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert '"\\C-xa": "__assistant_command"' in bash.stdout
    assert "__assistant_explain" not in bash.stdout
    zsh = subprocess.run(
        ["zsh", "-f", "-i", "-c", f"source {SHELL_DIR}/assistant.zsh; bindkey"],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert '"^Xa" assistant-command' in zsh.stdout
    assert "assistant-explain" not in zsh.stdout
    fish = subprocess.run(
        [
            "fish",
            "--no-config",
            "-i",
            "-c",
            f"source {SHELL_DIR}/assistant.fish; bind | string match '*assistant*'",
        ],
        env={**env, "ASSISTANT_KEY_COMMAND": r"\cxa"},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert "bind -M insert \\cxa __assistant_command" in fish.stdout
    assert "__assistant_explain" not in fish.stdout


@pytest.mark.parametrize("shell", SHELLS)
def test_widget_files_parse(shell: str) -> None:
    """Each widget file passes its shell's syntax check (``bash -n``, ``zsh -n``, ``fish -n``)."""
    done = subprocess.run(
        [shell, "-n", str(SHELL_DIR / f"assistant.{shell}")],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr


# -- the client program on its own ----------------------------------------------------


def test_helper_finds_the_socket_by_the_contract_rule(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """assistant-ask picks the same socket as assistantd/paths.py in each case of the rule."""

    def same() -> None:
        out = helper("--print-socket").stdout.strip()
        assert out == str(paths.client_socket_path())

    same()  # $XDG_RUNTIME_DIR/assistantd/assistantd.sock
    config = paths.config_path()
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text(f'socket = "{tmp_path}/from-config.sock"\n')
    same()
    assert helper("--print-socket").stdout.strip() == f"{tmp_path}/from-config.sock"
    monkeypatch.setenv("ASSISTANTD_SOCKET", str(tmp_path / "from-env.sock"))
    same()
    monkeypatch.delenv("ASSISTANTD_SOCKET")
    config.unlink()
    monkeypatch.delenv("XDG_RUNTIME_DIR")
    same()
    assert (
        helper("--print-socket").stdout.strip()
        == f"/run/user/{os.getuid()}/assistantd/assistantd.sock"
    )


@pytest.mark.parametrize(
    ("answer", "command"),
    [
        ("```bash\nls -la\n```", "ls -la"),
        ("Here you go:\n```sh\nfind . -name '*.py'\n```\nThat finds them.", "find . -name '*.py'"),
        ("`git status`", "git status"),
        ("$ df -h", "df -h"),
        ("```\nfor f in *; do\n  echo $f\ndone\n```", "for f in *; do\n  echo $f\ndone"),
    ],
)
def test_helper_strips_code_fences(answer: str, command: str, daemon: Daemon) -> None:
    """The command mode prints the bare command out of fenced or quoted answers."""
    done = helper("--shell", "bash", "command", f"[[reply:{answer}]] do it")
    assert done.returncode == 0, done.stderr
    assert done.stdout == command


def test_helper_asks_with_a_prompt_from_stdin(daemon: Daemon, upstream: Upstream) -> None:
    """``ask -`` reads the text from stdin, puts --prompt before it, and uses --model."""
    done = helper(
        "--prompt",
        "Translate this",
        "--model",
        "fake-small",
        "ask",
        "-",
        input="bonjour [[reply:hello]]",
    )
    assert (done.returncode, done.stdout) == (0, "hello\n"), done.stderr
    body = upstream.requests[-1]["body"]
    assert body["model"] == "fake-small"
    assert body["messages"][-1]["content"].startswith("Translate this\n\nbonjour")
    assert all(m["role"] != "system" for m in body["messages"])


def test_helper_reports_errors_with_exit_codes(daemon: Daemon, tmp_path: Path) -> None:
    """Daemon errors exit 1, a missing daemon exits 3, bad usage exits 2, each with a message."""
    err = helper("ask", "[[error:404]] hi")
    assert err.returncode == 1 and err.stderr.startswith("assistant: ") and "(-32002)" in err.stderr
    gone = helper(
        "ask",
        "hi",
        env={"ASSISTANTD_SOCKET": str(tmp_path / "x.sock"), "ASSISTANTD_NO_AUTOSTART": "1"},
    )
    assert gone.returncode == 3 and "no daemon answers on" in gone.stderr
    usage = helper("translate", "hi")
    assert usage.returncode == 2 and "usage:" in usage.stderr
    empty = helper("ask", "   ")
    assert empty.returncode == 2 and "nothing to ask" in empty.stderr


def test_helper_imports_only_the_standard_library(daemon: Daemon) -> None:
    """On its way to the socket and back the client loads nothing outside the standard library."""
    done = subprocess.run(
        [
            sys.executable,
            "-I",
            "-S",
            "-X",
            "importtime",
            str(HELPER),
            "command",
            "[[reply:ls]] list",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0 and done.stdout == "ls"
    modules = {
        line.split("|")[-1].strip().split(".")[0]
        for line in done.stderr.splitlines()
        if line.startswith("import time:")
    }
    modules.discard("imported package")  # the header line
    assert modules and modules <= set(sys.stdlib_module_names), modules - set(
        sys.stdlib_module_names
    )


def test_helper_starts_the_daemon_when_none_answers(upstream: Upstream) -> None:
    """With nothing on the socket and assistantd on PATH, assistant-ask starts the daemon
    for that socket and gets its answer."""
    config = paths.config_path()
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text(fake_provider_config(upstream))
    sock = paths.client_socket_path()
    assert not sock.exists()
    bin_dir = Path(sys.executable).parent
    env = {"PATH": f"{bin_dir}:{os.environ['PATH']}"}
    try:
        done = helper("command", "[[reply:uptime]] how long has it been up", env=env)
        assert (done.returncode, done.stdout) == (0, "uptime"), done.stderr
        assert Client(sock).call("daemon/status")["socket"] == str(sock)
    finally:
        with contextlib.suppress(Exception):
            Client(sock).call("daemon/shutdown")
        deadline = time.monotonic() + 15
        while sock.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
    assert not sock.exists()
