"""Benchmark: what hostile pages cost the daemon (issue 11). Not a test; run it as

    .venv/bin/python bench/bench_hostile_pages.py

For each page: the time from the request to its answer (an error or a summary) and the
daemon's peak resident memory after it (``VmHWM`` in ``/proc/PID/status``; a fresh
daemon per page, so each peak is that page's). The pages come from ``tests/pages.py``
on loopback: 2 GiB of HTML gzipped twice (5 KB on the wire, built before the clock
starts), a 3 MB page labelled ``charset=punycode`` (Python's punycode decoder is
quadratic: minutes), ``rot13`` and ``zlib`` labels (Python transforms, once -32603),
and 3 MB of ``<span>`` that keeps trafilatura busy for half a minute: how long a
``$/cancelRequest``, a 3 s ``extract_timeout_s`` and ``daemon/shutdown`` take to end
it. Prints a table and writes bench/results/hostile_pages.json.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from assistantd.client import RpcError  # noqa: E402
from bench.procs import fresh_xdg  # noqa: E402
from tests.conftest import Daemon, fake_provider_config  # noqa: E402
from tests.pages import Pages, bomb  # noqa: E402
from tests.upstream import Upstream  # noqa: E402

EXTRA = '[models."fake-4k"]\ncontext_window = 4096\n[summarize]\n'


def fresh_dirs() -> None:
    fresh_xdg("bh-")


def peak_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def workers(pid: int) -> list[int]:
    """The daemon's extraction workers."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            ppid = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
            if ppid == pid and b"assistantd.extract" in (proc / "cmdline").read_bytes():
                found.append(int(proc.name))
        except (OSError, ValueError, IndexError):
            pass
    return found


def daemon(up: Upstream, summarize: str = "") -> Daemon:
    fresh_dirs()
    return Daemon(fake_provider_config(up, extra=EXTRA + summarize))


def one(up: Upstream, pages: Pages, path: str, summarize: str = "") -> dict[str, Any]:
    """Time one summarize/url of ``path`` on a fresh daemon, and its peak memory."""
    d = daemon(up, summarize)
    try:
        start = time.monotonic()
        try:
            d.call("summarize/url", {"url": pages.url(path), "model": "fake-4k"})
            outcome = "summary"
        except RpcError as e:
            outcome = f"{e.code} {(e.data or {}).get('reason')}"
        took = time.monotonic() - start
        return {
            "page": path,
            "seconds": round(took, 3),
            "outcome": outcome,
            "peak_rss_mb": round(peak_mb(d.proc.pid), 1),
        }
    finally:
        d.stop()


def slow_extraction(up: Upstream, pages: Pages, end: str) -> dict[str, Any]:
    """Start /slow-extract, wait until the worker reads it, end it by ``end``."""
    d = daemon(up)
    c = d.client()
    done: dict[str, float] = {}

    def run() -> None:
        with contextlib.suppress(RpcError):
            c.call("summarize/url", {"url": pages.url("/slow-extract"), "model": "fake-4k"})
        done["at"] = time.monotonic()

    t = threading.Thread(target=run, daemon=True)
    t.start()
    while not workers(d.proc.pid):
        time.sleep(0.02)
    time.sleep(1.0)  # well into the page
    asked = time.monotonic()
    if end == "cancel":
        c.cancel(1)
        t.join(60)
        took = done["at"] - asked
    else:
        d.call("daemon/shutdown")
        d.proc.wait(60)
        took = time.monotonic() - asked
    c.close()
    d.stop()
    return {
        "page": f"/slow-extract, {end}",
        "seconds": round(took, 3),
        "outcome": "ended",
        "peak_rss_mb": float("nan"),
    }


def main() -> None:
    bomb()  # built once, before any clock starts
    rows = []
    with Upstream() as up, Pages() as pages:
        for path in (
            "/doc/library/bisect.html",
            "/bomb",
            "/bomb-br",
            "/charset/punycode",
            "/charset/rot13",
            "/charset/zlib",
        ):
            rows.append(one(up, pages, path))
        rows.append(one(up, pages, "/slow-extract", "extract_timeout_s = 3\n"))
        rows.append(slow_extraction(up, pages, "cancel"))
        rows.append(slow_extraction(up, pages, "shutdown"))
    print(f"{'page':32} {'seconds':>8} {'peak RSS MB':>12}  outcome")
    for r in rows:
        print(f"{r['page']:32} {r['seconds']:8.3f} {r['peak_rss_mb']:12.1f}  {r['outcome']}")
    out = ROOT / "bench" / "results" / "hostile_pages.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"load": os.getloadavg(), "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
