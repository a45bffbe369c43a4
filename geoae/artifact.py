"""The model artifact: one self-describing directory, safetensors + JSON, no pickle.

Layout of ``MODEL_DIR``::

    artifact.json                   # format, version, config, label maps, scaler,
                                    # featurizer params/vocabulary, training summary,
                                    # and the sha256 + size of every weight file
    model-<sha12>.safetensors       # SDAE ensemble members + heads (incl. the scaler buffers)
    featurizer-<sha12>.safetensors  # featurizer arrays (e.g. idf)
    points-<sha12>.safetensors      # where the training users live, per class (geo.LocationRisk);
                                    # optional: artifacts without it have no location point

Why content-addressed weight names: saving writes the new weight files beside
the old ones, then atomically replaces ``artifact.json`` (the only file that
says which weights are current), then deletes the unreferenced old files. A
kill at any moment therefore leaves either the old or the new artifact fully
loadable, never a mix.

Loading never executes code from the files (safetensors and JSON only), and
refuses, with a message saying what is wrong, a directory whose files are
missing, truncated, altered, or written by an incompatible format version.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.numpy import load as np_st_load
from safetensors.numpy import save as np_st_save
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from geoae import __version__
from geoae.checkpoint import missing_cuda_ordinal
from geoae.config import Config, config_from_dict
from geoae.errors import ArtifactError, ConfigError, GeoaeError
from geoae.geo import LocationRisk
from geoae.labels import US_STATES
from geoae.manifest import atomic_write_bytes, atomic_write_text
from geoae.sdae import GeoSDAEEnsemble

log = logging.getLogger(__name__)

FORMAT = "geoae-artifact"
FORMAT_VERSION = 1
INDEX = "artifact.json"


@dataclass
class Artifact:
    """Everything prediction needs, as loaded from (or about to be saved to) a model directory."""

    config: Config
    model: GeoSDAEEnsemble
    featurizer: Any
    classes: list[str]                 # class index -> USPS state code
    state_points: np.ndarray           # [n_classes, 2] median (lat, lon) of training users per class
    meta: dict = field(default_factory=dict)  # training summary, data provenance
    location: LocationRisk | None = None      # for the location point; None in older artifacts

    @property
    def n_features(self) -> int:
        return self.model.n_features


_WEIGHT_NAME = re.compile(r"^(model|featurizer|points)-[0-9a-f]{12}\.safetensors$")
_WEIGHT_TMP = re.compile(r"^\.(model|featurizer|points)-[0-9a-f]{12}\.safetensors\..*\.tmp$")


def _sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def save_artifact(out_dir: str | Path, art: Artifact) -> Path:
    """Write ``art`` to ``out_dir`` crash-safely (see module docstring). Returns the index path."""
    try:  # what loading refuses is not written: a model no command could load would be trained for nothing
        _check_classes(list(art.classes), np.asarray(art.state_points, dtype=np.float64).reshape(-1, 2))
    except ValueError as e:
        raise ArtifactError(f"refusing to save a model that could not be loaded: {e}; fix the documents (`geoae "
                            "prepare` writes USPS state codes) and train again") from None
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model_blob = st_save({k: v.detach().cpu().contiguous() for k, v in art.model.state_dict().items()})
    feat_json, feat_arrays = art.featurizer.get_state()
    feat_blob = np_st_save({k: np.ascontiguousarray(v) for k, v in feat_arrays.items()}) if feat_arrays else np_st_save(
        {"_empty": np.zeros(1, dtype=np.float32)}
    )
    blobs = [("model", model_blob), ("featurizer", feat_blob)]
    if art.location is not None:
        blobs.append(("points", np_st_save({"candidates": np.ascontiguousarray(art.location.candidates_, dtype=np.float64),
                                            "mass": np.ascontiguousarray(art.location.mass_, dtype=np.float64)})))
    files = {}
    for role, blob in blobs:
        name = f"{role}-{_sha(blob)[:12]}.safetensors"
        atomic_write_bytes(out / name, blob)
        files[role] = {"name": name, "sha256": _sha(blob), "bytes": len(blob)}
    index = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "geoae_version": __version__,
        "torch_version": torch.__version__,
        "config": art.config.to_dict(),
        "n_features": art.model.n_features,
        "n_members": len(art.model.members),
        "classes": list(art.classes),
        "state_points": np.asarray(art.state_points, dtype=float).tolist(),
        "featurizer": feat_json,
        "files": files,
        "meta": art.meta,
    }
    index["index_sha256"] = _index_sha(index)
    old = _referenced_files(out)
    atomic_write_text(out / INDEX, json.dumps(index, indent=1, sort_keys=True))
    keep = {f["name"] for f in files.values()}
    # Besides the previous index's files, also drop orphans of earlier saves that
    # were killed before their index was written (and their temporary files).
    old |= {p.name for p in out.iterdir() if _WEIGHT_NAME.match(p.name) or _WEIGHT_TMP.match(p.name)}
    for name in old - keep:
        try:
            os.unlink(out / name)
        except FileNotFoundError:
            pass
    log.info("saved artifact to %s (%d classes, %d features)", out, len(art.classes), art.model.n_features)
    return out / INDEX


def _index_sha(index: dict) -> str:
    """sha256 of the index's own content (all but this field, canonical JSON): the weight files
    carry their hashes in the index, and this covers the index itself (classes, points, config)."""
    body = {k: v for k, v in index.items() if k != "index_sha256"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode("utf-8")).hexdigest()


def _referenced_files(out: Path) -> set[str]:
    """The weight files the current index names: only names a save writes, so a damaged or hostile
    index (``../x``, an absolute path) can never make the clean-up below delete anything else."""
    try:
        idx = json.loads((out / INDEX).read_text())
        names = {f.get("name") for f in idx.get("files", {}).values()}
    except (OSError, ValueError, AttributeError, TypeError, RecursionError):
        return set()
    return {n for n in names if isinstance(n, str) and _WEIGHT_NAME.match(n)}


def _read_verified(d: Path, entry: dict, role: str) -> bytes:
    if not isinstance(entry, dict):
        raise ArtifactError(f"{d / INDEX}: files.{role} is {type(entry).__name__}, not a mapping; the artifact is damaged")
    name = entry.get("name", "")
    if not isinstance(name, str) or not name or "/" in name or "\\" in name or name.startswith("."):
        raise ArtifactError(f"{d / INDEX}: invalid file name for {role}: {name!r}")
    p = d / name
    if not p.is_file():
        raise ArtifactError(f"{d}: {role} weights {name} are missing; the model directory is incomplete — re-save or re-train it")
    size = p.stat().st_size  # before reading: a file of another size is never read (a 100 GB one was "out of memory")
    if size != entry.get("bytes"):
        raise ArtifactError(
            f"{p}: truncated or altered ({size} bytes, expected {entry.get('bytes')}); "
            "refusing to load — restore the file or re-train the model"
        )
    blob = p.read_bytes()  # what changed since the stat fails the hash below
    if _sha(blob) != entry.get("sha256"):
        raise ArtifactError(
            f"{p}: sha256 does not match artifact.json (the file was modified); refusing to load — "
            "restore the original file or re-train the model"
        )
    return blob


def model_path(model_dir: str | Path) -> Path:
    """The model directory a path names: its index file (``-m model/artifact.json``) means the
    directory, as loading, the prediction summary and the output checks all take it."""
    d = Path(model_dir)
    return d.parent if d.is_file() and d.name == INDEX else d


# Where the commands put the model under the run directory they are given (README's layout).
_RUN_MODELS = (("model", "`geoae train -o {d}` writes the model there"),
               ("train/model", "`geoae demo --out {d}` writes the model there"),
               ("sdae/model", "`geoae benchmark -o {d}` writes its main model there"))


def _run_dir_hint(d: Path) -> str:
    """For a directory without ``artifact.json``: the model inside it, if ``d`` is a run directory of
    ``train``, ``demo`` or ``benchmark`` (only a model that is there is suggested)."""
    for sub, how in _RUN_MODELS:
        if (d / sub / INDEX).is_file():
            return f"; did you mean {d / sub}? ({how.format(d=d)})"
    return " (train one with `geoae train`)"


def load_artifact(model_dir: str | Path, device: str | torch.device = "cpu") -> Artifact:
    """Load and verify a model directory. Raises ``ArtifactError`` with a specific reason."""
    from geoae.features import TfidfFeaturizer, featurizer_from_state

    dev = torch_device(device)  # before any file is read: an unusable device is the user's first problem
    if str(model_dir).strip() == "":  # Path("") is "." (the working directory): not what anyone means
        raise ArtifactError("the model path is empty (''); give the model directory (geoae train writes RUN/model)")
    d = model_path(model_dir)
    if d.is_file():  # e.g. a weight file: "not found" would send the user looking for a missing path
        hint = f"; did you mean {d.parent}?" if (d.parent / INDEX).is_file() else " (geoae train writes RUN/model)"
        raise ArtifactError(f"{d} is a file, not a model directory; give the directory that holds {INDEX}{hint}")
    if not d.is_dir():
        raise ArtifactError(f"model directory not found: {d}")
    ip = d / INDEX
    if not ip.is_file():
        raise ArtifactError(f"{d}: no {INDEX}; this is not a geoae model directory{_run_dir_hint(d)}")
    try:
        idx = json.loads(ip.read_text(encoding="utf-8"))
    # ValueError: also an integer literal too long to convert; RecursionError: nesting too deep
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise ArtifactError(f"{ip}: corrupted (not valid JSON: {e}); restore it or re-train the model") from None
    if not isinstance(idx, dict) or idx.get("format") != FORMAT:
        raise ArtifactError(f"{ip}: not a geoae artifact (format={idx.get('format') if isinstance(idx, dict) else None!r})")
    ver = idx.get("format_version")
    if type(ver) is not int or ver != FORMAT_VERSION:  # not True, not 1.0: the writer always stores the int
        raise ArtifactError(
            f"{ip}: artifact format version {ver!r} is not supported by geoae {__version__} "
            f"(expects {FORMAT_VERSION}); use the geoae version that wrote it ({idx.get('geoae_version')}) or re-train"
        )
    try:
        if not isinstance(idx["config"], dict):
            raise TypeError(f"config is {type(idx['config']).__name__}, not a mapping")
        cfg = config_from_dict(idx["config"])
        classes = idx["classes"]
        if not isinstance(classes, list):
            raise TypeError(f"classes is {type(classes).__name__}, not a list")
        points = np.asarray(idx["state_points"], dtype=np.float64)
        if points.shape != (len(classes), 2):  # one (lat, lon) pair per class, not merely as many numbers
            raise ValueError(f"state_points has shape {points.shape}, expected ({len(classes)}, 2)")
        n_features = _count(idx["n_features"], "n_features")
        n_members = _count(idx["n_members"], "n_members")
        _check_classes(classes, points)
        files = idx["files"]
        if not isinstance(files, dict):  # else "'NoneType' object is not subscriptable", naming no field
            raise TypeError(f"files is {type(files).__name__}, not a mapping")
        model_blob = _read_verified(d, files["model"], "model")
        feat_blob = _read_verified(d, files["featurizer"], "featurizer")
        points_blob = _read_verified(d, files["points"], "points") if "points" in files else None
    except ConfigError as e:
        raise ArtifactError(f"{ip}: stored config is invalid: {e}{_other_version(idx)}") from None
    except (KeyError, TypeError, ValueError, OverflowError) as e:
        raise ArtifactError(f"{ip}: missing or malformed field ({e!r}); the artifact is damaged") from None
    try:
        tensors = st_load(model_blob)
        arrays = np_st_load(feat_blob)
    except (SafetensorError, Exception) as e:  # safetensors raises its own error types on bad headers
        raise ArtifactError(f"{d}: weight file is not valid safetensors ({e}); re-train the model") from None
    arrays.pop("_empty", None)
    location = None
    if points_blob is not None:
        try:
            pa = np_st_load(points_blob)
            _check_points_arrays(pa)
            location = LocationRisk.from_arrays(pa["candidates"], pa["mass"], cfg.finetune.bayes_cap_km)
        except Exception as e:  # safetensors' own error types, missing keys, shapes that do not fit
            raise ArtifactError(f"{d}: points file is not valid ({e}); re-train the model") from None
        if location.mass_.shape[0] != len(classes):
            raise ArtifactError(f"{d}: points file has {location.mass_.shape[0]} classes, the model {len(classes)}; "
                                "the artifact is damaged — re-train the model")
    meta = idx.get("meta", {})
    try:
        if not isinstance(meta, dict):
            raise TypeError(f"meta is {type(meta).__name__}, not a mapping")
        for key in ("data_dir", "data_sha256"):  # `geoae evaluate` compares them with the data it scores
            if key in meta and not isinstance(meta[key], str):
                raise TypeError(f"meta.{key} is {type(meta[key]).__name__}, not a string")
        vocab = idx["featurizer"].get("vocabulary") if isinstance(idx["featurizer"], dict) else None
        if isinstance(vocab, list) and not all(isinstance(t, str) for t in vocab):
            raise TypeError("featurizer.vocabulary holds a term that is not a string")
        try:
            featurizer = featurizer_from_state(idx["featurizer"], arrays)
        except ArtifactError as e:
            raise ArtifactError(f"{ip}: {e}{_other_version(idx)}") from None
        n_feat = getattr(featurizer, "n_features_", n_features)
        if n_feat != n_features:
            raise ValueError(f"the featurizer makes {n_feat} features, the model takes n_features={n_features}")
        have = featurizer.get_params()
        if isinstance(featurizer, TfidfFeaturizer) and have != (want := TfidfFeaturizer.from_config(cfg.features).get_params()):
            diff = sorted(k for k in want if have.get(k) != want[k])
            raise ValueError(f"featurizer settings differ from config.features ({', '.join(diff)}); the model was "
                             "trained with the config's")
        _check_weights(tensors, n_members, n_features, len(classes), cfg.model)
        model = GeoSDAEEnsemble.build(n_members, n_features, len(classes), cfg.model)
    # RuntimeError/OverflowError: sizes torch cannot even lay out (a width of 10**15 in an edited config)
    except (KeyError, TypeError, ValueError, IndexError, AttributeError, RuntimeError, OverflowError) as e:
        raise ArtifactError(f"{ip}: missing or malformed field ({e!r}); the artifact is damaged") from None
    except _WeightsMismatch as e:
        raise ArtifactError(f"{d}: weights do not fit the stored config ({e}); the artifact is damaged — "
                            "re-train the model") from None
    try:
        model.load_state_dict(tensors, strict=True)
    except RuntimeError as e:
        raise ArtifactError(f"{d}: weights do not fit the stored config ({str(e).splitlines()[0]})") from None
    # Last, once everything parsed: an index edited by hand (classes, points, config) that still
    # parses is refused too. Artifacts saved before this field existed have none and are accepted.
    if "index_sha256" in idx and idx["index_sha256"] != _index_sha(idx):
        raise ArtifactError(f"{ip}: edited after it was saved (its index_sha256 does not match its content); "
                            "restore it or re-train the model")
    model.to(dev).eval()
    return Artifact(config=cfg, model=model, featurizer=featurizer, classes=classes, state_points=points,
                    meta=meta, location=location)


def _other_version(idx: dict) -> str:
    """A config or featurizer state this version cannot read most often comes from a model saved by
    another geoae version (a key added or removed since): say so, or the message reads as damage."""
    wrote = idx.get("geoae_version")
    if wrote == __version__:
        return ""
    return f" (the model was written by geoae {wrote}; this is geoae {__version__}: use that version or re-train the model)"


class _WeightsMismatch(Exception):
    """The weight file's tensors are not the ones the index's config describes."""


def _count(v: Any, what: str) -> int:
    """A stored count: a whole number >= 1 (not a bool, a float or a string)."""
    if type(v) is not int or v < 1:
        raise ValueError(f"{what} must be a whole number >= 1; got {v!r}")
    return v


def _check_classes(classes: Any, points: np.ndarray) -> None:
    """The class list: distinct, non-empty strings; their points finite coordinates."""
    if not isinstance(classes, list) or not all(isinstance(c, str) and c for c in classes):
        raise ValueError("classes must be a list of non-empty strings (state codes)")
    if not classes or len(set(classes)) != len(classes):
        dup = sorted({c for c in classes if classes.count(c) > 1})
        raise ValueError(f"classes must be distinct and at least one; repeated: {dup}")
    # Training only ever has the 50 states + DC as classes; anything else would be written out
    # as a "state" with no region and no place on the map.
    unknown = sorted(set(classes) - set(US_STATES))
    if unknown:
        raise ValueError(f"classes must be US state codes (50 states + DC); not one: {unknown[:5]}")
    if not (np.isfinite(points).all() and (np.abs(points[:, 0]) <= 90).all() and (np.abs(points[:, 1]) <= 180).all()):
        raise ValueError("state_points must be finite (lat, lon) pairs within [-90, 90] x [-180, 180]")


def _check_points_arrays(pa: dict) -> None:
    """The location points file: float64 arrays as saved, finite, coordinates on the globe, mass >= 0."""
    for k in ("candidates", "mass"):
        a = pa[k]
        if a.dtype != np.float64:
            raise ValueError(f"{k} is {a.dtype}, expected float64")
        if not np.isfinite(a).all():
            raise ValueError(f"{k} has non-finite values")
    c, m = pa["candidates"], pa["mass"]
    if c.ndim != 2 or c.shape[1] != 2 or len(c) == 0:
        raise ValueError(f"candidates has shape {c.shape}, expected (cells >= 1, 2)")
    if (np.abs(c[:, 0]) > 90).any() or (np.abs(c[:, 1]) > 180).any():
        raise ValueError("candidates has coordinates off the globe")
    if (m < 0).any():
        raise ValueError("mass has negative values")


_MEMBER_KEY = re.compile(r"^members\.(\d+)\.")


def _check_weights(tensors: dict[str, torch.Tensor], n_members: int, n_features: int, n_states: int, cfg: Any) -> None:
    """Compare the weight file with the model the index describes *before* building it: the member count
    first (an edited ``n_members`` must not build a billion members), then every tensor's name, shape
    and dtype against one member built on the meta device (no memory), and that the values are finite."""
    from geoae.sdae import GeoSDAE

    found = {int(m.group(1)) for k in tensors if (m := _MEMBER_KEY.match(k))}
    if len(found) != n_members or found != set(range(n_members)):  # the length first: n_members may be huge
        raise _WeightsMismatch(f"the index says n_members={n_members}, the weight file holds members "
                               f"{sorted(found)[:10]}")
    with torch.device("meta"):
        ref = GeoSDAE(n_features, n_states, cfg).state_dict()
    want = {f"members.{i}.{k}": v for i in range(n_members) for k, v in ref.items()}
    if missing := sorted(set(want) - set(tensors)):
        raise _WeightsMismatch(f"missing tensor {missing[0]}" + (f" and {len(missing) - 1} more" if len(missing) > 1 else ""))
    if extra := sorted(set(tensors) - set(want)):
        raise _WeightsMismatch(f"unexpected tensor {extra[0]}" + (f" and {len(extra) - 1} more" if len(extra) > 1 else ""))
    for k, ref_t in want.items():
        t = tensors[k]
        if t.shape != ref_t.shape or t.dtype != ref_t.dtype:
            raise _WeightsMismatch(f"{k} is {t.dtype} {tuple(t.shape)}, expected {ref_t.dtype} {tuple(ref_t.shape)}")
        if t.is_floating_point() and not torch.isfinite(t).all():
            raise _WeightsMismatch(f"{k} has non-finite values (NaN or inf)")
    # The buffers are fixed by the data, not learned: a value training cannot have written scales every
    # regression point (an input_scale of 3e38 put users at random places on the globe, without a word).
    scale = torch.tensor(float(n_features) ** 0.5)
    limit = torch.tensor([90.0, 180.0])  # |lat|, |lon|; a standard deviation is at most half the range
    for i in range(n_members):
        pre = f"members.{i}."
        if not torch.equal(tensors[pre + "input_scale"], scale):
            raise _WeightsMismatch(f"{pre}input_scale is {tensors[pre + 'input_scale'].item():g}, "
                                   f"expected sqrt(n_features) = {scale.item():g}")
        if not (tensors[pre + "coord_mean"].abs() <= limit).all():
            raise _WeightsMismatch(f"{pre}coord_mean {tensors[pre + 'coord_mean'].tolist()} is not a (lat, lon) point")
        if not ((tensors[pre + "coord_std"] > 0) & (tensors[pre + "coord_std"] <= limit)).all():
            raise _WeightsMismatch(f"{pre}coord_std {tensors[pre + 'coord_std'].tolist()} is not the spread of "
                                   "(lat, lon) points")


def torch_device(device: str | torch.device) -> torch.device:
    """``device`` as a torch device this machine has, or a ``GeoaeError`` saying why not."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise GeoaeError(f"--device {device!r}: not a device name ({e}); use cpu or cuda") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise GeoaeError(f"--device {device}: no CUDA GPU is available on this machine; use --device cpu")
    if (n := missing_cuda_ordinal(dev)) is not None:
        raise GeoaeError(f"--device {device}: this machine has {n} CUDA GPU{'s' if n != 1 else ''} "
                         f"(cuda:0{f' to cuda:{n - 1}' if n > 1 else ''}); use one of those or --device cpu")
    if dev.type == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise GeoaeError(f"--device {device}: MPS is not available on this machine; use --device cpu")
    if dev.type not in ("cpu", "cuda", "mps"):
        raise GeoaeError(f"--device {device}: geoae runs on cpu, cuda or mps")
    return dev
