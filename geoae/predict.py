"""Batch inference: user documents in, one prediction row per user out.

``load_predictor(model_dir).predict(frame)`` for Python; ``geoae predict`` for
files of any format the readers support. Files are streamed in chunks of users
(``iter_documents``), featurized, scored and appended to the output, so memory
stays flat whatever the input size. A bad record never stops the batch: it is
counted under its reason (or stops the run under ``--on-bad-record fail``),
and a user with no usable text still gets a row whose ``status`` says why.

Output columns (one row per user):

- ``user_id``, ``n_tweets``
- ``status``: ``ok``; ``no_known_words`` (text, but no word of the model's
  vocabulary: the row carries the model's prior-like guess, flagged);
  ``empty_text`` (nothing to predict from: prediction fields are empty); or
  ``non_finite_output`` (the model's output for this text is NaN or infinite,
  a damaged model: prediction fields are empty, never a state from it)
- ``state``, ``state_prob``, ``region``: the state head's arg-max, its probability, its Census region
- ``lat``, ``lon``: the model's point prediction, of the kind chosen on the
  validation users at training time (``Predictor.point_``, one of the four below)
- ``reg_lat``, ``reg_lon``: the regression head's point (degrees)
- ``state_lat``, ``state_lon``: the median training point of the predicted state
- ``bayes_lat``, ``bayes_lon``: the state point with the least expected error
  under the predicted state distribution (``geo.bayes_point_index``)
- ``loc_lat``, ``loc_lon``: the location point: the predicted state's point where
  the state head is sure, otherwise the training-location cell with the least
  expected error under both heads (``finetune.location_points``); empty for
  models trained before it existed
- ``top_states``: JSON ``[[code, prob], ...]`` of the top-k states
- ``confidence``: the predicted state's probability (the quantity to abstain on)
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import io
import json
import logging
import os
import tempfile
import time
from collections import Counter, deque
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import pandas as pd
import torch
from threadpoolctl import threadpool_limits
from tqdm.auto import tqdm

from geoae.artifact import INDEX, Artifact, load_artifact, model_path
from geoae.errors import DataError, GeoaeError, RecordLog, breakdown, plural
from geoae.features import available_cpus
from geoae.finetune import point_predictions, predict_arrays
from geoae.labels import top_states_json
from geoae.manifest import bar_disabled, check_writable, file_mode, versions
from geoae.tweets import TABLE_COLUMNS, blank_texts, check_distinct_inputs, parse_columns, text_list

log = logging.getLogger(__name__)


OUTPUT_COLUMNS = [
    "user_id", "n_tweets", "status", "state", "state_prob", "region", "lat", "lon",
    "reg_lat", "reg_lon", "state_lat", "state_lon", "bayes_lat", "bayes_lon", "loc_lat", "loc_lon", "top_states",
    "confidence",
]
_NON_FLOAT_COLUMNS = ("user_id", "n_tweets", "status", "state", "region", "top_states")
POINT_KINDS = {"regression": ("reg_lat", "reg_lon"), "state_median": ("state_lat", "state_lon"), "bayes": ("bayes_lat", "bayes_lon"),
               "location": ("loc_lat", "loc_lon")}
OUT_FORMATS = {".csv": "csv", ".jsonl": "jsonl", ".json": "jsonl", ".parquet": "parquet", ".pq": "parquet"}


class Predictor:
    """Scores user documents with a loaded artifact. ``classes_`` lists the state codes of the proba columns."""

    def __init__(self, artifact: Artifact, *, top_k: int = 3, batch_size: int = 1024, half: bool = False,
                 source: str | Path | None = None):
        """``source``: the model directory the artifact was loaded from, named in errors."""
        from geoae.labels import region_of

        self.artifact = artifact
        # half: the first layer's weight rows in float16 for the sparse product (a copy made at
        # the first batch; the artifact keeps float32). Half the memory read per non-zero, which
        # bounds the SDAE's forward pass; on the GeoText test users it changes no state and moves
        # probabilities by < 2e-4 (BENCHMARKS.md).
        artifact.model.first_layer_dtype = torch.float16 if half else torch.float32
        self.classes_ = list(artifact.classes)
        self.top_k = max(1, min(top_k, len(self.classes_)))
        if top_k > self.top_k:
            log.info("--top-k %d: the model knows %s, so top_states lists %d", top_k, plural(len(self.classes_), "state"),
                     self.top_k)
        self.batch_size = batch_size
        self.device = next(artifact.model.parameters()).device
        self._regions = np.asarray(region_of(np.asarray(self.classes_)), dtype=object)
        self._classes = np.asarray(self.classes_, dtype=object)
        self.point_ = artifact.meta.get("point", "regression")
        where = f"{model_path(source) / INDEX}: " if source is not None else ""
        if not isinstance(self.point_, str) or self.point_ not in POINT_KINDS:
            raise GeoaeError(f"{where}artifact names an unknown point kind {self.point_!r} in meta.point (known: "
                             f"{', '.join(POINT_KINDS)}); re-train the model")
        if self.point_ == "location" and artifact.location is None:
            raise GeoaeError(f"{where}artifact's point is 'location' but it has no points file; re-train the model")

    # ----------------------------------------------------------------- scoring
    @torch.no_grad()
    def _score(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Probabilities [n, C], regression coordinates [n, 2], and whether any vocabulary word was seen."""
        if not len(texts):  # an empty frame scores to empty arrays (the featurizer refuses no documents)
            return (np.zeros((0, len(self.classes_)), np.float32), np.zeros((0, 2), np.float64), np.zeros(0, bool))
        X = self.artifact.featurizer.transform(texts)
        nnz = X.getnnz(axis=1) if hasattr(X, "getnnz") else np.count_nonzero(X, axis=1)
        probs, coords = predict_arrays(self.artifact.model, X, self.device, self.batch_size)
        if not len(probs):
            return probs, coords.astype(np.float64), np.zeros(0, bool)
        c = coords.astype(np.float64)
        c[~np.isfinite(c)] = np.nan  # an infinite latitude is no output, not the pole the clip below makes of it
        # The regressor is unconstrained; keep its points on the globe.
        c[:, 0] = np.clip(c[:, 0], -90.0, 90.0)
        c[:, 1] = (c[:, 1] + 180.0) % 360.0 - 180.0
        return probs, c, nnz > 0

    def predict_proba(self, docs: pd.DataFrame) -> np.ndarray:
        """State probabilities [n_users, n_classes] in ``classes_`` order (empty text scores the empty vector)."""
        texts = text_list(docs["text"])
        return self._score(texts)[0]

    def predict(self, docs: pd.DataFrame) -> pd.DataFrame:
        """One row per input row (same order) with the columns in ``OUTPUT_COLUMNS``."""
        return self.predict_with_proba(docs)[0]

    def predict_with_proba(self, docs: pd.DataFrame) -> tuple[pd.DataFrame, np.ndarray]:
        """``predict``'s frame and ``predict_proba``'s matrix from one scoring pass."""
        if "text" not in docs.columns:
            raise DataError("predict needs a 'text' column (one document per user)")
        texts = text_list(docs["text"])
        n = len(texts)
        probs, coords, seen = self._score(texts)  # empty texts score the empty vector, as in predict_proba
        uid = docs["user_id"].astype(str).to_numpy() if "user_id" in docs.columns else np.arange(n).astype(str)
        ntw = docs["n_tweets"].to_numpy() if "n_tweets" in docs.columns else np.ones(n, dtype=np.int64)
        empty = blank_texts(texts)
        # A damaged model (weights huge but finite) can overflow to NaN on some texts: such a row gets no
        # state, point or probability from it, only its status (counted in the run's rows_by_status).
        broken = ~empty & ~(np.isfinite(probs).all(axis=1) & np.isfinite(coords).all(axis=1))
        keep = np.flatnonzero(~empty & ~broken)
        # Columns are filled as whole arrays and the frame is built once: per-column ``.loc``
        # writes into an object frame cost more than the model's forward pass on big chunks.
        cols: dict[str, np.ndarray] = {c: np.full(n, np.nan) for c in OUTPUT_COLUMNS if c not in _NON_FLOAT_COLUMNS}
        state = np.full(n, None, dtype=object)
        region = np.full(n, None, dtype=object)
        tops = np.full(n, None, dtype=object)
        status = np.where(empty, "empty_text", np.where(broken, "non_finite_output", "ok")).astype(object)
        if len(keep):
            kp = probs[keep]
            top = np.argsort(-kp, axis=1)[:, :self.top_k]
            # The points below take argmax (the first of tied states); quicksort orders exact ties
            # arbitrarily, so such rows are sorted again stably and every column names one state.
            tied = top[:, 0] != kp.argmax(1)
            if tied.any():
                top[tied] = np.argsort(-kp[tied], axis=1, kind="stable")[:, :self.top_k]
            best = top[:, 0]
            pbest = kp[np.arange(len(keep)), best]
            state[keep] = self._classes[best]
            region[keep] = self._regions[best]
            cols["state_prob"][keep] = pbest
            cols["confidence"][keep] = pbest
            points = point_predictions(kp, coords[keep], self.artifact.state_points, self.artifact.config.finetune,
                                       self.artifact.location)
            for kind, (la, lo) in POINT_KINDS.items():
                if kind not in points:
                    continue
                cols[la][keep] = points[kind][:, 0]
                cols[lo][keep] = points[kind][:, 1]
            la, lo = POINT_KINDS[self.point_]
            cols["lat"], cols["lon"] = cols[la].copy(), cols[lo].copy()
            tops[keep] = top_states_json(top, np.take_along_axis(kp, top, axis=1), self._classes)
            status[keep[~seen[keep]]] = "no_known_words"
        obj = {c: pd.Series(v, dtype=object) for c, v in (("state", state), ("region", region), ("top_states", tops))}
        out = pd.DataFrame({"user_id": uid, "n_tweets": ntw, "status": status.astype(str), **obj, **cols})
        return out[OUTPUT_COLUMNS], probs


