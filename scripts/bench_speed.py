#!/usr/bin/env python
"""Speed and memory benchmark of geoae on GeoText, in one run.

Measures, each step in its own subprocess so that peak RSS figures are
per-process and comparable:

1. wall time and peak RSS of ``geoae prepare``, ``geoae train --stage pretrain``
   and ``geoae train --stage finetune`` with a config (default configs/geotext.yaml);
2. ``geoae predict`` throughput (users / wall second of the whole subprocess, and
   the summary's own ``users_per_second``, which excludes start-up and model
   loading) and peak RSS on the GeoText test users replicated x1, x10, x100
   (unique user ids per copy: ``USER_x_r007``), streamed from disk; once as shipped
   (``sdae``) and once with ``--half`` (``sdae_half``: float16 first-layer rows), with
   how far the half-precision predictions are from the float32 ones;
3. the same for the TF-IDF + logistic-regression peer (``geoae.baselines.TfidfLogReg``
   fitted on the prepared training users, then streamed with ``iter_documents``),
   and the SDAE/LR ratios measured in the same run;
   the CPU time of every step (the child and the reader process it waited for), and
   per model the marginal CPU per user between the two largest inputs with the
   users/s that cost allows on this machine's CPUs (``cpu_per_user``): whether a
   rate is bound by the work or by how it is scheduled;
4. a per-stage profile of prediction at x1 (read/decode, tokenize, tf-idf,
   model forward, post-processing, writing) plus the top cProfile entries.

Results go to a JSON file (default benchmarks/speed.json, written atomically)
and a Markdown table on stdout; progress is logged to stderr.

Usage (from the repository root, venv active)::

    python scripts/bench_speed.py                       # full: train, then x1, x10, x100
    python scripts/bench_speed.py --skip-train          # reuse runs/bench (data/ and train/model/)
    python scripts/bench_speed.py --model runs/x/train/model --skip-train --run-dir runs/bench
    python scripts/bench_speed.py --quick               # smoke test: tiny model, x1 and x2

Peak RSS is measured by the child itself: every child is this script in a
``_child`` mode that runs the stage in-process and then reads its ``VmHWM`` from
``/proc/self/status`` (the whole process's high-water mark, start-up and imports
included; not ``ru_maxrss``, which Linux carries over from the parent across
fork + exec), so no external tool is needed.
"""

from __future__ import annotations

import argparse
import gzip
import json
import logging
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

log = logging.getLogger("bench_speed")

QUICK_SETS = [
    "model.hidden=[64]",
    "model.noise=[{kind: masking, level: 0.3}]",
    "pretrain.epochs=1",
    "finetune.epochs=1",
]
PROFILE_ORDER = ("load_model", "read_decode_documents", "featurize",
                 "model_forward", "postprocess_frame_topk", "write_csv")
FLAT_MARGIN = 0.10  # peak RSS at the largest scale within 10% of the next largest = flat


# =========================================================================== children


