#!/usr/bin/env python
"""Resident memory of ``geoae predict`` after every streamed chunk, to tell steady state from growth.

A process's peak RSS (what ``bench_speed.py`` compares across input sizes) only ever rises: one
unlucky moment when the read-ahead chunk, the scored chunk and the model's intermediates peak
together moves it for good. This script records the *current* RSS (``VmRSS``) and the high-water
mark (``ru_maxrss``) each time a chunk enters scoring, so a plateau (memory independent of how many
users went through) is visible as such.

Usage (venv active, from the repository root; inputs as written by ``bench_speed.py``)::

    python scripts/trace_predict_memory.py runs/bench/train/model runs/bench/inputs/test_x100.txt \
        --out benchmarks/predict_memory_trace.json
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def _vm_rss_mb() -> float:
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
    return float("nan")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("input")
    ap.add_argument("--chunksize", type=int, default=5000)
    ap.add_argument("--out", default="benchmarks/predict_memory_trace.json")
    args = ap.parse_args(argv)

    import geoae.predict as predict
    from geoae.errors import GeoaeError
    from geoae.manifest import atomic_write_text, check_writable

    # Refused before the run (the trace of a large input takes minutes), and as one line.
    try:
        check_writable(args.out, "--out", directory=False)
    except GeoaeError as e:
        ap.error(str(e))

    trace: list[dict] = []

    def tracing(real):
        """Wrap a chunk source of ``predict_files`` (reader thread or reader process alike)."""
        def traced(*args, **kwargs):
            for i, chunk in enumerate(real(*args, **kwargs)):
                trace.append({"chunk": i, "rss_mb": _vm_rss_mb(),
                              "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)})
                yield chunk
        return traced

    predict.prefetch_chunks = tracing(predict.prefetch_chunks)
    predict.read_ahead_process = tracing(predict.read_ahead_process)
    t0 = time.perf_counter()
    try:  # not a model, a missing or unreadable input: one line, not a traceback
        with tempfile.TemporaryDirectory() as tmp:
            summary = predict.predict_files(args.model, [args.input], Path(tmp) / "out.csv", chunksize=args.chunksize,
                                            progress=False, reader="auto")  # as `geoae predict` does
    except GeoaeError as e:
        ap.error(str(e))
    rss = [r["rss_mb"] for r in trace]
    half = rss[len(rss) // 2:]
    result = {
        "model": args.model, "input": args.input, "chunksize": args.chunksize, "users": summary["users_in"],
        "seconds": round(time.perf_counter() - t0, 2), "users_per_second": summary["users_per_second"],
        "final_peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "rss_first_chunk_mb": rss[0] if rss else None,
        "rss_second_half_min_max_mb": [min(half), max(half)] if half else None,
        "reader": summary.get("reader"), "reader_peak_rss_mb": summary.get("reader_peak_rss_mb"),
        "trace": trace,
    }
    atomic_write_text(args.out, json.dumps(result, indent=1) + "\n")  # creates the parent directories too
    print(json.dumps({k: v for k, v in result.items() if k != "trace"}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