def load_predictor(model_dir: str | Path, *, device: str = "cpu", top_k: int = 3, half: bool = False) -> Predictor:
    """Load a verified artifact (see ``artifact.load_artifact``) and wrap it for prediction."""
    return Predictor(load_artifact(model_dir, device=device), top_k=top_k, half=half, source=model_dir)


# --------------------------------------------------------------------------- streaming files


def _arrow_schema(columns=OUTPUT_COLUMNS):
    import pyarrow as pa

    types = {"user_id": pa.string(), "n_tweets": pa.int64(), "status": pa.string(), "state": pa.string(),
             "region": pa.string(), "top_states": pa.string()}
    return pa.schema([(c, types.get(c, pa.float64())) for c in columns])


class _Writer:
    """Appends prediction chunks to CSV / JSON lines / Parquet, written to a temp file then renamed."""

    def __init__(self, path: Path, fmt: str):
        self.path, self.fmt = path, fmt
        path.parent.mkdir(parents=True, exist_ok=True)
        # A name of its own per writer (mkstemp: random, created exclusively): two runs writing the
        # same output each fill their own file, and the last to finish replaces the output with a
        # whole one, instead of both writing into one shared ".NAME.partial" and renaming a mix.
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".partial")
        self.tmp = Path(tmp)
        try:
            # mkstemp creates the file 0600; the output gets the mode a plain open() gives a new file.
            os.fchmod(fd, file_mode())
        except BaseException:
            os.close(fd)
            self.tmp.unlink()
            raise
        self._pq = None
        self._fh = None
        self._raw = None
        if fmt not in ("csv", "jsonl"):  # Parquet: pyarrow opens the path at the first chunk (keeping the mode)
            os.close(fd)
        else:
            self._raw = os.fdopen(fd, "wb")
            self._fh = self._raw
            if is_gzip_path(path):
                import gzip

                # Level 1: on these rows it compresses to 28 % at ~3.6 µs per user, where the default 9
                # reaches 22 % at ~20 µs (a fifth of the whole per-user budget). No file name and
                # mtime 0 in the header: the same predictions give the same bytes.
                self._fh = gzip.GzipFile(filename="", mode="wb", fileobj=self._raw, mtime=0, compresslevel=1)
            if fmt == "jsonl":
                self._fh = io.TextIOWrapper(self._fh, encoding="utf-8", newline="")
        self._first = True

    def write(self, df: pd.DataFrame) -> None:
        if self.fmt == "csv":
            import pyarrow as pa
            import pyarrow.csv as pacsv

            # Arrow's CSV writer is ~4x faster than DataFrame.to_csv on these rows (it formats
            # floats in C++); strings are always quoted, missing values are empty fields.
            table = pa.Table.from_pandas(df, preserve_index=False, schema=_arrow_schema(list(df.columns)))
            pacsv.write_csv(table, self._fh, pacsv.WriteOptions(include_header=self._first, quoting_style="needed"))
        elif self.fmt == "jsonl":
            # 15 digits, the most pandas writes (its default, 10, cut probabilities and points ~1e-10 short of the CSV's)
            text = df.to_json(orient="records", lines=True, force_ascii=False, double_precision=15)
            self._fh.write(text if text.endswith("\n") or not text else text + "\n")
        else:
            import pyarrow as pa
            import pyarrow.parquet as pq

            # One fixed schema for every chunk: inferring it per chunk breaks when a
            # chunk's string columns are all empty (null type) or its ints differ.
            table = pa.Table.from_pandas(df, preserve_index=False, schema=_arrow_schema())
            if self._pq is None:
                self._pq = pq.ParquetWriter(self.tmp, table.schema)
            self._pq.write_table(table)
        self._first = False

    def close(self, ok: bool) -> None:
        if ok and self._first and self.fmt == "csv":  # no rows: still a header, so readers see the columns
            self._fh.write((",".join(f'"{c}"' for c in OUTPUT_COLUMNS) + "\n").encode("utf-8"))
        if self._fh is not None:
            self._fh.close()
            self._raw.close()  # GzipFile and TextIOWrapper leave a file object they were given open
        if self._pq is not None:
            self._pq.close()
        if ok:
            if self._first and self.fmt == "parquet":  # the schema of a file with rows, not all-null columns
                import pyarrow.parquet as pq

                pq.write_table(_arrow_schema().empty_table(), self.tmp)
            os.replace(self.tmp, self.path)
        elif self.tmp.exists():
            if self._first:  # nothing was written (e.g. the input was missing)
                self.tmp.unlink()
                return
            # Keep what was written for inspection, under a name that cannot be mistaken for a result.
            log.warning("partial output left at %s", self.tmp)


