"""The benchmark suite: ``python bench/run.py [--quick] [--json bench/results/bench.json]``.

Prints one table and writes the raw figures as JSON. Every figure sits next to a
baseline measured in the same run against the same loopback upstream
(``tests/upstream.py``, run in its own process so it never shares the GIL with the
client being measured), and the ratio between them. Targets are reported, not asserted.

assistantd's own processes (``assistantctl``, the daemons) start from a copy installed the
way a user installs it, ``pip install ROOT`` (not editable), in a venv of the bench's own
that every run re-installs the tree into; the editable dev install is timed once beside
it, for information. Everything runs in throwaway XDG folders; nothing touches the user's
own daemon.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

import coldstart  # noqa: E402
import measure  # noqa: E402
import procs  # noqa: E402
import storebench  # noqa: E402
from procs import DEV, PY, DaemonProc, Install, Row, UpstreamProc  # noqa: E402

KEY_VARS = ("OPENAI_API_KEY", "GOOGLE_API_KEY", "GEMINI_API_KEY", "XAI_API_KEY", "PLAMO_API_KEY")


def isolate() -> tuple[Path, dict[str, str]]:
    """Point this process (and its children) at fresh XDG folders (``procs.fresh_xdg``),
    with no provider key, socket activation or Python setting of this shell's."""
    base = procs.fresh_xdg("adb-")
    for var in ("LISTEN_FDS", "LISTEN_PID", *KEY_VARS):
        os.environ.pop(var, None)
    # A user's Python reads and writes bytecode caches and finds assistantd where pip put it.
    for var in ("PYTHONDONTWRITEBYTECODE", "PYTHONPATH", "PYTHONPYCACHEPREFIX"):
        os.environ.pop(var, None)
    return base, dict(os.environ)


def install(no_install: bool) -> tuple[Install, dict[str, Any]]:
    """The copy to measure (``procs.ensure_install``), or the editable dev install when
    asked to or when it cannot be made; both with their bytecode compiled."""
    # The dev tree too: it is timed beside the install, and a `PYTHONDONTWRITEBYTECODE=1`
    # shell leaves it without bytecode, which each cold process would then compile.
    subprocess.run([PY, "-m", "compileall", "-q", str(ROOT / "assistantd")], check=False)
    why = "--editable"
    if not no_install:
        try:
            inst, info = procs.ensure_install(ROOT)
            print(
                f"[bench] installed the tree into {info['venv']} in {info['setup_s']} s",
                file=sys.stderr,
                flush=True,
            )
            return inst, info
        except (OSError, RuntimeError, subprocess.SubprocessError, ValueError) as e:
            why = f"could not install: {e}"
            print(f"[bench] WARNING: {why}; measuring the {DEV.label}", file=sys.stderr)
    info = {"measured": f"{DEV.label} ({why})", "python": DEV.python}
    return DEV, info


def machine() -> dict[str, Any]:
    mem_kib = 0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            mem_kib = int(line.split()[1])
    cpu = ""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    return {
        "nproc": os.cpu_count(),
        "memory_gib": round(mem_kib / 1024**2, 1),
        "cpu": cpu,
        "python": platform.python_version(),
        "uname": " ".join(platform.uname()),
        "sqlite": __import__("sqlite3").sqlite_version,
        "loadavg": os.getloadavg(),
        "openai": __import__("importlib.metadata").metadata.version("openai"),
        "keyring": "gnome-keyring (Secret Service) in a private D-Bus session"
        if os.environ.get(KEYRING_MARK)
        else "none (no Secret Service: keyring searches every backend at each cold start)",
    }


def measured(install: dict[str, Any]) -> str:
    """One line saying which install of assistantd the cold processes ran from."""
    where = f" in {install['venv']}, openai {install['openai']}" if "venv" in install else ""
    return f"measured: {install['measured']}{where} ({install['python']})"


def fmt(v: float | None, unit: str) -> str:
    if v is None:
        return "-"
    if unit == "ms":
        return f"{v:.2f} ms" if v < 10 else f"{v:.1f} ms" if v < 100 else f"{v:.0f} ms"
    if unit in ("MB", "MiB"):
        return f"{v:.1f} {unit}"
    if unit == "µs":
        return f"{v:.1f} µs"
    if unit == "/s":
        return f"{v:,.0f}/s"
    return f"{v:g} {unit}".strip()


