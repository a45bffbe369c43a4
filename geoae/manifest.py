"""Provenance written beside every output: resolved config, manifest, hashes.

Also the one place that knows how to write a file atomically (write to a
temporary sibling, fsync, rename), so a kill mid-write never leaves a
half-written config, manifest or weight file where a good one used to be.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import math
import os
import platform
import stat
import sys
import tempfile
import time
from pathlib import Path
from typing import Any


@functools.lru_cache(maxsize=1)
def file_mode() -> int:
    """The permission bits ``open()`` gives a new file under the process umask (0644 under 022).

    Read once: reading the umask means setting it and putting it back, and in between another
    thread creating a file would get the temporary value."""
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        # A file being replaced keeps its permissions, as when a plain open() rewrites it: a manifest
        # or model its owner made private (0600) or group-writable must not come back 0644. stat, not
        # lstat: a symlink's own mode is 0777.
        mode = stat.S_IMODE(os.stat(path).st_mode) & 0o777
    except OSError:  # a new file
        mode = file_mode()
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:  # first, so that the descriptor is closed whatever fails below
            # mkstemp creates the file 0600; a model or report must be readable by whoever may read
            # a file this user writes (another account serving the model), as with a plain open().
            os.fchmod(f.fileno(), mode)
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def _fsync_dir(directory: Path) -> None:
    """Make a rename in ``directory`` durable: the file's fsync covers its data, not the directory entry
    that the rename changed, so without this a crash soon after can bring back the old file (or none)
    when the caller has already gone on (removed the previous checkpoint's tensors, reported success).
    Best effort: some platforms and file systems cannot open or fsync a directory."""
    try:
        fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def check_writable(path: str | Path, what: str, *, directory: bool) -> Path:
    """Refuse, before any work is done, an output that cannot be created: a file where a directory
    must be (``path`` itself when it is a directory, or one of its parents), a directory where a file
    must be (``path`` itself when it is not), or a place this process
    cannot write to (no permission, a read-only or virtual file system such as /proc). Creates
    nothing: a refused command leaves no directory behind. Returns ``path`` as a ``Path``."""
    from geoae.errors import GeoaeError

    p = Path(path)
    if directory and p.exists() and not p.is_dir():
        raise GeoaeError(f"{what} {p}: is a file; it must be a directory (new or existing)")
    if not directory and p.is_dir():
        raise GeoaeError(f"{what} {p}: is a directory; give the name of a file to write")
    a = p if directory else p.parent
    while not a.exists() and a != a.parent:  # the nearest part of the path that exists
        a = a.parent
    if not a.is_dir():
        raise GeoaeError(f"{what} {p}: {a} is a file, so nothing can be created under it; give another path")
    try:
        with tempfile.TemporaryFile(dir=a):
            pass
    except OSError as e:
        raise GeoaeError(f"{what} {p}: cannot write in {a} ({e.strerror or e}); give a writable location") from None
    return p


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(_finite(obj), indent=2, sort_keys=True, default=_json_default) + "\n")


def _finite(o: Any) -> Any:
    """``o`` with every NaN or infinite float (numpy's too, in arrays as well) as ``None``: JSON has
    no such numbers, and Python's ``NaN``/``Infinity`` make a file that jq, JavaScript or any strict
    parser refuses. ``None`` is how the metrics already say "no value"."""
    if isinstance(o, dict):
        return {k: _finite(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_finite(v) for v in o]
    if isinstance(o, float):  # numpy's float64 too
        return o if math.isfinite(o) else None
    if isinstance(o, (str, int)):  # numpy's str_ too, which json writes as it is
        return o
    if type(o).__module__ == "numpy":  # float32, arrays...: as JSON would get them, then checked
        return _finite(_json_default(o))
    return o


def _json_default(o: Any) -> Any:
    import numpy as np

    if isinstance(o, np.bool_):  # not a subclass of bool, which json knows
        return bool(o)
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serializable: {type(o).__name__}")


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(chunk)
            if not b:
                break
            h.update(b)
    return h.hexdigest()


def file_record(path: str | Path) -> dict:
    p = Path(path)
    return {"path": str(p), "bytes": p.stat().st_size, "sha256": sha256_file(p)}


def versions() -> dict:
    """Versions of the libraries whose behaviour shapes the numbers."""
    import importlib.metadata as md

    out = {"python": sys.version.split()[0], "platform": platform.platform()}
    for name in ("geoae", "torch", "numpy", "scikit-learn", "pandas", "scipy", "transformers", "shapely", "safetensors"):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            pass
    return out


def bar_disabled(logger: logging.Logger, progress: bool | None = None) -> bool | None:
    """tqdm's ``disable`` for a progress bar of ``logger``'s stage: off under ``-q`` (the logger
    is quieter than INFO) unless ``progress`` says otherwise; ``None`` lets tqdm hide it when
    stderr is not a terminal."""
    if progress is not None:
        return not progress
    return None if logger.isEnabledFor(logging.INFO) else True


class Timer:
    """Wall time of a block, for manifests and benchmarks."""

    def __enter__(self) -> "Timer":
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.seconds = time.perf_counter() - self.t0


def write_run_files(out_dir: str | Path, config: Any, manifest: dict) -> None:
    """Write ``config.json`` (resolved) and ``manifest.json`` beside a run's outputs."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cfg = config.to_dict() if hasattr(config, "to_dict") else config
    write_json(out / "config.json", cfg)
    base = {"created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "versions": versions()}
    base.update(manifest)
    write_json(out / "manifest.json", base)
