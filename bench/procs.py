"""The processes a benchmark runs (the loopback upstream, daemons, cold clients) and the
small tools that time them and read their memory."""

from __future__ import annotations

import os
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from assistantd.client import Client

PY = sys.executable


@dataclass
class Row:
    """One line of the table. ``ratio`` is always value / baseline."""

    section: str
    name: str
    value: float | None
    unit: str
    baseline: float | None = None
    baseline_name: str = ""
    target: str = ""
    met: bool | None = None

    @property
    def ratio(self) -> float | None:
        if self.value is None or not self.baseline:
            return None
        return self.value / self.baseline

    def as_json(self) -> dict[str, Any]:
        return {**asdict(self), "ratio": self.ratio}


def median(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def pct(xs: list[float], p: float) -> float:
    """The p-th percentile (nearest rank)."""
    if not xs:
        return float("nan")
    s = sorted(xs)
    return s[min(len(s) - 1, max(0, round(p / 100 * len(s) + 0.5) - 1))]


def proc_status(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM of a process, in KiB."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key = line.split(":")[0]
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(line.split()[1])
    return out


def reset_peak(pid: int) -> bool:
    """Reset VmHWM to the current RSS (Linux: write 5 to clear_refs)."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def run_timed(cmd: list[str], env: dict[str, str], expect: str = "") -> tuple[float, float]:
    """Run a cold process with stdout to a pipe: (seconds to its first byte, to its exit)."""
    t0 = time.perf_counter()
    p = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env
    )
    assert p.stdout is not None and p.stderr is not None
    first = os.read(p.stdout.fileno(), 1 << 16)
    t_first = time.perf_counter()
    out = first + p.stdout.read()
    err = p.stderr.read()
    p.wait()
    t_end = time.perf_counter()
    if p.returncode != 0 or expect.encode() not in out:
        raise RuntimeError(f"{cmd[:3]} failed ({p.returncode}): {out[-200:]!r} {err[-500:]!r}")
    return t_first - t0, t_end - t0


class UpstreamProc:
    """``python -m tests.upstream --port 0`` in its own process."""

    def __init__(self, root: Path, env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(
            [PY, "-m", "tests.upstream", "--port", "0"],
            cwd=root,
            env=env,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().split()
        if line[:1] != ["READY"]:
            raise RuntimeError(f"the upstream did not start: {line}")
        self.base_url = line[1]

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def config_text(base_url: str) -> str:
    return f"""
default_model = "fake-echo"
[providers.fake]
base_url = "{base_url}"
models = ["fake-*"]
needs_key = false
"""


class DaemonProc:
    """A daemon (``python -m assistantd``) on its own socket and, optionally, data dir."""

    def __init__(
        self, env: dict[str, str], base_url: str, name: str = "", data_home: Path | None = None
    ) -> None:
        """The unnamed daemon uses the default config and socket paths, as a user's does;
        named ones get their own config file, socket and (optionally) data folder."""
        run, conf = Path(env["XDG_RUNTIME_DIR"]), Path(env["XDG_CONFIG_HOME"])
        cfg = conf / "assistantd" / (f"config-{name}.toml" if name else "config.toml")
        cfg.parent.mkdir(parents=True, exist_ok=True)
        cfg.write_text(config_text(base_url))
        self.socket = run / "assistantd" / (f"{name}.sock" if name else "assistantd.sock")
        self.env = {**env, "ASSISTANTD_CONFIG": str(cfg)} if name else dict(env)
        args = ["--socket", str(self.socket)] if name else []
        if data_home is not None:
            self.env["XDG_DATA_HOME"] = str(data_home)
        self.t0 = time.perf_counter()
        self.proc = subprocess.Popen(
            [PY, "-m", "assistantd", "--quiet", *args],
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        self.ready_s = self.wait_ready()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def wait_ready(self, timeout: float = 30) -> float:
        """Poll the socket until daemon/status answers; seconds since the spawn."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                err = self.proc.stderr.read() if self.proc.stderr else b""
                raise RuntimeError(f"the daemon exited: {err.decode(errors='replace')[-800:]}")
            try:
                with Client(self.socket) as c:
                    c.call("daemon/status")
                return time.perf_counter() - self.t0
            except Exception:
                time.sleep(0.002)
        raise TimeoutError("the daemon did not answer")

    def client(self) -> Client:
        c = Client(self.socket)
        c.connect()
        return c

    def rss_mb(self) -> float:
        return proc_status(self.pid)["VmRSS"] / 1024

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stderr:
            self.proc.stderr.close()
