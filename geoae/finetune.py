"""Joint fine-tuning: the whole stack, three objectives, one shared code ``H3``.

Loss = w_state * cross-entropy(state) + w_coord * great-circle error / 1000 km
     + w_recon * reconstruction error of the clean input from a corrupted one.

Why a great-circle loss for the coordinates: the metric users care about is the
distance on the sphere, and a squared error on raw degrees both over-weights
longitude at high latitudes and punishes far misses quadratically (pulling
every prediction to the centre of the country). The mean great-circle error is
the quantity reported as "mean km", and, being L1-like, it also moves the median
error. The head still works in standardised coordinates (see ``sdae.py``), which
keeps optimisation well conditioned; ``coord_loss: mse`` (on z-scores) is kept
as an ablation.

Users without a state (outside the label set) still train the coordinate and
reconstruction heads; users without coordinates still train reconstruction.

Model selection: after each epoch the dev users are scored; the best epoch by
``finetune.select_metric`` is kept and training stops after ``patience`` epochs
without improvement. ``combined`` = mean of dev state accuracy and the share of
the dev median error removed relative to predicting the training median point
(so both heads count equally, each on a 0-1 scale). ``dev_loss`` = the
supervised part of the training objective on dev (state cross-entropy + mean
great-circle error / 1000 km): much smoother than accuracies measured on a few
hundred users, so it stops at a better epoch on small data.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from geoae.checkpoint import Batches, check_position, restore, save_checkpoint, selection_values
from geoae.config import Config, FinetuneConfig
from geoae.errors import GeoaeError
from geoae.geo import LocationRisk, bayes_point_index, haversine_km, haversine_km_torch
from geoae.manifest import bar_disabled
from geoae.pretrain import reconstruction_loss
from geoae.sdae import GeoSDAE, GeoSDAEEnsemble, corrupt

log = logging.getLogger(__name__)
# torch warns that its sparse CSR tensors are "in beta" the first time one is built; the product we use
# is stable and tested. A process-wide filter, not ``catch_warnings``: that swaps the global warning
# state and races the reader thread, which records pandas' warnings at the same time.
warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta", category=UserWarning)
# torch 2.11 also warns, at every batch, that invariant checks are "implicitly disabled", though each
# batch's tensor is built with check_invariants=True (seen in predict's output on a GPU machine's image).
warnings.filterwarnings("ignore", message="Sparse invariant checks are implicitly disabled", category=UserWarning)


@dataclass
class TrainingSet:
    """Features and targets of one split. ``state`` is -1 where unknown; ``coords`` NaN where unknown."""

    X: object                 # scipy CSR or dense float32 [n, n_features]
    state: np.ndarray         # int64 [n]
    coords: np.ndarray        # float32 [n, 2] (lat, lon) degrees

    def __len__(self) -> int:
        return self.X.shape[0]


def geo_soft_targets(state: np.ndarray, coords: np.ndarray, class_points: np.ndarray | None,
                     share: float, km: float) -> np.ndarray | None:
    """State targets [n, C] for ``finetune.geo_label_smoothing`` (``None`` when it is off).

    A user with a state and coordinates gets ``(1 - share) * one-hot + share * k``, where ``k``
    weights each class by ``exp(-d / km)``, ``d`` the great-circle distance from the user to the
    class's point (its training median), normalised to sum to 1. A user with a state but no
    coordinates keeps the one-hot target; rows without a state are masked out of the loss.
    """
    if share <= 0 or class_points is None:
        return None
    state = np.asarray(state)
    n, C = len(state), len(class_points)
    t = np.zeros((n, C), np.float32)
    has = state >= 0
    t[np.flatnonzero(has), state[has]] = 1.0
    ok = np.flatnonzero(has & np.isfinite(coords).all(axis=1))
    if len(ok):
        d = haversine_km(coords[ok, :1], coords[ok, 1:], class_points[None, :, 0], class_points[None, :, 1])
        k = np.exp(-(d - d.min(axis=1, keepdims=True)) / km)  # shifted: no underflow for a user far from all
        t[ok] = (1.0 - share) * t[ok] + share * (k / k.sum(axis=1, keepdims=True))
    return t


def joint_loss(out: dict, state: torch.Tensor, coords: torch.Tensor, cfg: Config,
               coord_std: torch.Tensor | None = None, state_target: torch.Tensor | None = None,
               ) -> tuple[torch.Tensor, dict]:
    """The weighted fine-tuning loss of one batch and its parts (floats, for logging).

    ``coord_std`` (the model's coordinate scale) is needed only by ``coord_loss: mse``,
    which measures the error in standardised units. ``state_target`` (soft targets [n, C],
    ``geo_soft_targets``) replaces the one-hot state target where given.
    """
    w = cfg.finetune.loss_weights
    parts = {}
    total = torch.zeros((), device=coords.device)
    has_state = state >= 0
    if w.state > 0 and bool(has_state.any()):
        target = state[has_state] if state_target is None else state_target[has_state]
        parts["state"] = F.cross_entropy(out["state_logits"][has_state], target)
        total = total + w.state * parts["state"]
    has_xy = ~torch.isnan(coords[:, 0])
    if w.coord > 0 and bool(has_xy.any()):
        p, t = out["coords"][has_xy], coords[has_xy]
        if cfg.finetune.coord_loss == "haversine":
            parts["coord"] = haversine_km_torch(p[:, 0], p[:, 1], t[:, 0], t[:, 1]).mean() / 1000.0
        else:
            parts["coord"] = (((p - t) / coord_std) ** 2).sum(dim=1).mean()
        total = total + w.coord * parts["coord"]
    if w.recon > 0:
        parts["recon"] = reconstruction_loss(out["recon"], out["target"])
        total = total + w.recon * parts["recon"]
    if cfg.model.sparsity_l1 > 0:
        total = total + cfg.model.sparsity_l1 * out["h"].abs().mean()
    return total, {k: v.item() for k, v in parts.items()}


def _as_model_input(xb, device: torch.device) -> torch.Tensor:
    """A batch of rows as the model's input: sparse CSR stays sparse (the first layer is then a
    sparse product, ~3x faster on TF-IDF and never densified), dense rows become a float tensor."""
    if sp.issparse(xb):
        xb = xb.tocsr().astype(np.float32)
        return torch.sparse_csr_tensor(
            _vector(xb.indptr.astype(np.int64)), _vector(xb.indices.astype(np.int64)), _vector(xb.data),
            size=xb.shape, device=device, check_invariants=True,
        )
    return torch.from_numpy(np.ascontiguousarray(xb, dtype=np.float32)).to(device)


def _vector(a: np.ndarray) -> torch.Tensor:
    """A 1-d array as a tensor. numpy gives an empty array stride 0, and torch before 2.13 refuses
    such CSR indices ("expected col_indices to be a contiguous tensor per batch"): a batch without
    a single known word crashed predict there. An empty array becomes a fresh empty tensor."""
    t = torch.from_numpy(a)
    return t if len(a) else torch.empty(0, dtype=t.dtype)


# The CPU matrix products round a row's result differently depending on how many rows the batch
# has (the kernels treat a ragged last block of rows their own way): scored in a chunk of 7 or of
# 5,000, one user's probabilities differed in the last float32 bit. Padding every batch with empty
# rows to a multiple of ROW_BLOCK makes a user's output independent of the chunk it came in (checked
# on this project's CPU for 1 to 1,024 rows and any offset, 1 and 2 threads; tests/test_predict.py),
# for at most 63 wasted rows per batch.
ROW_BLOCK = 64


def _pad_rows(xb, multiple: int):
    """``xb`` with all-zero rows appended up to a multiple of ``multiple`` rows."""
    k = -xb.shape[0] % multiple
    if not k:
        return xb
    if sp.issparse(xb):
        xb = xb.tocsr()
        indptr = np.concatenate([xb.indptr, np.full(k, xb.indptr[-1], dtype=xb.indptr.dtype)])
        return sp.csr_matrix((xb.data, xb.indices, indptr), shape=(xb.shape[0] + k, xb.shape[1]))
    return np.concatenate([np.asarray(xb), np.zeros((k, xb.shape[1]), dtype=np.asarray(xb).dtype)])


@torch.no_grad()
def predict_arrays(model: GeoSDAE | GeoSDAEEnsemble, X, device: torch.device,
                   batch_size: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """Class probabilities [n, C] and coordinates [n, 2] for a feature matrix (eval mode, no decoder)."""
    was = model.training
    model.eval()
    if sp.issparse(X):
        X = X.tocsr()
    probs, coords = [], []
    for start in range(0, X.shape[0], batch_size):
        xb = X[start : start + batch_size]
        n = xb.shape[0]
        out = model(_as_model_input(_pad_rows(xb, ROW_BLOCK), device), reconstruct=False)
        probs.append(torch.softmax(out["state_logits"][:n], dim=1).cpu())
        coords.append(out["coords"][:n].cpu())
    model.train(was)
    if not probs:
        return np.zeros((0, model.n_states), np.float32), np.zeros((0, 2), np.float32)
    return torch.cat(probs).numpy(), torch.cat(coords).numpy()


def location_points(probs: np.ndarray, coords: np.ndarray | None, class_points: np.ndarray,
                    location: LocationRisk, gate: float, tau_km: float | None) -> np.ndarray:
    """The location point [n, 2]: the arg-max state's point where the classifier is sure
    (top probability >= ``gate``), elsewhere the least-risk training cell (``geo.LocationRisk``),
    sharpened by ``coords`` (the regression head; ``None`` for a model without one)."""
    out = class_points[probs.argmax(1)].astype(np.float64)
    unsure = probs.max(1) < gate
    if unsure.any():
        out[unsure] = location.points(probs[unsure], None if coords is None else coords[unsure], tau_km)
    return out


def point_predictions(probs: np.ndarray, coords: np.ndarray, class_points: np.ndarray | None,
                      ft: FinetuneConfig | None = None, location: LocationRisk | None = None) -> dict[str, np.ndarray]:
    """The point predictions [n, 2]: regression head, arg-max state's point, Bayes point (capped at
    ``ft.bayes_cap_km``; uncapped without ``ft``) and, given a fitted ``location``, the location
    point (``ft``'s gate and kernel, the defaults without ``ft``)."""
    out = {"regression": coords}
    if class_points is not None and len(probs):
        out["state_median"] = class_points[probs.argmax(1)]
        out["bayes"] = class_points[bayes_point_index(probs, class_points, ft.bayes_cap_km if ft is not None else None)]
        if location is not None:
            lf = ft or FinetuneConfig()
            out["location"] = location_points(probs, coords, class_points, location, lf.location_gate, lf.location_tau_km)
    return out


def score(model: GeoSDAE, data: TrainingSet, device: torch.device, ref_median_km: float | None = None,
          class_points: np.ndarray | None = None, ft: FinetuneConfig | None = None,
          location: LocationRisk | None = None) -> dict:
    """Dev metrics used for early stopping and point choice (full reports live in ``evaluate.py``).

    Distance metrics are given per point kind (``median_km@bayes`` ...); the
    plain ``median_km`` / ``mean_km`` / ``acc161`` keys are those of the best
    point by median error, which is also what ``combined`` uses.
    """
    probs, coords = predict_arrays(model, data.X, device)
    m: dict = {}
    known = data.state >= 0
    if known.any():
        m["state_acc"] = float((probs[known].argmax(1) == data.state[known]).mean())
        m["state_nll"] = float(-np.log(np.clip(probs[known, data.state[known]], 1e-12, None)).mean())
    ok = ~np.isnan(data.coords[:, 0])
    if ok.any():
        best = None
        for kind, pts in point_predictions(probs, coords, class_points, ft, location).items():
            err = haversine_km(pts[ok, 0], pts[ok, 1], data.coords[ok, 0], data.coords[ok, 1])
            pm = {"mean_km": float(err.mean()), "median_km": float(np.median(err)), "acc161": float((err < 161).mean())}
            m.update({f"{k}@{kind}": v for k, v in pm.items()})
            if best is None or pm["median_km"] < best[1]["median_km"]:
                best = (kind, pm)
        m.update(best[1])
        m["best_point"] = best[0]
    parts = []
    if "state_acc" in m:
        parts.append(m["state_acc"])
    if "median_km" in m and ref_median_km:
        parts.append(1.0 - m["median_km"] / ref_median_km)
    m["combined"] = float(np.mean(parts)) if parts else 0.0
    if ft is not None:
        weights = ft.loss_weights
        # The training objective's supervised part on dev: smooth, unlike accuracies on a few hundred users.
        # The regression head's mean error, already measured above (0 without coordinates).
        m["dev_loss"] = weights.state * m.get("state_nll", 0.0) + weights.coord * m.get("mean_km@regression", 0.0) / 1000.0
    return m


def _better(metric: str, new: dict, best: dict | None) -> bool:
    if best is None:
        return True
    if metric in ("median_km", "mean_km", "loss", "dev_loss", "state_nll"):
        return new[metric] < best[metric]
    return new[metric] > best[metric]


def finetune(
    model: GeoSDAE,
    train: TrainingSet,
    dev: TrainingSet | None,
    cfg: Config,
    *,
    device: torch.device,
    gens: dict,
    ref_median_km: float | None = None,
    class_points: np.ndarray | None = None,
    ckpt_dir: Path | None = None,
    resume: tuple[dict, dict] | None = None,
    on_epoch_end: Callable[[str, int, int], None] | None = None,
    ckpt_tag: dict | None = None,
    fixed_epochs: bool = False,
) -> dict:
    """Fine-tune all layers and heads jointly (all but the first encoder weight with
    ``finetune.freeze_first_layer``); leaves the best dev epoch's weights in ``model``, or,
    without dev users, the last epoch's (the running training loss, measured with noise and
    dropout on while the weights move, is no ground for picking an epoch).

    ``fixed_epochs``: run exactly ``finetune.epochs`` epochs without dev users on purpose
    (the refit on train + dev), so the missing early stopping is not worth a warning.
    """
    ft = cfg.finetune
    if ft.freeze_first_layer:
        model.layers[0].encoder.weight.requires_grad_(False)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=ft.lr, weight_decay=ft.weight_decay)
    batches = Batches(train.X, device)
    y_state = torch.tensor(np.asarray(train.state), dtype=torch.long)
    y_xy = torch.tensor(np.asarray(train.coords), dtype=torch.float32)
    soft = geo_soft_targets(train.state, np.asarray(train.coords, np.float64), class_points, ft.geo_label_smoothing, ft.geo_label_km)
    y_soft = None if soft is None else torch.from_numpy(soft)
    noise0 = cfg.model.noise[0]
    history: list[dict] = []
    best, best_epoch, bad_epochs, start = None, 0, 0, 0
    best_state = None
    if resume is not None:
        doc, tensors = resume
        pos = check_position(doc["position"], ckpt_dir, stage="finetune", epochs=ft.epochs)
        # With dev users the best epoch's weights travel with the checkpoint, and are what is kept in the end.
        extra = restore(doc, tensors, model, opt if pos.get("epoch", 0) > 0 else None, gens, ckpt_dir=ckpt_dir,
                        model_copy="best." if dev is not None and pos["best_epoch"] else None)
        start, history = pos.get("epoch", 0), list(pos.get("ft_history", []))
        if pos.get("finished"):
            start = ft.epochs  # the run had already ended (early stop or last epoch)
        log.info("resuming fine-tuning from %s: %s", ckpt_dir, "already finished" if pos.get("finished")
                 else f"epoch {start + 1}/{ft.epochs}")
        best, best_epoch, bad_epochs = pos.get("best"), pos.get("best_epoch", 0), pos.get("bad_epochs", 0)
        if extra:
            best_state = {k[5:]: v.to(device) for k, v in extra.items() if k.startswith("best.")}
    metric = ft.select_metric
    # A resumed run replays the fallback below on the epochs it restored, so a member that had
    # already finished records the same metric as an uninterrupted run.
    for rec in history:
        if metric not in selection_values(rec, dev is not None):
            metric = "loss"
    if dev is None and ft.select_metric != "loss" and not fixed_epochs:
        log.warning("no dev users: fine-tuning runs all %d epochs without early stopping and keeps the last", ft.epochs)
    bar = tqdm(range(start, ft.epochs), desc="fine-tune", unit="epoch", disable=bar_disabled(log), leave=False)
    stopped_early = False
    for epoch in bar:
        model.train()
        sums: dict[str, float] = {}
        n = 0
        for idx in batches.iterate(ft.batch_size, gens["shuffle"]):
            x = batches.take(idx)
            # Keep denoising during fine-tuning: the encoder sees the corrupted
            # input, the reconstruction head must recover the clean one.
            out = model(x, noise=(lambda t: corrupt(t, noise0.kind, noise0.level, gens["noise"])) if ft.input_noise else None)
            loss, parts = joint_loss(out, y_state[idx].to(device), y_xy[idx].to(device), cfg, model.coord_std,
                                     None if y_soft is None else y_soft[idx].to(device))
            if not torch.isfinite(loss):  # a NaN model would otherwise be saved and predict NaN for everyone
                if resume is None and epoch == 0 and n == 0 and cfg.pretrain.epochs > 0:
                    # Not one fine-tuning step yet: the pretrained weights it starts from are the cause
                    # (pretraining's last step diverged after its last loss check, or a checkpoint was edited).
                    raise GeoaeError(f"the pretrained weights fine-tuning starts from give a loss of {loss.item()} "
                                     "before its first step: pretraining diverged (or its checkpoint was edited); "
                                     f"lower pretrain.lr (now {cfg.pretrain.lr:g})")
                raise GeoaeError(f"fine-tuning diverged at epoch {epoch + 1}: the loss is {loss.item()}; "
                                 f"lower finetune.lr (now {ft.lr:g})")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            n += len(idx)
            for k, v in {"loss": loss.item(), **parts}.items():
                sums[k] = sums.get(k, 0.0) + v * len(idx)
        rec = {"epoch": epoch + 1, **{f"train_{k}": v / max(n, 1) for k, v in sums.items()}}
        if dev is not None and len(dev):
            rec.update({f"dev_{k}": v for k, v in score(model, dev, device, ref_median_km, class_points, ft).items()})
        history.append(rec)
        current = selection_values(rec, dev is not None)
        if metric not in current:
            metric = "loss"
        if _better(metric, current, best):
            best, best_epoch, bad_epochs = current, epoch + 1, 0
            if dev is not None:  # without dev users the last epoch is shipped: no copy to keep
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        else:
            bad_epochs += 1
        bar.set_postfix({k: f"{v:.3f}" for k, v in current.items() if k in ("state_acc", "median_km", "loss")})
        log.info(
            "fine-tune epoch %d/%d: %s",
            epoch + 1,
            ft.epochs,
            ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in rec.items()
                      if k != "epoch" and "@" not in k),
        )
        stop = dev is not None and bad_epochs >= ft.patience
        if ckpt_dir is not None and (stop or (epoch + 1) % cfg.train.checkpoint_every == 0 or epoch + 1 == ft.epochs):
            pos = {
                "stage": "finetune",
                "epoch": epoch + 1,
                "ft_history": history,
                "best": best,
                "best_epoch": best_epoch,
                "bad_epochs": bad_epochs,
                "finished": bool(stop or epoch + 1 == ft.epochs),
                **(ckpt_tag or {}),
            }
            save_checkpoint(ckpt_dir, model, opt, gens, pos, {f"best.{k}": v for k, v in (best_state or {}).items()})
        if on_epoch_end is not None:
            on_epoch_end("finetune", 0, epoch)
        if stop:
            stopped_early = True
            log.info("early stop after epoch %d: no %s improvement for %d epochs", epoch + 1, metric, ft.patience)
            break
    if dev is None and history:
        # No dev users (the refit, or a run without a dev split): ship what the epochs made. The
        # best-by-training-loss epoch was restored before, e.g. epoch 20 of a 30-epoch refit.
        best_epoch = len(history)
        best = selection_values(history[-1], dev is not None)
    elif best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    return {"history": history, "best_epoch": best_epoch, "best": best, "select_metric": metric, "stopped_early": stopped_early}