def _peak_rss_mb() -> float:
    """This process's own high-water mark: ``VmHWM``, which starts afresh with the exec'd program.
    Not ``ru_maxrss``: Linux keeps that across fork + exec, so a child would report at least the
    parent's peak at spawn time (this script's parent holds torch and the x100 output comparison)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return round(int(line.split()[1]) / 1024.0, 1)  # kB
    except OSError:
        pass
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux; no /proc elsewhere
    return round(kb / 1024.0, 1)


def _gpu_peak() -> dict:
    """Peak GPU memory of this process (torch's allocator), when the step used CUDA at all."""
    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_available() or not torch.cuda.is_initialized():
        return {}
    return {"gpu_peak_allocated_mb": round(torch.cuda.max_memory_allocated() / 2**20, 1),
            "gpu_peak_reserved_mb": round(torch.cuda.max_memory_reserved() / 2**20, 1),
            "gpu_name": torch.cuda.get_device_name()}


def _child_main(argv: list[str]) -> int:
    """``_child RESULT.json KIND ARGS...``: run one measured step in-process, write its result."""
    result_path, kind, rest = argv[0], argv[1], argv[2:]
    t0 = time.perf_counter()
    rc, extra = 1, {}
    try:
        if kind == "geoae":
            from geoae.cli import main

            rc = int(main(rest) or 0)
        elif kind == "lr_fit":
            rc, extra = _lr_fit(*rest)
        elif kind == "lr_predict":
            rc, extra = _lr_predict(*rest)
        elif kind == "profile":
            rc, extra = _profile(*rest)
        elif kind == "read":
            rc, extra = _read_only(*rest)
        else:
            raise SystemExit(f"unknown child kind {kind!r}")
    finally:
        from geoae.manifest import write_json

        write_json(result_path, {"rc": rc, "inproc_seconds": round(time.perf_counter() - t0, 3),
                                 "peak_rss_mb": _peak_rss_mb(), **_gpu_peak(), **extra})
    return rc


def _read_only(path: str, chunksize: str) -> tuple[int, dict]:
    """Read and decode a file into documents (no featurizing): input-format timing."""
    from geoae.documents import iter_documents

    t0 = time.perf_counter()
    n = 0
    for docs in iter_documents([path], fmt="rahimi", chunksize=int(chunksize)):
        n += len(docs)
    return 0, {"users": n, "seconds": round(time.perf_counter() - t0, 3)}


def _fit_lr(config: str, data_dir: str, C: str, sets_json: str):
    from geoae.baselines import TfidfLogReg
    from geoae.config import load_config
    from geoae.pipeline import load_documents

    cfg = load_config(config, json.loads(sets_json))
    docs = load_documents(data_dir)
    tr = docs[docs["split"].isin(cfg.data.train_splits)].reset_index(drop=True)
    dv = docs[docs["split"].isin(cfg.data.dev_splits)].reset_index(drop=True)
    t0 = time.perf_counter()
    lr = TfidfLogReg(max_features=cfg.features.max_features, min_df=cfg.features.min_df,
                     C=None if C == "grid" else float(C), seed=cfg.train.seed,
                     refit=cfg.finetune.refit).fit(tr, dv if len(dv) else None)
    return lr, time.perf_counter() - t0, len(tr), len(dv)


def _lr_fit(config: str, data_dir: str, out: str, C: str, sets_json: str) -> tuple[int, dict]:
    """Fit the peer (C tuned on dev unless given) and record the chosen C as JSON (no pickle)."""
    lr, secs, ntr, ndv = _fit_lr(config, data_dir, C, sets_json)
    info = lr.info()
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps({"C": info["C"]}))
    return 0, {"fit_seconds": round(secs, 3), "train_users": ntr, "dev_users": ndv, "info": info}


def _lr_predict(config: str, data_dir: str, fitted: str, sets_json: str, inp: str, output: str,
                chunksize: str) -> tuple[int, dict]:
    """Stream a file through TfidfLogReg into a CSV, like ``geoae predict`` does.

    The peer is refitted here with the C chosen by ``_lr_fit`` (one fit of a
    couple of seconds, excluded from the timing) rather than unpickled: the
    project reads no pickles, benchmarks included. Its peak memory therefore
    includes one small fit on the training users.
    """
    from geoae.errors import RecordLog
    from geoae.predict import _Writer, document_chunks

    C = str(json.loads(Path(fitted).read_text())["C"])
    lr, _, _, _ = _fit_lr(config, data_dir, C, sets_json)
    t0 = time.perf_counter()
    users = rows = 0
    rlog = RecordLog(policy="skip")
    # The same writer and reader (``auto``: process or thread by input size) as ``geoae predict``,
    # so the ratio compares the models.
    w = _Writer(Path(output), "csv")
    ok = False
    stats: dict = {}
    chunks, _ = document_chunks([inp], "rahimi", int(chunksize), rlog, "auto", stats)
    try:
        for docs in chunks:
            if docs.empty:
                continue
            users += len(docs)
            pred = lr.predict(docs)
            w.write(pred)
            rows += len(pred)
        ok = True
    finally:
        w.close(ok)
    secs = time.perf_counter() - t0
    return 0, {"users_in": users, "rows_out": rows, "seconds": round(secs, 3),
               "users_per_second": round(users / secs, 1) if secs > 0 else None, **stats}


