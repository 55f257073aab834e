"""``assistantctl daemon install``: put the service definition for this platform in place.

Linux: systemd user units under ``~/.config/systemd/user/``: a ``Type=notify`` service
started at login, so the first request of the day finds the daemon warm (its SDK
imported, its client built), and a socket unit that keeps the socket through restarts
and starts the daemon on the first connection if it is not running. macOS: a launchd
agent under ``~/Library/LaunchAgents/``, also started at login. Both run the
``assistantd`` that sits next to the running Python, so a venv or pipx install gets its
own daemon.

A service does not see the shell's proxy and certificate variables (``HTTPS_PROXY``,
``NO_PROXY``, ``SSL_CERT_FILE``...). When this shell has some, install offers to carry
them into the config's ``[network]`` (which page fetches use too) or into the unit's
environment (``--proxy-env config|unit|no``; asked on a terminal), and says what it
wrote, a proxy's password shown as ``***``.

The templates live here, not in data files, so that a wheel install can write them;
``packaging/`` holds the same text rendered for a distribution's ``/usr/bin`` (a test
keeps the two identical). Standard library only, like the rest of assistantctl.
"""

from __future__ import annotations

import argparse
import json
import os
import plistlib
import shutil
import subprocess
import sys
from pathlib import Path

from assistantd import paths
from assistantd.network import redact

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


def service_unit(
    command: list[str], socket_env: str | None = None, env: dict[str, str] | None = None
) -> str:
    """The service; ``socket_env`` tells a daemon on a non-default socket where it is,
    ``env`` is more of its environment (the shell's proxy variables)."""
    environment = ""
    if socket_env:
        environment = (
            f"Environment={systemd_quote('ASSISTANTD_SOCKET=' + socket_env, command=False)}\n"
        )
    for name, value in (env or {}).items():
        environment += f"Environment={systemd_quote(f'{name}={value}', command=False)}\n"
    return SERVICE_UNIT.format(
        exec_start=" ".join(map(systemd_quote, command)), environment=environment
    )


def launchd_plist(
    command: list[str], log_dir: Path | None = None, env: dict[str, str] | None = None
) -> str:
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
    if env:
        plist["EnvironmentVariables"] = dict(env)
    return plistlib.dumps(plist).decode()


# The shell's variables a service does not see, in the order a proxy is chosen from them.
PROXY_VARS = ("HTTPS_PROXY", "ALL_PROXY", "HTTP_PROXY")
NETWORK_VARS = (*PROXY_VARS, "NO_PROXY", "SSL_CERT_FILE", "SSL_CERT_DIR")


def shell_network(environ: dict[str, str] | os._Environ[str]) -> dict[str, str]:
    """The proxy and certificate variables set (non-empty) in ``environ``, by their
    upper-case names (the lower-case spelling counts when the upper-case one is unset)."""
    found = {}
    for name in NETWORK_VARS:
        value = environ.get(name) or environ.get(name.lower())
        if value:
            found[name] = value
    return found


def network_table(found: dict[str, str]) -> str:
    """``found`` as the config's ``[network]`` table."""
    lines = ["[network]"]
    proxy = next((found[v] for v in PROXY_VARS if v in found), None)
    if proxy:
        lines.append(f"proxy = {json.dumps(proxy)}")
    if "NO_PROXY" in found:
        hosts = [h.strip() for h in found["NO_PROXY"].split(",") if h.strip()]
        lines.append(f"no_proxy = {json.dumps(hosts)}")
    if "SSL_CERT_FILE" in found:
        lines.append(f"ca_bundle = {json.dumps(found['SSL_CERT_FILE'])}")
    return "\n".join(lines) + "\n"


def shown(found: dict[str, str]) -> str:
    """``found`` for a message: proxies' user and password as ``***``."""
    return ", ".join(f"{k}={redact(v) if k in PROXY_VARS else v}" for k, v in found.items())


