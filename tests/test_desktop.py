"""The desktop hotkey script on a real X server (Xvfb) with real xclip/xsel, against a
real daemon. Each test gives the script a PATH holding exactly the tools it should
find, so the fallbacks for missing tools are exercised without stubs."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import ROOT, Daemon
from tests.test_shell import HOSTILE, SECRET, SHOWN, command_lines_holding
from tests.tmux import run_on_pty
from tests.upstream import Upstream

SCRIPT = ROOT / "clients" / "desktop" / "assistant-hotkey"
BASE_TOOLS = ("sh", "uname", "dirname", "mktemp", "cat", "rm", "sed")
NO_NOTIFY = "cannot show a notification: notify-send is missing"


@pytest.fixture
def display() -> Iterator[str]:
    """A private Xvfb server; its display name (":N")."""
    assert shutil.which("Xvfb"), "Xvfb must be installed (apt-get install -y xvfb)"
    proc = subprocess.Popen(
        ["Xvfb", "-displayfd", "1", "-nolisten", "tcp", "-screen", "0", "640x480x24"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    assert proc.stdout is not None
    number = proc.stdout.readline().decode().strip()
    assert number.isdigit(), "Xvfb did not report its display"
    yield f":{number}"
    proc.terminate()
    proc.wait(10)
    proc.stdout.close()


def toolbox(folder: Path, *tools: str) -> str:
    """A PATH folder with links to exactly these real programs."""
    folder.mkdir(exist_ok=True)
    for tool in (*BASE_TOOLS, *tools):
        found = shutil.which(tool)
        assert found, f"{tool} must be installed"
        (folder / tool).symlink_to(found)
    return str(folder)


def x_env(display: str, path: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("WAYLAND_DISPLAY", "DISPLAY")}
    return {**env, "DISPLAY": display, "PATH": path, "ASSISTANT_PYTHON": sys.executable}


def set_selection(display: str, which: str, text: str) -> None:
    """Own an X selection with real xclip (it stays to serve it until the server ends)."""
    subprocess.run(
        ["xclip", "-selection", which, "-i"],
        input=text.encode(),
        check=True,
        env={**os.environ, "DISPLAY": display},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        timeout=10,
    )
    assert wait_selection(display, which, text) == text


def get_selection(display: str, which: str) -> str:
    done = subprocess.run(
        ["xclip", "-o", "-selection", which],
        capture_output=True,
        text=True,
        env={**os.environ, "DISPLAY": display},
        timeout=10,
    )
    return done.stdout


def wait_selection(display: str, which: str, expected: str, timeout: float = 5) -> str:
    """The selection once it reads ``expected`` (xsel takes ownership in a forked child,
    a moment after the script has exited), or its last value."""
    deadline = time.monotonic() + timeout
    while (value := get_selection(display, which)) != expected and time.monotonic() < deadline:
        time.sleep(0.05)
    return value


def hotkey(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(SCRIPT), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )


def test_selection_is_answered_onto_the_clipboard(
    daemon: Daemon, upstream: Upstream, display: str, tmp_path: Path
) -> None:
    """The PRIMARY selection is asked about, the answer lands on the clipboard and on stdout,
    and with no notify-send the documented fallback message is printed."""
    set_selection(display, "primary", "what is six times seven [[reply:forty-two]]")
    done = hotkey("--no-prompt", env=x_env(display, toolbox(tmp_path / "bin", "xclip")))
    assert done.returncode == 0, done.stderr
    assert done.stdout == "forty-two\n"
    assert wait_selection(display, "clipboard", "forty-two") == "forty-two"
    assert f"assistant-hotkey: {NO_NOTIFY}" in done.stderr
    assert upstream.requests[-1]["body"]["messages"][-1]["content"].startswith("what is six")


def test_clipboard_is_used_when_nothing_is_selected(
    daemon: Daemon, upstream: Upstream, display: str, tmp_path: Path
) -> None:
    """With an empty PRIMARY selection the clipboard's text is asked about instead."""
    set_selection(display, "clipboard", "from the clipboard [[reply:ok]]")
    done = hotkey(
        "--no-prompt", "--no-notify", env=x_env(display, toolbox(tmp_path / "bin", "xclip"))
    )
    assert (done.returncode, done.stdout, done.stderr) == (0, "ok\n", "")
    assert upstream.requests[-1]["body"]["messages"][-1]["content"].startswith("from the clipboard")


