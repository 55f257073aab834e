"""The shell widgets in real bash, zsh and fish, driven in tmux against a real daemon
and the loopback upstream; and their stdlib-only client on its own."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from assistantd import paths
from assistantd.client import Client
from tests.conftest import ROOT, Daemon, fake_provider_config
from tests.tmux import Tmux, run_on_pty
from tests.upstream import Upstream

SHELL_DIR = ROOT / "clients" / "shell"
HELPER = SHELL_DIR / "assistant-ask"
PROMPT = "READY$"
SHELLS = ("bash", "zsh", "fish")
# An answer that acts on a terminal: OSC 52 (set the clipboard), OSC 2 (set the title),
# a C1 CSI (red text) and a carriage return that would hide what came before it.
HOSTILE = "before\x1b]52;c;cm0gLXJmIH4=\x07after\x1b]2;pwned\x07 \x9b31mred\rend"
SHOWN = "before\ufffd]52;c;cm0gLXJmIH4=\ufffdafter\ufffd]2;pwned\ufffd \ufffd31mred\ufffdend"
SECRET = "S3cr3t-C2x"
# The same, as keys typed into a shell's line (Escape and Ctrl-G by quoted insert).
TYPED = "before\x1b]52;c;cm0gLXJmIH4=\x07after\x1b]2;pwned\x07end"
TYPED_SHOWN = "before\ufffd]52;c;cm0gLXJmIH4=\ufffdafter\ufffd]2;pwned\ufffdend"
KEY_NAMES = {"\x1b": "Escape", "\x07": "C-g"}
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
        ("```\nfor f in *; do\n  echo $f\ndone\n```", "for f in *; do echo $f; done"),
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


def test_helper_sends_bytes_that_are_not_utf8_as_replacement_characters(
    daemon: Daemon, upstream: Upstream
) -> None:
    """A byte that is not UTF-8 on the line (stdin, as the widgets send it) or in the
    words reaches the model as U+FFFD: the question is asked, not refused as bad params."""
    for args, piped in ([b"ask", b"-"], b"ls \xff dir"), ([b"ask", b"ls \xff dir"], b""):
        done = subprocess.run(
            [sys.executable, "-I", "-S", str(HELPER), *args],
            input=piped, capture_output=True, timeout=30, env=dict(os.environ),
        )  # fmt: skip
        assert done.returncode == 0, done.stderr.decode(errors="replace")
        assert upstream.requests[-1]["body"]["messages"][-1]["content"] == "ls \ufffd dir"


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
        with Client(sock) as client:
            assert client.call("daemon/status")["socket"] == str(sock)
    finally:
        with contextlib.suppress(Exception), Client(sock) as client:
            client.call("daemon/shutdown")
        deadline = time.monotonic() + 15
        while sock.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
    assert not sock.exists()


# -- answers on a terminal (issue 11) -------------------------------------------------


def test_helper_replaces_control_characters_on_a_terminal(daemon: Daemon) -> None:
    """On a terminal, assistant-ask prints an answer's control characters as U+FFFD (no
    clipboard write, title or colour reaches it); --raw, --json and a pipe keep the text exact."""
    command = [sys.executable, "-I", "-S", str(HELPER)]
    question = f"hi [[reply:{HOSTILE}]]".encode()
    code, out = run_on_pty([*command, "ask", "-"], input=question, env=dict(os.environ))
    assert code == 0, out
    assert SHOWN in out.decode()
    assert not set(out.decode()) & {"\x1b", "\x07", "\x9b"}, out
    code, out = run_on_pty([*command, "--raw", "ask", "-"], input=question, env=dict(os.environ))
    assert code == 0 and HOSTILE.encode() in out
    code, out = run_on_pty([*command, "--json", "ask", "-"], input=question, env=dict(os.environ))
    assert code == 0 and b'"text":"before\\u001b]52;c;' in out and b"\x1b" not in out
    piped = subprocess.run([*command, "ask", "-"], input=question, capture_output=True, timeout=30)
    assert (piped.returncode, piped.stdout) == (0, (HOSTILE + "\n").encode())


def type_hostile(term: Tmux, template: str) -> None:
    """Type ``template`` with TYPED in place of ``{}``, its control characters each
    inserted literally (quoted insert, Ctrl-V)."""
    before, _, after = template.partition("{}")
    term.type(before)
    for part in re.split(r"([\x1b\x07])", TYPED):
        if len(part) == 1 and not part.isprintable():
            term.keys("C-v", KEY_NAMES[part])
        elif part:
            term.type(part)
    term.type(after)


def test_explain_widget_cannot_retitle_the_terminal(daemon: Daemon, make_shell: MakeShell) -> None:
    """An explanation holding a title sequence leaves the terminal's title alone and shows
    the sequence's text with U+FFFD in place of its control characters."""
    term = make_shell("bash")
    before = term.title()
    type_hostile(term, "ls [[reply:{}]]")
    term.keys("M-e")
    term.wait_text("after\ufffd]2;pwned")
    assert term.title() == before != "pwned"