def check_output_paths(output: str | Path, inputs: Iterable[str | Path], what: str = "output",
                       model_dir: str | Path | None = None) -> Path:
    """Refuse an output path that would destroy data or cannot be a file, before any work is done:
    an existing directory or non-regular file (a device, ``/dev/stdout``: the output is renamed into
    place), one of the inputs itself, or a file of the model (``model_dir``: ``artifact.json`` is a
    ``.json`` path, which the JSON lines writer takes)."""
    if str(output) == "-":  # the usual "stdout" spelling: the output is written whole, then renamed into place
        raise GeoaeError(f"{what} '-' (standard output) is not supported: the result is written to a file and renamed "
                         "into place when complete; give a file path, e.g. -o predictions.csv")
    out = Path(output)
    if out.exists() or out.is_symlink():
        if not out.is_file() or out.is_symlink():
            raise GeoaeError(f"{what} {out} exists and is not a regular file (a directory, link or device); "
                             "give the path of a file to write")
        if any(_same_file(p, out) for p in inputs):
            raise GeoaeError(f"{what} {out} is also an input; writing it would destroy the input: give another path")
        if model_dir is not None and any(_same_file(f, out) for f in _model_files(model_dir)):
            raise GeoaeError(f"{what} {out} is a file of the model {model_dir}; writing it would destroy the model: "
                             "give another path")
    return check_writable(out, what, directory=False)


