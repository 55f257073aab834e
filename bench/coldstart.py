"""Issue 13's first answers: ``assistantctl chat`` beside what a user would pick instead
(``llm``, installed by the bench in a venv of its own, and a cold ``openai`` script), the
stdlib ``assistant-ask``, and the first answer when no daemon is running: autostarted by
``assistantctl``, started by socket activation (``systemd-socket-activate``, as the socket
unit does), and from a daemon the units started at login (warm by the time it is asked).
Every command is a cold process timed from spawn to exit, stdout to a pipe; assistantd's
own processes and the SDK script run from ``inst``, the copy installed as a user installs
it (``procs.ensure_install``)."""

from __future__ import annotations

import secrets
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from measure import SDK_SCRIPT, wait_warm
from procs import DEV, PY, DaemonProc, Install, Row, UpstreamProc, median, run_timed

from assistantd.client import Client

ROOT = Path(__file__).resolve().parent.parent
LLM_VENV = Path.home() / ".cache" / "assistantd" / "bench-llm-venv"
MODEL = "fake-echo"
PROMPT = "hello"
ANSWER = "You said: hello"
S = "0 issue 13"


def ensure_llm() -> tuple[Path | None, str]:
    """``llm`` in its own venv (made once, then reused): its path and version, or None and
    why not (no network for pip, say)."""
    exe = LLM_VENV / "bin" / "llm"
    if not exe.exists():
        print(f"[bench] installing llm into {LLM_VENV} (once) ...", file=sys.stderr, flush=True)
        LLM_VENV.parent.mkdir(parents=True, exist_ok=True)
        made = subprocess.run(
            [sys.executable, "-m", "venv", "--clear", str(LLM_VENV)],
            capture_output=True,
            text=True,
            timeout=300,
        )
        pip = made.returncode == 0 and subprocess.run(
            [str(LLM_VENV / "bin" / "pip"), "install", "-q", "llm"],
            capture_output=True,
            text=True,
            timeout=1200,
        )
        if not exe.exists():
            why = (pip.stderr if pip else made.stderr).strip().splitlines()[-1:] or ["?"]
            return None, f"could not install llm: {why[0]}"
    version = subprocess.run([str(exe), "--version"], capture_output=True, text=True, timeout=60)
    return exe, version.stdout.strip()


def llm_home(base: Path, up: UpstreamProc) -> Path:
    """``$LLM_USER_PATH`` pointing ``llm`` at the same loopback upstream, keyless."""
    home = base / "llm"
    home.mkdir(exist_ok=True)
    (home / "extra-openai-models.yaml").write_text(
        f'- model_id: {MODEL}\n  model_name: {MODEL}\n  api_base: "{up.base_url}"\n'
        "  api_key_name: bench\n"
    )
    (home / "keys.json").write_text('{"bench": "none"}\n')
    return home


def _ms(samples: list[float]) -> float:
    return median(samples) * 1000