def test_command_widget_line_has_no_control_characters(
    daemon: Daemon, make_shell: MakeShell
) -> None:
    """Alt-a never puts a control character on the line: an answer's are shown as U+FFFD."""
    term = make_shell("bash")
    type_hostile(term, "say hi [[reply:echo {}]]")
    term.keys("M-a")
    term.wait_line(f"{PROMPT} echo {TYPED_SHOWN}")


# -- the line stays off command lines (issue 11) --------------------------------------


def command_lines_holding(secret: str) -> list[str]:
    """Every process's command line (what ``ps`` shows any user) that holds ``secret``."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            cmdline = (proc / "cmdline").read_bytes() if proc.name.isdigit() else b""
        except OSError:
            continue  # gone meanwhile
        if secret.encode() in cmdline:
            found.append(cmdline.replace(b"\0", b" ").decode(errors="replace"))
    return found


@pytest.mark.parametrize("key", ["M-a", "M-e"])
@pytest.mark.parametrize("shell", SHELLS)
def test_the_line_is_never_on_a_command_line(
    shell: str, key: str, daemon: Daemon, upstream: Upstream, make_shell: MakeShell
) -> None:
    """While a widget's request runs, no process's command line holds the line being edited
    (it reaches the daemon on stdin), and Ctrl-C still gives the line back."""
    term = make_shell(shell)
    line = f"mysql -uroot -p{SECRET} [[hang]]"
    term.type(line)
    term.keys(key)
    deadline = time.monotonic() + 10
    while upstream.in_flight == 0 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert upstream.in_flight == 1
    assert SECRET in upstream.requests[-1]["body"]["messages"][-1]["content"]
    assert command_lines_holding(SECRET) == []
    term.keys("C-c")
    term.wait_line(f"{PROMPT} {line}")
    wait_idle(daemon, upstream)


# -- one command on the line (issue 11) -----------------------------------------------


@pytest.mark.parametrize(
    ("answer", "command", "note"),
    [
        ("git add -A\ngit commit -m 'wip'", "git add -A && git commit -m 'wip'", "joined with &&"),
        ("ls -la\nThis lists every file, hidden ones too.", "ls -la", "kept only one command"),
        ("Run this:\ndf -h", "df -h", "kept only one command"),
        ("```\nmkdir -p out\ncd out\n```", "mkdir -p out && cd out", "joined with &&"),
        ("if [ -d build ]\nthen\n  rm -r build\nfi", "if [ -d build ]; then rm -r build; fi", ""),
        ("while true\ndo\n  date\n  sleep 1\ndone", "while true; do date; sleep 1; done", ""),
        ("find . -name '*.log' \\\n  -delete", "find . -name '*.log' -delete", ""),
        ("# free space per disk\ndf -h", "df -h", ""),
        ("$ cd /tmp\n$ ls", "cd /tmp && ls", "joined with &&"),
        ("for f in *\ndo\n  Print each name\ndone", "for f in *", "kept only one command"),
        ("rm -rf build\nmake ||\n  echo failed", "rm -rf build", "kept only one command"),
    ],
)
def test_helper_gives_one_command(answer: str, command: str, note: str, daemon: Daemon) -> None:
    """command mode prints one line: plain command lines joined with &&, a multi-line loop or
    if as one line, else the first line that is a command, with a note on stderr saying so."""
    done = helper("--shell", "bash", "command", "-", input=f"[[reply:{answer}]] do it")
    assert (done.returncode, done.stdout) == (0, command), done.stderr
    assert note in done.stderr and bool(note) == bool(done.stderr), done.stderr


@pytest.mark.parametrize("shell", SHELLS)
def test_command_widget_takes_one_command(
    shell: str, daemon: Daemon, make_shell: MakeShell
) -> None:
    """A multi-line answer never reaches the line as several commands to run on Enter:
    command lines are joined with &&, prose after a command is dropped, and the widget says so."""
    term = make_shell(shell)
    # A newline inside the description: quoted insert, or fish's Alt-Enter.
    newline = ("M-Enter",) if shell == "fish" else ("C-v", "C-j")
    term.type("[[reply:git status")
    term.keys(*newline)
    term.type("git log -1]] show the state")
    term.keys("M-a")
    # zsh shows the note under the line (zle -M), bash and fish above the prompt.
    joined = f"{PROMPT} git status && git log -1"
    term.wait(lambda t: joined in t.lines(), what=repr(joined))
    term.wait_text("the answer was 2 commands: joined with &&")
    term.keys("C-a", "C-k", "C-l")
    term.wait(lambda t: t.lines()[:1] == [PROMPT], what="an empty line")
    term.type("[[reply:ls -la")
    term.keys(*newline)
    term.type("This lists every file.]] list")
    term.keys("M-a")
    term.wait(lambda t: f"{PROMPT} ls -la" in t.lines(), what="the first command alone")
    term.wait_text("kept only one command")


# -- whose socket (issue 11) ----------------------------------------------------------

AS_NOBODY = ("setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups")
LISTENER = """
import socket, sys
s = socket.socket(socket.AF_UNIX)
s.bind(sys.argv[1])
s.listen()
print("READY", flush=True)
c, _ = s.accept()
c.settimeout(3)
got = b""
try:
    while chunk := c.recv(65536):
        got += chunk
