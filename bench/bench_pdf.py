"""PDF text extraction: import time and extraction time of pypdf and pdfminer.six, each in a
cold process, on a real PDF (default: Debian's shared-mime-info spec, 140 KB, 17 pages).

    .venv/bin/python bench/bench_pdf.py [PDF] [--runs N]

Both must be installed (pdfminer.six only for this comparison)."""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys

DEFAULT = "/usr/share/doc/shared-mime-info/shared-mime-info-spec.pdf"
CHILD = """
import sys, time
lib, path = sys.argv[1], sys.argv[2]
t0 = time.perf_counter()
if lib == "pypdf":
    import pypdf
    t1 = time.perf_counter()
    reader = pypdf.PdfReader(path)
    text = "\\n".join(p.extract_text() or "" for p in reader.pages)
else:
    from pdfminer.high_level import extract_text
    t1 = time.perf_counter()
    text = extract_text(path)
t2 = time.perf_counter()
print(f"{t1 - t0} {t2 - t1} {len(text)}")
"""


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("pdf", nargs="?", default=DEFAULT)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    for lib in ("pypdf", "pdfminer"):
        imports, extracts, chars = [], [], 0
        for _ in range(args.runs):
            out = subprocess.run(
                [sys.executable, "-c", CHILD, lib, args.pdf],
                capture_output=True,
                text=True,
                check=True,
            ).stdout.split()
            imports.append(float(out[0]))
            extracts.append(float(out[1]))
            chars = int(out[2])
        print(
            f"{lib:9} import median {1000 * statistics.median(imports):5.0f} ms,"
            f" extract median {1000 * statistics.median(extracts):5.0f} ms, {chars} chars"
        )


if __name__ == "__main__":
    main()
