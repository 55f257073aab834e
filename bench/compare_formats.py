"""Which prompt format makes the bundled base model answer: ten everyday questions asked
in each format, straight to a real llama-server on the bundled GGUF, greedy (temperature
0), at most ``--tokens`` tokens each (default 60: enough to tell an answer from noise;
the bundled model's cap is 200).

    .venv/bin/python bench/compare_formats.py [--tokens 60] [--out bench/results/formats.json]

Formats: llama.cpp's ChatML fallback (what a GGUF without a template got before), the
built-in ``gemma`` template, the daemon's Question/Answer ``transcript`` Jinja template
(``/v1/chat/completions``), and a plain ``Question: ...\\nAnswer:`` prompt through
``/completion``. Prints each answer and writes them all as JSON; docs/local-models.md
quotes them.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from assistantd import llama, prompt  # noqa: E402
from tests import llama_env  # noqa: E402

MAX_TOKENS = 60


def start(gguf: Path, cache: Path, flags: list[str]) -> tuple[subprocess.Popen[bytes], str]:
    binary = llama_env.server_binary()
    port = llama.free_port()
    args = ["-c", "4096"]
    log = open(cache / f"server-{port}.log", "wb")  # noqa: SIM115
    where = ["--host", "127.0.0.1", "--port", str(port), "-m", str(gguf), "--alias", "gemma-3-270m"]
    proc = subprocess.Popen(
        [str(binary), *where, *flags, *args, *llama.workaround_args(binary, args)],
        env=llama.server_env(binary, cache, llama.scrubbed_env()),
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    root = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"llama-server exited: {flags}"
        try:
            with urllib.request.urlopen(root + "/health", timeout=2) as r:
                if r.status == 200:
                    return proc, root
        except OSError:
            time.sleep(0.1)
    raise TimeoutError("llama-server did not start")


def post(url: str, body: dict[str, Any]) -> dict[str, Any]:
    request = urllib.request.Request(
        url, json.dumps(body).encode(), {"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=300) as r:
        answer: dict[str, Any] = json.load(r)
        return answer


def chat(root: str, question: str, stops: tuple[str, ...], tokens: int) -> str:
    body: dict[str, Any] = {
        "messages": [{"role": "user", "content": question}],
        "temperature": 0,
        "max_tokens": tokens,
    }
    if stops:
        body["stop"] = list(stops)
    return str(post(root + "/v1/chat/completions", body)["choices"][0]["message"]["content"])


def completion(root: str, question: str, tokens: int) -> str:
    body = {
        "prompt": f"Question: {question}\nAnswer:",
        "temperature": 0,
        "n_predict": tokens,
        "stop": ["\nQuestion:"],
    }
    return str(post(root + "/completion", body)["content"])


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "formats.json")
    ap.add_argument("--tokens", type=int, default=MAX_TOKENS)
    ap.add_argument("--only", help="run the formats whose name has this in it (others kept)")
    args = ap.parse_args()
    n = args.tokens
    cache = Path(tempfile.mkdtemp(prefix="formats-"))
    gguf = llama_env.model(cache)
    info = prompt.read_gguf(gguf)
    gemma = prompt.choose("gemma", info, cache / "templates")
    transcript = prompt.choose(prompt.TRANSCRIPT, info, cache / "templates")
    formats: list[tuple[str, list[str], Any]] = [
        (
            "transcript (few-shot Q/A Jinja)",
            list(transcript.args),
            lambda r, q: chat(r, q, transcript.guard.stops, n),
        ),
        ("gemma built-in", list(gemma.args), lambda r, q: chat(r, q, gemma.guard.stops, n)),
        ("plain /completion", ["--jinja"], lambda r, q: completion(r, q, n)),
        ("chatml fallback (before)", ["--jinja"], lambda r, q: chat(r, q, (), n)),
    ]
    results: dict[str, list[dict[str, str]]] = {}
    if args.only and args.out.is_file():
        results = json.loads(args.out.read_text())
    for name, flags, ask in formats:
        if args.only and args.only not in name:
            continue
        proc, root = start(gguf, cache, flags)
        try:
            rows = []
            for q in llama_env.QUESTIONS:
                t0 = time.monotonic()
                a = ask(root, q)
                rows.append({"question": q, "answer": a, "seconds": f"{time.monotonic() - t0:.2f}"})
                print(f"[{name}] {q}\n    {a!r}", flush=True)
            results[name] = rows
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n")
        finally:
            proc.terminate()
            proc.wait(10)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n")
    print(f"written {args.out}")


if __name__ == "__main__":
    main()
