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
import re
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


def _restore_rng(tensors: dict[str, torch.Tensor], gens: dict[str, torch.Generator], where: Path) -> None:
    setters = [(f"rng.{k}", g.set_state) for k, g in gens.items()] + [("rng.global", torch.set_rng_state)]
    if "rng.cuda" in tensors and (cuda := _cuda_device(gens)) is not None:
        setters.append(("rng.cuda", lambda t: torch.cuda.set_rng_state(t, cuda)))
    for name, set_state in setters:
        if name not in tensors:
            raise _edited(where, f"checkpoint tensor {name} (a random generator's state) is missing")
        try:
            set_state(tensors[name])
        except (RuntimeError, TypeError, ValueError) as e:  # torch checks the state's size and dtype
            raise _edited(where, f"checkpoint tensor {name} is not a random generator's state ({e})") from None


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


def _join_optimizer(doc: dict, tensors: dict[str, torch.Tensor], optimizer: torch.optim.Optimizer,
                    ckpt_dir: Path | None) -> dict:
    """The optimizer's state dict from a checkpoint, checked against ``optimizer`` (the run's own, fresh).

    ``state.json`` is not covered by the tensors' hash, and the tensors themselves may be rewritten with
    a new hash: torch's ``load_state_dict`` failed on a hand-edited ``param_groups`` with a TypeError
    traceback, and accepts moments of the wrong shape or a missing one, failing (or silently
    training otherwise) only at the next step. So: the groups must be the ones this run's optimizer
    has (its settings come from the config, which the checkpoint was matched on), and every state
    entry one the optimizer keeps, of its parameter's shape; a parameter holds all of them or none
    (one that never had a gradient).
    """
    js, tf = _path(ckpt_dir, STATE_JSON), _path(ckpt_dir, doc.get("tensors_file", STATE_TENSORS))
    meta = doc.get("optimizer")
    if not isinstance(meta, dict) or not isinstance(meta.get("scalars"), dict):
        raise _edited(js, f"checkpoint field optimizer is {_shown(meta)}, expected an object with param_groups "
                          "and scalars (the optimizer's state, which resuming inside a stage needs)")
    own = json.loads(json.dumps(optimizer.state_dict()["param_groups"]))  # as the checkpoint stores them
    groups = meta.get("param_groups", _MISSING)
    if not isinstance(groups, list) or len(groups) != len(own):
        raise _edited(js, f"checkpoint field optimizer.param_groups is {_shown(groups)}, expected a list of "
                          f"{len(own)} parameter group{'s' if len(own) != 1 else ''}")
    for i, (group, mine) in enumerate(zip(groups, own)):
        if not isinstance(group, dict):
            raise _edited(js, f"checkpoint field optimizer.param_groups[{i}] is {_shown(group)}, expected an object")
        # Only the keys both have: another torch version may add or drop a setting.
        for key in ["params", *sorted(group.keys() & mine.keys() - {"params"})]:
            if (value := group.get(key, _MISSING)) != mine[key]:
                raise _edited(js, f"checkpoint field optimizer.param_groups[{i}].{key} is {_shown(value)}, "
                                  f"expected {reprlib.repr(mine[key])} (this run's optimizer)")
    params = [p for g in optimizer.param_groups for p in g["params"]]
    layout = _state_layout(optimizer)
    state: dict[int, dict] = {}
    entries = [(f"tensor opt.{k[4:]}", k[4:], v, tf) for k, v in tensors.items() if k.startswith("opt.")]
    entries += [(f"field optimizer.scalars.{k}", k, v, js) for k, v in meta["scalars"].items()]
    for what, key, value, where in entries:
        pid, _, name = key.partition(".")
        if not re.fullmatch(r"0|[1-9][0-9]{0,8}", pid) or int(pid) >= len(params) or name not in layout:
            raise _edited(where, f"checkpoint {what} is no state of this run's optimizer (its {len(params)} "
                                 f"parameters each keep {', '.join(sorted(layout))})")
        param, (shape, floating) = params[int(pid)], layout[name]
        shape = tuple(param.shape) if shape == "param" else shape
        if not (torch.is_tensor(value) and tuple(value.shape) == shape and value.is_floating_point() == floating):
            found = (f"a {value.dtype} tensor of shape {tuple(value.shape)}" if torch.is_tensor(value)
                     else f"the plain value {_shown(value)}")
            raise _edited(where, f"checkpoint {what} is {found}, expected a {'float' if floating else 'non-float'} "
                                 f"tensor of shape {shape}")
        state.setdefault(int(pid), {})[name] = value
    for pid, entry in sorted(state.items()):
        if missing := sorted(layout.keys() - entry.keys()):
            raise _edited(tf, f"checkpoint tensor opt.{pid}.{missing[0]} is missing (parameter {pid} has the "
                              f"optimizer's {', '.join(sorted(entry))}, not its {', '.join(missing)})")
    return {"state": state, "param_groups": groups}