def table(rows: list[Row]) -> list[list[str]]:
    out = [["section", "measurement", "value", "baseline", "ratio", "target"]]
    for r in rows:
        base = f"{fmt(r.baseline, r.unit)} ({r.baseline_name})" if r.baseline_name else "-"
        ratio = f"{r.ratio:.2f}x" if r.ratio is not None else "-"
        target = r.target + (" ✔" if r.met else " ✘") if r.target else ""
        out.append([r.section, r.name, fmt(r.value, r.unit), base, ratio, target])
    return out


def print_table(rows: list[Row]) -> None:
    cells = table(rows)
    widths = [max(len(c[i]) for c in cells) for i in range(len(cells[0]))]
    for n, c in enumerate(cells):
        print("  ".join(x.ljust(w) for x, w in zip(c, widths, strict=True)).rstrip())
        if n == 0:
            print("  ".join("-" * w for w in widths))


def markdown(rows: list[Row], info: dict[str, Any], command: str) -> str:
    cells = table(rows)
    lines = ["| " + " | ".join(cells[0]) + " |", "|" + "---|" * len(cells[0])]
    lines += ["| " + " | ".join(c) + " |" for c in cells[1:]]
    m = info
    head = [
        f"- {m['nproc']} cores ({m['cpu']}), {m['memory_gib']} GiB memory",
        f"- Python {m['python']}, SQLite {m['sqlite']}, openai {m['openai']}",
        f"- `{m['uname']}`",
        f"- keyring: {m['keyring']}",
        f"- command: `{command}`",
        f"- {measured(m['install'])}",
    ]
    return "\n".join([*head, "", *lines, ""])


# Issue 13's table: (row name, or part of it; the issue's target when the row has none)
ISSUE_13 = (
    ("assistantctl chat, daemon running", ""),
    ("assistant-ask command", ""),
    ("no daemon running", ""),
    ("socket activation", ""),
    ("daemon started at login", ""),
    ("500 chunks via daemon: chunks/s", ""),
    ("100 streams: p50 first token", ""),
    ("search 'common'", "< 50 ms"),
    ("search '1 letter'", "< 50 ms"),
    ("search '2 letters'", "< 50 ms"),
    ("search '3 letters'", "< 50 ms"),
    ("search '4 letters'", "< 50 ms"),
    ("search '5 letters'", "< 50 ms"),
    ("offset 50,000", ""),
    ("by cursor", "< 5 ms"),
)


def issue_13(rows: list[Row]) -> list[Row]:
    """The rows of issue 13's table, in its order, each with its target."""
    out = []
    for part, target in ISSUE_13:
        for r in rows:
            if part in r.name:
                if target and not r.target:
                    limit = float(target.split()[1])
                    met = r.value is not None and r.value < limit
                    r = Row(r.section, r.name, r.value, r.unit, r.baseline, r.baseline_name,
                            target, met)  # fmt: skip
                out.append(r)
    return out


KEYRING_MARK = "ASSISTANTD_BENCH_KEYRING"


def under_a_keyring(argv: list[str]) -> None:
    """Re-run this bench inside a private D-Bus session with an unlocked gnome-keyring (as
    ``scripts/test`` runs the suite), so a daemon's first request reads the keyring the way
    it does in a user's desktop session: with no Secret Service, keyring's search of every
    backend is part of each cold start, which no logged-in user pays. Returns (and the bench
    runs without one, saying so) when the tools are missing or ``--no-keyring`` is given."""
    tools = ("dbus-run-session", "gnome-keyring-daemon")
    if os.environ.get(KEYRING_MARK) or "--no-keyring" in argv:
        return
    if not all(shutil.which(t) for t in tools):
        print("[bench] no dbus-run-session/gnome-keyring-daemon: no keyring", file=sys.stderr)
        return
    home = tempfile.mkdtemp(prefix="adb-keyring-", dir="/tmp")
    script = (
        'export XDG_DATA_HOME="$0/data" XDG_RUNTIME_DIR="$0/run"; '
        'mkdir -p "$XDG_RUNTIME_DIR" && chmod 700 "$XDG_RUNTIME_DIR"; '
        'eval "$(printf pw | gnome-keyring-daemon --unlock --components=secrets 2>/dev/null)"; '
        "unset XDG_DATA_HOME XDG_RUNTIME_DIR; "
        f'{KEYRING_MARK}=1 exec "$1" "${{@:2}}"'
    )
    cmd = ["dbus-run-session", "--", "bash", "-c", script, home, sys.executable, *sys.argv]
    code = subprocess.run(cmd).returncode
    shutil.rmtree(home, ignore_errors=True)
    sys.exit(code)


