"""Metrics for user geolocation and the ``geoae evaluate`` subcommand.

Conventions (they decide the numbers, so they are written down here and in
every report):

* **State metrics** (state / region / top-3 accuracy) are computed over users
  whose true state is known (a non-empty code). A user for whom the model gave
  no state (abstained, empty text) counts as a miss, also when that is every
  user. A model that has no state classes and never predicts a state (the
  ``median_point`` baseline) gets ``None`` for them.
* **Top-3 accuracy** needs class probabilities; ``classes`` names the column
  of each probability. A user whose true state is not among ``classes`` (the
  state never occurred in training), or who got no state prediction, counts
  as a miss.
* **Distance metrics** (mean / median / percentile error in km, Acc@161) are
  computed over users with valid true coordinates *and* a predicted point; how
  many users had no predicted point is reported (``n_no_point``) so that an
  abstaining model cannot silently look better. Acc@161 is the share of those
  users with error < 161 km (100 miles).
* Three point predictions exist: the regression head (``reg_lat, reg_lon``),
  the state-median point (``state_lat, state_lon``: the median training
  coordinate of the predicted state) and the Bayes point (``bayes_lat,
  bayes_lon``: the state point with the least expected error under the
  predicted state distribution). Every one a model provides is reported;
  ``headline`` picks the one whose numbers are copied to the top-level
  ``mean_km`` / ``median_km`` / ... keys: by default the point the model chose
  on its validation users (``Predictor.point_``), and the state-median point
  (the protocol's) for baselines.

* **Calibration** of the state probabilities (models with class probabilities):
  whether a user labelled with probability 0.6 is right 6 times in 10, which is
  what a threshold on ``confidence`` relies on. Over users with a known true
  state and a state prediction: ``state_ece``, the expected calibration error
  of the top state's probability (10 equal-width bins, Guo et al. 2017);
  ``state_nll``, the mean negative log-probability of the true state, and
  ``state_brier``, the multi-class Brier score, both over the users whose true
  state is one of the model's classes (no probability can be right for the
  others; ``calibration.n_unseen_state`` counts them).

Accuracies are fractions in [0, 1]; every value is a plain Python float/int
or ``None`` so the dict is JSON-able as is.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from collections import Counter
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from geoae.config import MAX_SEED
from geoae.errors import ArtifactError, DataError, GeoaeError
from geoae.geo import haversine_km, valid_coordinates
from geoae.labels import region_of, state_codes

log = logging.getLogger(__name__)

ACC_KM = 161.0
CALIBRATION_BINS = 10
NLL_FLOOR = 1e-15  # a probability of exactly 0 (float underflow) costs -log(1e-15) = 34.5, not infinity
PERCENTILES = (10, 25, 50, 75, 90)
POINTS = {
    # point kind -> (lat column, lon column, human description)
    "regression": ("reg_lat", "reg_lon", "regression head (lat, lon predicted directly)"),
    "state_median": ("state_lat", "state_lon", "state-median point (median training coordinate of the predicted state)"),
    "bayes": ("bayes_lat", "bayes_lon", "Bayes point (state point with least expected error under the predicted distribution)"),
    "location": ("loc_lat", "loc_lon", "location point (state point if the state head is sure, else the training-location "
                 "cell with least expected error under the state head and, if the model has one, the coordinate head)"),
}
POINT_CHOICES = ("regression", "state_median", "bayes", "location", "both", "all")
DOC_COLUMNS = ("user_id", "text", "n_tweets", "lat", "lon", "split", "state", "region")


# --------------------------------------------------------------------------- helpers


def _codes(values: Any, n: int | None = None) -> np.ndarray:
    """State codes as an object array of ``str``, missing ones as ``""`` (``n`` of them for ``None``)."""
    if values is None:
        return np.full(n or 0, "", dtype=object)
    return state_codes(values)


def _regions(codes: np.ndarray) -> np.ndarray:
    """Census region of each code; ``""`` when unknown."""
    return region_of(list(codes)).astype(object)


def _float_or_none(x: Any) -> float | None:
    if x is None:
        return None
    x = float(x)
    return None if not np.isfinite(x) else x


def _floats(values: Any, n: int) -> np.ndarray:
    if values is None:
        return np.full(n, np.nan)
    return pd.to_numeric(pd.Series(np.asarray(values, dtype=object).ravel()), errors="coerce").to_numpy(dtype=np.float64)


def error_km(true_lat, true_lon, pred_lat, pred_lon) -> np.ndarray:
    """Great-circle error per user in km; ``nan`` where either point is missing or invalid."""
    tl, tn = np.asarray(true_lat, dtype=np.float64), np.asarray(true_lon, dtype=np.float64)
    pl, pn = np.asarray(pred_lat, dtype=np.float64), np.asarray(pred_lon, dtype=np.float64)
    out = np.full(tl.shape[0], np.nan)
    ok = valid_coordinates(tl, tn) & valid_coordinates(pl, pn)
    if ok.any():
        out[ok] = haversine_km(tl[ok], tn[ok], pl[ok], pn[ok])
    return out


def _proba_matrix(proba, n: int, classes: Sequence[str]) -> np.ndarray:
    """``proba`` as a float users x classes matrix, checked against ``n`` users and ``classes``."""
    proba = np.asarray(proba, dtype=np.float64)
    if proba.ndim != 2 or proba.shape[0] != n or proba.shape[1] != len(classes):
        raise ValueError(f"state_proba has shape {proba.shape}, expected ({n}, {len(classes)}) (users x classes)")
    return proba


def topk_hits(true_state, proba: np.ndarray, classes: Sequence[str], k: int = 3) -> np.ndarray:
    """Boolean per user: true state among the ``k`` most probable classes."""
    true = _codes(true_state)
    proba = _proba_matrix(proba, true.shape[0], classes)
    k = min(k, proba.shape[1])
    if k == 0:
        return np.zeros(true.shape[0], dtype=bool)
    p = np.where(np.isfinite(proba), proba, -np.inf)
    # Stable sort, not argpartition: ties go to the earlier class, as for the arg-max state and the
    # ``top_states`` column; argpartition picks among tied classes arbitrarily and could leave out
    # the predicted state itself (a top-1 hit scored as a top-3 miss).
    top = np.argsort(-p, axis=1, kind="stable")[:, :k]
    cls = np.asarray([str(c) for c in classes], dtype=object)
    return np.array([t in set(cls[row]) for t, row in zip(true, top)], dtype=bool)


# --------------------------------------------------------------------------- metrics


def calibration(true_state, proba: np.ndarray, classes: Sequence[str], pred_state=None,
                n_bins: int = CALIBRATION_BINS) -> dict:
    """How far a model's state probabilities can be taken at their word (see the module doc).

    Users without a known true state are left out; so are users without a state prediction
    (``pred_state`` empty: the model abstained, e.g. on an empty text) and rows without
    probability mass (a user missing from the predictions) or with a NaN or infinite value, all
    counted in ``n_no_probability``: they carry no confidence to check. The predicted state is
    the arg-max class (ties: the earlier class, as everywhere). Returns plain floats (``None``
    where no user is left) and ``bins``: per equal-width bin of the top probability, its users,
    their mean top probability and the share of them whose state is right.
    """
    true = _codes(true_state)
    p = _proba_matrix(proba, true.shape[0], classes)
    # A row with a NaN or infinite value has no usable probabilities either (a top-3 miss too).
    usable = (true != "") & np.isfinite(p).all(axis=1) & (p.sum(axis=1) > 0)
    if pred_state is not None:
        usable &= _codes(pred_state, true.shape[0]) != ""
    out: dict[str, Any] = {"n": int(usable.sum()), "n_no_probability": int(((true != "") & ~usable).sum()),
                           "ece": None, "nll": None, "brier": None, "n_scored": 0, "n_unseen_state": 0, "bins": []}
    if not usable.any():
        return out
    p, true = p[usable], true[usable]
    cls = np.asarray([str(c) for c in classes], dtype=object)
    top = p.argmax(axis=1)
    conf = p[np.arange(len(p)), top]
    right = cls[top] == true
    # Bin by the top probability; 1.0 goes into the last bin, not a bin of its own.
    which = np.clip(np.floor(conf * n_bins), 0, n_bins - 1).astype(np.int64)
    ece = 0.0
    for b in range(n_bins):
        inb = which == b
        k = int(inb.sum())
        row = {"lo": b / n_bins, "hi": (b + 1) / n_bins, "n": k, "confidence": None, "accuracy": None}
        if k:
            row["confidence"], row["accuracy"] = float(conf[inb].mean()), float(right[inb].mean())
            ece += k / len(p) * abs(row["accuracy"] - row["confidence"])
        out["bins"].append(row)
    out["ece"] = _float_or_none(ece)  # None, not NaN/inf in metrics.json, for probabilities far beyond 1
    index = {c: i for i, c in enumerate(cls.tolist())}
    col = np.array([index.get(t, -1) for t in true.tolist()], dtype=np.int64)
    seen = col >= 0
    out["n_unseen_state"] = int((~seen).sum())
    out["n_scored"] = int(seen.sum())
    if seen.any():
        ps, cs = p[seen], col[seen]
        pt = ps[np.arange(len(ps)), cs]
        out["nll"] = _float_or_none(np.mean(-np.log(np.maximum(pt, NLL_FLOOR))))
        # sum_c (p_c - y_c)^2 = sum_c p_c^2 - 2 p_true + 1
        out["brier"] = _float_or_none(np.mean((ps ** 2).sum(axis=1) - 2.0 * pt + 1.0))
    return out


def compute_metrics(
    true_lat,
    true_lon,
    true_state,
    pred_state,
    pred_lat,
    pred_lon,
    *,
    state_proba: np.ndarray | None = None,
    classes: Sequence[str] | None = None,
) -> dict:
    """State, region, top-3 and distance metrics for one set of predictions (see module doc).

    Returns a dict of plain floats/ints (``None`` when a metric is undefined,
    e.g. no user has a known state, or no proba was given for top-3).
    """
    tlat = _floats(true_lat, len(np.asarray(true_lat).ravel()))
    n = tlat.shape[0]
    tlon = _floats(true_lon, n)
    plat, plon = _floats(pred_lat, n), _floats(pred_lon, n)
    tstate = _codes(true_state, n)
    pstate = _codes(pred_state, n)
    for name, arr in (("true_lon", tlon), ("true_state", tstate), ("pred_state", pstate), ("pred_lat", plat), ("pred_lon", plon)):
        if arr.shape[0] != n:
            raise ValueError(f"{name} has {arr.shape[0]} values, true_lat has {n}")

    m: dict[str, Any] = {"n_users": int(n)}
    known = tstate != ""
    # A classifier (``classes`` given) predicts states even where it abstained on every user (all empty
    # texts, no user matched): those are misses, 0.0, not n/a. Only a model without a state concept
    # (the median_point baseline) gets None.
    predicts_state = bool((pstate != "").any()) or (classes is not None and pred_state is not None)
    m["n_state"] = int(known.sum())
    m["n_no_state_prediction"] = int((known & (pstate == "")).sum())
    if known.any() and predicts_state:
        m["state_acc"] = float(np.mean(tstate[known] == pstate[known]))
        treg, preg = _regions(tstate[known]), _regions(pstate[known])
        m["region_acc"] = float(np.mean((treg == preg) & (treg != "")))
    else:
        m["state_acc"] = None
        m["region_acc"] = None
    if state_proba is not None and classes is not None and known.any():
        hits = topk_hits(tstate, state_proba, classes, k=3)
        # No state prediction is a top-3 miss too: an empty state (empty text) and a row without
        # probability mass (a user missing from the predictions gets zeros when aligned; without a
        # state column that row's arbitrary top 3 could otherwise count).
        hits &= np.asarray(state_proba).max(axis=1) > 0
        if pred_state is not None:
            hits &= pstate != ""
        m["top3_state_acc"] = float(np.mean(hits[known]))
        cal = calibration(tstate, state_proba, classes, pstate if pred_state is not None else None)
        m.update(state_ece=cal["ece"], state_nll=cal["nll"], state_brier=cal["brier"], calibration=cal)
    else:
        m["top3_state_acc"] = None
        m.update(state_ece=None, state_nll=None, state_brier=None, calibration=None)

    err = error_km(tlat, tlon, plat, plon)
    has_truth = valid_coordinates(tlat, tlon)
    ok = np.isfinite(err)
    m["n_distance"] = int(ok.sum())
    m["n_no_point"] = int((has_truth & ~ok).sum())
    e = err[ok]
    if e.size:
        m["mean_km"] = float(e.mean())
        m["median_km"] = float(np.median(e))
        m["acc_at_161"] = float(np.mean(e < ACC_KM))
        for q, v in zip(PERCENTILES, np.percentile(e, PERCENTILES)):
            m[f"p{q}_km"] = float(v)
    else:
        m["mean_km"] = m["median_km"] = m["acc_at_161"] = None
        for q in PERCENTILES:
            m[f"p{q}_km"] = None
    return m


def per_state_table(true_state, pred_state, errors_km=None) -> pd.DataFrame:
    """One row per true state: ``state, n, accuracy, median_km, mean_km, most_common_wrong, most_common_wrong_n``.

    Sorted by ``n`` descending (then state). ``errors_km`` is per user (nan where
    unknown) and only feeds the km columns. Users without a true state are left out.
    """
    t = _codes(true_state)
    p = _codes(pred_state, t.shape[0])
    e = np.full(t.shape[0], np.nan) if errors_km is None else np.asarray(errors_km, dtype=np.float64)
    rows = []
    for s in sorted(set(t[t != ""])):
        sel = t == s
        ps, es = p[sel], e[sel]
        es = es[np.isfinite(es)]
        wrong = Counter(x if x else "(none)" for x in ps[ps != s])
        mc = sorted(wrong.items(), key=lambda kv: (-kv[1], kv[0]))[0] if wrong else ("", 0)
        rows.append(
            {
                "state": s,
                "n": int(sel.sum()),
                "accuracy": float(np.mean(ps == s)),
                "median_km": float(np.median(es)) if es.size else np.nan,
                "mean_km": float(es.mean()) if es.size else np.nan,
                "most_common_wrong": mc[0],
                "most_common_wrong_n": int(mc[1]),
            }
        )
    cols = ["state", "n", "accuracy", "median_km", "mean_km", "most_common_wrong", "most_common_wrong_n"]
    df = pd.DataFrame(rows, columns=cols)
    return df.sort_values(["n", "state"], ascending=[False, True], kind="stable").reset_index(drop=True)


def confused_pairs(true, pred, top: int = 15) -> pd.DataFrame:
    """Most frequent ``(true_state, pred_state)`` pairs with true != pred.

    Columns: ``true_state, pred_state, count, share_of_true`` (count divided by
    the number of users of that true state). Users with no true state are left
    out; a missing prediction shows as ``(none)``.
    """
    t = _codes(true)
    p = _codes(pred, t.shape[0])
    known = t != ""
    support = Counter(t[known])
    pairs = Counter((a, b if b else "(none)") for a, b in zip(t[known], p[known]) if a != b)
    rows = [
        {"true_state": a, "pred_state": b, "count": int(c), "share_of_true": c / support[a]}
        for (a, b), c in sorted(pairs.items(), key=lambda kv: (-kv[1], kv[0]))[: max(0, int(top))]
    ]
    return pd.DataFrame(rows, columns=["true_state", "pred_state", "count", "share_of_true"])


def accuracy_vs_coverage(correct, confidence, errors_km=None, coverages: Sequence[float] | None = None) -> pd.DataFrame:
    """Accuracy and median error when abstaining on the least confident users.

    Users are sorted by ``confidence`` descending (stable; nan confidence counts
    as lowest); for each coverage c (default 5%, 10%, ..., 100%) the top
    ``ceil(c * n)`` are retained. Columns: ``coverage, n, min_confidence,
    state_acc, median_km`` (median over retained users with a finite error).
    """
    correct = np.asarray(correct, dtype=bool).ravel()
    n = correct.shape[0]
    conf = np.asarray(confidence, dtype=np.float64).ravel()
    if conf.shape[0] != n:
        raise ValueError(f"confidence has {conf.shape[0]} values, correct has {n}")
    err = np.full(n, np.nan) if errors_km is None else np.asarray(errors_km, dtype=np.float64).ravel()
    if coverages is None:
        coverages = np.round(np.arange(1, 21) * 0.05, 2)
    key = np.where(np.isfinite(conf), conf, -np.inf)
    order = np.argsort(-key, kind="stable")
    rows = []
    for c in coverages:
        k = int(np.ceil(float(c) * n - 1e-9)) if n else 0
        k = min(max(k, 1 if n else 0), n)
        idx = order[:k]
        e = err[idx]
        e = e[np.isfinite(e)]
        rows.append(
            {
                "coverage": float(c),
                "n": k,
                "min_confidence": float(key[idx[-1]]) if k else np.nan,
                "state_acc": float(correct[idx].mean()) if k else np.nan,
                "median_km": float(np.median(e)) if e.size else np.nan,
            }
        )
    return pd.DataFrame(rows, columns=["coverage", "n", "min_confidence", "state_acc", "median_km"])


def _align(truth_df: pd.DataFrame, pred_df: pd.DataFrame, proba: np.ndarray | None) -> tuple[pd.DataFrame, np.ndarray | None]:
    """Predictions reordered to the truth's users (left join on ``user_id``)."""
    for col in ("user_id",):
        if col not in truth_df.columns or col not in pred_df.columns:
            raise DataError(f"both truth and predictions need a {col!r} column")
    if pred_df["user_id"].duplicated().any():
        dup = pred_df.loc[pred_df["user_id"].duplicated(), "user_id"].iloc[0]
        raise DataError(f"predictions contain user_id {dup!r} more than once")
    pos = pd.Series(np.arange(len(pred_df)), index=pred_df["user_id"].astype(str).to_numpy())
    where = pos.reindex(truth_df["user_id"].astype(str).to_numpy())
    missing = int(where.isna().sum())
    if missing:
        log.warning("%d of %d evaluation users have no prediction; they count as misses / no point", missing, len(truth_df))
    idx = where.to_numpy()
    have = np.isfinite(idx)
    aligned = pd.DataFrame(index=range(len(truth_df)))
    for col in pred_df.columns:
        vals = pred_df[col].to_numpy()
        out = np.empty(len(truth_df), dtype=object if vals.dtype.kind in "OUSb" else np.float64)
        out[:] = None if out.dtype == object else np.nan
        out[have] = vals[idx[have].astype(np.int64)]
        # a count (n_tweets) stays a whole number, not 25.0, in predictions.csv; a missing row is <NA>
        aligned[col] = pd.array(out, dtype="Int64") if vals.dtype.kind in "iu" else out
    aligned["user_id"] = truth_df["user_id"].to_numpy()
    if "status" in aligned:
        aligned["status"] = aligned["status"].where(have, "no_prediction")
    else:
        aligned["status"] = np.where(have, "ok", "no_prediction")
    aproba = None
    if proba is not None:
        proba = np.asarray(proba, dtype=np.float64)
        if proba.shape[0] != len(pred_df):
            raise DataError(f"proba has {proba.shape[0]} rows but predictions have {len(pred_df)}")
        aproba = np.zeros((len(truth_df), proba.shape[1]))
        aproba[have] = proba[idx[have].astype(np.int64)]
    return aligned, aproba