def _same_file(a: str | Path, b: str | Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:  # a path that does not exist (an input is reported by the reader, a model by its load)
        return False


def _model_files(model_dir: str | Path) -> list[Path]:
    """The files of a model directory (``load_artifact`` also takes its ``artifact.json``)."""
    try:
        return [p for p in model_path(model_dir).iterdir() if p.is_file()]
    except OSError:  # no such directory: the model load says so
        return []


def output_format(path: str | Path, fmt: str | None = None) -> str:
    if fmt:
        if fmt not in ("csv", "jsonl", "parquet"):
            raise GeoaeError(f"--output-format must be csv, jsonl or parquet; got {fmt!r}")
        if fmt == "parquet" and is_gzip_path(path):
            raise GeoaeError(f"{path}: Parquet output cannot be gzip-compressed as a whole (it compresses inside the "
                             "file); drop the .gz")
        return fmt
    p = Path(path)
    gz = is_gzip_path(p)
    suf = (p.with_suffix("") if gz else p).suffix.lower()
    if suf not in OUT_FORMATS or (gz and OUT_FORMATS[suf] == "parquet"):
        raise GeoaeError(f"cannot tell the output format of {path} from its suffix; use .csv, .jsonl or .parquet "
                         "(.csv.gz or .jsonl.gz for gzip; Parquet compresses inside the file), or --output-format")
    return OUT_FORMATS[suf]


def is_gzip_path(path: str | Path) -> bool:
    """An output named ``*.gz`` is gzip-compressed (CSV and JSON lines)."""
    return Path(path).suffix.lower() == ".gz"


def prefetch_chunks(chunks: Iterable[pd.DataFrame], depth: int = 2) -> Iterable[pd.DataFrame]:
    """Read the next chunks in a background thread while this one is scored.

    Reading (decompression, parsing) and scoring (compiled tokenizer, torch) both spend
    much of their time outside the GIL, so on two cores they overlap. At most ``depth``
    chunks wait in the queue (memory stays bounded); a reader error is re-raised here,
    in order, and an early exit of the consumer stops the reader.
    """
    import queue
    import threading

    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    done = object()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def reader() -> None:
        try:
            for chunk in chunks:
                if not put(chunk):
                    return
            put(done)
        except BaseException as e:  # handed to the consumer, which raises it
            put(e)

    th = threading.Thread(target=reader, name="geoae-read", daemon=True)
    th.start()
    try:
        while True:
            item = q.get()
            if item is done:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        th.join()


def read_ahead_process(paths: list[str], fmt: str, chunksize: int, log: RecordLog,
                       depth: int = 2, stats: dict | None = None,
                       columns: dict[str, str] | None = None) -> Iterable[pd.DataFrame]:
    """``iter_documents`` in a separate reader *process*, chunks handed over through a bounded queue.

    Why a process and not ``prefetch_chunks``' thread: reading (decoding, splitting, grouping)
    is Python code that holds the GIL, so in a thread it takes turns with featurizing, scoring
    and writing instead of running beside them; a process gets the second core to itself.
    ``spawn`` (not ``fork``: the parent has torch's thread pools running) starts a fresh
    interpreter that imports only the readers. The child's record log is merged into ``log``
    at the end (and its peak RSS into ``stats["reader_peak_rss_mb"]``); a reader error is
    re-raised here; an early exit of the consumer stops it.
    """
    import multiprocessing as mp
    import queue

    from geoae.documents import read_documents_into

    ctx = mp.get_context("spawn")
    q = ctx.Queue(maxsize=depth)
    proc = ctx.Process(target=read_documents_into, args=(q, list(paths), fmt, chunksize, log.policy, columns),
                       name="geoae-read", daemon=True)
    proc.start()
    try:
        while True:
            try:
                kind, payload = q.get(timeout=1.0)
            except queue.Empty:
                if proc.is_alive():
                    continue
                try:  # it may have put its last message and exited between that timeout and the check
                    kind, payload = q.get(timeout=1.0)
                except queue.Empty:
                    raise GeoaeError(f"the reader process stopped without finishing (exit code {proc.exitcode}); "
                                     "rerun with --reader thread (reader='thread') to read in this process; a script "
                                     "calling predict_files needs its top-level code under if __name__ == '__main__':"
                                     ) from None
            if kind == "chunk":
                yield payload
            elif kind == "done":
                child_log, peak = payload
                log.merge(child_log)
                if stats is not None:
                    stats["reader_peak_rss_mb"] = peak
                return
            else:
                err, child_log = payload
                log.merge(child_log)
                raise err
    finally:
        if proc.is_alive():
            proc.terminate()
        proc.join(timeout=10)
        q.close()
        q.cancel_join_thread()


def _release_freed_memory() -> Callable[[], None]:
    """A function that hands freed heap memory back to the OS (glibc's ``malloc_trim``), or a no-op.

    Each chunk allocates and frees tens of MB (texts, sparse features, activations) from two
    threads; glibc keeps freed pages in per-thread arenas and fragments them, so without a
    trim the resident size creeps up by ~3 MB per chunk (measured: 805 -> 923 MB over 38
    chunks of 5,000 GeoText users; 746 -> 773 MB with a trim after every chunk).
    """
    import ctypes

    try:
        # By its glibc name: ``ctypes.util.find_library`` would fork ``ldconfig`` from this
        # (by then large) process, which is slow and shows up as a child process of that size.
        trim = ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc (macOS, musl, Windows): nothing to do
        return lambda: None
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int

    def release() -> None:
        trim(0)

    return release


PROCESS_READER_MIN_BYTES = 32 << 20  # below ~10,000 GeoText users the process start-up is not worth it


def _size(path: str) -> int:
    try:
        return os.path.getsize(path)
    except OSError:  # a missing file is reported by the reader, with its name
        return 0


def document_chunks(paths: list[str], fmt: str, chunksize: int, log: RecordLog, reader: str = "thread",
                    stats: dict | None = None,
                    columns: dict[str, str] | None = None) -> tuple[Iterable[pd.DataFrame], str]:
    """Chunks of user documents from ``paths``, read as ``reader`` says (see ``predict_files``);
    returns them and the reader actually used (``auto`` resolved by the inputs' total size)."""
    from geoae.documents import iter_documents

    if reader == "auto":
        reader = "process" if sum(_size(p) for p in paths) >= PROCESS_READER_MIN_BYTES else "thread"
    if reader == "process":
        return read_ahead_process(paths, fmt, chunksize, log, stats=stats, columns=columns), reader
    if reader == "thread":
        return prefetch_chunks(iter_documents(paths, fmt=fmt, chunksize=chunksize, log=log, columns=columns)), reader
    raise GeoaeError(f"--reader must be auto, process or thread; got {reader!r}")


# --------------------------------------------------------------------------- worker processes

_WORKER: dict = {}


def _worker_init(model_dir: str, top_k: int, half: bool, threads: int) -> None:
    """Set up one prediction worker process: its thread counts, and the model loaded once."""
    import geoae.features
    from geoae.documents import die_with_parent

    die_with_parent()
    torch.set_num_threads(threads)
    geoae.features.FASTCOUNT_THREADS = threads  # the compiled tokenizer's threads, as torch's
    gc.set_threshold(max(gc.get_threshold()[0], 50_000), *gc.get_threshold()[1:])  # see predict_files
    threadpool_limits(1, user_api="blas")  # for the whole worker process: see predict_files
    _WORKER["predictor"] = load_predictor(model_dir, device="cpu", top_k=top_k, half=half)
    _WORKER["release"] = _release_freed_memory()


def _worker_predict(docs: pd.DataFrame) -> pd.DataFrame:
    """Score one chunk in a worker process (``predict_files(..., workers=N)``)."""
    pred = _WORKER["predictor"].predict(docs)
    del docs
    _WORKER["release"]()
    return pred


def _model_record(model_dir: str | Path) -> dict:
    """Which model made a prediction run: its directory and its files' sha256 (from the verified index;
    read right after loading it, not after the run, when a training run may have replaced it)."""
    rec: dict = {"dir": str(model_dir)}
    try:
        raw = (model_path(model_dir) / INDEX).read_bytes()
        # The index too: what it holds besides the weights (classes, state points, the point kind,
        # the location gate and kernel) changes predictions, and models that differ only there
        # (e.g. trained with another finetune.location_gate) share every weight file.
        rec["index"] = {"name": INDEX, "sha256": hashlib.sha256(raw).hexdigest()}
        idx = json.loads(raw.decode("utf-8"))
        rec["files"] = {role: {"name": f["name"], "sha256": f["sha256"]} for role, f in idx["files"].items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):  # already verified by the load: best effort
        pass
    return rec


def predict_files(
    model_dir: str | Path,
    inputs: Iterable[str | Path],
    output: str | Path,
    *,
    fmt: str = "auto",
    output_format_name: str | None = None,
    chunksize: int = 5000,
    on_bad_record: str = "skip",
    device: str = "cpu",
    top_k: int = 3,
    progress: bool | None = None,
    reader: str = "thread",
    half: bool = False,
    workers: int = 1,
    columns: dict[str, str] | None = None,
) -> dict:
    """Stream ``inputs`` through the model into ``output``; returns the run summary (also logged).

    ``reader``: ``thread`` reads in a read-ahead thread of this process; ``process`` in a
    separate process (uses a second core fully; ~1 s to start); ``auto`` picks ``process``
    when the inputs total more than ``PROCESS_READER_MIN_BYTES`` (what ``geoae predict``
    does). A reader process is started with ``spawn``, which imports the caller's main
    module again: a script that calls this with ``process``/``auto`` must keep its top-level
    code under ``if __name__ == "__main__":`` (otherwise the reader fails with a message
    saying so and suggesting ``thread``).

    ``workers`` > 1 (CPU only): chunks are scored in that many worker processes (``spawn``,
    each loads the model once and uses ``cpus // workers`` threads), at most two chunks per
    worker in flight, and written here in input order, so the output is the one a single
    process writes; ``auto`` then reads in a thread. Why processes: one process's per-chunk Python work (framing, top-k JSON,
    location points) runs on one core whatever the thread count, which caps a single
    process's throughput on a many-core machine; workers scale it with the cores. Each worker
    holds its own copy of the model (memory grows with ``workers``, stays flat in input size).
    The same ``__main__`` rule as for the reader process applies to scripts.
    """
    inputs = [str(p) for p in inputs]  # read twice below: a generator would be used up
    check_distinct_inputs(inputs)
    out_path = check_output_paths(output, inputs, model_dir=model_dir)
    ofmt = output_format(out_path, output_format_name)
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
        raise GeoaeError(f"--top-k must be a whole number >= 1; got {top_k!r}")
    if output_format_name and OUT_FORMATS.get(Path(out_path).suffix.lower(), ofmt) != ofmt:
        log.warning("--output-format %s writes %s into %s, whose suffix says otherwise", ofmt, ofmt.upper(), out_path)
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise GeoaeError(f"--workers must be a whole number >= 1; got {workers!r}")
    if workers > 1 and device != "cpu":
        raise GeoaeError(f"--workers {workers} runs CPU worker processes; with --device {device} use one process")
    if workers > (cpus := available_cpus()):
        log.warning("--workers %d on %d CPU core(s): more processes than cores add a model's memory each and "
                    "only take turns; use --workers %d or fewer", workers, cpus, cpus)
    # Load (and verify) the model here even with workers: a corrupted or missing model is then
    # one clear error before any worker starts, not a broken pool.
    predictor = load_predictor(model_dir, device=device, top_k=top_k, half=half)
    model_record = _model_record(model_dir)
    if workers > 1:
        predictor = None  # each worker loads its own; this process only reads and writes
        if reader == "auto":
            # This process only reads, hands over and writes, so a read-ahead thread has a core
            # to itself; a reader process would add one more hand-over of every text (x100 GeoText
            # input on 2 cores, --half, 2 workers: 8,842 users/s with the thread, 8,026 with the process).
            reader = "thread"
    rlog = RecordLog(policy=on_bad_record)
    paths = [str(p) for p in inputs]
    status = Counter()
    users_in = tweets_in = rows_out = 0
    t0 = time.perf_counter()
    writer = _Writer(out_path, ofmt)
    ok = False
    bar = tqdm(desc="predict", unit="user", disable=bar_disabled(log, progress))
    release = _release_freed_memory()
    reader_stats: dict = {}
    # Each chunk builds tens of thousands of small containers (top-k rows, frame columns) that
    # live for one chunk; at the default gen-0 threshold (700 allocations) that set off ~1,200
    # collections over 190k users, 0.8 s of an ~18 s run, most of it re-scanning the loaded
    # model and libraries. Raised for the loop (no collection left in it on that input), restored after it.
    gc_threshold = gc.get_threshold()
    gc.set_threshold(max(gc_threshold[0], 50_000), *gc_threshold[1:])
    # numpy's BLAS (the location points' products) runs on one thread while streaming: its
    # own pool of threads, next to torch's and the tokenizer's, keeps spinning between the
    # small products (11 % of perf's samples in an x100 GeoText run on 2 CPUs). With one thread
    # the run used 2-5 CPU-s less of ~36 at the same throughput, within noise; BENCHMARKS.md.
    blas = threadpool_limits(1, user_api="blas")
    pool = None
    pending: deque = deque()  # worker results, in input order

    def emit(pred: pd.DataFrame) -> None:
        nonlocal rows_out
        status.update(pred["status"].tolist())
        writer.write(pred)
        rows_out += len(pred)
        bar.update(len(pred))

    def collect() -> None:  # the oldest worker result, written
        try:
            pred = pending.popleft().result()
        except BrokenProcessPool:
            raise GeoaeError("a prediction worker process stopped (out of memory, killed, or a script "
                             "calling predict_files without if __name__ == '__main__':); rerun with "
                             "--workers 1") from None
        emit(pred)

    try:
        chunks, reader = document_chunks(paths, fmt, chunksize, rlog, reader, reader_stats, columns)
        if workers > 1:
            import multiprocessing as mp
            from concurrent.futures import ProcessPoolExecutor

            pool = ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn"), initializer=_worker_init,
                                       initargs=(str(model_dir), top_k, half, max(1, cpus // workers)))

        for docs in chunks:
            if docs.empty:
                continue
            users_in += len(docs)
            tweets_in += int(docs["n_tweets"].sum())
            if pool is None:
                emit(predictor.predict(docs))
            else:
                pending.append(pool.submit(_worker_predict, docs))
                while len(pending) >= 2 * workers:  # at most two chunks per worker in flight
                    collect()
            del docs
            release()
        while pending:
            collect()
        ok = True
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
        gc.set_threshold(*gc_threshold)
        blas.restore_original_limits()
        bar.close()
        writer.close(ok)
    secs = time.perf_counter() - t0
    summary = {
        "model": model_record,
        "inputs": [{"path": str(p), "bytes": _size(p)} for p in paths],
        "output": str(out_path),
        "users_in": users_in,
        "tweets_in": tweets_in,
        "rows_out": rows_out,
        "rows_by_status": dict(sorted(status.items())),
        "records_skipped": rlog.to_dict(),
        "seconds": round(secs, 3),
        "users_per_second": round(users_in / secs, 1) if secs > 0 else None,
        "reader": reader,
        "half": half,
        "workers": workers,
        **reader_stats,
        "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "versions": versions(),
    }
    log.info("predict: %s in, %s out, %s, %.1f users/s", plural(users_in, "user"), plural(rows_out, "row"),
             rlog.summary(), summary["users_per_second"] or 0)
    warn_about_records(rlog)
    if n := status.get("non_finite_output"):  # a warning, so -q still says it
        log.warning("the model's output is NaN or infinite for %s (status non_finite_output: no state or point "
                    "given); its weights are likely damaged: re-train the model", plural(n, "user"))
    return summary


def warn_about_records(rlog: RecordLog) -> None:
    """What a labelling job must not miss goes out as warnings, which ``-q`` keeps: records
    dropped, a truncated input, and users split over several output rows."""
    dropped = rlog.dropped
    if dropped:
        log.warning("%s dropped %s (examples: --summary's records_skipped)", plural(sum(dropped.values()), "bad record"),
                    dict(dropped))
    if rlog.counts.get("truncated_file"):
        log.warning("an input ends early (truncated_file): the users up to the cut are predicted, the last one "
                    "possibly from part of its tweets; %s", rlog.examples.get("truncated_file", [""])[0])
    if n := rlog.counts.get("user_not_contiguous"):
        log.warning("a user reappeared after other users %s (the input is not grouped by user, or a user is "
                    "in several files): such a user has one output row per run of their tweets, which may disagree; "
                    "sort the input by user id, or merge with `geoae prepare` first", "once" if n == 1 else f"{n} times")


def _cmd_predict(args: argparse.Namespace) -> int:
    if args.chunksize < 1:  # checked here so the message names the option
        raise GeoaeError(f"--chunksize must be >= 1; got {args.chunksize}")
    if args.summary:
        # The output first: it may exist already (a rerun), and is then not "an input".
        if Path(args.summary).resolve() == Path(args.output).resolve():
            raise GeoaeError("--summary and --output name the same file; give the summary its own path")
        check_output_paths(args.summary, [*args.input, args.output], "--summary", model_dir=args.model)
    summary = predict_files(
        args.model, args.input, args.output, fmt=args.format, output_format_name=args.output_format,
        chunksize=args.chunksize, on_bad_record=args.on_bad_record, device=args.device, top_k=args.top_k,
        reader=args.reader, half=args.half, workers=args.workers, columns=parse_columns(args.columns),
    )
    if args.summary:
        from geoae.manifest import write_json

        write_json(args.summary, summary)
    s = summary
    print(f"rows in: {plural(s['users_in'], 'user')} ({plural(s['tweets_in'], 'tweet')}); rows out: {s['rows_out']} "
          f"-> {s['output']}")
    print(f"rows by status: {json.dumps(s['rows_by_status'])}")
    skipped = s["records_skipped"]
    print(f"bad records: {skipped['skipped_total']} {breakdown(skipped)}")
    print(f"throughput: {s['users_per_second']} users/s")
    return 0


def add_cli(sub) -> None:
    p = sub.add_parser("predict", help="predict the location of every user in tweet files")
    p.add_argument("--model", "-m", required=True, help="model directory written by `geoae train` (…/model)")
    p.add_argument("--input", "-i", nargs="+", required=True, help="input files (any supported format, .gz ok)")
    p.add_argument("--output", "-o", required=True, help="output file: .csv, .jsonl or .parquet (.csv.gz, .jsonl.gz: gzip-compressed)")
    p.add_argument("--format", default="auto", help="input format (default: detect)")
    p.add_argument("--output-format", help="csv, jsonl or parquet (default: from the suffix)")
    p.add_argument("--chunksize", type=int, default=5000, help="users per streamed chunk")
    p.add_argument("--top-k", type=int, default=3, help="also list the K most probable states per user in top_states")
    p.add_argument("--device", default="cpu", help="torch device for the model: cpu, cuda or cuda:N")
    p.add_argument("--on-bad-record", choices=("skip", "fail"), default="skip",
                   help="skip (count, see the summary) or fail on the first bad record")
    p.add_argument("--reader", choices=("auto", "process", "thread"), default="auto",
                   help="read inputs in a separate process (uses a second core; default for inputs over 32 MB) "
                        "or in a read-ahead thread")
    p.add_argument("--half", action="store_true",
                   help="first-layer weights in float16 for the sparse product: faster on CPU, probabilities "
                        "within ~2e-4 of the float32 model (see BENCHMARKS.md)")
    p.add_argument("--workers", type=int, default=1,
                   help="score chunks in this many worker processes (CPU; each loads the model; output order "
                        "kept): for machines with more than two cores, see BENCHMARKS.md")
    p.add_argument("--columns", metavar="NAME=COLUMN[,...]",
                   help="CSV/TSV/Parquet: which of the file's columns hold what, e.g. author_id=user_id,tweet=text "
                        f"(targets: {', '.join(TABLE_COLUMNS)}); without it the header must use those names")
    p.add_argument("--summary", help="also write the run summary as JSON here")
    p.set_defaults(func=_cmd_predict)