def test_xsel_works_without_xclip(daemon: Daemon, display: str, tmp_path: Path) -> None:
    """xsel alone reads the selection and writes the clipboard."""
    set_selection(display, "primary", "via xsel [[reply:done by xsel]]")
    done = hotkey(
        "--no-prompt", "--no-notify", env=x_env(display, toolbox(tmp_path / "bin", "xsel"))
    )
    assert (done.returncode, done.stdout) == (0, "done by xsel\n"), done.stderr
    assert wait_selection(display, "clipboard", "done by xsel") == "done by xsel"


def test_prompt_is_put_before_the_selection(
    daemon: Daemon, upstream: Upstream, display: str, tmp_path: Path
) -> None:
    """--prompt gives the instructions without asking, and they come before the text."""
    set_selection(display, "primary", "bonjour [[reply:hello]]")
    done = hotkey(
        "--prompt",
        "Translate to English",
        "--no-notify",
        env=x_env(display, toolbox(tmp_path / "bin", "xclip")),
    )
    assert done.returncode == 0, done.stderr
    assert upstream.requests[-1]["body"]["messages"][-1]["content"].startswith(
        "Translate to English\n\nbonjour"
    )


def test_missing_prompt_tool_is_said_and_skipped(
    daemon: Daemon, display: str, tmp_path: Path
) -> None:
    """Without rofi, dmenu, zenity or osascript it says so and asks about the selection as it is."""
    set_selection(display, "primary", "plain [[reply:answered]]")
    done = hotkey("--no-notify", env=x_env(display, toolbox(tmp_path / "bin", "xclip")))
    assert (done.returncode, done.stdout) == (0, "answered\n"), done.stderr
    assert "no prompt tool (rofi, dmenu, zenity or osascript)" in done.stderr


def test_missing_clipboard_tool_names_the_package(display: str, tmp_path: Path) -> None:
    """Without xclip and xsel it exits 69 and says what to install."""
    done = hotkey("--no-prompt", env=x_env(display, toolbox(tmp_path / "bin")))
    assert done.returncode == 69
    assert "cannot read the selection: install xclip or xsel" in done.stderr


def test_no_display_is_a_clear_message(tmp_path: Path) -> None:
    """Outside a graphical session it exits 69 and says that no display is set."""
    env = x_env("", toolbox(tmp_path / "bin", "xclip"))
    del env["DISPLAY"]
    done = hotkey("--no-prompt", env=env)
    assert done.returncode == 69 and "neither DISPLAY nor WAYLAND_DISPLAY is set" in done.stderr


def test_daemon_error_is_shown_and_clipboard_kept(
    daemon: Daemon, display: str, tmp_path: Path
) -> None:
    """A refused request exits 1 with the daemon's message and leaves the clipboard alone."""
    set_selection(display, "clipboard", "keep me")
    set_selection(display, "primary", "fails [[error:400]]")
    done = hotkey("--no-prompt", env=x_env(display, toolbox(tmp_path / "bin", "xclip")))
    assert done.returncode == 1
    assert "assistant: " in done.stderr and "(-32002)" in done.stderr and NO_NOTIFY in done.stderr
    assert get_selection(display, "clipboard") == "keep me"


def test_nothing_selected_exits_4(display: str, tmp_path: Path) -> None:
    """With no selection and an empty clipboard it says so and exits 4."""
    done = hotkey(
        "--no-prompt", "--no-notify", env=x_env(display, toolbox(tmp_path / "bin", "xclip"))
    )
    assert done.returncode == 4 and "nothing selected and the clipboard is empty" in done.stderr