def _profile(model_dir: str, inp: str, output: str, chunksize: str) -> tuple[int, dict]:
    """Where predict time goes at x1: stage timers, then cProfile of a plain ``predict_files``."""
    import cProfile
    import io
    import pstats

    import torch

    from geoae import features
    from geoae.documents import iter_documents
    from geoae.features import tokenize
    from geoae.predict import _Writer, load_predictor, predict_files

    t = {}
    t0 = time.perf_counter()
    predictor = load_predictor(model_dir)
    t["load_model"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    chunks = list(iter_documents([inp], fmt="rahimi", chunksize=int(chunksize)))
    t["read_decode_documents"] = time.perf_counter() - t0
    texts_by_chunk = [c["text"].fillna("").astype(str).tolist() for c in chunks]
    users = sum(len(c) for c in chunks)
    n_chars = sum(len(s) for tx in texts_by_chunk for s in tx)

    # The pure-Python reference tokenizer, for comparison only: prediction featurizes with
    # the compiled path when ``geoae._fastcount`` is built (``featurize`` below).
    t0 = time.perf_counter()
    n_tokens = 0
    for tx in texts_by_chunk:
        for s in tx:
            n_tokens += len(tokenize(s))
    ref_tokenize_s = time.perf_counter() - t0

    feat = predictor.artifact.featurizer
    t0 = time.perf_counter()
    Xs = [feat.transform(tx) for tx in texts_by_chunk]
    t["featurize"] = time.perf_counter() - t0

    from geoae.finetune import predict_arrays

    model = predictor.artifact.model.eval()
    # One-off per loaded model, not per user: the side-by-side first-layer matrix (sdae.first_layer_rows).
    t0 = time.perf_counter()
    predict_arrays(model, Xs[0][:1], predictor.device, predictor.batch_size)
    t["load_model"] += time.perf_counter() - t0
    t0 = time.perf_counter()
    for X in Xs:  # the real scoring path: sparse CSR, all members' first layers in one product
        predict_arrays(model, X, predictor.device, predictor.batch_size)
    t["model_forward"] = time.perf_counter() - t0

    # Post-processing alone (frame, top-k JSON, Bayes point): predict() with _score's results precomputed.
    scored = [predictor._score(tx) for tx in texts_by_chunk]
    real_score = predictor._score
    try:
        queue = list(scored)
        predictor._score = lambda texts: queue.pop(0)
        t0 = time.perf_counter()
        preds = [predictor.predict(c) for c in chunks]
        t["postprocess_frame_topk"] = time.perf_counter() - t0
    finally:
        predictor._score = real_score

    t0 = time.perf_counter()
    w = _Writer(Path(output), "csv")
    for p in preds:
        w.write(p)
    w.close(True)
    t["write_csv"] = time.perf_counter() - t0

    prof = cProfile.Profile()
    t0 = time.perf_counter()
    prof.enable()
    summary = predict_files(model_dir, [inp], output, fmt="rahimi", chunksize=int(chunksize), progress=False)
    prof.disable()
    t_end_to_end = time.perf_counter() - t0
    s = io.StringIO()
    pstats.Stats(prof, stream=s).sort_stats("tottime").print_stats(15)
    top = [ln.rstrip() for ln in s.getvalue().splitlines() if ln.strip()][-16:]

    staged = sum(v for k, v in t.items() if k != "load_model")
    return 0, {
        "users": users,
        "chars": n_chars,
        "tokens": n_tokens,
        "torch_threads": torch.get_num_threads(),
        "seconds": {k: round(v, 4) for k, v in t.items()},
        "share_of_staged": {k: round(v / staged, 3) for k, v in t.items() if k != "load_model"},
        "staged_total_s_excl_load": round(staged, 3),
        "users_per_second_by_stage": {k: round(users / v, 1) for k, v in t.items() if k != "load_model" and v > 0},
        "featurize_mb_per_s": round(n_chars / 1e6 / t["featurize"], 2) if t["featurize"] > 0 else None,
        "featurize_path": "compiled (geoae._fastcount)" if features._fastcount is not None else "pure Python (extension not built)",
        "reference_python_tokenize_s": round(ref_tokenize_s, 4),
        "reference_python_tokenize_mb_per_s": round(n_chars / 1e6 / ref_tokenize_s, 2) if ref_tokenize_s > 0 else None,
        "predict_files_under_cprofile_s": round(t_end_to_end, 3),
        "predict_files_summary_users_per_second": summary["users_per_second"],
        "cprofile_top_tottime": top,
        "note": "stage timers run each stage separately on the same x1 input; predict_files under cProfile is slower than normal",
    }


# =========================================================================== parent


def run_child(name: str, kind: str, args: list[str], work: Path, env: dict | None = None) -> dict:
    """Run ``kind`` in a fresh interpreter; wall time measured here, peak RSS by the child."""
    res = work / "results" / f"{name}.json"
    logf = work / "logs" / f"{name}.log"
    res.parent.mkdir(parents=True, exist_ok=True)
    logf.parent.mkdir(parents=True, exist_ok=True)
    if res.exists():
        res.unlink()
    cmd = [sys.executable, str(Path(__file__).resolve()), "_child", str(res), kind, *args]
    log.info("%s: %s", name, " ".join(cmd[4:]))
    t0 = time.perf_counter()
    # CPU time of the child and of the processes it waited for (its reader process): what the
    # step costs the machine, whatever the overlap between its threads and processes.
    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    with open(logf, "w") as fh:
        p = subprocess.run(cmd, cwd=REPO, stdout=fh, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})
    wall = time.perf_counter() - t0
    ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
    out = json.loads(res.read_text()) if res.exists() else {}
    out.update({"wall_seconds": round(wall, 3), "cpu_seconds": round(cpu, 3), "returncode": p.returncode, "log": str(logf)})
    if p.returncode != 0:
        tail = logf.read_text(errors="replace")[-3000:]
        raise SystemExit(f"{name} failed (exit {p.returncode}); log {logf}:\n{tail}")
    log.info("%s: %.1fs wall, peak RSS %.0f MB", name, wall, out.get("peak_rss_mb", float("nan")))
    return out


