"""Packaging: the systemd units (checked by systemd-analyze, and the daemon started the
way they start it), the launchd agent, `assistantctl daemon install`, and the shell
completions in real bash, zsh and fish."""

from __future__ import annotations

import argparse
import os
import plistlib
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from assistantd import cli, install
from assistantd.client import Client
from tests.conftest import ROOT, Daemon, fake_provider_config
from tests.tmux import Tmux
from tests.upstream import Upstream

PACKAGING = ROOT / "packaging"
COMPLETIONS = PACKAGING / "completions"
BIN = Path(sys.executable).parent


def assistantctl(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "assistantctl"), *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
    )


def verify(*units: Path) -> subprocess.CompletedProcess[str]:
    assert shutil.which("systemd-analyze"), "systemd-analyze must be installed (apt: systemd)"
    return subprocess.run(
        ["systemd-analyze", "verify", "--user", *map(str, units)],
        capture_output=True,
        text=True,
        timeout=60,
    )


# -- units and install ----------------------------------------------------------------


def test_packaged_units_are_the_install_templates() -> None:
    """packaging/ holds exactly what install.py writes, rendered for /usr/bin (no drift)."""
    assert (PACKAGING / "systemd/assistantd.socket").read_text() == install.socket_unit()
    assert (PACKAGING / "systemd/assistantd.service").read_text() == install.service_unit(
        ["/usr/bin/assistantd"]
    )
    plist = (PACKAGING / "launchd/org.assistantd.plist").read_text()
    assert plist == install.launchd_plist(["/usr/local/bin/assistantd"])
    assert plistlib.loads(plist.encode())["ProgramArguments"] == [
        "/usr/local/bin/assistantd",
        "--quiet",
    ]
    unit = install.socket_unit()
    for line in (
        "ListenStream=%t/assistantd/assistantd.sock",
        "SocketMode=0600",
        "DirectoryMode=0700",
    ):
        assert line in unit.splitlines()
    service = install.service_unit(["/usr/bin/assistantd"]).splitlines()
    assert "Type=notify" in service


def test_service_starts_at_login_and_never_dumps_core() -> None:
    """The service is wanted by the login session (default.target), so the daemon is warm
    before the first keypress, keeps its socket unit for activation, and has LimitCORE=0;
    the launchd agent runs at load with a core limit of 0."""
    service = install.service_unit(["/usr/bin/assistantd"]).splitlines()
    install_section = service[service.index("[Install]") :]
    assert "WantedBy=default.target" in install_section
    assert "Also=assistantd.socket" in install_section
    assert service.index("LimitCORE=0") < service.index("[Install]")
    assert "Requires=assistantd.socket" in service
    plist = plistlib.loads(install.launchd_plist(["/usr/local/bin/assistantd"]).encode())
    assert plist["RunAtLoad"] is True
    assert plist["SoftResourceLimits"] == plist["HardResourceLimits"] == {"Core": 0}


def test_install_writes_units_that_systemd_accepts(tmp_path: Path) -> None:
    """Without systemctl, install writes both user units with this venv's assistantd, prints
    the line that enables both (the service at login, the socket for activation), and
    systemd-analyze verify passes them with no warning at all."""
    path = f"{BIN}:{tmp_path / 'empty'}"  # no systemctl on this PATH
    done = assistantctl("daemon", "install", env={"PATH": path})
    assert done.returncode == 0, done.stderr
    unit_dir = Path(os.environ["XDG_CONFIG_HOME"]) / "systemd" / "user"
    sock, service = unit_dir / "assistantd.socket", unit_dir / "assistantd.service"
    assert f"wrote {sock}" in done.stdout and f"wrote {service}" in done.stdout
    assert (
        "systemctl --user daemon-reload && "
        "systemctl --user enable --now assistantd.socket assistantd.service" in done.stdout
    )
    assert f"ExecStart={BIN / 'assistantd'}" in service.read_text().splitlines()
    checked = verify(sock, service)
    assert (checked.returncode, checked.stdout, checked.stderr) == (0, "", "")
    again = assistantctl("daemon", "install", env={"PATH": path})
    assert f"unchanged {sock}" in again.stdout


