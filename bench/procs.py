"""The processes a benchmark runs (the loopback upstream, daemons, cold clients), the
installed copy of assistantd that the cold processes start from, and the small tools that
time them and read their memory."""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import tomllib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any

from assistantd.client import Client


def fresh_xdg(prefix: str) -> Path:
    """Point this process (and its children) at fresh XDG folders, all 0700, in one new
    folder under /tmp (short, for the socket's path), and forget any socket or config this
    shell names: nothing a benchmark runs touches the user's own daemon. Returns it."""
    base = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    for var, sub in (
        ("XDG_DATA_HOME", "data"),
        ("XDG_CONFIG_HOME", "config"),
        ("XDG_CACHE_HOME", "cache"),
        ("XDG_STATE_HOME", "state"),
        ("XDG_RUNTIME_DIR", "run"),
    ):
        (base / sub).mkdir(mode=0o700)
        os.environ[var] = str(base / sub)
    for var in ("ASSISTANTD_SOCKET", "ASSISTANTD_CONFIG"):
        os.environ.pop(var, None)
    return base


PY = sys.executable  # the bench's own interpreter: the harness (upstream, in-process clients)
INSTALL_VENV = Path.home() / ".cache" / "assistantd" / "bench-install-venv"


@dataclass(frozen=True)
class Install:
    """An installed assistantd: the interpreter and the scripts a user's processes run."""

    label: str
    python: str

    def _script(self, name: str, fallback: list[str]) -> list[str]:
        script = Path(self.python).parent / name
        return [str(script)] if script.exists() else [self.python, *fallback]

    @property
    def assistantctl(self) -> list[str]:
        return self._script("assistantctl", ["-c", "from assistantd.cli import main; main()"])

    @property
    def daemon(self) -> list[str]:
        """The daemon as the systemd unit starts it (``install.daemon_command``)."""
        return self._script("assistantd", ["-m", "assistantd"])


DEV = Install("editable dev install (the bench's own venv)", PY)


def _run(cmd: list[str], timeout: float = 1200) -> None:
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd="/")
    if p.returncode != 0:
        tail = "\n".join((p.stderr or p.stdout).strip().splitlines()[-5:])
        raise RuntimeError(f"{' '.join(cmd[:4])} ... failed ({p.returncode}): {tail}")


def _source_copy(root: Path, dest: Path) -> Path:
    """What ``pip install ROOT`` builds from (pyproject, README, the packages), copied so
    the build leaves no ``build/`` or ``*.egg-info`` (stale modules included) in the tree."""
    meta = tomllib.loads((root / "pyproject.toml").read_text())
    packages = meta.get("tool", {}).get("setuptools", {}).get("packages", ["assistantd"])
    for name in ("pyproject.toml", "README.md", "LICENSE", "MANIFEST.in", "setup.py", "setup.cfg"):
        if (root / name).is_file():
            shutil.copy2(root / name, dest / name)
    for pkg in packages:
        ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
        shutil.copytree(root / pkg.replace(".", "/"), dest / pkg.replace(".", "/"), ignore=ignore)
    return dest


_HELD: list[IO[bytes]] = []  # the venv's lock, held until this process exits


def _lock(venv: Path) -> None:
    """One bench run at a time per venv: another run's re-install would swap the package
    under this one's cold processes."""
    venv.parent.mkdir(parents=True, exist_ok=True)
    f = (venv.parent / f"{venv.name}.lock").open("ab")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        print(f"[bench] waiting for another bench run using {venv} ...", file=sys.stderr)
        fcntl.flock(f, fcntl.LOCK_EX)
    _HELD.append(f)