def replicate(src: Path, dst: Path, times: int, gz_level: int | None) -> dict:
    """Write ``times`` copies of a Rahimi file with ids ``<id>_r007``, streaming (one copy of src in memory)."""
    if not Path(src).is_file():
        raise SystemExit(f"test users' file {src} not found: pass --test-file (a Rahimi file), or run from the repository "
                         "root with the GeoText corpus in ../shared")
    opener = gzip.open if str(src).endswith(".gz") else open
    with opener(src, "rb") as f:
        lines = [ln if ln.endswith(b"\n") else ln + b"\n" for ln in f if ln.strip()]
    parts = [ln.split(b"\t", 1) for ln in lines]
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.name}.partial")
    t0 = time.perf_counter()
    out = gzip.open(tmp, "wb", compresslevel=gz_level) if gz_level is not None else open(tmp, "wb", buffering=1 << 20)
    with out:
        for r in range(times):
            suffix = b"_r%03d\t" % r
            out.write(b"".join(p[0] + suffix + p[1] for p in parts))
    os.replace(tmp, dst)
    return {"path": str(dst), "users": len(lines) * times, "bytes_on_disk": dst.stat().st_size,
            "write_seconds": round(time.perf_counter() - t0, 2)}


def machine_info() -> dict:
    import torch

    from geoae.manifest import versions

    info = {
        "cpu_count": os.cpu_count(),
        "cpu_affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "processor": platform.processor(),
        "machine": platform.machine(),
        "torch_threads": torch.get_num_threads(),
        "loadavg_at_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "versions": versions(),
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
    }
    try:
        for ln in Path("/proc/cpuinfo").read_text().splitlines():
            if ln.startswith("model name"):
                info["cpu_model"] = ln.split(":", 1)[1].strip()
                break
        for ln in Path("/proc/meminfo").read_text().splitlines():
            if ln.startswith("MemTotal"):
                info["mem_total_gb"] = round(int(ln.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return info


def pick_test_file(cfg, given: str | None) -> Path:
    if given:
        return Path(given)
    cands = [p for p in cfg.data.inputs if "test" in Path(p).name]
    if not cands:
        raise SystemExit("cannot tell which config input holds the test users; pass --test-file")
    return Path(cands[0])


def ratio(a, b):
    return round(a / b, 3) if a and b else None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", "-c", default="configs/geotext.yaml")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override (as geoae --set)")
    ap.add_argument("--run-dir", help="work directory (default runs/bench, runs/bench-quick with --quick)")
    ap.add_argument("--out", help="results JSON (default benchmarks/speed.json, benchmarks/speed-quick.json with --quick)")
    ap.add_argument("--scales", default=None, help="replication factors of the test users (default 1,10,100)")
    ap.add_argument("--quick", action="store_true", help="smoke test: tiny model, scales 1,2, fixed LR C")
    ap.add_argument("--skip-train", action="store_true", help="reuse RUN_DIR/data and RUN_DIR/train/model")
    ap.add_argument("--model", help="model directory to benchmark (default RUN_DIR/train/model)")
    ap.add_argument("--test-file", help="Rahimi file of the users to replicate (default: the config's test input)")
    ap.add_argument("--chunksize", type=int, default=5000, help="users per streamed chunk (geoae predict's default)")
    ap.add_argument("--input-compression", choices=("auto", "plain", "gzip1"), default="auto",
                    help="replicated inputs: auto = whichever reads faster at x1")
    ap.add_argument("--lr-c", default=None, help="TfidfLogReg C (a number, or 'grid' to tune on dev; default grid, 10 with --quick)")
    ap.add_argument("--predict-device", default="cpu",
                    help="--device of the SDAE's predict runs (cpu, cuda); the TF-IDF + LR peer runs on the CPU")
    ap.add_argument("--no-profile", action="store_true")
    ap.add_argument("--keep-outputs", action="store_true", help="keep the prediction files")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S",
                        stream=sys.stderr)

    from geoae.config import load_config
    from geoae.errors import GeoaeError
    from geoae.manifest import check_writable, write_json

    run = Path(args.run_dir or ("runs/bench-quick" if args.quick else "runs/bench"))
    out_json = Path(args.out or ("benchmarks/speed-quick.json" if args.quick else "benchmarks/speed.json"))
    try:
        scales = [int(s) for s in (args.scales or ("1,2" if args.quick else "1,10,100")).split(",") if s.strip()]
    except ValueError:
        scales = []
    if not scales or min(scales) < 1:
        raise SystemExit("--scales must be positive integers, e.g. 1,10,100")
    scales = sorted(set(scales))
    sets = list(args.set) + (QUICK_SETS if args.quick else [])
    lr_c = args.lr_c or ("10" if args.quick else "grid")
    # Refused now, as one line, rather than after minutes of measured steps (the results JSON is
    # written last) or as a traceback: a --model that is not a model (unless it is
    # RUN_DIR/train/model, which this run trains), an --out or --run-dir that cannot be written.
    if (args.model and Path(args.model).resolve() != (run / "train" / "model").resolve()
            and not (Path(args.model) / "artifact.json").is_file()):
        raise SystemExit(f"--model {args.model}: no artifact.json; not a geoae model directory")
    try:
        check_writable(out_json, "--out", directory=False)
        check_writable(run, "--run-dir", directory=True)
        cfg = load_config(args.config, sets)
    except GeoaeError as e:
        raise SystemExit(str(e)) from None
    set_args = [a for s in sets for a in ("--set", s)]
    run.mkdir(parents=True, exist_ok=True)
    data_dir, train_dir = run / "data", run / "train"
    model_dir = Path(args.model) if args.model else train_dir / "model"

    results: dict = {
        "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "config": args.config, "sets": sets, "run_dir": str(run), "model": str(model_dir),
        "scales": scales, "chunksize": args.chunksize, "predict_device": args.predict_device, "machine": machine_info(),
        "peak_rss_method": "child process VmHWM (/proc/self/status) after the stage (whole process, imports included)",
    }
    t_all = time.perf_counter()

    # ---------------------------------------------------------------- 1. training stages
    stages = {}
    if not args.skip_train:
        stages["prepare"] = run_child("prepare", "geoae", ["-q", "prepare", "-c", args.config, *set_args, "-o", str(data_dir)], run)
        common = ["-q", "train", "-c", args.config, *set_args, "-d", str(data_dir), "-o", str(train_dir)]
        stages["pretrain"] = run_child("pretrain", "geoae", [*common, "--stage", "pretrain", "--no-resume"], run)
        stages["finetune"] = run_child("finetune", "geoae", [*common, "--stage", "finetune"], run)
    else:
        for need in (data_dir / "documents.parquet", model_dir / "artifact.json"):
            if not need.exists():
                raise SystemExit(f"--skip-train: {need} not found; run once without --skip-train (or give --model/--run-dir)")
    results["stages"] = stages

    # ---------------------------------------------------------------- 2. replicated inputs
    src = pick_test_file(cfg, args.test_file)
    inputs_dir = run / "inputs"
    x1_plain = inputs_dir / "test_x001.txt"
    x1_gz = inputs_dir / "test_x001.gz"
    if not x1_plain.exists():
        replicate(src, x1_plain, 1, None)
    if not x1_gz.exists():
        replicate(src, x1_gz, 1, 1)
    reads = {}
    for label, p in (("plain", x1_plain), ("gzip1", x1_gz)):
        best = min((run_child(f"read_{label}_{i}", "read", [str(p), str(args.chunksize)], run) for i in range(2)),
                   key=lambda r: r["seconds"])
        reads[label] = {"bytes": p.stat().st_size, "read_to_documents_s": best["seconds"], "users": best["users"]}
    faster = min(reads, key=lambda k: reads[k]["read_to_documents_s"])
    comp = faster if args.input_compression == "auto" else args.input_compression
    results["input_read_x1"] = {**reads, "faster": faster, "used": comp,
                                "note": "best of 2 runs of iter_documents over the x1 file, in-process seconds"}
    log.info("x1 read: plain %.2fs, gzip-1 %.2fs -> using %s", reads["plain"]["read_to_documents_s"],
             reads["gzip1"]["read_to_documents_s"], comp)
    files = {}
    for k in scales:
        p = inputs_dir / (f"test_x{k:03d}.txt" if comp == "plain" else f"test_x{k:03d}.gz")
        if not p.exists():
            log.info("writing x%d replicated input %s", k, p)
            replicate(src, p, k, None if comp == "plain" else 1)
        files[k] = p
    results["inputs"] = {str(k): {"path": str(p), "bytes": p.stat().st_size} for k, p in files.items()}

    # ---------------------------------------------------------------- 3. LR peer fit
    lr_model = run / "lr" / "tfidf_logreg.json"
    results["lr_fit"] = run_child("lr_fit", "lr_fit", [args.config, str(data_dir), str(lr_model), lr_c, json.dumps(sets)], run)

    # ---------------------------------------------------------------- 4. predict at each scale
    # sdae_half: the same model with ``geoae predict --half`` (float16 first-layer rows).
    pred = {"sdae": {}, "sdae_half": {}, "tfidf_lr": {}}
    outs = run / "outputs"
    for k in scales:
        written = {}
        for name, extra in (("sdae", []), ("sdae_half", ["--half"])):
            oo = written[name] = outs / f"{name}_x{k:03d}.csv"
            summ = outs / f"{name}_x{k:03d}.summary.json"
            r = run_child(f"predict_{name}_x{k:03d}", "geoae",
                          ["-q", "predict", "-m", str(model_dir), "-i", str(files[k]), "-o", str(oo), "--format", "rahimi",
                           "--chunksize", str(args.chunksize), "--summary", str(summ), "--device", args.predict_device,
                           *extra], run, env={"TQDM_DISABLE": "1"})
            s = json.loads(summ.read_text())
            pred[name][str(k)] = {
                "users": s["users_in"], "rows_out": s["rows_out"], "wall_seconds": r["wall_seconds"],
                "users_per_s_wall": round(s["users_in"] / r["wall_seconds"], 1),
                "users_per_s_summary": s["users_per_second"], "peak_rss_mb": r["peak_rss_mb"], "cpu_seconds": r["cpu_seconds"],
                # A reader process reports its own peak (VmHWM) in the summary; it comes on top of the main one.
                "reader_peak_rss_mb": s.get("reader_peak_rss_mb"), "reader": s.get("reader"),
                "device": args.predict_device, **{key: r[key] for key in ("gpu_peak_allocated_mb", "gpu_name") if key in r},
            }
        pred["sdae_half"][str(k)]["vs_float32"] = half_vs_float32(written["sdae"], written["sdae_half"])
        o2 = outs / f"lr_x{k:03d}.csv"
        r = run_child(f"predict_lr_x{k:03d}", "lr_predict", [args.config, str(data_dir), str(lr_model), json.dumps(sets), str(files[k]), str(o2),
                                                              str(args.chunksize)], run)
        pred["tfidf_lr"][str(k)] = {
            "users": r["users_in"], "rows_out": r["rows_out"], "wall_seconds": r["wall_seconds"],
            "users_per_s_wall": round(r["users_in"] / r["wall_seconds"], 1),
            "users_per_s_summary": r["users_per_second"], "peak_rss_mb": r["peak_rss_mb"], "cpu_seconds": r["cpu_seconds"],
            "reader_peak_rss_mb": r.get("reader_peak_rss_mb"),
        }
        if not args.keep_outputs:
            for p in (*written.values(), o2):
                p.unlink(missing_ok=True)
    results["predict"] = pred
    ratios = {}
    for k in scales:
        a, b = pred["sdae"][str(k)], pred["tfidf_lr"][str(k)]
        ratios[str(k)] = {
            "users_per_s_wall_sdae_over_lr": ratio(a["users_per_s_wall"], b["users_per_s_wall"]),
            "users_per_s_summary_sdae_over_lr": ratio(a["users_per_s_summary"], b["users_per_s_summary"]),
            "peak_rss_sdae_over_lr": ratio(a["peak_rss_mb"], b["peak_rss_mb"]),
        }
    results["ratios_sdae_over_lr"] = ratios
    flat = {}
    if len(scales) >= 2:
        hi, lo = str(scales[-1]), str(scales[-2])
        for m in pred:
            g = ratio(pred[m][hi]["peak_rss_mb"], pred[m][lo]["peak_rss_mb"])
            flat[m] = {"peak_rss_ratio": g, "compared": f"x{hi} vs x{lo}", "flat": bool(g is not None and g <= 1 + FLAT_MARGIN),
                       "margin": FLAT_MARGIN,
                       # Only a real test when the smaller input already spans several chunks.
                       "meaningful": pred[m][lo]["users"] >= 2 * args.chunksize}
    results["flat_memory"] = flat
    results["cpu_per_user"] = cpu_per_user(pred, scales, usable_cpus(results["machine"]), args.chunksize)

    # ---------------------------------------------------------------- 5. profile
    if not args.no_profile:
        results["predict_profile"] = run_child("profile", "profile",
                                               [str(model_dir), str(files[scales[0]]), str(outs / "profile.csv"),
                                                str(args.chunksize)], run)
        (outs / "profile.csv").unlink(missing_ok=True)
    results["total_seconds"] = round(time.perf_counter() - t_all, 1)
    write_json(out_json, results)
    log.info("wrote %s", out_json)
    print(markdown(results))
    return 0


