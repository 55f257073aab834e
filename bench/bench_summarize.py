"""Benchmark: summarize a long real page with concurrency 1 and the default, and time
every hostile URL's error. Not a test; run it as

    /root/venv/bin/python bench/bench_summarize.py

The loopback upstream answers at once, so a map-reduce would be as fast serially as in
parallel; here it is subclassed (not modified) to wait BASE_S + prompt_tokens / PREFILL
before each answer, roughly a hosted model's latency. The daemon is the real one, in a
subprocess, with fresh folders for every run (so each run fetches the page); a small
page first warms it up (imports, the provider client), and each setting runs REPEAT
times, the fastest shown (the machine may be shared). Prints a table and writes
bench/results/summarize.json.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from assistantd.client import RpcError  # noqa: E402
from bench.procs import fresh_xdg  # noqa: E402
from tests.conftest import Daemon, fake_provider_config  # noqa: E402
from tests.pages import Pages  # noqa: E402
from tests.upstream import Conn, Upstream, count_prompt_tokens  # noqa: E402

BASE_S = 0.3  # per request: network and queueing
PREFILL = 20_000  # prompt tokens per second
PAGE = "/doc/reference/datamodel.html"
WARM_UP = "/doc/library/bisect.html"
REPEAT = 2  # runs of each setting; the table shows the fastest (the machine is shared)
MODEL, WINDOW = "fake-4k", 4096
HOSTILE = [
    "/huge",
    "/huge-declared",
    "/drip",
    "/silent",
    "/loop",
    "/redirect/6",
    "/to-ftp",
    "/pdf",
    "/png",
    "/binary",
    "/empty",
    "/notext",
    "/status/404",
    "/status/500",
]


class SlowUpstream(Upstream):
    """The test upstream with a hosted model's latency before each answer."""

    async def _chat(self, conn: Conn, req: dict[str, Any]) -> bool:
        await asyncio.sleep(BASE_S + count_prompt_tokens(req.get("messages")) / PREFILL)
        return await super()._chat(conn, req)


def fresh_dirs() -> None:
    fresh_xdg("bs-")


def one_run(up: Upstream, pages: Pages, concurrency: int | None) -> dict[str, Any]:
    fresh_dirs()
    extra = f'[models."{MODEL}"]\ncontext_window = {WINDOW}\n'
    if concurrency is not None:
        extra += f"[summarize]\nconcurrency = {concurrency}\n"
    d = Daemon(fake_provider_config(up, extra=extra))
    try:
        marks: dict[str, float] = {}
        start = time.monotonic()

        def on_notify(method: str, p: dict[str, Any]) -> None:
            at = time.monotonic() - start
            if method == "chat/delta":
                marks.setdefault("first_delta", at)
            elif p["done"] == 0:
                marks.setdefault(f"{p['stage']}_start", at)
            elif p["done"] == p["total"]:
                marks[f"{p['stage']}_end"] = at

        params = {"url": pages.url(PAGE), "model": MODEL}
        with d.client() as c:
            c.call("summarize/url", {"url": pages.url(WARM_UP), "model": MODEL})  # imports, client
            up.reset()
            start = time.monotonic()
            r = c.call("summarize/url", params, on_notify=on_notify)
        wall = time.monotonic() - start
    finally:
        d.stop()
    sizes = [q["prompt_tokens"] for q in up.requests]
    worst = max(q["prompt_tokens"] + (q["body"].get("max_tokens") or 0) for q in up.requests)
    return {
        "concurrency": concurrency or 4,
        "wall_s": round(wall, 3),
        "chunks": r["chunks"],
        "requests": len(sizes),
        "prompt_tokens_min": min(sizes),
        "prompt_tokens_median": int(statistics.median(sizes)),
        "prompt_tokens_max": max(sizes),
        "prompt_tokens_total": sum(sizes),
        "max_prompt_plus_max_tokens": worst,
        "window": WINDOW,
        "max_in_flight": up.max_concurrent,
        "chars": r["chars"],
        "marks_s": {k: round(v, 3) for k, v in sorted(marks.items(), key=lambda kv: kv[1])},
    }


def hostile(up: Upstream, pages: Pages) -> list[dict[str, Any]]:
    """Time to the error for each hostile URL, with the default config (a 30 s deadline)."""
    fresh_dirs()
    d = Daemon(fake_provider_config(up))
    out = []
    try:
        for path in HOSTILE:
            start = time.monotonic()
            try:
                d.call("summarize/url", {"url": pages.url(path), "model": "fake-echo"})
                reason, message = "none", "no error"
            except RpcError as e:
                reason, message = e.data["reason"], e.message
            took = round(time.monotonic() - start, 3)
            out.append({"path": path, "reason": reason, "seconds": took, "message": message})
    finally:
        d.stop()
    return out


def main() -> None:
    with Pages() as pages, SlowUpstream() as up:
        every = [one_run(up, pages, c) for c in (1, None) for _ in range(REPEAT)]
        runs = [min(every[i : i + REPEAT], key=lambda r: r["wall_s"]) for i in (0, REPEAT)]
        errors = hostile(up, pages)
    ratio = runs[0]["wall_s"] / runs[1]["wall_s"]
    print(
        f"page {PAGE} ({runs[0]['chars']:,} chars of text), model window {WINDOW}, "
        f"latency {BASE_S} s + prompt/{PREFILL} tok/s per request"
    )
    cols = [
        "concurrency",
        "wall s",
        "map s",
        "chunks",
        "requests",
        "prompt tok min/med/max",
        "max prompt+max_tokens",
        "in flight",
    ]
    rows = [
        [
            r["concurrency"],
            f"{r['wall_s']:.2f}",
            f"{r['marks_s']['map_end'] - r['marks_s']['map_start']:.2f}",
            r["chunks"],
            r["requests"],
            f"{r['prompt_tokens_min']}/{r['prompt_tokens_median']}/{r['prompt_tokens_max']}",
            r["max_prompt_plus_max_tokens"],
            r["max_in_flight"],
        ]
        for r in runs
    ]
    table(cols, rows)
    print(
        f"speed-up, concurrency {runs[1]['concurrency']} vs 1: {ratio:.2f}x wall, "
        f"{float(rows[0][2]) / float(rows[1][2]):.2f}x for the map stage\n"
    )
    table(
        ["hostile URL", "reason", "seconds"],
        [[e["path"], e["reason"], e["seconds"]] for e in errors],
    )
    results = ROOT / "bench" / "results"
    results.mkdir(parents=True, exist_ok=True)
    summary = {
        "page": PAGE,
        "model_window": WINDOW,
        "latency": {"base_s": BASE_S, "prefill_tok_s": PREFILL},
        "runs": runs,
        "all_runs": every,
        "speedup": round(ratio, 3),
        "hostile": errors,
    }
    text = json.dumps(summary, indent=2, ensure_ascii=False)
    (results / "summarize.json").write_text(text + "\n")


def table(head: list[str], rows: list[list[Any]]) -> None:
    widths = [max(len(str(x)) for x in col) for col in zip(head, *rows, strict=False)]
    for row in [head, *rows]:
        print("  ".join(str(x).rjust(w) for x, w in zip(row, widths, strict=False)))


if __name__ == "__main__":
    main()