def bench_peers(
    rows: list[Row], d: DaemonProc, up: UpstreamProc, base: Path, runs: int, inst: Install
) -> dict[str, Any]:
    """A running daemon: ``assistantctl chat`` vs ``llm -m MODEL`` and a cold SDK script;
    ``assistant-ask`` end to end vs the bare interpreter it runs on. When ``inst`` is not
    the bench's own (editable) install, the same ``assistantctl chat`` from that one too,
    for information."""
    exe, llm_version = ensure_llm()
    py3 = shutil.which("python3", path="/usr/bin") or PY
    ask = str(ROOT / "clients" / "shell" / "assistant-ask")
    cmds: dict[str, tuple[list[str], dict[str, str], str]] = {
        "ctl": ([*inst.assistantctl, "chat", PROMPT], d.env, ANSWER),
        "sdk": ([inst.python, "-c", SDK_SCRIPT, up.base_url, PROMPT], d.env, ANSWER),
        "ask": ([py3, "-I", "-S", ask, "command", "[[reply:ls -la]] list"], d.env, "ls -la"),
        "bare": ([py3, "-I", "-S", "-c", "print(1)"], d.env, "1"),
    }
    if exe is not None:
        env = {**d.env, "LLM_USER_PATH": str(llm_home(base, up))}
        cmds["llm"] = ([str(exe), "-m", MODEL, PROMPT], env, ANSWER)
    if inst != DEV:
        cmds["ctl_dev"] = ([*DEV.assistantctl, "chat", PROMPT], d.env, ANSWER)
    res: dict[str, list[float]] = {k: [] for k in cmds}
    for i in range(runs + 1):  # the first round warms the page cache and is dropped
        for k, (cmd, env, expect) in cmds.items():
            total = run_timed(cmd, env, expect)[1]
            if i:
                res[k].append(total)
    m = {k: _ms(v) for k, v in res.items()}
    llm_ms = m.get("llm")
    rows += [
        Row(
            S,
            "assistantctl chat, daemon running",
            m["ctl"],
            "ms",
            llm_ms,
            f"llm -m {MODEL} ({llm_version})" if exe else f"llm: {llm_version}",
            "≥ 20x faster (≤ 0.05x)",
            llm_ms is not None and m["ctl"] <= 0.05 * llm_ms,
        ),
        Row(
            S,
            "assistantctl chat, daemon running",
            m["ctl"],
            "ms",
            m["sdk"],
            "cold openai SDK script",
            "≥ 20x faster (≤ 0.05x)",
            m["ctl"] <= 0.05 * m["sdk"],
        ),
        Row(
            S,
            "assistant-ask command (stdlib, -I -S), end to end",
            m["ask"],
            "ms",
            m["bare"],
            "python3 -I -S -c pass",
            "≤ 50 ms",
            m["ask"] <= 50,
        ),
    ]
    if "ctl_dev" in m:
        rows.append(
            Row(
                S,
                f"assistantctl chat, daemon running, from the {DEV.label} (informational)",
                m["ctl_dev"],
                "ms",
                m["ctl"],
                f"the same from {inst.label}",
            )
        )
    return {"median_ms": m, "llm": llm_version, "samples_s": res}


