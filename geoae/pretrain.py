"""Greedy layer-wise pretraining of the SDAE (Vincent et al. 2010; Liu & Inkpen 2015).

Layer k is trained alone, lower layers frozen: its input is the *clean*
encoding of the data through layers 1..k-1, it sees a corrupted copy
(``model.noise[k]``) and must reconstruct the clean one. Pretraining uses no
labels, so every training user counts, including those without coordinates.

The loop is resumable at epoch granularity: after each epoch (every
``train.checkpoint_every``) it writes a checkpoint with the model, the
optimizer moments and the RNG states, so a killed run continues to the same
final weights as an uninterrupted one.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable

import torch
from tqdm.auto import tqdm

from geoae.checkpoint import Batches, check_position, restore, save_checkpoint
from geoae.config import Config
from geoae.errors import GeoaeError
from geoae.manifest import bar_disabled
from geoae.sdae import GeoSDAE, corrupt

log = logging.getLogger(__name__)

EpochHook = Callable[[str, int, int], None]


def reconstruction_loss(x_hat: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Mean squared error over features and batch.

    The model's input is scaled to unit RMS per feature (see ``GeoSDAE``), so
    predicting zeros scores about 1 whatever the vocabulary size.
    """
    return (x_hat - x).pow(2).mean()


def pretrain_layer_epoch(
    model: GeoSDAE, k: int, batches: Batches, cfg: Config, opt: torch.optim.Optimizer, gens: dict
) -> float:
    layer = model.layers[k]
    noise = cfg.model.noise[k]
    total, n = 0.0, 0
    for idx in batches.iterate(cfg.pretrain.batch_size, gens["shuffle"]):
        with torch.no_grad():
            clean = model.encode(batches.take(idx), upto=k)
        noisy = corrupt(clean, noise.kind, noise.level, gens["noise"])
        h, x_hat = layer(noisy)
        loss = reconstruction_loss(x_hat, clean)
        if cfg.model.sparsity_l1 > 0:
            loss = loss + cfg.model.sparsity_l1 * h.abs().mean()
        if not torch.isfinite(loss):
            raise GeoaeError(f"pretraining layer {k + 1} diverged: the loss is {loss.item()}; lower pretrain.lr "
                             f"(now {cfg.pretrain.lr:g})")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        total += loss.item() * len(idx)
        n += len(idx)
    return total / max(n, 1)


def pretrain(
    model: GeoSDAE,
    X,
    cfg: Config,
    *,
    device: torch.device,
    gens: dict,
    ckpt_dir: Path | None = None,
    resume: tuple[dict, dict] | None = None,
    on_epoch_end: EpochHook | None = None,
    ckpt_tag: dict | None = None,
) -> list[dict]:
    """Pretrain every layer in turn; returns the per-epoch history.

    ``resume`` is a loaded checkpoint ``(doc, tensors)`` positioned inside
    pretraining; the model, optimizer and RNG states are restored from it.
    """
    batches = Batches(X, device)
    history: list[dict] = []
    start_layer, start_epoch = 0, 0
    if resume is not None:
        pos = check_position(resume[0]["position"], ckpt_dir, stage="pretrain", layers=len(model.layers),
                             epochs=cfg.pretrain.epochs)
        start_layer, start_epoch, history = pos["layer"], pos["epoch"], list(pos.get("history", []))
        if start_layer < len(model.layers):
            log.info("resuming pretraining from %s: layer %d/%d, epoch %d/%d", ckpt_dir, start_layer + 1,
                     len(model.layers), start_epoch + 1, cfg.pretrain.epochs)
    n_layers, epochs = len(model.layers), cfg.pretrain.epochs
    for k in range(start_layer, n_layers):
        layer = model.layers[k]
        opt = torch.optim.Adam(layer.parameters(), lr=cfg.pretrain.lr, weight_decay=cfg.pretrain.weight_decay)
        first = k == start_layer
        if resume is not None and first:
            restore(resume[0], resume[1], model, opt if start_epoch > 0 else None, gens, ckpt_dir=ckpt_dir)
        e0 = start_epoch if first else 0
        bar = tqdm(range(e0, epochs), desc=f"pretrain layer {k + 1}/{n_layers}", unit="epoch", disable=bar_disabled(log), leave=False)
        for epoch in bar:
            loss = pretrain_layer_epoch(model, k, batches, cfg, opt, gens)
            history.append({"layer": k + 1, "epoch": epoch + 1, "recon_loss": loss})
            bar.set_postfix(loss=f"{loss:.4f}")
            log.info("pretrain layer %d/%d epoch %d/%d: reconstruction loss %.5f", k + 1, n_layers, epoch + 1, epochs, loss)
            done = epoch + 1 == epochs
            nxt = {"stage": "pretrain", "layer": k + 1, "epoch": 0} if done else {"stage": "pretrain", "layer": k, "epoch": epoch + 1}
            if ckpt_dir is not None and (done or (epoch + 1) % cfg.train.checkpoint_every == 0):
                save_checkpoint(ckpt_dir, model, None if done else opt, gens, {**nxt, "history": history, **(ckpt_tag or {})})
            if on_epoch_end is not None:
                on_epoch_end("pretrain", k, epoch)
    return history
