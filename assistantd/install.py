"""``assistantctl daemon install``: put the service definition for this platform in place.

Linux: systemd user units under ``~/.config/systemd/user/``: a ``Type=notify`` service
started at login, so the first request of the day finds the daemon warm (its SDK
imported, its client built), and a socket unit that keeps the socket through restarts
and starts the daemon on the first connection if it is not running. macOS: a launchd
agent under ``~/Library/LaunchAgents/``, also started at login. Both run the
``assistantd`` that sits next to the running Python, so a venv or pipx install gets its
own daemon.

The templates live here, not in data files, so that a wheel install can write them;
``packaging/`` holds the same text rendered for a distribution's ``/usr/bin`` (a test
keeps the two identical). Standard library only, like the rest of assistantctl.
"""

from __future__ import annotations

import argparse
import os
import plistlib
import shutil
import subprocess
import sys
from pathlib import Path

from assistantd import paths

LABEL = "org.assistantd"
DEFAULT_LISTEN = "%t/assistantd/assistantd.sock"
IDLE_RSS_MB = 73  # a warm idle daemon (SDK imported, one client), measured by bench/run.py

SOCKET_UNIT = """\
[Unit]
Description=assistantd socket: the LLM assistant daemon starts on the first connection

[Socket]
ListenStream={listen}
SocketMode=0600
DirectoryMode=0700

[Install]
WantedBy=sockets.target
"""

SERVICE_UNIT = """\
[Unit]
Description=assistantd: an LLM assistant daemon on a Unix socket
Requires=assistantd.socket
After=assistantd.socket

[Service]
Type=notify
ExecStart={exec_start}
{environment}Restart=on-failure
RestartSec=2
TimeoutStopSec=20
NoNewPrivileges=yes
LimitCORE=0

[Install]
WantedBy=default.target
Also=assistantd.socket
"""


def daemon_command() -> list[str]:
    """The ``assistantd`` script next to this Python, or ``python -m assistantd``."""
    script = Path(sys.executable).parent / "assistantd"
    if script.is_file() and os.access(script, os.X_OK):
        return [str(script)]
    return [sys.executable, "-m", "assistantd"]


def systemd_quote(arg: str, *, command: bool = True) -> str:
    """One word of a unit setting: ``%`` escaped (and ``$`` in a command line, where
    systemd expands variables), double-quoted if it holds spaces or quotes."""
    arg = arg.replace("%", "%%")
    if command:
        arg = arg.replace("$", "$$")
    if any(c in arg for c in " \t\"'\\;"):
        return '"' + arg.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return arg


def socket_unit(listen: str = DEFAULT_LISTEN) -> str:
    return SOCKET_UNIT.format(listen=listen)


def service_unit(command: list[str], socket_env: str | None = None) -> str:
    """The service; ``socket_env`` tells a daemon on a non-default socket where it is."""
    environment = ""
    if socket_env:
        environment = (
            f"Environment={systemd_quote('ASSISTANTD_SOCKET=' + socket_env, command=False)}\n"
        )
    return SERVICE_UNIT.format(
        exec_start=" ".join(map(systemd_quote, command)), environment=environment
    )


def launchd_plist(command: list[str], log_dir: Path | None = None) -> str:
    """A launchd agent: started at login, restarted if it fails (the daemon does not
    speak launchd's socket activation, so it runs from login on), never dumping core.
    ``log_dir`` catches what the daemon prints before its own log file is open."""
    plist: dict[str, object] = {
        "Label": LABEL,
        "ProgramArguments": [*command, "--quiet"],
        "RunAtLoad": True,
        "KeepAlive": {"SuccessfulExit": False},
        "ProcessType": "Interactive",
        "SoftResourceLimits": {"Core": 0},
        "HardResourceLimits": {"Core": 0},
    }
    if log_dir is not None:
        plist["StandardErrorPath"] = str(log_dir / "launchd.err.log")
    return plistlib.dumps(plist).decode()