def evaluate_predictions(
    truth_df: pd.DataFrame,
    pred_df: pd.DataFrame,
    proba: np.ndarray | None = None,
    classes: Sequence[str] | None = None,
    point: str = "both",
    headline: str = "regression",
    *,
    require_headline: bool = False,
) -> dict:
    """Evaluate one model's predictions against the truth.

    ``truth_df`` needs ``user_id, lat, lon, state``; ``pred_df`` has the
    predictor's columns (``user_id, state, lat, lon, state_lat, state_lon,
    confidence``, ...); ``proba`` rows follow ``pred_df`` rows. ``point`` picks
    the point prediction(s) to score; ``headline`` the one copied to the
    top-level distance keys. A ``headline`` that is not scored (not in ``point``,
    or a point these predictions lack) falls back to the state-median point, or
    the first scored one; with ``require_headline`` a headline the predictions
    lack raises ``GeoaeError``.

    Returns ``{"metrics": dict, "per_state": DataFrame, "confused_pairs":
    DataFrame, "coverage": DataFrame, "predictions": DataFrame}`` where
    ``metrics["points"][kind]`` holds the distance metrics of each scored point
    and ``predictions`` is truth + aligned predictions + ``error_km_<kind>``.
    """
    if point not in POINT_CHOICES:
        raise GeoaeError(f"point must be one of {POINT_CHOICES}, got {point!r}")
    # Score only the points this model provides (baselines have no regression head).
    available = [k for k, (la, lo, _) in POINTS.items() if la in pred_df.columns and lo in pred_df.columns
                 and (pred_df[la].notna().any() or not len(pred_df))]
    wanted = list(POINTS) if point in ("both", "all") else [point]
    kinds = [k for k in wanted if k in available] or wanted
    if require_headline and headline not in available:
        raise GeoaeError(f"the model provides no {headline} point (no {POINTS[headline][0]}/{POINTS[headline][1]} "
                         f"values in its predictions); choose --point / --headline from: "
                         f"{', '.join(available) or 'none (the model predicts no point)'}")
    if headline not in kinds:
        headline = "state_median" if "state_median" in kinds else kinds[0]
    for col in ("user_id", "lat", "lon", "state"):
        if col not in truth_df.columns:
            raise DataError(f"truth is missing column {col!r} (have {list(truth_df.columns)})")
    pred, aproba = _align(truth_df.reset_index(drop=True), pred_df.reset_index(drop=True), proba)
    truth = truth_df.reset_index(drop=True)
    n = len(truth)
    pstate = pred["state"] if "state" in pred else None

    points: dict[str, dict] = {}
    errors: dict[str, np.ndarray] = {}
    base: dict | None = None
    for kind in kinds:
        latc, lonc, desc = POINTS[kind]
        if latc not in pred or lonc not in pred:
            # info, not warning: run_evaluate puts one note in the report for all the models concerned
            log.info("predictions have no %s/%s columns: %s not scored", latc, lonc, kind)
            plat = plon = np.full(n, np.nan)
        else:
            plat, plon = pred[latc].to_numpy(dtype=np.float64), pred[lonc].to_numpy(dtype=np.float64)
        # Top-3 and calibration do not depend on the point: scored with the first kind only (``base``).
        m = compute_metrics(
            truth["lat"], truth["lon"], truth["state"], pstate, plat, plon,
            state_proba=aproba if classes is not None and base is None else None, classes=classes,
        )
        errors[kind] = error_km(truth["lat"].to_numpy(np.float64), truth["lon"].to_numpy(np.float64), plat, plon)
        if base is None:
            base = {k: m[k] for k in ("n_users", "n_state", "n_no_state_prediction", "state_acc", "region_acc", "top3_state_acc",
                                      "state_ece", "state_nll", "state_brier", "calibration")}
        points[kind] = {"description": desc, **{k: v for k, v in m.items() if k not in base}}

    metrics = dict(base or {})
    metrics["headline_point"] = headline
    metrics.update({k: v for k, v in points[headline].items() if k != "description"})
    metrics["points"] = points

    tstate = _codes(truth["state"])
    pst = _codes(pstate, n)
    head_err = errors[headline]
    if "confidence" in pred:
        conf = pd.to_numeric(pred["confidence"], errors="coerce").to_numpy(np.float64)
    elif "state_prob" in pred:
        conf = pd.to_numeric(pred["state_prob"], errors="coerce").to_numpy(np.float64)
    else:
        conf = np.full(n, np.nan)
    known = tstate != ""
    coverage = accuracy_vs_coverage((tstate == pst)[known], conf[known], head_err[known]) if known.any() else accuracy_vs_coverage([], [], [])

    out_pred = pd.DataFrame(
        {
            "user_id": truth["user_id"].to_numpy(),
            "true_state": tstate,
            "true_lat": truth["lat"].to_numpy(np.float64),
            "true_lon": truth["lon"].to_numpy(np.float64),
        }
    )
    for col in pred.columns:
        if col != "user_id":
            out_pred[col] = pred[col].values  # not to_numpy(): that turns the Int64 n_tweets back into floats
    for kind, e in errors.items():
        out_pred[f"error_km_{kind}"] = e
    has_state = bool((pst != "").any()) or classes is not None
    return {
        "metrics": metrics,
        "per_state": per_state_table(tstate, pst, head_err) if has_state else per_state_table([], []),
        "confused_pairs": confused_pairs(tstate, pst) if has_state else confused_pairs([], []),
        "coverage": coverage if has_state else accuracy_vs_coverage([], [], []),
        "predictions": out_pred,
    }