def _gone(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return True
    return "zombie" in status


def _shutdown(sock: Path, timeout: float = 20) -> None:
    """Ask the daemon on ``sock`` to stop and wait until its process is gone."""
    with Client(sock, timeout=30) as c:
        pid = c.call("daemon/status")["pid"]
        c.call("daemon/shutdown")
    deadline = time.monotonic() + timeout
    while not _gone(pid):
        if time.monotonic() > deadline:
            raise TimeoutError(f"the daemon {pid} on {sock} did not stop")
        time.sleep(0.01)


def _wait_for(path: Path, proc: subprocess.Popen[bytes], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{path} did not appear ({proc.args!r} exited {proc.poll()})")
        time.sleep(0.005)


def _keyed(base: Path, cold: dict[str, str], inst: Install) -> tuple[UpstreamProc, Path] | None:
    """An upstream that takes one key only, a config routing the bench's model to it as a
    provider that needs a key, and that key in the keyring (as `keys set` stores it), so a
    cold start reads it from there: what a user of OpenAI's API starts. None: no keyring."""
    key = f"sk-bench-{secrets.token_hex(16)}"
    stored = subprocess.run(
        [
            inst.python,
            "-c",
            "import sys, keyring; keyring.set_password('assistantd', 'keyed', sys.stdin.read())",
        ],
        input=key,
        text=True,
        capture_output=True,
        env=cold,
        timeout=60,
    )
    if stored.returncode != 0:
        return None
    up = UpstreamProc(ROOT, cold, api_key=key)
    config = base / "keyed.toml"
    config.write_text(
        f'default_model = "{MODEL}"\n[providers.keyed]\nbase_url = "{up.base_url}"\n'
        'models = ["fake-*"]\nneeds_key = true\n'
    )
    return up, config


def _activated(env: dict[str, str], sock: Path, inst: Install) -> subprocess.Popen[bytes]:
    """``systemd-socket-activate`` holding ``sock``: the first connection execs the daemon
    on it in place, the way the socket unit starts the service."""
    # What a systemd user unit is given: the user manager's environment (the session
    # bus, so the keyring answers; HOME, PATH, the locale), with the unit's own settings.
    # Without the bus address, each cold start paid keyring's search of every backend.
    given = ("DBUS_SESSION_BUS_ADDRESS", "HOME", "PATH", "LANG", "LC_ALL")
    names = [k for k in env if k.startswith("XDG_") or k in given or k.startswith("ASSISTANTD_")]
    return subprocess.Popen(
        [
            "systemd-socket-activate",
            "-l",
            str(sock),
            *(f"-E{k}" for k in names),
            *inst.daemon,
            "--quiet",
        ],
        env=env,
        cwd="/",
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def bench_first_answer(
    rows: list[Row],
    base: Path,
    env: dict[str, str],
    up: UpstreamProc,
    runs: int,
    inst: Install,
) -> dict[str, Any]:
    """The first answer of the day: no daemon (autostart), socket activation, and a
    daemon started at login that has finished warming; each against the cold SDK script,
    run right before each cold start of either kind (paired: this machine's speed drifts
    by 2x within an hour, and a baseline from another section moved the ratio by 0.2).
    Each has its own socket and data folder, so the bench's main daemon keeps serving
    beside them."""
    run_dir = Path(env["XDG_RUNTIME_DIR"]) / "assistantd"
    cold = {
        **env,
        "XDG_DATA_HOME": str(base / "colddata"),
        "XDG_STATE_HOME": str(base / "coldstate"),
    }
    ctl = [*inst.assistantctl, "chat", PROMPT]
    res: dict[str, list[float]] = {
        "autostart": [],
        "activation": [],
        "activation_keyed": [],
        "login": [],
        "sdk": [],
    }
    sdk = [inst.python, "-c", SDK_SCRIPT, up.base_url, PROMPT]

    def baseline(i: int) -> None:
        total = run_timed(sdk, cold, ANSWER)[1]
        if i:
            res["sdk"].append(total)

    auto_sock = run_dir / "autostart.sock"
    auto_env = {**cold, "ASSISTANTD_SOCKET": str(auto_sock)}
    for i in range(runs + 1):
        baseline(i)
        total = run_timed(ctl, auto_env, ANSWER)[1]
        _shutdown(auto_sock)
        if i:
            res["autostart"].append(total)

    act_sock = run_dir / "activated.sock"
    act_env = {**cold, "ASSISTANTD_SOCKET": str(act_sock)}
    have_activate = shutil.which("systemd-socket-activate") is not None

    def activated(i: int, env: dict[str, str], into: str) -> None:
        baseline(i)
        proc = _activated(env, act_sock, inst)
        try:
            _wait_for(act_sock, proc)
            total = run_timed(ctl, env, ANSWER)[1]
            _shutdown(act_sock)
            proc.wait(20)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        act_sock.unlink(missing_ok=True)
        if i:
            res[into].append(total)

    for i in range(runs + 1 if have_activate else 0):
        activated(i, act_env, "activation")
    keyed = _keyed(base, cold, inst) if have_activate else None
    try:
        for i in range(runs + 1 if keyed else 0):
            assert keyed is not None
            activated(i, {**act_env, "ASSISTANTD_CONFIG": str(keyed[1])}, "activation_keyed")
    finally:
        if keyed:
            keyed[0].stop()

    for i in range(runs + 1):
        state = base / f"loginstate{i}"
        login_env = {**cold, "XDG_STATE_HOME": str(state)}
        d = DaemonProc(
            login_env, up.base_url, "login", data_home=base / "colddata", command=inst.daemon
        )
        try:
            wait_warm(state)  # started "at login": long warm by the first use
            total = run_timed(ctl, {**d.env, "ASSISTANTD_SOCKET": str(d.socket)}, ANSWER)[1]
        finally:
            d.stop()
        if i:
            res["login"].append(total)

    m = {k: _ms(v) if v else None for k, v in res.items()}
    login, sdk_ms = m["login"], m["sdk"]

    def half(label: str, value: float | None, missing: str) -> Row:
        """A cold start against the paired cold script, to be at most half of it."""
        met = value is not None and sdk_ms is not None and value <= 0.5 * sdk_ms
        note = "cold openai SDK script, paired" if value is not None else missing
        return Row(S, label, value, "ms", sdk_ms, note, "≤ 0.5x", met)

    rows += [
        half(
            "no daemon running -> assistantctl chat -> answer (autostart)",
            m["autostart"],
            "cold openai SDK script",
        ),
        half(
            "socket activation: first request starts the daemon",
            m["activation"],
            "cold openai SDK script (no systemd-socket-activate)",
        ),
        half(
            "socket activation, the provider's key read from the keyring",
            m["activation_keyed"],
            "cold openai SDK script (no keyring or no systemd-socket-activate)",
        ),
        Row(
            S,
            "daemon started at login (warm): first request",
            login,
            "ms",
            sdk_ms,
            "cold openai SDK script",
            "≤ 150 ms",
            login is not None and login <= 150,
        ),
    ]
    return {"median_ms": m, "samples_s": res}