def test_install_follows_a_custom_socket(tmp_path: Path) -> None:
    """A socket set by $ASSISTANTD_SOCKET goes into ListenStream and the service's environment,
    escaped so that systemd reads the same path back."""
    custom = tmp_path / "my sockets" / "a%b.sock"
    done = assistantctl(
        "daemon", "install", env={"PATH": str(BIN), "ASSISTANTD_SOCKET": str(custom)}
    )
    assert done.returncode == 0, done.stderr
    unit_dir = Path(os.environ["XDG_CONFIG_HOME"]) / "systemd" / "user"
    escaped = str(custom).replace("%", "%%")
    assert f"ListenStream={escaped}" in (unit_dir / "assistantd.socket").read_text().splitlines()
    assert (
        f'Environment="ASSISTANTD_SOCKET={escaped}"'
        in (unit_dir / "assistantd.service").read_text()
    )
    checked = verify(unit_dir / "assistantd.socket", unit_dir / "assistantd.service")
    assert (checked.returncode, checked.stderr) == (0, "")


def test_dry_run_shows_everything_and_writes_nothing() -> None:
    """--dry-run prints each file with its path and the enable line, and creates no file."""
    done = assistantctl("daemon", "install", "--dry-run")
    assert done.returncode == 0, done.stderr
    unit_dir = Path(os.environ["XDG_CONFIG_HOME"]) / "systemd" / "user"
    out = done.stdout
    assert f"# {unit_dir / 'assistantd.socket'}\n{install.socket_unit()}" in out
    assert (
        f"# {unit_dir / 'assistantd.service'}\n{install.service_unit([str(BIN / 'assistantd')])}"
        in out
    )
    assert out.rstrip().endswith(
        "# then: systemctl --user daemon-reload && "
        "systemctl --user enable --now assistantd.socket assistantd.service"
    )
    assert not unit_dir.exists()


def test_launchd_plan_on_macos(capsys: pytest.CaptureFixture[str]) -> None:
    """On macOS install plans a LaunchAgent plist running this assistantd and a bootstrap line."""
    # proxy_env="no": this shell's proxy or CA variables, if any, are not the point here
    code = install.install(argparse.Namespace(dry_run=True, platform="darwin", proxy_env="no"))
    out = capsys.readouterr().out
    assert code == 0
    target = Path.home() / "Library" / "LaunchAgents" / "org.assistantd.plist"
    head, _, rest = out.partition("\n")
    assert head == f"# {target}"
    text, _, then = rest.partition("\n# then: ")
    plist = plistlib.loads(text.encode())
    assert plist["Label"] == "org.assistantd" and plist["RunAtLoad"] is True
    assert plist["ProgramArguments"] == [*install.daemon_command(), "--quiet"]
    assert then.strip() == f"launchctl bootstrap gui/{os.getuid()} {target}"
    assert not target.exists()


def test_unknown_platform_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    """A platform with neither systemd nor launchd gets exit 2 and a reason."""
    assert install.install(argparse.Namespace(dry_run=True, platform="sunos5")) == 2
    assert "not sunos5" in capsys.readouterr().err