except TimeoutError:
    pass
print("GOT", len(got), flush=True)
"""


def test_helper_refuses_a_socket_served_by_another_user(tmp_path: Path) -> None:
    """A socket served by another uid gets nothing from assistant-ask: it says whose it is
    and exits 3."""
    if os.getuid() != 0 or not shutil.which("setpriv"):
        pytest.skip("needs root and setpriv to serve a socket as another user")
    folder = Path(tempfile.mkdtemp(prefix="ad-peer-", dir="/tmp"))
    folder.chmod(0o777)  # where the other user can make its socket
    path = folder / "s.sock"
    listener = subprocess.Popen(
        [*AS_NOBODY, "/usr/bin/python3", "-I", "-c", LISTENER, str(path)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert listener.stdout is not None
        assert listener.stdout.readline().strip() == "READY"
        done = helper(
            "command",
            "-",
            input=f"mysql -p{SECRET}",
            env={"ASSISTANTD_SOCKET": str(path), "ASSISTANTD_NO_AUTOSTART": "1"},
        )
        assert listener.stdout.readline().split() == ["GOT", "0"]
        assert done.returncode == 3
        uid = subprocess.run(["id", "-u", "nobody"], capture_output=True, text=True).stdout
        assert f"refusing {path}: it is served by uid {uid.strip()}, not by you" in done.stderr
    finally:
        listener.kill()
        listener.wait(10)
        if listener.stdout is not None:
            listener.stdout.close()
        shutil.rmtree(folder, ignore_errors=True)


# -- roles (issue 15) -----------------------------------------------------------------


def shell_command_role(daemon: Daemon) -> str:
    roles = {r["name"]: r for r in daemon.call("roles/list")["roles"]}
    system: str = roles["shell-command"]["system"]
    return system


def test_widget_sends_the_daemons_role(daemon: Daemon, upstream: Upstream) -> None:
    """The helper names the daemon's role and sends the shell and OS as its vars (no prompt
    of its own); --system still gives the system prompt outright."""
    assert helper("--shell", "zsh", "command", "-", input="[[reply:ls]] x").returncode == 0
    params_system = upstream.requests[-1]["body"]["messages"][0]["content"]
    assert params_system == shell_command_role(daemon).format(shell="zsh", os="Linux")
    done = helper("--system", "Only {shell} here", "command", "-", input="[[reply:ls]] x")
    assert done.returncode == 0
    assert upstream.requests[-1]["body"]["messages"][0]["content"] == "Only {shell} here"


def test_config_role_changes_what_the_bash_widget_sends(
    make_daemon: Callable[..., Daemon], upstream: Upstream, make_shell: MakeShell
) -> None:
    """A [roles.shell-command] table in config.toml is the system prompt of the bash widget's
    request, and editing it changes the next request without restarting the daemon."""

    def config(prompt: str) -> str:
        return fake_provider_config(upstream, extra=f'[roles.shell-command]\nsystem = "{prompt}"\n')

    daemon = make_daemon(config("FIRST: one {shell} command on {os}"))
    term = make_shell("bash")
    term.type("list files [[reply:ls]]")
    term.keys("M-a")
    term.wait_line(f"{PROMPT} ls")
    assert (
        upstream.requests[-1]["body"]["messages"][0]["content"]
        == "FIRST: one bash command on Linux"
    )
    daemon.config_path.write_text(config("SECOND: a {shell} one-liner"))
    deadline = time.monotonic() + 15
    while shell_command_role(daemon) != "SECOND: a {shell} one-liner":
        assert time.monotonic() < deadline, "the edited config was not reloaded"
        time.sleep(0.05)
    term.keys("C-a", "C-k")
    term.wait_line(PROMPT)
    term.type("show disk use [[reply:df -h]]")
    term.keys("M-a")
    term.wait_line(f"{PROMPT} df -h")
    assert upstream.requests[-1]["body"]["messages"][0]["content"] == "SECOND: a bash one-liner"
    assert daemon.proc.poll() is None