def usable_cpus(machine: dict) -> int:
    """The CPUs the measured processes may run on: the affinity mask where the OS has one (a container
    pinned to 2 of a host's 64 CPUs has 2, though ``os.cpu_count()`` says 64), else the CPU count."""
    return machine.get("cpu_affinity") or machine["cpu_count"]


def cpu_per_user(pred: dict, scales: list[int], n_cpus: int, chunksize: int) -> dict:
    """Marginal CPU microseconds per user between the two largest inputs (start-up, imports and
    model loading cancel out), and the rate the machine's CPUs could reach at that cost if every
    one of them were busy all the time: a ceiling no scheduling of the same work can beat.
    Meaningful only when the smaller input spans several chunks (otherwise start-up noise
    dominates the difference, which can even come out negative: no ceiling is given then)."""
    if len(scales) < 2:
        return {}
    hi, lo = str(scales[-1]), str(scales[-2])
    out = {}
    for m, per in pred.items():
        a, b = per[hi], per[lo]
        if a.get("cpu_seconds") is None or b.get("cpu_seconds") is None or a["users"] <= b["users"]:
            continue
        us = (a["cpu_seconds"] - b["cpu_seconds"]) / (a["users"] - b["users"]) * 1e6
        out[m] = {"compared": f"x{hi} vs x{lo}", "cpu_us_per_user": round(us, 1),
                  "ceiling_users_per_s": round(n_cpus * 1e6 / us) if us > 0 else None, "cpus": n_cpus,
                  "meaningful": b["users"] >= 2 * chunksize}
    return out