def test_socket_activation_starts_the_daemon_and_it_notifies_ready(
    upstream: Upstream, tmp_path: Path
) -> None:
    """Started as the units start it (systemd-socket-activate hands it the socket), the daemon
    answers daemon/status on that socket and sends READY=1 to $NOTIFY_SOCKET (Type=notify)."""
    assert shutil.which("systemd-socket-activate"), "systemd-socket-activate must be installed"
    config = Path(os.environ["XDG_CONFIG_HOME"]) / "assistantd" / "config.toml"
    config.parent.mkdir(parents=True)
    config.write_text(fake_provider_config(upstream))
    folder = Path(os.environ["XDG_RUNTIME_DIR"]) / "assistantd"
    folder.mkdir(mode=0o700)  # what DirectoryMode=0700 makes
    sock_path = folder / "assistantd.sock"
    notify_path = Path(os.environ["XDG_RUNTIME_DIR"]) / "notify"
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(notify_path))
    notify.settimeout(30)
    env_names = (
        "XDG_RUNTIME_DIR",
        "XDG_CONFIG_HOME",
        "XDG_DATA_HOME",
        "XDG_STATE_HOME",
        "XDG_CACHE_HOME",
    )
    proc = subprocess.Popen(
        [
            "systemd-socket-activate",
            "-l",
            str(sock_path),
            *(f"-E{v}" for v in env_names),
            f"-ENOTIFY_SOCKET={notify_path}",
            sys.executable,
            "-m",
            "assistantd",
            "--quiet",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        cwd=ROOT,
    )
    try:
        deadline = time.monotonic() + 20
        while not sock_path.exists():  # systemd-socket-activate binds it, then waits
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr
            time.sleep(0.02)
        client = Client(sock_path, timeout=30)
        status = client.call("daemon/status")  # the first connection starts the daemon
        assert status["pid"] == proc.pid  # exec'd in place, as systemd runs it
        assert status["socket"] == str(sock_path) and status["config_ok"] is True
        assert notify.recv(256) == b"READY=1"
        answer = client.call("chat/send", {"message": "over activation", "stream": False})
        assert answer["text"] == "You said: over activation"
        client.call("daemon/shutdown")
        client.close()
        assert proc.wait(20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stderr is not None:
            proc.stderr.close()
        notify.close()


# -- completions ----------------------------------------------------------------------


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_completion_files_parse(shell: str) -> None:
    """Each completion file passes its shell's syntax check."""
    done = subprocess.run(
        [shell, "-n", str(COMPLETIONS / f"assistantctl.{shell}")],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr


def subcommands() -> set[str]:
    """assistantctl's subcommands, from its argparse parser."""
    action = next(a for a in cli.parser()._actions if isinstance(a, argparse._SubParsersAction))
    return set(action.choices)


def bash_complete(line: str) -> list[str]:
    words = line.split(" ")
    script = (
        f"source {COMPLETIONS / 'assistantctl.bash'}\n"
        f"COMP_WORDS=({' '.join(repr(w) for w in words)}); COMP_CWORD={len(words) - 1}\n"
        "_assistantctl assistantctl; printf '%s\\n' \"${COMPREPLY[@]}\""
    )
    done = subprocess.run(
        ["bash", "--norc", "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}"},
    )
    assert done.returncode == 0, done.stderr
    return [w for w in done.stdout.splitlines() if w]


def fish_complete(line: str) -> list[str]:
    script = f"source {COMPLETIONS / 'assistantctl.fish'}; complete -C '{line}'"
    done = subprocess.run(
        ["fish", "--no-config", "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}"},
    )
    assert done.returncode == 0, done.stderr
    return [w.split("\t")[0] for w in done.stdout.splitlines() if w]


@pytest.mark.parametrize("complete", [bash_complete, fish_complete], ids=["bash", "fish"])
def test_completions_follow_the_parser_and_the_daemon(complete: object, daemon: Daemon) -> None:
    """Subcommands, options and choices come from assistantctl's own parser; provider and
    model names from the running daemon."""
    assert callable(complete)
    assert set(complete("assistantctl ")) == subcommands()
    assert set(complete("assistantctl daemon ")) == {
        "start",
        "stop",
        "status",
        "restart",
        "install",
    }
    assert "--dry-run" in complete("assistantctl daemon --")
    assert set(complete("assistantctl conversations --format ")) == {"markdown", "json"}
    assert complete("assistantctl --socket /tmp/x da") == ["daemon"]
    assert "fake" in complete("assistantctl keys set ")
    assert "fake-echo" in complete("assistantctl chat -m ")
    assert {"--model", "--no-stream", "--continue"} <= set(complete("assistantctl chat --"))
    conv = daemon.call("chat/send", {"message": "hi", "stream": False})["conversation_id"]
    assert conv in complete("assistantctl conversations show ")


def test_zsh_completion_in_a_terminal(daemon: Daemon, tmp_path: Path) -> None:
    """In a real zsh with compinit, Tab completes subcommands, actions and provider names."""
    home = tmp_path / "zhome"
    home.mkdir()
    (home / ".zshrc").write_text(
        f"PS1='READY$ '\nexport PATH={BIN}:$PATH\nautoload -Uz compinit && compinit -u -d {home}/.zcd\n"
        f"source {COMPLETIONS / 'assistantctl.zsh'}\n"
    )
    term = Tmux(
        ["zsh", "-i"],
        env={**os.environ, "ZDOTDIR": str(home), "HOME": str(home)},
        socket=Path(os.environ["XDG_RUNTIME_DIR"]) / "tmux.sock",
    )
    try:
        term.wait_line("READY$", timeout=15)
        term.type("assistantctl da")
        term.keys("Tab")
        term.wait_line("READY$ assistantctl daemon")
        term.type("ins")
        term.keys("Tab")
        term.wait_line("READY$ assistantctl daemon install")
        term.keys("C-u")
        term.type("assistantctl keys set fa")
        term.keys("Tab")
        term.wait_line("READY$ assistantctl keys set fake")
    finally:
        term.close()
