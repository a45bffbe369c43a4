"""The model: a stacked denoising autoencoder whose top code H3 feeds joint heads.

Read top to bottom:

1. ``corrupt`` — the four noise processes a denoising layer can be trained with.
2. ``DenoisingLayer`` — one encoder/decoder pair (weights tied by default, as in
   Vincent et al. 2010 and Liu & Inkpen 2015: the decoder is the transposed
   encoder, which halves the parameters and regularises small-data training).
3. ``GeoSDAE`` — the stack plus two heads on the top code ``H3``:
   a state classifier (logits over the training states) and a coordinate
   regressor. The decoder path stays in the model so fine-tuning can keep
   reconstructing the input (the third, auxiliary, objective).

Coordinates: the regressor outputs *standardised* latitude/longitude
(z-scores against the training users), which keeps the head well conditioned
and starts it at the training mean; ``forward`` converts back to degrees so the
loss can be the great-circle distance itself (see ``finetune.py``). Longitude
never wraps inside the contiguous-US-centric training data, so a planar
parametrisation with a spherical loss is exact where it matters and simpler
than predicting 3-D unit vectors.
"""

from __future__ import annotations

import torch
from torch import nn

from geoae.config import ModelConfig

_ACTIVATIONS = {"sigmoid": nn.Sigmoid, "relu": nn.ReLU, "tanh": nn.Tanh, "gelu": nn.GELU}