def main(argv: list[str] | None = None) -> int:
    under_a_keyring(sys.argv[1:] if argv is None else argv)
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--no-keyring",
        action="store_true",
        help="run without the private D-Bus session and gnome-keyring (no Secret Service)",
    )
    ap.add_argument("--quick", action="store_true", help="fewer repeats, a 10k/100k store")
    ap.add_argument(
        "--json",
        default=str(ROOT / "bench" / "results" / "bench.json"),
        help="where to write the figures (default: bench/results/bench.json)",
    )
    ap.add_argument("--markdown", help="also write the table as Markdown here")
    ap.add_argument(
        "--editable",
        action="store_true",
        help="measure the editable dev install this runs from instead of a pip-installed copy",
    )
    ap.add_argument(
        "--only",
        help="comma-separated sections: peers,first,cold,relay,concurrency,store,startup,cli",
    )
    args = ap.parse_args(argv)
    only = set(args.only.split(",")) if args.only else None
    q = args.quick
    json_out = Path(args.json).resolve()
    md_out = Path(args.markdown).resolve() if args.markdown else None
    started = time.monotonic()
    load_before = os.getloadavg()  # other work on the machine, before pip adds its own
    inst, install_info = install(args.editable)  # before isolate(): pip keeps its cache
    base, env = isolate()
    cwd = Path.cwd()
    os.chdir(base)  # cold processes start outside the tree, whose assistantd/ `-m` would find
    rows: list[Row] = []
    raw: dict[str, Any] = {}
    upstream = UpstreamProc(ROOT, env)
    try:
        daemon = DaemonProc(env, upstream.base_url, command=inst.daemon)
        try:
            n = 5 if q else 20

            def first() -> dict[str, Any]:
                return coldstart.bench_first_answer(rows, base, env, upstream, 3 if q else 10, inst)

            sections: list[tuple[str, Callable[[], dict[str, Any]]]] = [
                ("peers", lambda: coldstart.bench_peers(rows, daemon, upstream, base, n, inst)),
                ("first", first),
                ("cold", lambda: measure.bench_cold(rows, daemon, upstream, 5 if q else 20, inst)),
                ("relay", lambda: measure.bench_relay(rows, daemon, upstream, runs=3 if q else 10)),
                (
                    "concurrency",
                    lambda: measure.bench_concurrency(
                        rows, daemon, upstream, levels=(1, 10, 100), chunks=500
                    ),
                ),
                (
                    "store",
                    lambda: storebench.bench_store(
                        rows,
                        base,
                        env,
                        upstream,
                        daemon,
                        conversations=10_000 if q else 100_000,
                        per_conversation=10,
                        runs=10 if q else 30,
                    ),
                ),
                (
                    "startup",
                    lambda: measure.bench_startup(rows, base, env, upstream, 3 if q else 10, inst),
                ),
                ("cli", lambda: measure.bench_cli(rows, daemon, 5 if q else 20, inst)),
            ]
            for name, run in sections:
                if only and name not in only:
                    continue
                t = time.monotonic()
                print(f"[bench] {name} ...", file=sys.stderr, flush=True)
                raw[name] = run()
                raw[name]["seconds"] = round(time.monotonic() - t, 1)
        finally:
            daemon.stop()
    finally:
        upstream.stop()
        os.chdir(cwd)
        shutil.rmtree(base, ignore_errors=True)
    info = machine() | {"loadavg_before": load_before, "install": install_info}
    command = (
        "python bench/run.py" + (" --quick" if q else "") + (" --editable" if args.editable else "")
    )
    print(f"\n{measured(install_info)}\n")
    print_table(rows)
    summary = issue_13(rows)
    if summary:
        print("\nIssue 13's table:\n")
        print_table(summary)
    elapsed = time.monotonic() - started
    print(
        f"\n{info['nproc']} cores, {info['memory_gib']} GiB, Python {info['python']}; "
        f"{elapsed:.0f} s in all; load average {load_before[0]:.1f} before, "
        f"{info['loadavg'][0]:.1f} after; keyring: {info['keyring']}"
    )
    out = json_out
    out.parent.mkdir(parents=True, exist_ok=True)
    doc = {
        "machine": info,
        "quick": q,
        "seconds": round(elapsed, 1),
        "command": command,
        "rows": [r.as_json() for r in rows],
        "raw": raw,
    }
    out.write_text(json.dumps(doc, indent=2, default=str) + "\n")
    if md_out is not None:
        text = markdown(rows, info, command)
        if summary:
            text += (
                "\n## Issue 13's table\n\n"
                + "\n".join(markdown(summary, info, command).splitlines()[5:])
                + "\n"
            )
        md_out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
