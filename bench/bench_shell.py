"""Keypress to first character on screen: the bash widget against a cold ``python -c``
``openai`` script, both in a real bash in tmux, both against the same loopback upstream.

    python bench/bench_shell.py [--runs 10] [--json bench/results/shell.json]

The widget (Alt-a) goes bash -> assistant-ask (``python3 -I -S``, stdlib only) -> the
daemon's socket -> the upstream over the daemon's warm HTTP connection; the answer
replaces the line. The baseline is what a user without the daemon would type: a
``python -c`` script that imports the ``openai`` SDK and streams the same request (same
system prompt, same message) straight from the upstream, timed from Enter to its first
character. The clock starts just before tmux sends the key and stops when
``capture-pane`` first shows the answer; polling costs a few ms, the same for both.
The upstream answers at once (no ``[[slow:S]]``), so the figures are the clients' own
cost. Everything runs in throwaway XDG folders.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from assistantd.client import Client  # noqa: E402
from tests.tmux import Tmux  # noqa: E402

PROMPT = "READY$"
ANSWER = "ls -la"
SYSTEM = (  # the daemon's built-in shell-command role, as the widget has it filled in
    "Turn the user's description into one shell command for bash on Linux. "
    "Reply with the command only, no prose, no code fences."
)
SDK_SCRIPT = """
import sys, openai
c = openai.OpenAI(base_url=sys.argv[1], api_key="none", max_retries=0)
s = c.chat.completions.create(model="fake-echo", stream=True, messages=[
    {"role": "system", "content": sys.argv[2]}, {"role": "user", "content": sys.argv[3]}])
for ch in s:
    if ch.choices and ch.choices[0].delta.content:
        sys.stdout.write(ch.choices[0].delta.content)
        sys.stdout.flush()
