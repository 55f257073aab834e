"""Start-up and the process itself: a cold daemon answers before the SDK is imported, which
then happens off the event loop; deltas coalesce for a client that fell behind, log files
stay private across rotations, and the daemon cannot be dumped or read by the user's other
processes."""

from __future__ import annotations

import array
import fcntl
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import termios
import time
from pathlib import Path
from typing import Any

from tests.conftest import ROOT, Daemon, fake_provider_config
from tests.rawsock import Raw, req, until
from tests.upstream import Upstream

NOBODY = 65534


def test_a_cold_daemons_first_answer_does_not_wait_for_the_sdk(
    upstream: Upstream, tmp_path: Path
) -> None:
    """A chat/send that starts the daemon (socket activation: the request is queued before
    the process exists) is answered in plain HTTP, without the openai SDK; the SDK is then
    imported on a thread of its own once the daemon is quiet, daemon/status answering at
    once meanwhile; streamed answers stay plain HTTP (``streaming = "http"``, the
    default) and one not streamed goes through the SDK."""
    assert shutil.which("systemd-socket-activate"), "systemd-socket-activate must be installed"
    config = Path(os.environ["XDG_CONFIG_HOME"]) / "assistantd" / "config.toml"
    config.parent.mkdir(parents=True)
    config.write_text(fake_provider_config(upstream).replace('streaming = "http"\n', ""))
    folder = Path(os.environ["XDG_RUNTIME_DIR"]) / "assistantd"
    folder.mkdir(mode=0o700)  # as the socket unit makes it
    sock_path = folder / "assistantd.sock"
    names = [k for k in os.environ if k.startswith("XDG_")]
    log = tmp_path / "stderr.log"
    with open(log, "wb") as err:
        proc = subprocess.Popen(
            ["systemd-socket-activate", "-l", str(sock_path), *(f"-E{k}" for k in names),
             sys.executable, "-m", "assistantd"],
            stdout=subprocess.DEVNULL, stderr=err, cwd=ROOT,
        )  # fmt: skip
    try:
        until(sock_path.exists, what="systemd-socket-activate's socket")
        chat = Raw(sock_path, timeout=60)
        chat.send(req(1, "chat/send", {"message": "first"}))
        assert chat.response(1)["result"]["text"] == "You said: first"
        [first] = upstream.requests
        assert first["headers"]["user-agent"].startswith("assistantd/")  # not the SDK
        assert first["headers"]["authorization"] == "Bearer no-key"
        probe = Raw(sock_path, timeout=60)
        waits: list[float] = []

        def sdk_ready() -> bool:
            t0 = time.monotonic()
            probe.send(req(2, "daemon/status"))
            status = probe.response(2)["result"]
            if status["sdk"] == "importing":
                waits.append(time.monotonic() - t0)
            return bool(status["sdk"] == "ready" and status["streaming_via"] == "http")

        until(sdk_ready, timeout=60, what="the SDK imported")
        found = re.search(
            r"openai SDK imported in (\d+) ms on thread assistantd-sdk", log.read_text()
        )
        assert found, log.read_text()
        # On the loop, status would have waited for (most of) the import; off it, it does not.
        assert all(w < max(0.25, int(found.group(1)) / 2000) for w in waits), waits
        chat.send(req(3, "chat/send", {"message": "second"}))
        assert chat.response(3)["result"]["text"] == "You said: second"
        assert upstream.requests[-1]["headers"]["user-agent"].startswith("assistantd/")
        chat.send(req(4, "chat/send", {"message": "whole", "stream": False}))
        assert chat.response(4)["result"]["text"] == "You said: whole"
        assert upstream.requests[-1]["headers"]["user-agent"].startswith("AsyncOpenAI/Python")
    finally:
        proc.terminate()
        proc.wait(20)


def test_the_warm_daemon_keeps_its_long_lived_objects_out_of_the_gc(daemon: Daemon) -> None:
    """Once the SDK and the config watcher are imported, the objects alive then (modules,
    classes, the SDK's models: tens of thousands) are frozen out of the cyclic GC's scans,
    so that a full collection no longer walks them in the middle of a burst of requests;
    the daemon answers as before."""
    found: list[int] = []

    def frozen() -> bool:
        found[:] = [
            int(n) for n in re.findall(r"(\d+) objects kept out of the GC's scans", daemon.stderr())
        ]
        return len(found) == 2  # after the SDK's import and after the watcher's

    until(frozen, timeout=60, what="the daemon's freeze of its objects")
    assert found[0] > 20_000 and found[1] >= found[0], found
    r = daemon.call("chat/send", {"message": "after the freeze"})
    assert r["text"] == "You said: after the freeze"