def test_script_is_posix_sh() -> None:
    """The script parses as POSIX sh (dash) and its --help prints the usage."""
    for sh in ("dash", "bash"):
        assert shutil.which(sh), f"{sh} must be installed"
        check = subprocess.run([sh, "-n", str(SCRIPT)], capture_output=True, text=True, timeout=30)
        assert check.returncode == 0, check.stderr
    usage = subprocess.run([str(SCRIPT), "--help"], capture_output=True, text=True, timeout=30)
    assert usage.returncode == 0 and "usage: assistant-hotkey" in usage.stdout


def test_answer_control_characters_are_replaced(
    daemon: Daemon, display: str, tmp_path: Path
) -> None:
    """An answer's control characters (OSC 52, a title, a C1 CSI) reach neither the terminal
    nor the clipboard: they are U+FFFD; --raw keeps the exact bytes."""
    env = x_env(display, toolbox(tmp_path / "bin", "xclip"))
    # xclip -o here reads text: a CR would come back as LF
    hostile, shown = HOSTILE.replace("\r", ""), SHOWN.replace("\ufffdend", "end")
    set_selection(display, "primary", f"hi [[reply:{hostile}]]")
    code, out = run_on_pty([str(SCRIPT), "--no-prompt", "--no-notify"], env=env)
    assert code == 0, out
    assert shown in out.decode() and b"\x1b" not in out and b"\x07" not in out
    assert wait_selection(display, "clipboard", shown) == shown
    done = subprocess.run(
        [str(SCRIPT), "--no-prompt", "--no-notify", "--raw"],
        env=env,
        capture_output=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 0 and done.stdout == (hostile + "\n").encode()
    assert wait_selection(display, "clipboard", hostile) == hostile


def test_prompt_and_text_are_never_on_a_command_line(
    daemon: Daemon, upstream: Upstream, display: str, tmp_path: Path
) -> None:
    """The instructions typed into the prompt (dmenu) and the selection reach the daemon,
    and while the request runs no process's command line holds either."""
    for tool in ("dmenu", "xdotool"):
        assert shutil.which(tool), f"{tool} must be installed (apt-get install -y {tool})"
    set_selection(display, "primary", f"password={SECRET}-text [[hang]]")
    env = x_env(display, toolbox(tmp_path / "bin", "xclip", "dmenu"))
    run = subprocess.Popen(
        [str(SCRIPT), "--no-notify"],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    x = {**os.environ, "DISPLAY": display}
    try:
        deadline = time.monotonic() + 15
        while subprocess.run(["xdotool", "search", "--class", "dmenu"], env=x).returncode:
            assert time.monotonic() < deadline, "dmenu never showed"
            time.sleep(0.05)
        subprocess.run(["xdotool", "type", f"Check {SECRET}-prompt"], env=x, check=True)
        subprocess.run(["xdotool", "key", "Return"], env=x, check=True)
        while upstream.in_flight == 0:
            assert time.monotonic() < deadline, "the request never reached the upstream"
            time.sleep(0.02)
        asked = upstream.requests[-1]["body"]["messages"][-1]["content"]
        assert asked.startswith(f"Check {SECRET}-prompt\n\npassword={SECRET}-text")
        assert command_lines_holding(SECRET) == []
    finally:
        os.killpg(run.pid, signal.SIGTERM)
        run.wait(15)


def test_role_names_the_daemons_prompt(
    daemon: Daemon, upstream: Upstream, display: str, tmp_path: Path
) -> None:
    """--role NAME asks with the daemon's role of that name (its system prompt reaches the
    provider)."""
    set_selection(display, "primary", "tar xzf a.tgz [[reply:unpacks]]")
    env = x_env(display, toolbox(tmp_path / "bin", "xclip"))
    done = hotkey("--no-prompt", "--no-notify", "--role", "explain", env=env)
    assert (done.returncode, done.stdout) == (0, "unpacks\n"), done.stderr
    roles = {r["name"]: r["system"] for r in daemon.call("roles/list")["roles"]}
    system = upstream.requests[-1]["body"]["messages"][0]
    shell = Path(os.environ.get("SHELL") or "sh").name  # what assistant-ask sends as {shell}
    assert system == {"role": "system", "content": roles["explain"].format(shell=shell, os="Linux")}