# --------------------------------------------------------------------------- CLI


def load_documents(data_dir: str | Path) -> tuple[pd.DataFrame, Path]:
    """The prepared documents (``pipeline.load_documents``) with state codes normalised, and their path."""
    from geoae.pipeline import documents_path
    from geoae.pipeline import load_documents as _load

    docs = _load(data_dir)
    docs["state"] = _codes(docs["state"])
    return docs, documents_path(data_dir)


def _model_provenance(model_dir: Path, artifact: Any) -> tuple[dict | None, list[dict]]:
    """The model's config (the one stored in its artifact, which is what it was trained with)
    and its files with sha256."""
    from geoae.manifest import file_record

    cfg = artifact.config.to_dict() if getattr(artifact, "config", None) is not None else None
    files = [file_record(p) for p in sorted(model_dir.iterdir()) if p.is_file()] if model_dir.is_dir() else []
    return cfg, files


def run_evaluate(
    model_dir: str | Path | None,
    data_dir: str | Path,
    out_dir: str | Path,
    *,
    split: str = "test",
    baselines: bool = True,
    point: str = "both",
    headline: str = "model",
    seed: int = 0,
    model_name: str = "geoae-sdae",
    predictor: Any = None,
    train_splits: Sequence[str] | None = None,
    dev_splits: Sequence[str] | None = None,
) -> dict:
    """Evaluate a model (and baselines) on one split and write the report; returns ``write_report``'s paths."""
    from geoae.manifest import check_writable, file_record, versions
    from geoae.report import write_report

    t0 = time.perf_counter()
    if point not in POINT_CHOICES:
        raise GeoaeError(f"--point must be one of {', '.join(POINT_CHOICES)}, got {point!r}")
    if headline not in ("model", *POINTS):
        raise GeoaeError(f"--headline must be 'model' or one of {', '.join(POINTS)}, got {headline!r}")
    if point not in ("both", "all") and headline not in ("model", point):
        raise GeoaeError(f"--headline {headline} conflicts with --point {point}: only the {point} point is scored, so "
                         f"it is the headline; use --point all (or --point {headline}) to headline the {headline} "
                         "point, or drop --headline")
    if not 0 <= seed <= MAX_SEED:
        # the baselines' LogisticRegression and numpy refuse others, with a traceback after the scoring
        raise GeoaeError(f"--seed must be a whole number in [0, {MAX_SEED}]; got {seed!r}")
    check_writable(out_dir, "--out", directory=True)  # before the scoring, not after it
    out = Path(out_dir).resolve()
    if model_dir is not None and Path(model_dir).is_dir():
        # The report's CSVs and figures would land among the model's files, which are shipped as a unit.
        m = Path(model_dir).resolve()
        if out == m or m in out.parents:
            raise GeoaeError(f"--out {out_dir} is inside the model directory {model_dir}; give the report its own directory")
    docs, doc_path = load_documents(data_dir)
    ev = docs[docs["split"].astype(str) == split].reset_index(drop=True)
    if ev.empty:
        have = sorted(docs["split"].astype(str).unique())
        raise DataError(f"{doc_path}: no users in split {split!r} (splits present: {have}); choose one with --split")
    notes = _label_notes(ev, split, doc_path)
    data_file = file_record(doc_path)  # provenance, and which data the model is scored on
    results: dict[str, dict] = {}
    model_cfg, model_files = None, []
    if predictor is None and model_dir is not None:
        from geoae.predict import load_predictor

        model_dir = Path(model_dir)
        if not model_dir.exists():
            raise ArtifactError(f"{model_dir}: model directory not found (train one with `geoae train`)")
        predictor = load_predictor(model_dir)
        model_cfg, model_files = _model_provenance(model_dir, getattr(predictor, "artifact", None))
    # Baselines train and tune on exactly the users the model did (its config's splits).
    mcfg = getattr(getattr(predictor, "artifact", None), "config", None)  # None for a duck-typed predictor
    mdata = getattr(mcfg, "data", None)
    train_splits = list(train_splits or (mdata.train_splits if mdata else ["train"]))
    dev_splits = list(dev_splits or (mdata.dev_splits if mdata else ["dev"]))
    if split in train_splits or split in dev_splits:
        notes.append(f"split {split!r} is one the model was trained or tuned on: the numbers are optimistic")
        log.warning("%s", notes[-1])
    elif mdata is not None and split in mdata.unlabelled_splits:
        notes.append(f"transductive: the model's vocabulary, idf and pretraining also used the text (never the labels "
                     f"or coordinates) of the {split!r} users it is scored on (data.unlabelled_splits="
                     f"{list(mdata.unlabelled_splits)}); the baselines did not")
        log.warning("%s", notes[-1])
    meta = getattr(getattr(predictor, "artifact", None), "meta", None) or {}
    trained_on = meta.get("data_dir")
    if "data_sha256" in meta:  # by content: the same documents under another path are the same data
        other_data = meta["data_sha256"] != data_file["sha256"]
    else:  # artifacts from before the checksum: by path
        other_data = bool(trained_on) and not _same_dir(trained_on, doc_path.parent)
    if other_data:
        # Not an error (evaluating on another corpus is legitimate), but the user should know: the split
        # names of two data directories say nothing about whether their users overlap.
        notes.append(f"the model was trained on {trained_on}, not on {doc_path.parent}: "
                     + (f"the baselines train on this directory's {'/'.join(train_splits)} users, and " if baselines else "")
                     + f"nothing checks that the {split!r} users were not among the model's training users")
        log.warning("%s", notes[-1])
    train = docs[docs["split"].astype(str).isin(train_splits)].reset_index(drop=True)
    dev = docs[docs["split"].astype(str).isin(dev_splits)].reset_index(drop=True)
    log.info("evaluating on %d %s users (%d train %s, %d dev %s for baselines)", len(ev), split, len(train), train_splits,
             len(dev), dev_splits)
    if predictor is not None:
        # Only what a prediction-time document has: no labels reach the model.
        inputs = ev[[c for c in ("user_id", "text", "n_tweets") if c in ev.columns]]
        classes = list(getattr(predictor, "classes_", []) or []) or None
        if hasattr(predictor, "predict_with_proba"):  # one scoring pass for both
            pred, proba = predictor.predict_with_proba(inputs)
            proba = proba if classes is not None else None
        else:
            pred = predictor.predict(inputs)
            proba = predictor.predict_proba(inputs) if classes is not None and hasattr(predictor, "predict_proba") else None
        if point not in ("both", "all"):
            head = point  # a single scored point is the headline
        else:
            head = getattr(predictor, "point_", "regression") if headline == "model" else headline
        results[model_name] = evaluate_predictions(ev, pred, proba, classes, point=point, headline=head,
                                                   require_headline=headline != "model" or point not in ("both", "all"))
        results[model_name]["label"] = "SDAE (this model)"

    baseline_info = {}
    if baselines:
        if not (train["state"] != "").any():
            # Also when the split has users but none labelled (a data dir prepared for another model): the
            # majority baseline's DataError would otherwise fail the model's evaluation too. A note, not
            # only a log line: the report would otherwise just lack its baselines.
            notes.append(f"no user with a state in the baselines' training split(s) {train_splits} of {doc_path}: "
                         "baselines skipped")
            log.warning("%s", notes[-1])
        else:
            from geoae.baselines import TFIDF_SETTINGS, run_baselines

            # The peer gets the model's own data rule: a model refit on train + dev means the LR is too.
            refit = bool(getattr(getattr(mcfg, "finetune", None), "refit", False))
            mfeat = getattr(mcfg, "features", None)
            same = ({k: getattr(mfeat, k) for k in TFIDF_SETTINGS}
                    if mfeat is not None and mfeat.kind == "tfidf" else None)
            for name, (bpred, bproba, bclasses) in run_baselines(train, ev, dev if not dev.empty else None, seed=seed,
                                                                  refit=refit, same_features=same).items():
                r = evaluate_predictions(ev, bpred, bproba, bclasses, point=point,
                                         headline="state_median" if headline in ("model", "regression") else headline)
                r["label"] = "baseline"
                if name == "median_point":
                    r["point_label"] = "median training point, no regression head"
                results[f"baseline:{name}"] = r
                baseline_info[name] = dict(bpred.attrs.get("baseline", {}))
            if "baseline:tfidf_logreg" not in results:
                notes.append(f"baseline tfidf_logreg skipped: the labelled {'/'.join(train_splits)} users are all in one "
                             "state, and a classifier needs two")
            pointless = [n[len("baseline:"):] for n, r in results.items()
                         if n.startswith("baseline:") and r["metrics"].get("median_km") is None]
            if pointless and point not in ("both", "all") and not any(n.startswith("distance metrics") for n in notes):
                notes.append(f"baselines {', '.join(pointless)} have no {point} point, so their distance metrics are n/a; "
                             "--point all scores each model at the points it has")
    if not results:
        raise GeoaeError("nothing to evaluate: give --model, or allow --baselines")

    provenance = {
        "split": split,
        "n_eval_users": int(len(ev)),
        "data_files": [data_file],
        "model_dir": str(model_dir) if model_dir is not None else None,
        "model_files": model_files,
        "config": model_cfg,
        "seed": seed,
        "baselines": baseline_info,
        "point": "all" if point == "both" else point,  # one spelling in metrics.json ('both' is an alias)
        "headline_point": results[model_name]["metrics"]["headline_point"] if model_name in results else headline,
        "train_splits": train_splits,
        "dev_splits": dev_splits,
        **({"notes": notes} if notes else {}),
        "versions": versions(),
        "wall_time_s": round(time.perf_counter() - t0, 3),
    }
    return write_report(out_dir, results, provenance)