def _choose(found: dict[str, str], asked: str | None, dry_run: bool) -> str:
    """Where the shell's proxy variables go: config, unit or no."""
    if not found:
        return "no"
    if asked:
        return asked
    if sys.stdin.isatty() and not dry_run:
        answer = input(
            f"this shell has {shown(found)}; a service does not see them. Carry them into "
            "[c]onfig's [network] (page fetches use it too), the [u]nit, or [n]either? [c] "
        )
        return {"": "config", "c": "config", "u": "unit"}.get(answer.strip().lower()[:1], "no")
    print(
        f"note: this shell has {shown(found)}; a service does not see them: "
        "--proxy-env config (the config's [network]) or --proxy-env unit carries them",
        file=sys.stderr,
    )
    return "no"


def _carry_into_config(found: dict[str, str], dry_run: bool) -> None:
    """Add a ``[network]`` table to the config file (created if missing), unless it has one."""
    import re

    path = paths.config_path(None)
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    table = network_table(found)
    skipped = " (SSL_CERT_DIR has no [network] key: left out)" if "SSL_CERT_DIR" in found else ""
    if re.search(r"^\s*\[\s*network\s*\]", text, re.MULTILINE):
        print(f"{path} already has a [network] table: left as it is; the shell has {shown(found)}")
        return
    if dry_run:
        print(f"# would add to {path}:\n{network_table(_redacted(found))}")
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    sep = "" if not text or text.endswith("\n\n") else "\n" if text.endswith("\n") else "\n\n"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    with os.fdopen(fd, "a", encoding="utf-8") as f:
        f.write(sep + table)
    print(f"carried {shown(found)} into the [network] table of {path}{skipped}")


def _redacted(found: dict[str, str]) -> dict[str, str]:
    return {k: redact(v) if k in PROXY_VARS else v for k, v in found.items()}


def _systemd_plan(env: dict[str, str] | None = None) -> tuple[dict[Path, str], list[list[str]]]:
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
        unit_dir / "assistantd.service": service_unit(daemon_command(), custom, env),
    }
    commands = [
        ["systemctl", "--user", "daemon-reload"],
        ["systemctl", "--user", "enable", "--now", "assistantd.socket", "assistantd.service"],
    ]
    return files, commands


def _launchd_plan(env: dict[str, str] | None = None) -> tuple[dict[Path, str], list[list[str]]]:
    home = Path.home()
    target = home / "Library" / "LaunchAgents" / f"{LABEL}.plist"
    logs = home / "Library" / "Logs" / "assistantd"
    files = {target: launchd_plist(daemon_command(), logs, env)}
    # `launchctl bootout gui/UID/org.assistantd` first if an older one is loaded.
    return files, [["launchctl", "bootstrap", f"gui/{os.getuid()}", str(target)]]


def _plan_shown(platform: str, env: dict[str, str]) -> dict[Path, str]:
    """The files as ``--dry-run`` prints them: proxies' passwords as ``***``."""
    return (_systemd_plan(env) if platform.startswith("linux") else _launchd_plan(env))[0]


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
    if not (platform.startswith("linux") or platform == "darwin"):
        print(
            f"assistantctl: daemon install knows systemd (Linux) and launchd (macOS), "
            f"not {platform}; run `assistantd` from your session's start-up instead",
            file=sys.stderr,
        )
        return 2
    found = shell_network(os.environ)
    where = _choose(found, getattr(args, "proxy_env", None), args.dry_run)
    env = found if where == "unit" else None
    if platform.startswith("linux"):
        files, commands = _systemd_plan(env)
    else:
        files, commands = _launchd_plan(env)
    if where == "config":
        _carry_into_config(found, args.dry_run)
    if args.dry_run:
        shown_files = files if env is None else _plan_shown(platform, _redacted(found))
        for path, text in shown_files.items():
            print(f"# {path}")
            print(text)
        print(f"# then: {_shell_line(commands)}")
        return 0
    for path, text in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        old = path.read_text() if path.exists() else None
        path.write_text(text)
        if env and any(v in text for v in env.values()):  # a proxy's password may be in it
            path.chmod(0o600)
        print(f"{'unchanged' if old == text else 'replaced' if old else 'wrote'} {path}")
    if env:
        service = [p for p in files if p.suffix != ".socket"]
        print(f"carried {shown(env)} into the environment of {', '.join(map(str, service))}")
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
