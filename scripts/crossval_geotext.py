#!/usr/bin/env python3
"""K-fold cross-validation over the official GeoText *dev* users, never touching the test users.

Why: the in-house protocol selects models on 284 validation users, too few to decide
between variants whose test differences are ~1 point. This script decides them on
all 1,895 official dev users instead: each fold holds out a fifth of them as a
pseudo-test set, carves 15 % of the rest as validation (early stopping, C for the
LR peer) and trains on the remainder, exactly as the in-house protocol does one
level up. Per fold and variant it stores the held-out users' state probabilities
and regression coordinates (``fold{k}/{variant}.npz``), so point rules can be
compared afterwards without retraining (``--analyse-only``).

    python scripts/crossval_geotext.py --data runs/benchmark/data --out runs/cv
    python scripts/crossval_geotext.py --data runs/benchmark/data --out runs/cv --analyse-only

Variants: ``sdae`` (configs/geotext.yaml), ``sdae_refit`` (+ finetune.refit), the TF-IDF + LR
peer ``lr`` / ``lr_refit`` (same refit rule) / ``lr_igr`` (terms chosen by information gain
ratio, ``features.select=igr``), and any ``--sdae-variant`` given. Point rules
compared for every variant: arg-max state's median point, the Bayes point over state medians
(cap 500 km), the location point as shipped (``finetune.location_points``: gate and kernel
from ``FinetuneConfig``; the kernel only for models with a regression head), and the
minimum-Bayes-risk point over the training locations without gate or kernel (cap 500 km, no
cap). Writes ``cv.json`` and ``cv.md`` in ``--out``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from geoae.baselines import TfidfLogReg
from geoae.config import FinetuneConfig, load_config
from geoae.errors import DataError, GeoaeError
from geoae.finetune import location_points
from geoae.evaluate import compute_metrics
from geoae.geo import LocationRisk, bayes_point_index
from geoae.labels import region_of
from geoae.manifest import atomic_write_text, check_writable
from geoae.pipeline import load_documents, state_points, train

log = logging.getLogger("crossval")

CAPS = [500, None]
METRICS = ("state_acc", "region_acc", "acc_at_161", "mean_km", "median_km")


def folds(pool: pd.DataFrame, k: int, seed: int, val_fraction: float) -> list[pd.DataFrame]:
    """``k`` copies of ``pool`` with split = dev (train) / val (selection) / cvtest (held out)."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(pool))
    out = []
    for f in range(k):
        held = order[f::k]
        rest = np.setdiff1d(order, held)
        rest = rest[rng.permutation(len(rest))]
        n_val = int(round(val_fraction * len(rest)))
        split = np.full(len(pool), "dev", dtype=object)
        split[rest[:n_val]] = "val"
        split[held] = "cvtest"
        d = pool.copy()
        d["split"] = split
        out.append(d)
    return out


def _save(path: Path, probs, reg, classes, fitted: pd.DataFrame) -> None:
    lab = fitted[fitted["state"].isin(classes)]
    # Written beside and renamed into place: run_fold takes an existing .npz as done, so an
    # interrupted write must not leave a partial one under the real name.
    tmp = path.with_name(f".{path.name}.partial")
    with open(tmp, "wb") as f:
        np.savez(f, probs=probs.astype(np.float32), reg=np.asarray(reg, np.float64), classes=np.asarray(classes),
             fit_lat=lab["lat"].to_numpy(float), fit_lon=lab["lon"].to_numpy(float),
                 fit_state=lab["state"].to_numpy().astype(str))
    os.replace(tmp, path)