def _state_layout(optimizer: torch.optim.Optimizer) -> dict[str, tuple[Any, bool]]:
    """What ``optimizer`` keeps per parameter once it has stepped: name -> (shape, or "param" for the
    parameter's own; floating point or not). Asked of the optimizer class itself, with the same
    settings, on a tiny parameter (Adam: ``step`` a scalar, ``exp_avg`` and ``exp_avg_sq`` the
    parameter's shape)."""
    probe = torch.zeros(2, 3, requires_grad=True)
    probe.grad = torch.zeros(2, 3)
    opt = type(optimizer)([probe], **optimizer.defaults)
    opt.step()
    return {k: ("param" if tuple(v.shape) == (2, 3) else tuple(v.shape), v.is_floating_point())
            for k, v in opt.state[probe].items() if torch.is_tensor(v)}


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
    (per layer in pretraining; a refit's own count), and fine-tuning's call also checks the records it
    reads back (``ft_history``, ``best``).
    """
    where = _path(ckpt_dir, STATE_JSON)

    def refuse(name: str, value: Any, allowed: str) -> NoReturn:
        raise _edited(where, f"checkpoint field position.{name} is {_shown(value)}, expected {allowed}")

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
        best_epoch = count("best_epoch", epoch)  # the refit trains a member again for its best_epoch epochs
        count("bad_epochs", epoch)
        if not isinstance(position.get("finished", _MISSING), bool):
            refuse("finished", position.get("finished", _MISSING), "true or false")
        if position.get("best") is not None and not isinstance(position["best"], dict):
            refuse("best", position["best"], "null or an object of dev scores")
        history = "ft_history"
    records = position.get(history, [])
    if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
        refuse(history, records, "a list of per-epoch objects")
    if stage == "finetune":
        # What fine-tuning reads back: one record per epoch run (without dev users the last one is the
        # member's best epoch), each with its training loss, and the scores early stopping compares.
        # Checked in fine-tuning's own call, after the epoch's range: an edited epoch is told as such,
        # not as a record count that no longer matches it.
        if len(records) != epoch:
            raise _edited(where, f"checkpoint field position.ft_history is a list of {len(records)} records, "
                                 f"expected {epoch} (one per epoch run: position.epoch)")
        for i, rec in enumerate(records):
            if type(rec.get("epoch")) is not int or rec["epoch"] != i + 1:
                refuse(f"ft_history[{i}].epoch", rec.get("epoch", _MISSING), str(i + 1))
            for key in ["train_loss", *sorted(k for k in rec if k.startswith(("train_", "dev_")))]:
                value = rec.get(key, _MISSING)
                if key == "dev_best_point" and not isinstance(value, str):
                    refuse(f"ft_history[{i}].{key}", value, "a point kind (a string)")
                if key != "dev_best_point" and not _is_number(value):
                    refuse(f"ft_history[{i}].{key}", value, "a number")
        best = position.get("best")
        # ``best`` is what early stopping compares each new epoch with: epoch best_epoch's scores.
        want = selection_values(records[best_epoch - 1]) if best_epoch else None
        if json.dumps(best, sort_keys=True) != json.dumps(want, sort_keys=True):  # JSON: NaN equals NaN
            refuse("best", best, f"the scores of epoch {best_epoch} in ft_history (position.best_epoch)"
                   if best_epoch else "null, as position.best_epoch is 0")
    return position


def selection_values(rec: dict, dev_scores: bool = True) -> dict:
    """The values early stopping can select on after one fine-tuning epoch's record: the dev scores
    (``dev_`` prefix removed; none without ``dev_scores``) and ``loss``, the training loss."""
    current = {k[4:]: v for k, v in rec.items() if k.startswith("dev_")} if dev_scores else {}
    current.setdefault("loss", rec["train_loss"])
    return current


def _shown(value: Any) -> str:
    if value is _MISSING:
        return "missing"
    return reprlib.repr(value)  # a long list cut short


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _path(ckpt_dir: Path | None, name: str) -> Path:
    return Path(ckpt_dir) / name if ckpt_dir is not None else Path(name)


def _edited(where: Path, what: str) -> ArtifactError:
    """The error for a checkpoint file that training did not write as it is (``what`` is wrong in it)."""
    return ArtifactError(f"{where}: {what}; the file was edited or damaged: delete the checkpoint directory to "
                         "start over")


def restore(
    doc: dict,
    tensors: dict[str, torch.Tensor],
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None,
    gens: dict[str, torch.Generator],
    *,
    ckpt_dir: Path | None = None,
    model_copy: str | None = None,
) -> dict[str, torch.Tensor]:
    """Load model/optimizer/RNG state from a checkpoint; returns its extra tensors.

    ``ckpt_dir`` (where the checkpoint was read) is named in errors. ``model_copy``: the prefix of
    extra tensors that must be a complete copy of the model's weights (fine-tuning's best epoch).
    Everything is checked against the model and optimizer before anything is loaded: a checkpoint
    rewritten with its hash recomputed (a tensor missing, of another shape, none at all) was a
    RuntimeError traceback from ``load_state_dict``, or an optimizer that failed at its next step.
    """
    tf = _path(ckpt_dir, doc.get("tensors_file", STATE_TENSORS))
    weights = {k[6:]: v for k, v in tensors.items() if k.startswith("model.")}
    check_weights(weights, model, tf, "model weights (model.*)")
    extra = {k[6:]: v for k, v in tensors.items() if k.startswith("extra.")}
    if model_copy is not None:
        check_weights({k[len(model_copy):]: v for k, v in extra.items() if k.startswith(model_copy)}, model, tf,
                      f"weights extra.{model_copy}*")
    opt_state = _join_optimizer(doc, tensors, optimizer, ckpt_dir) if optimizer is not None else None
    try:
        model.load_state_dict(weights, strict=True)
        if opt_state is not None:
            optimizer.load_state_dict(opt_state)
    except (RuntimeError, ValueError, TypeError, KeyError) as e:  # what the checks above leave to torch
        raise _edited(tf, f"checkpoint cannot be loaded into this run's model or optimizer "
                          f"({str(e).splitlines()[0]})") from None
    _restore_rng(tensors, gens, tf)
    return extra


def check_weights(weights: dict[str, torch.Tensor], model: torch.nn.Module, where: Path, what: str) -> None:
    """Refuse checkpoint ``weights`` that do not fit ``model`` (what ``load_state_dict(strict=True)``
    would fail on): names missing or unknown to it, tensors of another shape."""
    own = model.state_dict()
    problems = []
    if missing := sorted(own.keys() - weights.keys()):
        problems.append(f"{_few(missing)} missing")
    if unknown := sorted(weights.keys() - own.keys()):
        problems.append(f"{_few(unknown)} not in the model")
    if wrong := [k for k in own if k in weights and tuple(weights[k].shape) != tuple(own[k].shape)]:
        problems.append(f"{wrong[0]} of shape {tuple(weights[wrong[0]].shape)}, the model's is "
                        f"{tuple(own[wrong[0]].shape)}"
                        + (f" ({len(wrong)} tensors of another shape)" if len(wrong) > 1 else ""))
    if problems:
        raise _edited(where, f"checkpoint {what} do not fit this run's model: {'; '.join(problems)}")


def _few(names: list[str], n: int = 3) -> str:
    """``a, b, c and 4 more``: a few names of a long list, for a one-line message."""
    return ", ".join(names[:n]) + (f" and {len(names) - n} more" if len(names) > n else "")


def clear_checkpoint(ckpt_dir: Path) -> None:
    p = ckpt_dir / STATE_JSON
    if p.exists():
        os.unlink(p)
    for p in ckpt_dir.glob("state*.safetensors") if ckpt_dir.is_dir() else ():
        os.unlink(p)