def corrupt(x: torch.Tensor, kind: str, level: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Return a corrupted copy of ``x`` (never modifies ``x``).

    - masking: each entry is set to 0 with probability ``level`` (the classic
      denoising-AE noise; for bag-of-words it deletes words).
    - gaussian: adds N(0, level^2) to every entry.
    - salt_pepper: each entry, with probability ``level``, is set to the batch's
      minimum or maximum value (half each).
    - dropout: masking followed by 1/(1-level) rescaling, so the expected
      input is unchanged (inverted dropout).
    - none: identity.
    """
    if kind == "none" or level == 0.0:
        return x
    if kind == "gaussian":
        return x + level * torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
    u = torch.rand(x.shape, generator=generator, device=x.device)
    hit = u < level
    if kind == "masking":
        return x.masked_fill(hit, 0.0)
    if kind == "dropout":
        return x.masked_fill(hit, 0.0) / (1.0 - level)
    if kind == "salt_pepper":
        # Re-use the same uniform draw to split hits into salt and pepper, so a
        # single random tensor decides both "which" and "which way".
        salt = u < level / 2
        lo, hi = x.min(), x.max()
        out = x.masked_fill(hit, 0.0) + hit.to(x.dtype) * lo
        return torch.where(salt, hi.expand_as(x), out)
    raise ValueError(f"unknown noise kind {kind!r}")


class DenoisingLayer(nn.Module):
    """One autoencoder layer: ``h = act(W x + b)``, ``x_hat = W' h + c``.

    With ``tied`` the decoder weight is ``W.T``. The decoder is linear: the
    first layer reconstructs L2-normalised TF-IDF (non-negative, small,
    unbounded above in general), so squashing it through a sigmoid would
    distort the target; upper layers reuse the same form for uniformity.
    """

    def __init__(self, n_in: int, n_out: int, activation: str = "sigmoid", tied: bool = True):
        super().__init__()
        self.encoder = nn.Linear(n_in, n_out)
        self.act = _ACTIVATIONS[activation]()
        self.tied = tied
        self.decoder_bias = nn.Parameter(torch.zeros(n_in))
        if not tied:
            self.decoder = nn.Linear(n_out, n_in, bias=False)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.encoder(x))

    def decode(self, h: torch.Tensor) -> torch.Tensor:
        w = self.encoder.weight if self.tied else self.decoder.weight.t()
        return h @ w + self.decoder_bias

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.encode(x)
        return h, self.decode(h)


class GeoSDAE(nn.Module):
    """The stack of denoising layers and the joint heads on its top code ``H3``."""

    def __init__(self, n_features: int, n_states: int, cfg: ModelConfig):
        super().__init__()
        widths = [n_features, *cfg.hidden]
        self.layers = nn.ModuleList(
            DenoisingLayer(a, b, cfg.activation, cfg.tied_weights) for a, b in zip(widths[:-1], widths[1:])
        )
        h3 = cfg.hidden[-1]
        self.head_dropout = nn.Dropout(cfg.head_dropout)
        # Between encoder layers (not after H3, which head_dropout covers); absent at 0 so the
        # default model draws exactly the random numbers it always did.
        self.hidden_dropout = nn.Dropout(cfg.hidden_dropout) if cfg.hidden_dropout > 0 else None
        self.state_head = nn.Linear(h3, n_states)
        self.coord_head = nn.Linear(h3, 2)
        # Standardisation of (lat, lon), learned from training users; buffers so
        # they travel in the weights file and cannot drift from the model.
        # Documents arrive L2-normalised (unit length over n_features entries), so
        # each entry is ~1/sqrt(n_features) in size: with standard initialisation
        # the first layer would see almost no signal and a deep stack would not
        # train (its units sit at their biases). Scaling by sqrt(n_features) gives
        # entries of unit RMS; reconstruction targets live in this scaled space.
        self.register_buffer("input_scale", torch.tensor(float(n_features) ** 0.5))
        self.register_buffer("coord_mean", torch.zeros(2))
        self.register_buffer("coord_std", torch.ones(2))
        # Start the regressor at the training mean: the head's output is a z-score.
        nn.init.zeros_(self.coord_head.weight)
        nn.init.zeros_(self.coord_head.bias)
        self.n_features = n_features
        self.n_states = n_states

    def set_coord_scaler(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        self.coord_mean.copy_(torch.as_tensor(mean, dtype=self.coord_mean.dtype))
        self.coord_std.copy_(torch.as_tensor(std, dtype=self.coord_std.dtype).clamp_min(1e-6))

    def encode(self, x: torch.Tensor, upto: int | None = None) -> torch.Tensor:
        """Clean encoding of raw features through the first ``upto`` layers (all by default): ``H3``.

        ``upto=0`` returns the scaled input itself (layer 1's reconstruction target).
        """
        x = x * self.input_scale
        for layer in self.layers[: upto if upto is not None else len(self.layers)]:
            x = layer.encode(x)
        return x

    def decode(self, h: torch.Tensor) -> torch.Tensor:
        for layer in reversed(self.layers):
            h = layer.decode(h)
        return h

    def forward(self, x: torch.Tensor, noise=None, reconstruct: bool = True) -> dict[str, torch.Tensor]:
        """Heads and reconstruction for raw features ``x``.

        ``noise``, if given, corrupts the scaled input before encoding (denoising
        fine-tuning); ``target`` is the clean scaled input the decoder should recover.
        ``reconstruct=False`` skips the decoder (about half the work) at inference.

        ``x`` may be a sparse (COO/CSR) tensor at inference: a TF-IDF row has a few
        hundred non-zeros out of ~10k columns, so the first layer as a sparse
        product does ~30x fewer multiply-adds than on the densified batch.
        """
        if x.layout != torch.strided:
            if noise is not None or reconstruct:
                raise ValueError("sparse input is for inference only (no noise, reconstruct=False)")
            # A single network is scored sparsely while it trains (dev users after every epoch),
            # when its weights change between calls: a transient contiguous copy, no cache.
            return self.from_first_product(sparse_rows_product(x, self.layers[0].encoder.weight.t().contiguous()))
        target = x * self.input_scale
        h = target if noise is None else noise(target)
        for i, layer in enumerate(self.layers):
            h = layer.encode(h)
            if self.hidden_dropout is not None and i < len(self.layers) - 1:
                h = self.hidden_dropout(h)
        return self._heads(h, target if reconstruct else None, reconstruct)

    def from_first_product(self, xw: torch.Tensor) -> dict[str, torch.Tensor]:
        """Inference from ``x @ W1^T`` (the raw input times the first encoder's weight).

        (s * x) W^T + b == s * (x W^T) + b, so the input scale is applied after the
        product; this lets an ensemble compute every member's first layer in one pass.
        """
        first = self.layers[0]
        h = first.act(xw * self.input_scale + first.encoder.bias)
        for layer in self.layers[1:]:
            h = layer.encode(h)
        return self._heads(h, None, False)

    def _heads(self, h: torch.Tensor, target: torch.Tensor | None, reconstruct: bool) -> dict[str, torch.Tensor]:
        hd = self.head_dropout(h)
        z = self.coord_head(hd)
        coords = z * self.coord_std + self.coord_mean  # degrees: (lat, lon)
        return {
            "h": h,
            "state_logits": self.state_head(hd),
            "coords": coords,
            **({"recon": self.decode(h), "target": target} if reconstruct else {}),
        }


def sparse_rows_product(x: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """``x @ rows`` for a sparse batch ``x`` [n, F] and weight rows [F, w], as float32 [n, w].

    Each output row is the sum of a few hundred weight rows scaled by the TF-IDF values: exactly
    what ``embedding_bag`` (mode "sum" with per-sample weights) computes, and its FBGEMM kernel
    does it ~15 % faster than the sparse-dense product on CPU (GeoText users, 5 x 512 columns).
    ``rows`` may be float16 (``GeoSDAEEnsemble.first_layer_dtype``): half the memory read per
    non-zero, which is what bounds this product. The TF-IDF values are then rounded to float16
    too and torch returns the sum in float16 (relative error ~5e-4, converted to float32 here);
    what that does to predictions is measured in BENCHMARKS.md (``--half``).
    """
    if x.layout != torch.sparse_csr:
        x = x.to_sparse_csr()
    out = torch.nn.functional.embedding_bag(
        x.col_indices(), rows, x.crow_indices(), mode="sum", include_last_offset=True,
        per_sample_weights=x.values().to(rows.dtype))
    return out if out.dtype == torch.float32 else out.float()


def first_layer_rows(owner: nn.Module, models: list[GeoSDAE], dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The first encoders' weights side by side as one contiguous [n_features, sum of widths] matrix,
    or, when every model has the same first weight (``finetune.freeze_first_layer``), that one
    weight alone as [n_features, width]: the caller then computes the product once for all.

    A sparse product then reads one contiguous weight row per non-zero (~1.6x faster than
    the transposed view). ``dtype`` float16 stores the rows at half precision (see
    ``sparse_rows_product``). Building it copies the whole first layer (~100 MB for 5 x 512 x
    10k), so ``owner`` keeps it, keyed on the weights' storage and version counters: any
    in-place update (an optimizer step, ``load_state_dict``) makes a new one. It is a plain
    attribute, not a buffer, so it never reaches a weight file.
    """
    ws = [m.layers[0].encoder.weight for m in models]
    key = (dtype, *((w.data_ptr(), w._version, tuple(w.shape), str(w.device)) for w in ws))
    cached = owner.__dict__.get("_first_rows")
    if cached is None or cached[0] != key:
        with torch.no_grad():
            shared = all(w.shape == ws[0].shape and torch.equal(w, ws[0]) for w in ws[1:])
            cached = (key, (ws[0] if shared else torch.cat(ws)).detach().t().to(dtype).contiguous())
        owner.__dict__["_first_rows"] = cached
    return cached[1]


class GeoSDAEEnsemble(nn.Module):
    """Several fine-tuned copies of one pretrained SDAE, averaged.

    With a couple of thousand training users a single fine-tuned network is
    noisy (which epoch early stopping lands on, which words the noise hid);
    averaging the members' state *probabilities* and coordinates removes much of
    that variance at K times the fine-tuning cost. Members share the pretrained
    initialisation and differ in their fine-tuning randomness. ``state_logits``
    is the log of the averaged probabilities, so a softmax downstream returns
    exactly that average; ``h`` is the first member's ``H3``.
    """

    first_layer_dtype: torch.dtype = torch.float32
    """Precision of the first layer's weight rows in the sparse product (a runtime choice,
    ``geoae predict --half``, never stored: the weight file keeps float32)."""

    def __init__(self, members: list[GeoSDAE]):
        super().__init__()
        self.members = nn.ModuleList(members)
        self.n_features = members[0].n_features
        self.n_states = members[0].n_states

    @classmethod
    def build(cls, n_members: int, n_features: int, n_states: int, cfg: ModelConfig) -> "GeoSDAEEnsemble":
        return cls([GeoSDAE(n_features, n_states, cfg) for _ in range(n_members)])

    def forward(self, x: torch.Tensor, reconstruct: bool = False) -> dict[str, torch.Tensor]:
        """Averaged heads; the ensemble is for inference, so ``reconstruct=True`` is refused."""
        if reconstruct:
            raise ValueError("an ensemble does not reconstruct; fine-tune its members individually")
        if x.layout != torch.strided:
            # Sparse TF-IDF input: one sparse product against all members' first layers side by
            # side. Its cost is one read of a weight row per non-zero, so one pass over K*width
            # columns beats K passes (measured ~1.6x on GeoText-sized users, 5 x 512).
            # Members that share their first weight (``finetune.freeze_first_layer``) share the
            # product too: computed once, 1/K of the work.
            widths = [m.layers[0].encoder.out_features for m in self.members]
            xw = sparse_rows_product(x, first_layer_rows(self, list(self.members), self.first_layer_dtype))
            parts = [xw] * len(widths) if xw.shape[1] != sum(widths) else torch.split(xw, widths, dim=1)
            outs = [m.from_first_product(p) for m, p in zip(self.members, parts)]
        else:
            outs = [m(x, reconstruct=False) for m in self.members]
        probs = torch.stack([torch.softmax(o["state_logits"], dim=1) for o in outs]).mean(0)
        return {
            "h": outs[0]["h"],
            "state_logits": probs.clamp_min(1e-12).log(),
            "coords": torch.stack([o["coords"] for o in outs]).mean(0),
        }