def ensure_install(root: Path, venv: Path = INSTALL_VENV) -> tuple[Install, dict[str, Any]]:
    """assistantd as a user installs it (``pip install ROOT``, not editable, with its
    dependencies but not the ``local`` extra) in a venv of the bench's own: made once, its
    dependencies re-resolved when pyproject.toml changes, and the tree as it is now
    re-installed into it at every run (``--no-deps --force-reinstall``). Holds the venv's
    lock until this process exits."""
    _lock(venv)
    t0 = time.monotonic()
    py = venv / "bin" / "python"
    steps = []
    if not py.exists():
        print(f"[bench] making {venv} (once) ...", file=sys.stderr, flush=True)
        _run([sys.executable, "-m", "venv", "--clear", str(venv)], timeout=300)
        steps.append("venv")
    pip = [str(py), "-m", "pip", "install", "-q"]
    stamp = venv / "bench-pyproject.sha256"
    want = hashlib.sha256((root / "pyproject.toml").read_bytes()).hexdigest()
    with tempfile.TemporaryDirectory(prefix="adb-src-") as tmp:
        src = str(_source_copy(root, Path(tmp)))
        if not stamp.exists() or stamp.read_text().strip() != want:
            print(f"[bench] installing assistantd's dependencies into {venv} ...", file=sys.stderr)
            _run([*pip, src])
            stamp.write_text(want + "\n")
            steps.append("pip install ROOT")
        _run([*pip, "--no-deps", "--force-reinstall", src])
        steps.append("pip install --no-deps --force-reinstall ROOT")
    probe = subprocess.run(
        [str(py), "-c", PROBE],
        capture_output=True,
        text=True,
        timeout=60,
        cwd="/",
        env={k: v for k, v in os.environ.items() if not k.startswith("PYTHON")},
    )
    package, editable, openai = probe.stdout.split("\n")[:3]
    if probe.returncode != 0 or not package.startswith(str(venv)) or editable != "False":
        raise RuntimeError(f"{venv} does not hold a plain install: {probe.stdout}{probe.stderr}")
    _run([str(py), "-m", "compileall", "-q", package])  # pip did; make sure of it
    info = {
        "measured": "pip install ROOT (not editable)",
        "venv": str(venv),
        "python": str(py),
        "package": package,
        "openai": openai,
        "steps": steps,
        "setup_s": round(time.monotonic() - t0, 1),
    }
    return Install("pip install ROOT (not editable)", str(py)), info


# The package an interpreter imports, whether any setuptools editable finder is on its
# path, and its openai version.
PROBE = """
import sys, importlib.metadata as m, assistantd, os
print(os.path.dirname(assistantd.__file__))
print(any('__editable__' in repr(f) for f in sys.meta_path))
print(m.version('openai'))
"""


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
    # stderr drains on a thread: read after stdout, a command that wrote more than a
    # pipe's 64 KiB to it (an import-time log, say) hung both processes.
    errs: list[bytes] = []
    drain = threading.Thread(target=lambda: errs.append(p.stderr.read()), daemon=True)
    drain.start()
    first = os.read(p.stdout.fileno(), 1 << 16)
    t_first = time.perf_counter()
    out = first + p.stdout.read()
    p.wait()
    drain.join()
    err = errs[0] if errs else b""
    t_end = time.perf_counter()
    if p.returncode != 0 or expect.encode() not in out:
        raise RuntimeError(f"{cmd[:3]} failed ({p.returncode}): {out[-200:]!r} {err[-500:]!r}")
    return t_first - t0, t_end - t0


class UpstreamProc:
    """``python -m tests.upstream --port 0`` in its own process."""

    def __init__(self, root: Path, env: dict[str, str], api_key: str | None = None) -> None:
        self.proc = subprocess.Popen(
            [
                PY,
                "-m",
                "tests.upstream",
                "--port",
                "0",
                *(["--api-key", api_key] if api_key else []),
            ],
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
        self,
        env: dict[str, str],
        base_url: str,
        name: str = "",
        data_home: Path | None = None,
        command: list[str] | None = None,
    ) -> None:
        """The unnamed daemon uses the default config and socket paths, as a user's does;
        named ones get their own config file, socket and (optionally) data folder.
        ``command`` starts it (default: ``python -m assistantd`` with the bench's Python)."""
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
            [*(command or [PY, "-m", "assistantd"]), "--quiet", *args],
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

    def wait_warm(self, timeout: float = 60) -> None:
        """Wait until the daemon's background SDK import is over: a steady-state figure
        taken while it runs would measure that import's hold on the GIL instead."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with Client(self.socket) as c:
                if c.call("daemon/status").get("sdk") in ("ready", "failed"):
                    return
            time.sleep(0.05)
        raise TimeoutError("the daemon's SDK import did not end")

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
