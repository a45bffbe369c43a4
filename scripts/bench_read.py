#!/usr/bin/env python
"""Time reading user documents the way ``geoae predict`` reads them.

Streams the input through ``geoae.predict.document_chunks`` (the reader choice of
``geoae predict``; ``--reader thread`` by default so the whole cost is in this
process), counts users and prints users/s and µs/user. Nothing is featurized or
scored: this is the reading stage alone. ``--profile`` adds one more, untimed read
with the documents iterator run in the main thread (cProfile sees no other thread).

Usage (repository root, venv active)::

    python scripts/bench_read.py runs/bench/inputs/test_x010.txt --repeat 3
    python scripts/bench_read.py runs/bench/inputs/test_x001.txt --profile
    python scripts/bench_read.py FILE --save /tmp/docs.parquet   # documents + RecordLog counts

``--save`` writes every document (in order) to a parquet file and the RecordLog as JSON
beside it (``.log.json``), to compare the output of two versions of the readers.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import logging
import pstats
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

log = logging.getLogger("bench_read")


def read_once(paths: list[str], fmt: str, chunksize: int, reader: str, keep: bool):
    """Read ``paths`` fully; returns (users, seconds, RecordLog, frames kept or [])."""
    from geoae.errors import RecordLog
    from geoae.predict import document_chunks

    rlog = RecordLog(policy="skip")
    frames = []
    users = 0
    t0 = time.perf_counter()
    chunks, _ = document_chunks(paths, fmt, chunksize, rlog, reader)
    for docs in chunks:
        users += len(docs)
        if keep:
            frames.append(docs)
    return users, time.perf_counter() - t0, rlog, frames


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("inputs", nargs="+", help="tweet files (any format geoae predict reads)")
    ap.add_argument("--format", default="auto", help="input format (default: detect)")
    ap.add_argument("--chunksize", type=int, default=5000, help="users per chunk (geoae predict's default)")
    ap.add_argument("--reader", choices=("thread", "process", "auto"), default="thread")
    ap.add_argument("--repeat", type=int, default=1, help="timed runs (best and range are printed)")
    ap.add_argument("--profile", action="store_true",
                    help="print the cProfile top-15 (cumulative, then own time) of one more, untimed read in this thread")
    ap.add_argument("--save", help="write the documents (parquet) and RecordLog (.log.json) of one run here")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if args.repeat < 1:
        ap.error(f"--repeat {args.repeat}: give 1 or more timed runs")
    missing = [p for p in args.inputs if not Path(p).is_file()]
    if missing:  # the README's example input is written by scripts/bench_speed.py
        ap.error(f"input not found: {', '.join(missing)} (scripts/bench_speed.py writes runs/bench/inputs/"
                 "test_x{001,010,100}.txt, or .gz with --input-compression gzip1)")

    import importlib

    from geoae.errors import GeoaeError
    from geoae.manifest import check_writable

    if args.save:  # refused now, not after the timed runs
        try:
            check_writable(args.save, "--save", directory=False)
        except GeoaeError as e:
            ap.error(str(e))
    importlib.import_module("geoae.predict")  # the imports (torch...) stay out of the timed runs
    try:  # an unreadable input (empty, wrong --format...) is one line, not a traceback
        return _run(args)
    except GeoaeError as e:
        ap.error(str(e))


def _run(args: argparse.Namespace) -> int:
    """The timed runs, then ``--profile`` and ``--save``."""
    times = []
    users = 0
    for k in range(args.repeat):
        users, secs, rlog, _ = read_once(args.inputs, args.format, args.chunksize, args.reader, False)
        times.append(secs)
        print(f"run {k + 1}: {users} users in {secs:.3f} s: {users / secs:,.0f} users/s, "
              f"{secs / max(users, 1) * 1e6:.1f} us/user")
    best, worst = min(times), max(times)
    print(f"best of {len(times)}: {users / best:,.0f} users/s, {best / max(users, 1) * 1e6:.1f} us/user "
          f"(range {best / max(users, 1) * 1e6:.1f}-{worst / max(users, 1) * 1e6:.1f} us/user); "
          f"bad records {dict(sorted(rlog.counts.items()))}")

    if args.profile:
        # cProfile sees only its own thread, and the thread/process readers parse elsewhere:
        # profile the documents iterator those readers run, here in the main thread.
        from geoae.documents import iter_documents
        from geoae.errors import RecordLog

        prof = cProfile.Profile()
        prof.enable()
        for _ in iter_documents(args.inputs, fmt=args.format, chunksize=args.chunksize,
                                log=RecordLog(policy="skip")):
            pass
        prof.disable()
        out = io.StringIO()
        stats = pstats.Stats(prof, stream=out)
        stats.sort_stats("cumulative").print_stats(15)
        stats.sort_stats("tottime").print_stats(15)
        print(out.getvalue())

    if args.save:
        import pandas as pd

        _, _, rlog, frames = read_once(args.inputs, args.format, args.chunksize, args.reader, True)
        docs = pd.concat(frames, ignore_index=True)
        docs.to_parquet(args.save, index=False)
        meta = {"dtypes": {c: str(t) for c, t in docs.dtypes.items()}, "chunks": [len(f) for f in frames],
                **rlog.to_dict()}
        Path(args.save + ".log.json").write_text(json.dumps(meta, indent=1, sort_keys=True), encoding="utf-8")
        print(f"saved {len(docs)} documents to {args.save} and the record log to {args.save}.log.json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
