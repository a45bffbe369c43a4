"""Training checkpoints without pickle: safetensors for tensors, JSON for the rest.

A checkpoint holds everything needed to continue a run bit-for-bit: model
weights, optimizer moments, the random generators' states and the loop
position (stage, layer, epoch, early-stopping bookkeeping). The tensors go to a
content-addressed ``state-<sha12>.safetensors``; ``state.json`` is written last
(atomically), names that file and records its sha256, and only then is the
previous tensor file deleted, so a kill between the writes leaves the
*previous* consistent checkpoint in force.

Also here: device choice and batching helpers shared by the two training stages.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import reprlib
from pathlib import Path
from typing import Any, Iterator, NoReturn

import numpy as np
import scipy.sparse as sp
import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from geoae.errors import ArtifactError, ConfigError
from geoae.manifest import atomic_write_bytes, atomic_write_text

log = logging.getLogger(__name__)

STATE_JSON = "state.json"
STATE_TENSORS = "state.safetensors"


# --------------------------------------------------------------------------- device / seeds


def missing_cuda_ordinal(device: torch.device) -> int | None:
    """This machine's CUDA device count when ``device`` names a CUDA ordinal beyond it (``cuda:1`` on a
    one-GPU machine), else None; the caller words the error (``resolve_device``, ``artifact.torch_device``).

    Checked up front because torch accepts the name and fails only at the first tensor moved there,
    with "invalid device ordinal" and a traceback."""
    if device.type == "cuda" and device.index is not None and device.index >= (n := torch.cuda.device_count()):
        return n
    return None


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when present, else CPU; an explicit CUDA request without CUDA is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"train.device={name!r} but no CUDA device is available; use auto or cpu")
    device = torch.device(name)
    if (n := missing_cuda_ordinal(device)) is not None:
        raise ConfigError(f"train.device={name!r} but this machine has {n} CUDA device{'s' if n != 1 else ''} "
                          f"({', '.join(f'cuda:{i}' for i in range(n))})")
    return device


def make_generators(seed: int, device: torch.device) -> dict[str, torch.Generator]:
    """One generator for shuffling (CPU) and one for noise (on the device), both seeded.

    Every random draw of training goes through these or the global torch RNG
    (dropout), and all three are saved in checkpoints, which is what makes a
    resumed run identical to an uninterrupted one.
    """
    torch.manual_seed(seed)
    shuffle = torch.Generator().manual_seed(seed)
    noise = torch.Generator(device=device).manual_seed(seed + 1)
    return {"shuffle": shuffle, "noise": noise}


# --------------------------------------------------------------------------- batching


class Batches:
    """Mini-batches of a feature matrix (dense array or CSR) as float32 tensors.

    Small matrices are densified once onto the device (fast path); large sparse
    ones are densified one batch at a time so memory stays bounded.
    """

    DENSE_LIMIT_BYTES = 1 << 30

    def __init__(self, X: Any, device: torch.device):
        self.n = X.shape[0]
        self.device = device
        self.sparse = sp.issparse(X) and X.shape[0] * X.shape[1] * 4 > self.DENSE_LIMIT_BYTES
        if self.sparse:
            self.X = X.tocsr().astype(np.float32)
        else:
            dense = X.toarray() if sp.issparse(X) else np.asarray(X)
            self.X = torch.from_numpy(np.ascontiguousarray(dense, dtype=np.float32)).to(device)

    def take(self, idx: torch.Tensor) -> torch.Tensor:
        if self.sparse:
            return torch.from_numpy(self.X[idx.numpy()].toarray()).to(self.device)
        return self.X[idx.to(self.device)]

    def iterate(self, batch_size: int, generator: torch.Generator | None = None) -> Iterator[torch.Tensor]:
        """Yield index tensors: shuffled when a generator is given, else in order."""
        order = torch.randperm(self.n, generator=generator) if generator is not None else torch.arange(self.n)
        for s in range(0, self.n, batch_size):
            yield order[s : s + batch_size]


# --------------------------------------------------------------------------- checkpoints


def _cuda_device(gens: dict[str, torch.Generator]) -> torch.device | None:
    """The GPU that training runs on (the noise generator lives there), or None on the CPU.

    Only then is the GPU's RNG (dropout there) part of a checkpoint: asking for it on a CPU run
    would start a CUDA context on any machine that has a GPU, for nothing.
    """
    dev = gens["noise"].device
    return dev if dev.type == "cuda" else None


def _rng_tensors(gens: dict[str, torch.Generator]) -> dict[str, torch.Tensor]:
    out = {f"rng.{k}": g.get_state().cpu() for k, g in gens.items()}
    out["rng.global"] = torch.get_rng_state()
    if (cuda := _cuda_device(gens)) is not None:
        out["rng.cuda"] = torch.cuda.get_rng_state(cuda)
    return out


def _restore_rng(tensors: dict[str, torch.Tensor], gens: dict[str, torch.Generator]) -> None:
    for k, g in gens.items():
        g.set_state(tensors[f"rng.{k}"])
    torch.set_rng_state(tensors["rng.global"])
    if "rng.cuda" in tensors and (cuda := _cuda_device(gens)) is not None:
        torch.cuda.set_rng_state(tensors["rng.cuda"], cuda)


def _split_optimizer(opt: torch.optim.Optimizer) -> tuple[dict, dict[str, torch.Tensor]]:
    sd = opt.state_dict()
    tensors, scalars = {}, {}
    for pid, st in sd["state"].items():
        for name, v in st.items():
            if torch.is_tensor(v):
                tensors[f"opt.{pid}.{name}"] = v.detach().cpu().contiguous()
            else:
                scalars[f"{pid}.{name}"] = v
    return {"param_groups": sd["param_groups"], "scalars": scalars}, tensors


def _join_optimizer(meta: dict, tensors: dict[str, torch.Tensor]) -> dict:
    state: dict[int, dict] = {}
    for key, v in tensors.items():
        if key.startswith("opt."):
            _, pid, name = key.split(".", 2)
            state.setdefault(int(pid), {})[name] = v
    for key, v in meta["scalars"].items():
        pid, name = key.split(".", 1)
        state.setdefault(int(pid), {})[name] = v
    return {"state": state, "param_groups": meta["param_groups"]}


def save_checkpoint(
    ckpt_dir: Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None,
    gens: dict[str, torch.Generator],
    position: dict,
    extra_tensors: dict[str, torch.Tensor] | None = None,
) -> None:
    """Write a resumable checkpoint atomically (tensors first, then the JSON that vouches for them)."""
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    opt_meta = None
    if optimizer is not None:
        opt_meta, opt_tensors = _split_optimizer(optimizer)
        tensors.update(opt_tensors)
    tensors.update(_rng_tensors(gens))
    for k, v in (extra_tensors or {}).items():
        tensors[f"extra.{k}"] = v.detach().cpu().contiguous()
    blob = st_save(tensors)
    sha = hashlib.sha256(blob).hexdigest()
    # Content-addressed tensor file: the previous checkpoint's tensors stay untouched
    # until the new state.json (which names the new file) has replaced the old one.
    name = f"state-{sha[:12]}.safetensors"
    atomic_write_bytes(ckpt_dir / name, blob)
    doc = {"position": position, "optimizer": opt_meta, "tensors_file": name, "tensors_sha256": sha}
    atomic_write_text(ckpt_dir / STATE_JSON, json.dumps(doc, indent=1))
    for p in ckpt_dir.glob("state*.safetensors"):
        if p.name != name:
            p.unlink(missing_ok=True)


def load_checkpoint(ckpt_dir: Path) -> tuple[dict, dict[str, torch.Tensor]] | None:
    """Return ``(json_doc, tensors)`` of a consistent checkpoint, or None if there is none.

    A checkpoint whose tensor file does not match the hash in its JSON (a kill
    landed between the two writes, or the file was damaged) is refused loudly
    rather than resumed from silently.
    """
    js = ckpt_dir / STATE_JSON
    if not js.exists():
        return None
    try:
        doc = json.loads(js.read_text(encoding="utf-8"))
        if not isinstance(doc, dict) or not isinstance(doc.get("position"), dict):
            raise ValueError("not a checkpoint record (a mapping with a position)")
        name = doc.get("tensors_file", STATE_TENSORS)
        if not isinstance(name, str) or not name or "/" in name or "\\" in name or name.startswith("."):
            raise ArtifactError(f"{js}: invalid tensors_file {name!r}; delete the checkpoint directory to start over")
        blob = (ckpt_dir / name).read_bytes()
    # ValueError covers bad JSON, bad UTF-8 and integers too long to read; RecursionError, nesting too deep
    except (OSError, ValueError, RecursionError) as e:
        raise ArtifactError(f"{ckpt_dir}: unreadable checkpoint ({e}); delete it to start over") from None
    if hashlib.sha256(blob).hexdigest() != doc.get("tensors_sha256"):
        raise ArtifactError(
            f"{ckpt_dir}: checkpoint tensors do not match their recorded hash (interrupted write or damage); "
            "delete the checkpoint directory to start over"
        )
    try:
        tensors = st_load(blob)
    except Exception as e:  # safetensors raises its own error types on a bad header
        raise ArtifactError(f"{ckpt_dir}: checkpoint tensors are not valid safetensors ({e}); "
                            "delete the checkpoint directory to start over") from None
    # The stack's depth, from the weights themselves (restore() loads them strictly into the model).
    layers = len({k.split(".")[2] for k in tensors if k.startswith("model.layers.")}) or None
    check_position(doc["position"], ckpt_dir, layers=layers)
    return doc, tensors


_MISSING = object()


def check_position(position: dict, ckpt_dir: Path | None, *, stage: str | None = None,
                   layers: int | None = None, epochs: int | None = None) -> dict:
    """Refuse a checkpoint position (``state.json``'s ``position``) that training did not write;
    returns it.

    The JSON is not covered by the tensors' hash, so a hand edit (``"epoch": -1``, ``"3"``, ``true``,
    or past the configured epochs) was a traceback deep in training, or silently the wrong number of
    epochs. All the rules live here. ``load_checkpoint`` applies the ones the file decides alone
    (``layers``: the depth of its own weights); ``pretrain`` and ``finetune``, which get the loaded
    checkpoint, call it again with what only the run knows: the ``stage`` resumed and its ``epochs``
    (per layer in pretraining; a refit's own count).
    """
    where = Path(ckpt_dir) / STATE_JSON if ckpt_dir is not None else Path(STATE_JSON)

    def refuse(name: str, value: Any, allowed: str) -> NoReturn:
        shown = "missing" if value is _MISSING else reprlib.repr(value)  # a long list cut short
        raise ArtifactError(f"{where}: checkpoint field position.{name} is {shown}, expected {allowed}; the file "
                            "was edited or damaged: delete the checkpoint directory to start over")

    def count(name: str, hi: int | None) -> int:
        value = position.get(name, _MISSING)
        # A bool is an int to Python (true would run as epoch 1); training writes plain integers, never 2.0.
        if isinstance(value, bool) or not isinstance(value, int) or value < 0 or (hi is not None and value > hi):
            refuse(name, value, "an integer >= 0" if hi is None else f"an integer in [0, {hi}]")
        return value

    allowed = (stage,) if stage else ("pretrain", "finetune")
    found = position.get("stage", _MISSING)
    if found not in allowed:
        refuse("stage", found, " or ".join(map(repr, allowed)))
    if found == "pretrain":
        count("layer", layers)
        # The epoch to run next in the layer: a finished layer moves on to the next one at epoch 0.
        count("epoch", None if epochs is None else max(epochs - 1, 0))
        history = "history"
    else:
        epoch = count("epoch", epochs)
        count("best_epoch", epoch)  # the refit trains a member again for its best_epoch epochs
        count("bad_epochs", epoch)
        if not isinstance(position.get("finished", _MISSING), bool):
            refuse("finished", position.get("finished", _MISSING), "true or false")
        if position.get("best") is not None and not isinstance(position["best"], dict):
            refuse("best", position["best"], "null or an object of dev scores")
        history = "ft_history"
    records = position.get(history, [])
    if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
        refuse(history, records, "a list of per-epoch objects")
    return position


def restore(
    doc: dict,
    tensors: dict[str, torch.Tensor],
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None,
    gens: dict[str, torch.Generator],
) -> dict[str, torch.Tensor]:
    """Load model/optimizer/RNG state from a checkpoint; returns its extra tensors."""
    model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")}, strict=True)
    if optimizer is not None and doc.get("optimizer") is not None:
        optimizer.load_state_dict(_join_optimizer(doc["optimizer"], tensors))
    _restore_rng(tensors, gens)
    return {k[6:]: v for k, v in tensors.items() if k.startswith("extra.")}


def clear_checkpoint(ckpt_dir: Path) -> None:
    p = ckpt_dir / STATE_JSON
    if p.exists():
        os.unlink(p)
    for p in ckpt_dir.glob("state*.safetensors") if ckpt_dir.is_dir() else ():
        os.unlink(p)