def run_fold(k: int, docs: pd.DataFrame, cfg_path: str, out: Path, variants: list[str],
             extra: dict[str, list[str]] | None = None) -> None:
    from geoae.artifact import load_artifact
    from geoae.finetune import predict_arrays
    import torch

    fdir = out / f"fold{k}"
    (fdir / "data").mkdir(parents=True, exist_ok=True)
    docs.to_parquet(fdir / "data" / "documents.parquet", index=False)
    tr, dv, te = (docs[docs["split"] == s].reset_index(drop=True) for s in ("dev", "val", "cvtest"))
    te[["user_id", "lat", "lon", "state"]].to_parquet(fdir / "truth.parquet", index=False)
    for v in variants:
        if (fdir / f"{v}.npz").exists():
            log.info("fold %d %s: done already", k, v)
            continue
        refit = v.endswith("_refit") or "finetune.refit=true" in (extra or {}).get(v, [])
        if v.startswith("sdae"):
            cfg = load_config(cfg_path, ["data.split=column", "data.dev_fraction=0.0", "data.train_splits=[dev]",
                                         "data.dev_splits=[val]", "data.test_splits=[cvtest]",
                                         f"finetune.refit={'true' if refit else 'false'}", *(extra or {}).get(v, [])])
            model_dir = train(cfg, fdir / "data", fdir / v, resume=True)
            art = load_artifact(model_dir)
            probs, reg = predict_arrays(art.model, art.featurizer.transform(te["text"].tolist()), torch.device("cpu"))
            classes = list(art.classes)
            meta = {"point": art.meta["point"], "best_epochs": art.meta["best_epochs"], "refit": art.meta["refit"]}
        else:
            lr = TfidfLogReg(refit=refit, select="igr" if "_igr" in v else "frequency").fit(tr, dv)
            probs = lr.predict_proba(te)
            reg = np.full((len(te), 2), np.nan)
            classes = list(lr.classes_)
            meta = lr.info()
        fitted = pd.concat([tr, dv]) if refit else tr
        _save(fdir / f"{v}.npz", probs, reg, classes, fitted)
        (fdir / f"{v}.json").write_text(json.dumps(meta, indent=1, default=str))
        log.info("fold %d %s: saved", k, v)


def points_for(z, rule: str) -> np.ndarray:
    """Point predictions [n, 2] of one stored variant under one point rule."""
    probs, classes = z["probs"], [str(c) for c in z["classes"]]
    fit = pd.DataFrame({"lat": z["fit_lat"], "lon": z["fit_lon"], "state": z["fit_state"]})
    sp = state_points(fit, classes)
    if rule == "regression":
        return z["reg"]
    if rule == "state_median":
        return sp[probs.argmax(1)]
    if rule == "bayes500":
        return sp[bayes_point_index(probs, sp, 500)]
    if rule == "location":  # the shipped rule: FinetuneConfig's gate and kernel, the kernel only with a regression head
        ft = FinetuneConfig()
        loc = LocationRisk(cap_km=ft.bayes_cap_km).fit(fit["lat"], fit["lon"], fit["state"], classes)
        reg = z["reg"] if np.isfinite(z["reg"]).all() else None
        return location_points(probs, reg, sp, loc, ft.location_gate, ft.location_tau_km)
    cap = None if rule == "users_nocap" else float(rule.split("users")[1])
    risk = LocationRisk(cap_km=cap).fit(fit["lat"], fit["lon"], fit["state"], classes)
    return risk.points(probs)