def _pending(sock: Any) -> int:
    """Bytes the daemon has sent that this socket has not read yet (FIONREAD)."""
    buf = array.array("i", [0])
    fcntl.ioctl(sock.fileno(), termios.FIONREAD, buf)
    return buf[0]


def test_deltas_coalesce_when_the_client_falls_behind(daemon: Daemon) -> None:
    """A client that stops reading while a long answer streams gets fewer, larger deltas when it
    reads again (those queued meanwhile go out as one), and nothing is lost: the deltas join to
    the answer's text and their logprobs, in order, are the answer's logprobs."""
    n = 2000
    raw = Raw(daemon.socket, timeout=60)
    raw.send(req(1, "chat/send", {"message": f"[[words:{n}]] behind", "top_logprobs": 2}))
    raw.notes_until(1)
    seen: list[int] = []

    def stalled() -> bool:  # the daemon has stopped writing: it waits for this client
        seen.append(_pending(raw.sock))
        return len(seen) > 5 and seen[-1] >= 32 * 1024 and seen[-1] == seen[-5]

    until(stalled, timeout=30, what="the daemon to wait for the client")
    result = raw.response(1)["result"]
    deltas = [m["params"] for m in raw.notes if m["method"] == "chat/delta"]
    assert len(result["logprobs"]) == n
    assert len(deltas) < n
    assert "".join(d["text"] for d in deltas) == result["text"]
    assert [lp for d in deltas for lp in d.get("logprobs", [])] == result["logprobs"]
    raw.close()


def test_rotated_log_files_are_private(make_daemon: Any, upstream: Upstream) -> None:
    """Under a umask of 022 every log file, the first and each one a rotation starts, is 0600."""
    old = os.umask(0o022)
    try:
        d = make_daemon(fake_provider_config(upstream), args=("--log-max-bytes", "300"))
    finally:
        os.umask(old)
    for _ in range(12):  # each reload writes a line: past 300 bytes the log rotates
        d.call("daemon/reload")
    log_dir = Path(os.environ["XDG_STATE_HOME"]) / "assistantd" / "log"
    files = sorted(log_dir.glob("assistantd.log*"))
    assert [f.name for f in files] == [
        "assistantd.log",
        "assistantd.log.1",
        "assistantd.log.2",
        "assistantd.log.3",
    ]
    assert {f.name: oct(stat.S_IMODE(f.stat().st_mode)) for f in files} == {
        f.name: "0o600" for f in files
    }


def _owner_and_uid(pid: int) -> tuple[int, int]:
    """Who owns /proc/PID's files, and the process's real uid."""
    status = Path(f"/proc/{pid}/status")
    uid = next(
        int(line.split()[1]) for line in status.read_text().splitlines() if line.startswith("Uid:")
    )
    return status.stat().st_uid, uid


def test_daemon_is_not_dumpable(tmp_path: Path) -> None:
    """The daemon makes itself non-dumpable at start (PR_SET_DUMPABLE 0): the kernel then hands
    its /proc files to root, so the user's other processes cannot read its memory or environment.
    Run as root, the test starts the daemon as an unprivileged user to see the difference."""
    base = Path(tempfile.mkdtemp(prefix="adnd-", dir="/tmp"))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("XDG_", "LISTEN_"))}
    for var in ("XDG_RUNTIME_DIR", "XDG_CONFIG_HOME", "XDG_DATA_HOME", "XDG_STATE_HOME"):
        folder = base / var.lower()
        folder.mkdir(mode=0o700)
        env[var] = str(folder)
    as_root = os.getuid() == 0
    if as_root:
        for path in (base, *base.iterdir()):
            os.chown(path, NOBODY, NOBODY)
    sock = Path(env["XDG_RUNTIME_DIR"]) / "assistantd" / "assistantd.sock"
    drop: list[str] = []
    if as_root:  # util-linux's setpriv: exec as nobody, without capabilities
        assert shutil.which("setpriv"), "setpriv must be installed (apt: util-linux)"
        drop = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]
    proc = subprocess.Popen(
        [*drop, sys.executable, "-m", "assistantd", "--quiet"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        until(lambda: sock.exists() or proc.poll() is not None, timeout=30, what="the socket")
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        owner, uid = _owner_and_uid(proc.pid)
        assert uid != 0 and uid == (NOBODY if as_root else os.getuid())
        assert owner == 0  # a dumpable process owns its /proc files itself
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(20)
        if proc.stderr:
            proc.stderr.close()
        shutil.rmtree(base, ignore_errors=True)