def _same_dir(a: str | Path, b: str | Path) -> bool:
    try:
        return Path(a).resolve() == Path(b).resolve()
    except (OSError, ValueError):  # ValueError: a path with a NUL byte (a hand-edited artifact's data_dir)
        return str(a) == str(b)


def _label_notes(ev: pd.DataFrame, split: str, doc_path: Path) -> list[str]:
    """What cannot be scored on ``ev`` for lack of labels: a note per missing kind, an error if nothing can be."""
    lat = pd.to_numeric(ev["lat"], errors="coerce").to_numpy(np.float64) if "lat" in ev else np.full(len(ev), np.nan)
    lon = pd.to_numeric(ev["lon"], errors="coerce").to_numpy(np.float64) if "lon" in ev else np.full(len(ev), np.nan)
    has_point = bool(valid_coordinates(lat, lon).any())
    has_state = bool((_codes(ev["state"] if "state" in ev else None, len(ev)) != "").any())
    if not has_point and not has_state:
        raise DataError(f"{doc_path}: none of the {len(ev)} users in split {split!r} has coordinates or a known state, "
                        "so nothing can be scored; evaluate a labelled split (--split) or prepare labelled data")
    notes = []
    if not has_point:
        notes.append(f"distance metrics (km, Acc@161) cannot be computed: no user in split {split!r} has coordinates; "
                     "only state metrics are reported")
    if not has_state:
        notes.append(f"state metrics cannot be computed: no user in split {split!r} has a known state; "
                     "only distance metrics are reported")
    for n in notes:
        log.warning("%s", n)
    return notes


