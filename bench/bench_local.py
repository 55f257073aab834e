"""Local model figures: cold start of the managed llama-server to the first token, and
tokens per second through the daemon vs straight to the same llama-server (openai SDK).

    /root/venv/bin/python bench/bench_local.py [--runs 5] [--tokens 64]

Needs the ``local`` extra. Runs a real daemon in throwaway XDG folders with a
``[local.gemma]`` server on the bundled model; prints a table and writes
``bench/results/local.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

PROMPT = "Write a short story about a lighthouse keeper and a storm."


def through_daemon(client: Any, tokens: int) -> dict[str, float]:
    t0 = time.monotonic()
    stamps: list[float] = []
    r = client.call(
        "chat/send",
        {"message": PROMPT, "model": "gemma-3-270m", "max_tokens": tokens, "temperature": 0},
        on_notify=lambda m, p: stamps.append(time.monotonic()),
    )
    end = time.monotonic()
    n = r["usage"]["completion_tokens"]
    return {
        "first_token_s": stamps[0] - t0,
        "tokens": n,
        "total_s": end - t0,
        "tok_per_s": (n - 1) / (stamps[-1] - stamps[0]),
    }


def direct(base_url: str, tokens: int) -> dict[str, float]:
    import openai

    client = openai.OpenAI(base_url=base_url, api_key="none", max_retries=0)
    t0 = time.monotonic()
    stamps: list[float] = []
    n = 0
    stream = client.chat.completions.create(
        model="gemma-3-270m",
        messages=[{"role": "user", "content": PROMPT}],
        max_tokens=tokens,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    for chunk in stream:
        if chunk.usage is not None:
            n = chunk.usage.completion_tokens
        if chunk.choices and chunk.choices[0].delta.content:
            stamps.append(time.monotonic())
    end = time.monotonic()
    client.close()
    return {
        "first_token_s": stamps[0] - t0,
        "tokens": n,
        "total_s": end - t0,
        "tok_per_s": (n - 1) / (stamps[-1] - stamps[0]),
    }


def cold_start(client: Any) -> float:
    """Seconds from a chat/send to a stopped server to its first delta."""
    client.call("local/stop", {"name": "gemma"})
    first: list[float] = []
    t0 = time.monotonic()
    client.call(
        "chat/send",
        {"message": "Hello", "model": "gemma-3-270m", "max_tokens": 4},
        on_notify=lambda m, p: first.append(time.monotonic()),
    )
    return first[0] - t0


def median(rows: list[dict[str, float]], key: str) -> float:
    return round(statistics.median(r[key] for r in rows), 3)


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--tokens", type=int, default=64)
    args = ap.parse_args()

    base = Path(tempfile.mkdtemp(prefix="bench-local-"))
    runtime = Path(tempfile.mkdtemp(prefix="bl-", dir="/tmp"))
    runtime.chmod(0o700)
    os.environ["XDG_RUNTIME_DIR"] = str(runtime)
    for var, sub in (
        ("XDG_CONFIG_HOME", "config"),
        ("XDG_DATA_HOME", "data"),
        ("XDG_CACHE_HOME", "cache"),
        ("XDG_STATE_HOME", "state"),
    ):
        os.environ[var] = str(base / sub)
    for var in ("ASSISTANTD_SOCKET", "ASSISTANTD_CONFIG"):
        os.environ.pop(var, None)
    from tests import llama_env
    from tests.conftest import Daemon

    d = Daemon(llama_env.local_config("gemma", llama_env.model(base / "model")))
    via: list[dict[str, float]] = []
    straight: list[dict[str, float]] = []
    try:
        with d.client() as c:
            cold = [cold_start(c) for _ in range(args.runs)]
            servers = c.call("local/list")["servers"]
            base_url = next(s["base_url"] for s in servers if s["name"] == "gemma")
            through_daemon(c, 8)  # warm both paths
            direct(base_url, 8)
            for _ in range(args.runs):
                via.append(through_daemon(c, args.tokens))
                straight.append(direct(base_url, args.tokens))
    finally:
        d.stop()

    daemon = {k: median(via, k) for k in ("first_token_s", "tok_per_s", "tokens")}
    plain = {k: median(straight, k) for k in ("first_token_s", "tok_per_s", "tokens")}
    # The best run of each is the one least disturbed by other load on the machine.
    daemon["best_tok_per_s"] = round(max(r["tok_per_s"] for r in via), 3)
    plain["best_tok_per_s"] = round(max(r["tok_per_s"] for r in straight), 3)
    ratio = round(daemon["tok_per_s"] / plain["tok_per_s"], 3)
    best_ratio = round(daemon["best_tok_per_s"] / plain["best_tok_per_s"], 3)
    result = {
        "machine": {
            "cpus": len(os.sched_getaffinity(0)),
            "python": platform.python_version(),
            "load_avg_1m": os.getloadavg()[0],
        },
        "runs": args.runs,
        "max_tokens": args.tokens,
        "cold_start_to_first_token_s": round(statistics.median(cold), 3),
        "daemon": daemon,
        "direct": plain,
        "tok_per_s_ratio_daemon_over_direct": ratio,
        "best_tok_per_s_ratio_daemon_over_direct": best_ratio,
        "raw": {"cold_start_s": cold, "daemon": via, "direct": straight},
    }
    rows = [
        ("cold start to first token (s, median)", result["cold_start_to_first_token_s"]),
        ("daemon: first token (s)", daemon["first_token_s"]),
        ("direct: first token (s)", plain["first_token_s"]),
        ("daemon: tokens per second", daemon["tok_per_s"]),
        ("direct: tokens per second", plain["tok_per_s"]),
        ("ratio daemon / direct (tok/s, medians)", ratio),
        ("daemon: tokens per second (best run)", daemon["best_tok_per_s"]),
        ("direct: tokens per second (best run)", plain["best_tok_per_s"]),
        ("ratio daemon / direct (tok/s, best runs)", best_ratio),
    ]
    print(f"{'figure':<44}{'value':>10}")
    for label, value in rows:
        print(f"{label:<44}{value:>10}")
    out = ROOT / "bench" / "results" / "local.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"written {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