def half_vs_float32(full: Path, half: Path) -> dict:
    """How far ``--half`` predictions are from the float32 ones (same users, same order)."""
    import numpy as np
    import pandas as pd

    from geoae.geo import haversine_km

    cols = ["state", "state_prob", "lat", "lon"]
    a, b = pd.read_csv(full, usecols=cols), pd.read_csv(half, usecols=cols)
    moved = haversine_km(a["lat"].to_numpy(), a["lon"].to_numpy(), b["lat"].to_numpy(), b["lon"].to_numpy())
    return {"users": len(a), "state_changed": int((a["state"] != b["state"]).sum()),
            "max_state_prob_change": float((a["state_prob"] - b["state_prob"]).abs().max()),
            "points_moved": int((moved > 1e-6).sum()), "max_point_move_km": round(float(np.nanmax(moved)), 1) if len(a) else 0.0}


def markdown(r: dict) -> str:
    m = r["machine"]
    lines = [f"## geoae speed ({m.get('cpu_model') or m['processor']}, {m['cpu_count']} CPUs, torch threads "
             f"{m['torch_threads']}, load at start {m['loadavg_at_start']})", ""]
    if r["stages"]:
        lines += ["| stage | wall s | peak RSS MB | peak GPU MB (allocated) |", "|---|---:|---:|---:|"]
        for k, v in r["stages"].items():
            gpu = v.get("gpu_peak_allocated_mb")
            lines.append(f"| {k} | {v['wall_seconds']:.1f} | {v['peak_rss_mb']:.0f} | {'–' if gpu is None else f'{gpu:.0f}'} |")
        lines.append("")
    lines += ["| model | scale | users | wall s | users/s (wall) | users/s (summary) | peak RSS MB | reader process peak MB |",
              "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for name, per in r["predict"].items():
        for k, v in per.items():
            rd = v.get("reader_peak_rss_mb") or 0
            lines.append(f"| {name} | x{k} | {v['users']} | {v['wall_seconds']:.1f} | {v['users_per_s_wall']:.0f} | "
                         f"{v['users_per_s_summary']:.0f} | {v['peak_rss_mb']:.0f} | {f'{rd:.0f}' if rd else '–'} |")
    lines += ["", "| scale | SDAE/LR users/s (wall) | SDAE/LR users/s (summary) | SDAE/LR peak RSS |", "|---:|---:|---:|---:|"]
    for k, v in r["ratios_sdae_over_lr"].items():
        lines.append(f"| x{k} | {v['users_per_s_wall_sdae_over_lr']} | {v['users_per_s_summary_sdae_over_lr']} | "
                     f"{v['peak_rss_sdae_over_lr']} |")
    if r.get("flat_memory"):
        lines.append("")
        lines.append("flat memory: " + "; ".join(f"{k} {v['compared']} peak ratio {v['peak_rss_ratio']} "
                                                  f"({'flat' if v['flat'] else 'NOT flat'}{'' if v['meaningful'] else ', inputs too small to tell'})" for k, v in r["flat_memory"].items()))
    for k, v in (r.get("cpu_per_user") or {}).items():
        if not v["meaningful"] or v["ceiling_users_per_s"] is None:
            lines.append(f"{k}: CPU time per user not measurable at these input sizes ({v['compared']})")
            continue
        lines.append(f"{k}: {v['cpu_us_per_user']} CPU-us per user ({v['compared']}, all processes), so at most "
                     f"{v['ceiling_users_per_s']} users/s on {v['cpus']} fully busy CPUs")
    for k, v in r["predict"].get("sdae_half", {}).items():
        d = v.get("vs_float32")
        if d:
            lines.append(f"sdae_half x{k} vs sdae (float32): {d['state_changed']} of {d['users']} states changed, max state "
                         f"probability change {d['max_state_prob_change']:.2g}, {d['points_moved']} points moved (max "
                         f"{d['max_point_move_km']} km)")
    rd = r["input_read_x1"]
    lines.append(f"x1 read to documents: plain {rd['plain']['read_to_documents_s']}s, gzip-1 "
                 f"{rd['gzip1']['read_to_documents_s']}s; replicated inputs written as {rd['used']}")
    p = r.get("predict_profile")
    if p:
        lines += ["", f"predict profile at x{r['scales'][0]} ({p['users']} users, {p['tokens']} tokens):", "",
                  "| stage | s | share | users/s |", "|---|---:|---:|---:|"]
        for k in PROFILE_ORDER:
            v = p["seconds"].get(k)
            if v is None:
                continue
            lines.append(f"| {k} | {v:.3f} | {p['share_of_staged'].get(k, '')} | {p['users_per_second_by_stage'].get(k, '')} |")
        if p.get("featurize_path"):
            lines += ["", f"featurize path: {p['featurize_path']}, {p.get('featurize_mb_per_s')} MB/s; the pure-Python "
                      f"reference tokenizer alone takes {p.get('reference_python_tokenize_s')} s "
                      f"({p.get('reference_python_tokenize_mb_per_s')} MB/s) on the same text"]
    return "\n".join(lines)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "_child":
        raise SystemExit(_child_main(sys.argv[2:]))
    raise SystemExit(main())
