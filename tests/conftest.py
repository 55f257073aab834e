"""Shared fixtures: every test gets its own XDG folders (no test touches the real home),
a real OpenAI-compatible upstream on loopback, and real daemons as subprocesses."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from assistantd.client import Client
from tests.rawsock import Raw
from tests.upstream import Upstream

ROOT = Path(__file__).resolve().parent.parent
KEY_VARS = (
    "OPENAI_API_KEY",
    "GOOGLE_API_KEY",
    "GEMINI_API_KEY",
    "XAI_API_KEY",
    "PLAMO_API_KEY",
    "ANTHROPIC_API_KEY",
    "OPENROUTER_API_KEY",
    "GROQ_API_KEY",
    "DEEPSEEK_API_KEY",
    "MISTRAL_API_KEY",
)


@pytest.fixture(autouse=True)
def isolated_dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """XDG folders under the test's tmp dir; a short runtime dir (socket paths are limited)."""
    runtime = Path(tempfile.mkdtemp(prefix="ad-", dir="/tmp"))
    runtime.chmod(0o700)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(runtime))
    for var, sub in (
        ("XDG_DATA_HOME", "data"),
        ("XDG_CONFIG_HOME", "config"),
        ("XDG_CACHE_HOME", "cache"),
        ("XDG_STATE_HOME", "state"),
    ):
        monkeypatch.setenv(var, str(tmp_path / sub))
    for var in ("ASSISTANTD_SOCKET", "ASSISTANTD_CONFIG", "LISTEN_FDS", "LISTEN_PID", *KEY_VARS):
        monkeypatch.delenv(var, raising=False)
    yield tmp_path
    shutil.rmtree(runtime, ignore_errors=True)


@pytest.fixture(autouse=True)
def close_raw_sockets() -> Iterator[None]:
    """Raw sockets a test left open are closed when it ends: no fd leak, no ResourceWarning."""
    yield
    Raw.close_all()


@pytest.fixture(scope="session")
def upstream_server() -> Iterator[Upstream]:
    with Upstream(context_windows={"fake-small": 300, "fake-tiny": 120}) as up:
        yield up


@pytest.fixture
def upstream(upstream_server: Upstream) -> Upstream:
    """The loopback OpenAI-compatible server, its request log cleared for this test."""
    upstream_server.reset()
    return upstream_server


def fake_provider_config(
    up: Upstream,
    *,
    name: str = "fake",
    needs_key: bool = False,
    extra: str = "",
    streaming: str = "http",
) -> str:
    return f"""
default_model = "fake-echo"
streaming = "{streaming}"
[providers.{name}]
base_url = "{up.base_url}"
models = ["fake-*", "nologprobs-*"]
needs_key = {"true" if needs_key else "false"}
key_env = "FAKE_API_KEY"

[models."fake-small"]
context_window = 300

[models."fake-tiny"]
context_window = 120
{extra}
"""


class Daemon:
    """A real ``assistantd`` process on its own socket."""

    def __init__(
        self,
        config: str,
        env: dict[str, str] | None = None,
        args: tuple[str, ...] = (),
        wait: bool = True,
    ) -> None:
        self.config_path = Path(os.environ["XDG_CONFIG_HOME"]) / "assistantd" / "config.toml"
        self.config_path.parent.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(config)
        self.socket = Path(os.environ["XDG_RUNTIME_DIR"]) / "assistantd" / "assistantd.sock"
        self.env = {**os.environ, **(env or {})}
        self.stderr_path = (
            Path(os.environ["XDG_STATE_HOME"]) / f"daemon-stderr-{time.time_ns()}.log"
        )
        self.stderr_path.parent.mkdir(parents=True, exist_ok=True)
        self._stderr = open(self.stderr_path, "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "assistantd", *args],
            env=self.env,
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=self._stderr,
        )
        if wait:
            self.wait_ready()

    def wait_ready(self, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"daemon exited {self.proc.returncode}: {self.stderr()}")
            try:
                with Client(self.socket) as c:
                    c.call("daemon/status")
                return
            except Exception:
                time.sleep(0.02)
        raise TimeoutError(f"daemon not ready: {self.stderr()}")

    def client(self, **kw: Any) -> Client:
        c = Client(self.socket, **kw)
        c.connect()
        return c

    def call(self, method: str, params: dict[str, Any] | None = None, **kw: Any) -> Any:
        with self.client() as c:
            return c.call(method, params, **kw)

    def stderr(self) -> str:
        self._stderr.flush()
        return self.stderr_path.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._stderr.close()
        return self.proc.returncode


@pytest.fixture
def make_daemon() -> Iterator[Any]:
    """Start daemons with a given config; all are stopped at the end of the test."""
    started: list[Daemon] = []

    def make(config: str = "", **kw: Any) -> Daemon:
        d = Daemon(config, **kw)
        started.append(d)
        return d

    yield make
    for d in started:
        d.stop()


@pytest.fixture
def daemon(make_daemon: Any, upstream: Upstream) -> Daemon:
    """A daemon whose ``fake`` provider is the loopback upstream (no key needed)."""
    d: Daemon = make_daemon(fake_provider_config(upstream))
    return d


def have_secret_service() -> bool:
    import keyring

    return type(keyring.get_keyring()).__module__.endswith("SecretService")


@pytest.fixture
def secret_service() -> None:
    """The real Secret Service (gnome-keyring in a D-Bus session) must be there."""
    assert have_secret_service(), (
        "no Secret Service: run the tests with scripts/test (dbus-run-session + gnome-keyring)"
    )
