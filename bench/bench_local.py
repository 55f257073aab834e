"""Local model figures: the first answer ever (the model assembled, the server started),
a cold start of the managed llama-server to the first token, and tokens per second
through the daemon vs straight to the same llama-server (openai SDK, with its API key).

    .venv/bin/python bench/bench_local.py [--runs 5] [--tokens 64]

Needs the ``local`` extra. Runs a real daemon with no config and no key in throwaway XDG
folders, so the bundled model serves as it does for a new user (its transcript prompt
format included); prints a table and writes ``bench/results/local.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
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


def direct(base_url: str, key: str, tokens: int) -> dict[str, float]:
    import openai

    client = openai.OpenAI(base_url=base_url, api_key=key, max_retries=0)
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


def cold_start(client: Any, message: str = "Hello", stop: bool = True) -> dict[str, Any]:
    """Seconds from a chat/send to a stopped server to its progress note, its first delta
    and its whole answer (the first question's answer is kept for the record)."""
    if stop:
        client.call("local/stop", {"name": "gemma"})
    progress: list[float] = []
    first: list[float] = []

    def note(method: str, params: dict[str, Any]) -> None:
        (progress if method == "chat/progress" else first).append(time.monotonic())

    t0 = time.monotonic()
    r = client.call("chat/send", {"message": message, "model": "gemma-3-270m"}, on_notify=note)
    end = time.monotonic()
    return {
        "progress_s": round(progress[0] - t0, 3) if progress else None,
        "first_token_s": round(first[0] - t0, 3),
        "answer_s": round(end - t0, 3),
        "tokens": r["usage"]["completion_tokens"],
        "text": r["text"],
    }


def median(rows: list[dict[str, float]], key: str) -> float:
    return round(statistics.median(r[key] for r in rows), 3)


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--tokens", type=int, default=64)
    args = ap.parse_args()

    from bench.procs import fresh_xdg
    from tests import llama_env

    fresh_xdg("bl-")
    from tests.conftest import Daemon

    d = Daemon("", env={"PYTHON_KEYRING_BACKEND": "keyring.backends.null.Keyring"})
    via: list[dict[str, float]] = []
    straight: list[dict[str, float]] = []
    try:
        with d.client() as c:
            # The first answer ever: the model is assembled from its chunks, its metadata
            # read, the server started (the README's first command does this).
            first = cold_start(c, "Why is the sky blue?", stop=False)
            cold_runs = [cold_start(c, "Why is the sky blue?") for _ in range(args.runs)]
            cold = [r["first_token_s"] for r in cold_runs]
            servers = c.call("local/list")["servers"]
            gemma = next(s for s in servers if s["name"] == "gemma")
            base_url, key = gemma["base_url"], llama_env.api_key(gemma["pid"])
            through_daemon(c, 8)  # warm both paths
            direct(base_url, key, 8)
            for _ in range(args.runs):
                via.append(through_daemon(c, args.tokens))
                straight.append(direct(base_url, key, args.tokens))
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
        "first_answer_ever": first,
        "cold_start_to_first_token_s": round(statistics.median(cold), 3),
        "cold_start_to_whole_answer_s": round(
            statistics.median(r["answer_s"] for r in cold_runs), 3
        ),
        "daemon": daemon,
        "direct": plain,
        "tok_per_s_ratio_daemon_over_direct": ratio,
        "best_tok_per_s_ratio_daemon_over_direct": best_ratio,
        "raw": {"cold_start": cold_runs, "daemon": via, "direct": straight},
    }
    rows = [
        ("first answer ever: progress note (s)", first["progress_s"]),
        ("first answer ever: first token (s)", first["first_token_s"]),
        ("first answer ever: whole answer (s)", first["answer_s"]),
        ("cold start to first token (s, median)", result["cold_start_to_first_token_s"]),
        ("cold start to whole answer (s, median)", result["cold_start_to_whole_answer_s"]),
        ("daemon: first token (s)", daemon["first_token_s"]),
        ("direct: first token (s)", plain["first_token_s"]),
        ("daemon: tokens per second", daemon["tok_per_s"]),
        ("direct: tokens per second", plain["tok_per_s"]),
        ("ratio daemon / direct (tok/s, medians)", ratio),
        ("daemon: tokens per second (best run)", daemon["best_tok_per_s"]),
        ("direct: tokens per second (best run)", plain["best_tok_per_s"]),
        ("ratio daemon / direct (tok/s, best runs)", best_ratio),
    ]
    print(f"first answer: {first['text']!r}")
    print(f"{'figure':<44}{'value':>10}")
    for label, value in rows:
        print(f"{label:<44}{value:>10}")
    out = ROOT / "bench" / "results" / "local.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"written {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