def analyse(out: Path, k: int, variants: list[str], n_boot: int = 400, seed: int = 0) -> dict:
    rules = ["state_median", "bayes500", "location", *[f"users{c}" if c else "users_nocap" for c in CAPS]]
    # A variant pools all k folds or is not reported: refuse (before cv.json / cv.md are rewritten)
    # rather than drop a requested variant, or write an empty table, without a word.
    missing = [f"fold{f}/{v}.npz" for v in variants for f in range(k) if not (out / f"fold{f}" / f"{v}.npz").is_file()]
    if missing or not variants:
        raise DataError(f"{out}: no stored results for {', '.join(missing[:6]) or 'any variant'}"
                        f"{' ...' if len(missing) > 6 else ''}; run without --analyse-only first (for those variants "
                        "and --folds), or name stored variants with --variants")
    pooled: dict[str, dict] = {}
    per_user: dict[str, dict] = {}
    for v in variants:
        for rule in rules + (["regression"] if v.startswith("sdae") else []):
            truth, pred_state, pts = [], [], []
            for f in range(k):
                z = np.load(out / f"fold{f}" / f"{v}.npz", allow_pickle=False)
                t = pd.read_parquet(out / f"fold{f}" / "truth.parquet")
                truth.append(t)
                pred_state.append(np.asarray([str(c) for c in z["classes"]])[z["probs"].argmax(1)])
                pts.append(points_for(z, rule))
            t = pd.concat(truth, ignore_index=True)
            ps, pt = np.concatenate(pred_state), np.vstack(pts)
            m = compute_metrics(t["lat"], t["lon"], t["state"], ps, pt[:, 0], pt[:, 1])
            name = f"{v}@{rule}"
            pooled[name] = {key: m[key] for key in METRICS}
            from geoae.evaluate import error_km

            err = error_km(t["lat"], t["lon"], pt[:, 0], pt[:, 1])
            known = t["state"].fillna("").astype(str).to_numpy() != ""
            per_user[name] = {"err": err, "hit": (ps == t["state"].to_numpy()) & known, "known": known,
                              "reg_hit": (region_of(ps) == region_of(t["state"].fillna("").to_numpy())) & known}
    # Paired bootstrap of the differences that decide things: same users resampled for both sides.
    rng = np.random.default_rng(seed)
    comparisons = {}
    names = list(per_user)
    n = len(next(iter(per_user.values()))["err"]) if per_user else 0
    idx = rng.integers(0, n, size=(n_boot, n)) if n else None

    def stats(u, ii):
        e = u["err"][ii]
        kn = u["known"][ii]
        return np.array([u["hit"][ii][kn].mean(), u["reg_hit"][ii][kn].mean(), (e < 161).mean(), e.mean(), np.median(e)])

    for a in names:
        for b in names:
            (va, ra), (vb, rb) = a.split("@"), b.split("@")
            # Same point rule across variants, or two point rules of one variant.
            if a >= b or not (ra == rb or va == vb):
                continue
            d = np.array([stats(per_user[a], ii) - stats(per_user[b], ii) for ii in idx])
            comparisons[f"{a} - {b}"] = {m: [float(np.mean(d[:, i])), float(np.std(d[:, i]))] for i, m in enumerate(METRICS)}
    return {"pooled": pooled, "comparisons": comparisons, "n_users": int(n)}


def table(pooled: dict) -> str:
    lines = ["| variant @ point | state acc % | region acc % | Acc@161 % | mean km | median km |", "|---|---:|---:|---:|---:|---:|"]
    for name, m in pooled.items():
        lines.append(f"| {name} | {100 * m['state_acc']:.1f} | {100 * m['region_acc']:.1f} | {100 * m['acc_at_161']:.1f} | "
                     f"{m['mean_km']:.0f} | {m['median_km']:.0f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default="runs/benchmark/data", help="a prepared GeoText directory (in-house protocol)")
    ap.add_argument("--config", default="configs/geotext.yaml")
    ap.add_argument("--out", default="runs/cv")
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--variants", default="sdae,sdae_refit,lr,lr_refit")
    ap.add_argument("--sdae-variant", action="append", default=[], metavar="NAME=KEY=VALUE;KEY=VALUE",
                    help="an extra SDAE variant (name must start with sdae_) trained with these config overrides")
    ap.add_argument("--analyse-only", action="store_true")
    args = ap.parse_args(argv)
    if args.folds < 2:
        ap.error(f"--folds {args.folds}: needs at least 2 (each fold is held out once)")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    out = Path(args.out)
    variants = [v for v in args.variants.split(",") if v]
    extra = {}
    for spec in args.sdae_variant:
        name, _, ovs = spec.partition("=")
        if not name.startswith("sdae_") or not ovs:
            ap.error(f"--sdae-variant {spec!r}: expected sdae_NAME=key=value;key=value")
        extra[name] = [o for o in ovs.split(";") if o]
        variants.append(name)
    try:  # a missing --data, an --out that is a file, no stored results: one line, not a traceback
        if not args.analyse_only:
            check_writable(out, "--out", directory=True)
            docs = load_documents(args.data)
            # The pool: the official dev users only (in-house 'dev' + 'val'); test users never enter.
            pool = docs[docs["split"].isin(["dev", "val"])].reset_index(drop=True)
            log.info("cross-validation pool: %d official dev users, %d folds", len(pool), args.folds)
            for k, fd in enumerate(folds(pool, args.folds, args.seed, 0.15)):
                run_fold(k, fd, args.config, out, variants, extra)
        res = analyse(out, args.folds, variants)
    except GeoaeError as e:
        print(f"{ap.prog}: error: {e}", file=sys.stderr)
        return 2
    atomic_write_text(out / "cv.json", json.dumps(res, indent=1))
    md = f"{res['n_users']} held-out official dev users, {args.folds} folds\n\n" + table(res["pooled"])
    atomic_write_text(out / "cv.md", md + "\n")
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