def print_summary(paths: dict) -> None:
    """One line per model (state acc, median km, Acc@161), any notes and where the report is: the CLI's output."""
    metrics = json.loads(Path(paths["metrics.json"]).read_text("utf-8"))
    width = max((len(n) for n in metrics["models"]), default=0) + 1

    def show(v: Any, fmt: str, unit: str = "") -> str:
        return "n/a" if v is None else f"{v:{fmt}}{unit}"

    for name, m in metrics["models"].items():
        print(f"{name:{width}s} state acc {show(m.get('state_acc'), '.3f')}  median {show(m.get('median_km'), '.1f', ' km')}"
              f"  Acc@161 {show(m.get('acc_at_161'), '.3f')}"
              + (f"  ECE {show(m['state_ece'], '.3f')}" if m.get("state_ece") is not None else ""))
    for note in (metrics.get("provenance") or {}).get("notes") or []:
        print(f"note: {note}")
    print(f"report: {paths['report.html']}")


def _cli(args: argparse.Namespace) -> int:
    paths = run_evaluate(
        args.model, args.data, args.out, split=args.split, baselines=args.baselines,
        point=args.point, headline=args.headline, seed=args.seed,
    )
    print_summary(paths)
    return 0


def add_cli(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "evaluate",
        help="score a model (and baselines) on a prepared split and write a report",
        description="Score a trained model and simple baselines on one split of a prepared dataset; "
        "write metrics.json, report.md, a self-contained report.html and PNG figures.",
    )
    p.add_argument("--model", required=True, metavar="MODEL_DIR", help="model directory written by `geoae train`")
    p.add_argument("--data", required=True, metavar="PREPARED_DIR", help="directory with documents.parquet (from `geoae prepare`)")
    p.add_argument("--split", default="test", help="split to evaluate on (default: test)")
    p.add_argument("--out", required=True, metavar="REPORT_DIR", help="where the report is written")
    p.add_argument("--baselines", action=argparse.BooleanOptionalAction, default=True,
                   help="also fit and score majority / median-point / TF-IDF+LogReg baselines, trained on the users of "
                        "the model's own training split(s) (its data.train_splits; GeoText: dev) and tuned on its dev "
                        "split(s) (default: on)")
    p.add_argument("--point", choices=POINT_CHOICES, default="all",
                   help="point prediction(s) scored for distance metrics: regression head, state-median point, "
                        "Bayes point, location point, or all the model provides (default; 'both' is an alias of 'all'). "
                        "A single point is also the headline")
    p.add_argument("--headline", choices=("model", *POINTS), default="model",
                   help="which point prediction gives the headline distance numbers "
                        "(default: the one the model chose on its validation users; baselines use the state-median point). "
                        "It must be scored: a --headline other than a single --point is an error, and so is a point "
                        "the model does not provide")
    p.add_argument("--seed", type=int, default=0, help="seed for the baselines (default 0)")
    p.set_defaults(func=_cli)