def _systemd_plan() -> tuple[dict[Path, str], list[list[str]]]:
    unit_dir = (
        Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config") / "systemd" / "user"
    )
    sock = paths.client_socket_path()
    default = paths.runtime_dir() / paths.APP / paths.SOCKET_NAME
    custom = None if sock == default else str(sock)
    files = {
        unit_dir / "assistantd.socket": socket_unit(
            custom.replace("%", "%%") if custom else DEFAULT_LISTEN
        ),
        unit_dir / "assistantd.service": service_unit(daemon_command(), custom),
    }
    commands = [
        ["systemctl", "--user", "daemon-reload"],
        ["systemctl", "--user", "enable", "--now", "assistantd.socket", "assistantd.service"],
    ]
    return files, commands


def _launchd_plan() -> tuple[dict[Path, str], list[list[str]]]:
    home = Path.home()
    target = home / "Library" / "LaunchAgents" / f"{LABEL}.plist"
    files = {target: launchd_plist(daemon_command(), home / "Library" / "Logs" / "assistantd")}
    # `launchctl bootout gui/UID/org.assistantd` first if an older one is loaded.
    return files, [["launchctl", "bootstrap", f"gui/{os.getuid()}", str(target)]]


def _shell_line(commands: list[list[str]]) -> str:
    import shlex

    return " && ".join(shlex.join(c) for c in commands)


def _systemctl_user_works() -> bool:
    if shutil.which("systemctl") is None:
        return False
    probe = subprocess.run(
        ["systemctl", "--user", "show-environment"], capture_output=True, timeout=10, check=False
    )
    return probe.returncode == 0


def _stop_running_daemon() -> None:
    """A daemon started by hand holds the socket path the unit wants: ask it to leave."""
    from assistantd.client import Client, DaemonUnavailable, RpcError

    try:
        Client().call("daemon/shutdown")
    except (DaemonUnavailable, RpcError, OSError):
        return
    print("stopped the running assistantd; systemd starts it again on the next request")


def install(args: argparse.Namespace) -> int:
    """Write the units (or only show them with ``--dry-run``) and enable them when the
    service manager answers; otherwise print the line that does."""
    platform = getattr(args, "platform", None) or sys.platform
    if platform.startswith("linux"):
        files, commands = _systemd_plan()
    elif platform == "darwin":
        files, commands = _launchd_plan()
    else:
        print(
            f"assistantctl: daemon install knows systemd (Linux) and launchd (macOS), "
            f"not {platform}; run `assistantd` from your session's start-up instead",
            file=sys.stderr,
        )
        return 2
    if args.dry_run:
        for path, text in files.items():
            print(f"# {path}")
            print(text)
        print(f"# then: {_shell_line(commands)}")
        return 0
    for path, text in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        old = path.read_text() if path.exists() else None
        path.write_text(text)
        print(f"{'unchanged' if old == text else 'replaced' if old else 'wrote'} {path}")
    if platform == "darwin":
        (Path.home() / "Library" / "Logs" / "assistantd").mkdir(parents=True, exist_ok=True)
        print(f"to start it now and at every login: {_shell_line(commands)}")
        return 0
    if not _systemctl_user_works():
        print(f"no systemd user manager answers here; to enable it: {_shell_line(commands)}")
        return 0
    _stop_running_daemon()
    for command in commands:
        done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
        if done.returncode != 0:
            print(
                f"assistantctl: `{' '.join(command)}` failed: {done.stderr.strip()}",
                file=sys.stderr,
            )
            return 1
    print(
        "enabled assistantd: it runs from login on, warm for the first request (about "
        f"{IDLE_RSS_MB} MB of memory while idle), and the socket starts it again if it is "
        "stopped; `systemctl --user disable assistantd.service` keeps only the socket "
        "(logs: journalctl --user -u assistantd)"
    )
    return 0
