"""A real terminal for the shell tests and the shell benchmark: one private tmux server
running one interactive shell, driven with ``send-keys`` and read with ``capture-pane``."""

from __future__ import annotations

import os
import shlex
import subprocess
import time
from collections.abc import Callable
from pathlib import Path


class Tmux:
    """One pane of a private tmux server (its own socket, no user config)."""

    def __init__(
        self,
        command: list[str],
        *,
        env: dict[str, str],
        socket: Path,
        width: int = 120,
        height: int = 30,
    ) -> None:
        self.base = ["tmux", "-S", str(socket), "-f", "/dev/null"]
        env = {k: v for k, v in env.items() if k not in ("TMUX", "TMUX_PANE")}
        self._run(
            "new-session",
            "-d",
            "-s",
            "t",
            "-x",
            str(width),
            "-y",
            str(height),
            shlex.join(command),
            env=env,
        )

    def _run(self, *args: str, env: dict[str, str] | None = None) -> str:
        done = subprocess.run(
            [*self.base, *args],
            env=env or os.environ.copy(),
            capture_output=True,
            text=True,
            timeout=10,
        )
        if done.returncode != 0:
            raise RuntimeError(f"tmux {args[0]} failed: {done.stderr.strip()}")
        return done.stdout

    def keys(self, *keys: str) -> None:
        """Press keys by tmux name (``M-a``, ``C-c``, ``Enter``)."""
        self._run("send-keys", "-t", "t", *keys)

    def type(self, text: str) -> None:
        """Type text literally."""
        self._run("send-keys", "-t", "t", "-l", text)

    def screen(self) -> str:
        return self._run("capture-pane", "-p", "-t", "t")

    def title(self) -> str:
        """The pane's title: what a program last set with OSC 0 or 2."""
        return self._run("display-message", "-p", "-t", "t", "#{pane_title}").strip()

    def lines(self) -> list[str]:
        return [line for line in self.screen().splitlines() if line.strip()]

    def last_line(self) -> str:
        lines = self.lines()
        return lines[-1] if lines else ""

    def wait(self, check: Callable[[Tmux], bool], timeout: float = 10, what: str = "") -> None:
        """Poll the screen until ``check`` holds; fail with the screen if it never does."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if check(self):
                return
            time.sleep(0.02)
        raise AssertionError(f"timed out waiting for {what or check}; screen:\n{self.screen()}")

    def wait_text(self, text: str, timeout: float = 10) -> None:
        self.wait(lambda t: text in t.screen(), timeout, repr(text))

    def wait_line(self, line: str, timeout: float = 10) -> None:
        """Wait until the last non-empty line (the prompt and its command line) is ``line``."""
        self.wait(lambda t: t.last_line() == line, timeout, f"last line {line!r}")

    def close(self) -> None:
        subprocess.run([*self.base, "kill-server"], capture_output=True, timeout=10, check=False)


def run_on_pty(
    command: list[str], *, input: bytes = b"", env: dict[str, str], timeout: float = 30
) -> tuple[int, bytes]:
    """Run ``command`` with stdout and stderr on a new pseudo-terminal (so it sees a TTY)
    and ``input`` on a pipe as stdin; its exit status and every byte the terminal got."""
    import select

    master, slave = os.openpty()
    try:
        proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=slave, stderr=slave, env=env)
    finally:
        os.close(slave)
    assert proc.stdin is not None
    proc.stdin.write(input)
    proc.stdin.close()
    out = b""
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if not select.select([master], [], [], 0.1)[0]:
                continue
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: every writer has closed the terminal
                break
            if not chunk:
                break
            out += chunk
        else:
            proc.kill()
            proc.wait()
            raise AssertionError(f"{command[0]} did not finish in {timeout} s: {out!r}")
    finally:
        os.close(master)
    return proc.wait(timeout), out