print()
"""


def median_ms(values: list[float]) -> float:
    return round(statistics.median(values) * 1000, 1)


def timed(term: Tmux, key: str, done: Any, timeout: float = 30) -> float:
    """Seconds from sending ``key`` until ``done(term)`` holds on screen."""
    t0 = time.perf_counter()
    term.keys(key)
    deadline = t0 + timeout
    while not done(term):
        if time.perf_counter() > deadline:
            raise TimeoutError(f"no answer on screen:\n{term.screen()}")
    return time.perf_counter() - t0


def cold_start_ms(command: list[str], runs: int, env: dict[str, str] | None = None) -> float:
    """Median wall time of a fresh process running ``command``."""
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run(command, capture_output=True, check=True, timeout=60, env=env)
        times.append(time.perf_counter() - t0)
    return median_ms(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--json", type=Path, default=ROOT / "bench" / "results" / "shell.json")
    a = ap.parse_args()
    for tool in ("tmux", "bash"):
        if not shutil.which(tool):
            sys.exit(f"bench_shell: {tool} is needed")

    work = Path(tempfile.mkdtemp(prefix="ad-bsh-", dir="/tmp"))
    env = {
        **os.environ,
        "XDG_RUNTIME_DIR": str(work / "run"),
        "XDG_CONFIG_HOME": str(work / "config"),
        "XDG_DATA_HOME": str(work / "data"),
        "XDG_STATE_HOME": str(work / "state"),
        "XDG_CACHE_HOME": str(work / "cache"),
        "HOME": str(work / "home"),
    }
    for var in ("ASSISTANTD_SOCKET", "ASSISTANTD_CONFIG", "TMUX", "TMUX_PANE"):
        env.pop(var, None)
    (work / "run").mkdir(mode=0o700)
    (work / "home").mkdir()
    procs: list[subprocess.Popen[bytes]] = []
    term: Tmux | None = None
    try:
        up = subprocess.Popen(
            [sys.executable, str(ROOT / "tests" / "upstream.py"), "--port", "0"],
            stdout=subprocess.PIPE,
            env=env,
        )
        procs.append(up)
        assert up.stdout is not None
        base_url = up.stdout.readline().decode().split()[1]
        config = work / "config" / "assistantd" / "config.toml"
        config.parent.mkdir(parents=True)
        config.write_text(
            f'default_model = "fake-echo"\n[providers.fake]\nbase_url = "{base_url}"\n'
            f'models = ["fake-*"]\nneeds_key = false\n'
        )
        daemon = subprocess.Popen(
            [sys.executable, "-m", "assistantd", "--quiet"],
            env=env,
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        procs.append(daemon)
        sock = work / "run" / "assistantd" / "assistantd.sock"
        for _ in range(1000):
            try:
                Client(sock).call("daemon/status")
                break
            except Exception:
                time.sleep(0.02)

        rc = work / "home" / ".bashrc"
        sdk = f"{shlex.quote(sys.executable)} -c {shlex.quote(SDK_SCRIPT)} {shlex.quote(base_url)}"
        rc.write_text(
            f"PS1='{PROMPT} '\nHISTFILE=/dev/null\n"
            f"source {ROOT / 'clients' / 'shell' / 'assistant.bash'}\n"
            f'ask_openai() {{ {sdk} {shlex.quote(SYSTEM)} "$1"; }}\n'
        )
        term = Tmux(
            ["bash", "--rcfile", str(rc), "--noprofile", "-i"],
            env=env,
            socket=work / "run" / "tmux.sock",
            width=200,
            height=50,
        )
        term.wait_line(PROMPT, timeout=15)

        def widget_once(i: int) -> float:
            term.keys("C-a", "C-k", "C-l")
            term.wait_line(PROMPT)
            term.type(f"show all files with details, run {i} [[reply:{ANSWER}]]")
            term.wait(lambda t: t.last_line().endswith("]]"))
            return timed(term, "M-a", lambda t: t.last_line().startswith(f"{PROMPT} {ANSWER[0]}"))

        def sdk_once(i: int) -> float:
            term.keys("C-a", "C-k", "C-l")
            term.wait_line(PROMPT)
            term.type(f"ask_openai 'show all files with details, run {i} [[reply:{ANSWER}]]'")
            term.wait(lambda t: t.last_line().endswith("'"))
            return timed(
                term,
                "Enter",
                lambda t: any(
                    x.startswith(ANSWER[0]) and not x.startswith(PROMPT) for x in t.lines()
                ),
            )

        widget_once(0), sdk_once(0)  # warm the page cache and the daemon's HTTP connection
        widget = [widget_once(i) for i in range(1, a.runs + 1)]
        sdk_times = [sdk_once(i) for i in range(1, a.runs + 1)]
        py3 = shutil.which("python3", path="/usr/bin") or sys.executable
        helper = str(ROOT / "clients/shell/assistant-ask")
        helper_start = cold_start_ms([py3, "-I", "-S", helper, "--print-socket"], a.runs)
        # The whole client on its own: start, socket, request, answer (issue 13: <= 50 ms),
        # next to the bare interpreter it runs on.
        helper_e2e = cold_start_ms(
            [py3, "-I", "-S", helper, "command", f"[[reply:{ANSWER}]] list"], a.runs, env
        )
        bare_python = cold_start_ms([py3, "-I", "-S", "-c", "pass"], a.runs)
        openai_import = cold_start_ms([sys.executable, "-c", "import openai"], a.runs)
    finally:
        if term is not None:
            term.close()
        for p in reversed(procs):
            p.terminate()
            p.wait(15)
        shutil.rmtree(work, ignore_errors=True)

    w, s = median_ms(widget), median_ms(sdk_times)
    rows = [
        ("bash widget (Alt-a): keypress -> first character", w, "ms"),
        ("cold python -c openai script: Enter -> first character", s, "ms"),
        ("ratio widget / openai script", round(w / s, 3), "x"),
        ("assistant-ask start-up (python3 -I -S, --print-socket)", helper_start, "ms"),
        ("assistant-ask command, end to end against the daemon", helper_e2e, "ms"),
        ("python3 -I -S -c pass", bare_python, "ms"),
        ("python -c 'import openai' start-up", openai_import, "ms"),
    ]
    print(f"\nshell hotkey latency, median of {a.runs} (loopback upstream, no added delay)\n")
    width = max(len(r[0]) for r in rows)
    for name, value, unit in rows:
        print(f"  {name.ljust(width)}  {value:>8} {unit}")
    result = {
        "runs": a.runs,
        "widget_ms": [round(x * 1000, 1) for x in widget],
        "openai_script_ms": [round(x * 1000, 1) for x in sdk_times],
        "widget_median_ms": w,
        "openai_script_median_ms": s,
        "ratio": round(w / s, 3),
        "helper_startup_median_ms": helper_start,
        "helper_end_to_end_median_ms": helper_e2e,
        "bare_python_median_ms": bare_python,
        "openai_import_median_ms": openai_import,
        "machine": {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "load_average_1m": round(os.getloadavg()[0], 2),
            "system": platform.platform(),
            "tmux": subprocess.run(["tmux", "-V"], capture_output=True, text=True).stdout.strip(),
            "bash": subprocess.run(
                ["bash", "--version"], capture_output=True, text=True
            ).stdout.splitlines()[0],
        },
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    a.json.parent.mkdir(parents=True, exist_ok=True)
    a.json.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwrote {a.json}")


if __name__ == "__main__":
    main()
