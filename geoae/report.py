"""The evaluation report a researcher publishes: metrics.json, report.md, report.html, figures.

``write_report(out_dir, results, provenance)`` takes, per model, the dict that
``geoae.evaluate.evaluate_predictions`` returns and writes:

* ``metrics.json``: every model's metrics (plus the provenance);
* ``report.md`` and a self-contained ``report.html`` (figures embedded as
  base64 PNG data URIs, inline CSS, no scripts, nothing fetched);
* PNG figures: error CDF of all models, a map of true vs predicted points, a
  per-state accuracy map, a row-normalised confusion matrix of the most
  frequent states, accuracy vs coverage, and the reliability of the state
  probabilities;
* CSV tables: ``per_state.csv``, ``confused_pairs.csv``, ``coverage.csv`` and
  ``predictions.csv`` of the primary model (the first non-baseline model).

Maps draw the state outlines of the US Census cartographic boundary file
shipped with the ``plotly-geo`` package, clipped to the contiguous US.
Every file is written atomically.
"""

from __future__ import annotations

import base64
import functools
import html
import io
import json
import logging
import os
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

from geoae.evaluate import POINTS
from geoae.manifest import atomic_write_bytes, atomic_write_text, versions, write_json

log = logging.getLogger(__name__)

DPI = 120
LON_RANGE = (-125.0, -66.0)
LAT_RANGE = (24.0, 50.0)
ACC_KM = 161.0
MAP_SAMPLE = 300
CONFUSION_TOP_N = 15
SHAPEFILE = "cb_2016_us_state_500k.shp"

FIGURES = {
    "fig_error_cdf.png": "Error CDF",
    "fig_map_points.png": "True vs predicted points",
    "fig_map_state_accuracy.png": "Per-state accuracy",
    "fig_confusion.png": "Confusion matrix (most frequent states)",
    "fig_coverage.png": "Accuracy vs coverage",
    "fig_calibration.png": "Reliability of the state probabilities",
}

POINT_LABELS = {
    "regression": "regression head",
    "state_median": "state-median point",
    "bayes": "Bayes point",
    "location": "location point",
}
# The prediction columns of each point kind, as evaluation scores them (one definition).
POINT_COLUMNS = {kind: (la, lo) for kind, (la, lo, _desc) in POINTS.items()}


# --------------------------------------------------------------------------- state shapes


def shapefile_path() -> Path:
    """The Census state boundary shapefile inside the installed ``plotly-geo`` package."""
    import _plotly_geo

    return Path(os.path.dirname(_plotly_geo.__file__)) / "package_data" / SHAPEFILE


def _signed_area(pts: np.ndarray) -> float:
    x, y = pts[:, 0], pts[:, 1]
    return 0.5 * float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1)))


@functools.lru_cache(maxsize=1)
def load_state_shapes() -> dict[str, list[np.ndarray]]:
    """USPS code -> list of exterior rings (``[k, 2]`` arrays of lon, lat).

    Shapefile exteriors run clockwise (negative signed area); holes, which
    run counter-clockwise, are dropped.
    """
    import shapefile  # pyshp

    path = shapefile_path()
    out: dict[str, list[np.ndarray]] = {}
    with shapefile.Reader(str(path)) as r:
        for sr in r.iterShapeRecords():
            code = str(sr.record.as_dict()["STUSPS"])
            pts = np.asarray(sr.shape.points, dtype=np.float64)
            parts = list(sr.shape.parts) + [len(pts)]
            rings = [pts[a:b] for a, b in zip(parts[:-1], parts[1:]) if b - a >= 3]
            ext = [ring for ring in rings if _signed_area(ring) < 0] or rings
            out[code] = ext
    return out


def _in_view(ring: np.ndarray) -> bool:
    return (ring[:, 0].max() >= LON_RANGE[0] and ring[:, 0].min() <= LON_RANGE[1]
            and ring[:, 1].max() >= LAT_RANGE[0] and ring[:, 1].min() <= LAT_RANGE[1])


def _map_axes(ax, title: str) -> None:
    ax.set_xlim(*LON_RANGE)
    ax.set_ylim(*LAT_RANGE)
    ax.set_aspect(1.0 / np.cos(np.deg2rad(np.mean(LAT_RANGE))))
    ax.set_xlabel("longitude (°E)")
    ax.set_ylabel("latitude (°N)")
    ax.set_title(title, fontsize=10)


def _draw_states(ax, facecolor: Callable[[str], Any] | None = None, edgecolor: str = "0.45", lw: float = 0.4, **kw) -> None:
    from matplotlib.collections import PolyCollection

    polys, faces = [], []
    for code, rings in load_state_shapes().items():
        for ring in rings:
            if _in_view(ring):
                polys.append(ring)
                faces.append(facecolor(code) if facecolor else "none")
    ax.add_collection(PolyCollection(polys, facecolors=faces, edgecolors=edgecolor, linewidths=lw, **kw))


# --------------------------------------------------------------------------- figures


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight")
    _plt().close(fig)
    return buf.getvalue()


def _point_label(kind: str) -> str:
    return POINT_LABELS.get(kind, kind)


def _is_baseline(name: str, r: dict) -> bool:
    return r.get("label") == "baseline" or name.startswith("baseline")


def _model_point_label(r: dict, kind: str) -> str:
    """Baselines have no regression head: their single point is named as such."""
    if r.get("point_label"):
        return str(r["point_label"])
    if r.get("label") != "baseline":
        return _point_label(kind)
    return "none: no regression head (baseline)" if kind == "regression" else f"{_point_label(kind)} (baseline, no regression head)"


def _ecdf_steps(e: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The error CDF as ``step(x, y, where="post")`` points: from 0 at the smallest error to 1, held to
    the right edge of the plot. ``y = i / n`` at the sorted errors alone leaves out the rise from 0
    and the final level 1 (one user: nothing is drawn at all). Errors < 1 km are drawn at 1 km."""
    x = np.maximum(np.sort(np.asarray(e, dtype=np.float64)), 1.0)
    y = np.arange(1, x.size + 1) / x.size
    return np.r_[x[0], x, max(x[-1], 10000.0)], np.r_[0.0, y, 1.0]


def fig_error_cdf(results: dict[str, dict], primary: str) -> bytes:
    """CDF of the error in km (log x) per model at its headline point; the primary's other point dashed."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    curves = []
    for name, r in results.items():
        m = r["metrics"]
        head = m.get("headline_point", "regression")
        kinds = [head] + ([k for k in m.get("points", {}) if k != head] if name == primary else [])
        for kind in kinds:
            col = f"error_km_{kind}"
            if col not in r["predictions"]:
                continue
            e = r["predictions"][col].to_numpy(np.float64)
            e = np.sort(e[np.isfinite(e)])
            if not e.size:
                continue
            curves.append((name, kind, kind == head, e))
    for name, kind, is_head, e in curves:
        x, y = _ecdf_steps(e)
        ax.step(x, y, where="post", lw=2.0 if name == primary else 1.3, ls="-" if is_head else "--",
                label=f"{name} ({_model_point_label(results[name], kind)}), n={e.size}")
    ax.axvline(ACC_KM, color="k", lw=0.8, ls=":")
    ax.text(ACC_KM * 1.05, 0.03, "161 km (Acc@161)", fontsize=8)
    ax.set_xscale("log")
    ax.set_xlim(1, 10000)
    ax.set_ylim(0, 1)
    ax.set_xlabel("error distance (km, log scale; errors < 1 km drawn at 1 km)")
    ax.set_ylabel("share of users with error ≤ x")
    ax.set_title("Cumulative distribution of the great-circle error")
    ax.grid(True, which="both", alpha=0.3)
    if curves:  # below the axes: inside, a legend of several models covers the curves
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2, frameon=False)
    else:  # an empty frame read as a drawing failure
        ax.text(0.5, 0.5, "no user with true coordinates and a predicted point", ha="center", transform=ax.transAxes)
    return _png(fig)


def fig_map_points(r: dict, name: str, sample: int = MAP_SAMPLE, seed: int = 0) -> bytes:
    """True vs predicted points (headline point) for a random sample of users, joined by thin lines."""
    plt = _plt()
    m = r["metrics"]
    head = m.get("headline_point", "regression")
    latc, lonc = POINT_COLUMNS[head]
    p = r["predictions"]
    tl, tn = p["true_lat"].to_numpy(np.float64), p["true_lon"].to_numpy(np.float64)
    pl = p[latc].to_numpy(np.float64) if latc in p else np.full(len(p), np.nan)
    pn = p[lonc].to_numpy(np.float64) if lonc in p else np.full(len(p), np.nan)
    ok = np.flatnonzero(np.isfinite(tl) & np.isfinite(tn) & np.isfinite(pl) & np.isfinite(pn))
    rng = np.random.default_rng(seed)
    idx = np.sort(rng.choice(ok, size=min(sample, ok.size), replace=False)) if ok.size else ok
    fig, ax = plt.subplots(figsize=(9, 5.6))
    _draw_states(ax, facecolor=lambda c: "0.96")
    if idx.size:
        from matplotlib.collections import LineCollection

        segs = np.stack([np.c_[tn[idx], tl[idx]], np.c_[pn[idx], pl[idx]]], axis=1)
        ax.add_collection(LineCollection(segs, colors="0.35", linewidths=0.35, alpha=0.5, label="true → predicted"))
        ax.scatter(tn[idx], tl[idx], s=9, c="tab:blue", label="true location", zorder=3)
        ax.scatter(pn[idx], pl[idx], s=14, c="tab:red", marker="x", linewidths=0.8, label=f"predicted ({_point_label(head)})", zorder=4)
        ax.legend(loc="lower left", fontsize=8, framealpha=0.9)
    _map_axes(ax, f"{name}: true vs predicted location, random sample of {idx.size} of {ok.size} users\n"
                  "(contiguous US shown; points outside it are clipped)")
    return _png(fig)


def fig_map_state_accuracy(r: dict, name: str) -> bytes:
    """Each state's polygons filled by the state accuracy of its users; grey = no users."""
    plt = _plt()
    from matplotlib import cm, colors
    from matplotlib.patches import Patch

    ps = r["per_state"]
    acc = dict(zip(ps["state"], ps["accuracy"])) if len(ps) else {}
    cmap = plt.get_cmap("viridis")
    norm = colors.Normalize(vmin=0.0, vmax=1.0)
    fig, ax = plt.subplots(figsize=(9, 5.6))
    _draw_states(ax, facecolor=lambda c: cmap(norm(acc[c])) if c in acc else "0.85", edgecolor="white", lw=0.5)
    sm = cm.ScalarMappable(norm=norm, cmap=cmap)
    cb = fig.colorbar(sm, ax=ax, shrink=0.6, pad=0.02)
    cb.set_label("state accuracy (fraction of the state's users)", fontsize=8)
    ax.legend(handles=[Patch(facecolor="0.85", edgecolor="0.6", label="no users in this split")], loc="lower left", fontsize=8)
    _map_axes(ax, f"{name}: state accuracy by true state (n users per state in per_state.csv)")
    return _png(fig)


def confusion_matrix_top(r: dict, top_n: int = CONFUSION_TOP_N) -> tuple[np.ndarray, list[str], list[str]]:
    """Row-normalised confusion of the ``top_n`` most frequent true states.

    Columns are the same states plus ``other`` (any other prediction, or none),
    so every row sums to 1.
    """
    p = r["predictions"]
    t = p["true_state"].fillna("").astype(str).to_numpy()
    s = p["state"].where(p["state"].notna(), "").astype(str).to_numpy() if "state" in p else np.full(len(p), "")
    known = t != ""
    states = list(pd.Series(t[known]).value_counts().sort_index().sort_values(ascending=False, kind="stable").index[:top_n])
    cols = states + ["other"]
    mat = np.zeros((len(states), len(cols)))
    pos = {c: i for i, c in enumerate(states)}
    for a, b in zip(t[known], s[known]):
        if a in pos:
            mat[pos[a], pos.get(b, len(states))] += 1
    rows = mat.sum(axis=1, keepdims=True)
    return np.divide(mat, rows, out=np.zeros_like(mat), where=rows > 0), states, cols


def fig_confusion(r: dict, name: str, top_n: int = CONFUSION_TOP_N) -> bytes:
    plt = _plt()
    mat, rows, cols = confusion_matrix_top(r, top_n)
    if not rows:  # a split without any known true state: an empty frame titled "the 0 most frequent" otherwise
        fig, ax = plt.subplots(figsize=(5.5, 1.6))
        ax.set_axis_off()
        ax.text(0.5, 0.5, f"{name}: no confusion matrix:\nno user of this split has a known true state",
                ha="center", va="center", fontsize=10, transform=ax.transAxes)
        return _png(fig)
    fig, ax = plt.subplots(figsize=(1.0 + 0.45 * len(cols), 1.2 + 0.42 * max(len(rows), 1)))
    im = ax.imshow(mat if mat.size else np.zeros((1, 1)), cmap="Blues", vmin=0, vmax=1, aspect="auto")
    ax.set_xticks(range(len(cols)), cols, rotation=90, fontsize=8)
    ax.set_yticks(range(len(rows)), rows, fontsize=8)
    for i in range(mat.shape[0]):
        for j in range(mat.shape[1]):
            if mat[i, j] >= 0.05:
                ax.text(j, i, f"{mat[i, j]:.2f}", ha="center", va="center", fontsize=6,
                        color="white" if mat[i, j] > 0.6 else "black")
    ax.set_xlabel("predicted state ('other' = any other state, or no prediction)")
    ax.set_ylabel("true state")
    ax.set_title(f"{name}: confusion of the {len(rows)} most frequent true states\n(rows normalised: share of the true state's users)", fontsize=9)
    fig.colorbar(im, ax=ax, shrink=0.8).set_label("share of row", fontsize=8)
    return _png(fig)


def fig_coverage(results: dict[str, dict]) -> bytes:
    """State accuracy and median error when keeping only the most confident users."""
    plt = _plt()
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4.2))
    drawn = 0
    for name, r in results.items():
        cov = r.get("coverage")
        if cov is None or not len(cov) or cov["state_acc"].isna().all():
            continue
        conf = r["predictions"].get("confidence")
        if conf is not None and pd.to_numeric(conf, errors="coerce").nunique() <= 1:
            continue  # constant confidence: the ordering would be arbitrary
        a1.plot(cov["coverage"] * 100, cov["state_acc"], marker="o", ms=3, label=name)
        a2.plot(cov["coverage"] * 100, cov["median_km"], marker="o", ms=3, label=name)
        drawn += 1
    a1.set_xlabel("coverage (% of users kept, most confident first)")
    a1.set_ylabel("state accuracy (fraction)")
    a1.set_ylim(0, 1)
    a1.set_title("State accuracy vs coverage", fontsize=10)
    a2.set_xlabel("coverage (% of users kept, most confident first)")
    a2.set_ylabel("median error (km, headline point)")
    a2.set_title("Median error vs coverage", fontsize=10)
    a2.set_ylim(bottom=0)
    for a in (a1, a2):
        a.set_xlim(0, 100)
        a.grid(True, alpha=0.3)
        if drawn:
            a.legend(fontsize=7)
    if not drawn:
        a1.text(50, 0.5, "no model with a varying confidence", ha="center")
    return _png(fig)


def fig_calibration(results: dict[str, dict]) -> bytes:
    """Reliability diagram: per bin of the top state probability, the share of users whose state
    is right against their mean top probability (on the diagonal: the probabilities mean what
    they say), and below it how many users each bin holds."""
    plt = _plt()
    from matplotlib import ticker

    fig, (a1, a2) = plt.subplots(2, 1, figsize=(6.4, 7.0), sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    a1.plot([0, 1], [0, 1], color="0.5", ls="--", lw=1, label="perfectly calibrated")
    drawn = 0
    for name, r in results.items():
        cal = r["metrics"].get("calibration")
        if not cal or not cal.get("n"):
            continue
        bins = [b for b in cal["bins"] if b["n"]]
        ece = cal.get("ece")
        # clip_on=False: a bin of sure and right users sits at (1, 1), half cut off by the frame otherwise
        line, = a1.plot([b["confidence"] for b in bins], [b["accuracy"] for b in bins], marker="o", ms=4,
                        label=f"{name} (ECE {ece:.3f})" if ece is not None else name, clip_on=False)
        a2.plot([(b["lo"] + b["hi"]) / 2 for b in bins], [b["n"] for b in bins], marker="o", ms=3,
                color=line.get_color(), clip_on=False)
        drawn += 1
    a1.set_ylabel("share of users whose state is right")
    a1.set_title("Reliability of the top state probability", fontsize=10)
    a1.set_xlim(0, 1)
    a1.set_ylim(0, 1)
    a1.grid(True, alpha=0.3)
    a1.legend(fontsize=7, loc="upper left")
    if not drawn:
        a1.text(0.5, 0.5, "no model with state probabilities", ha="center")
    a2.set_xlabel("top state probability (bin)")
    a2.set_ylabel("users (log scale)")
    a2.set_yscale("log")  # a constant forecast puts every user in one bin: on a linear scale the rest vanish
    # Counts in plain numbers (the default labels a small range "4×10^1, 6×10^0"), and no axis below one
    # user (a single count was drawn between 10^-1 and 10^1).
    a2.yaxis.set_major_formatter(ticker.LogFormatter(labelOnlyBase=False))
    a2.yaxis.set_minor_formatter(ticker.LogFormatter(labelOnlyBase=False, minor_thresholds=(2, 0.5)))
    if drawn:
        a2.set_ylim(bottom=0.7)
    a2.grid(True, alpha=0.3)
    return _png(fig)


def calibration_table(results: dict[str, dict]) -> pd.DataFrame:
    rows = []
    for name, r in results.items():
        cal = r["metrics"].get("calibration")
        if not cal:
            continue
        rows.append({"model": name, "ECE": cal.get("ece"), "NLL": cal.get("nll"), "Brier": cal.get("brier"),
                     "n": cal.get("n"), "n (NLL, Brier)": cal.get("n_scored"),
                     "true state not a class": cal.get("n_unseen_state")})
    return pd.DataFrame(rows, columns=["model", "ECE", "NLL", "Brier", "n", "n (NLL, Brier)", "true state not a class"])


# --------------------------------------------------------------------------- tables


def _fmt(v: Any, kind: str = "") -> str:
    if v is None or (isinstance(v, float) and not np.isfinite(v)):
        return "n/a"
    if isinstance(v, (bool, np.bool_)):
        return str(bool(v))
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, (float, np.floating)):
        return f"{v:.1f}" if kind == "km" else f"{v:.3f}"
    return str(v)


def _fmt_frame(df: pd.DataFrame) -> pd.DataFrame:
    out = pd.DataFrame(index=df.index)
    for c in df.columns:
        kind = "km" if str(c).endswith("_km") or "km" in str(c) else ""
        out[c] = [_fmt(v, kind) for v in df[c].tolist()]
    return out


HEADLINE_COLUMNS = [
    ("state_acc", "state acc"), ("region_acc", "region acc"), ("top3_state_acc", "top-3 state acc"),
    ("acc_at_161", "Acc@161"), ("mean_km", "mean km"), ("median_km", "median km"),
    ("n_state", "n (state)"), ("n_distance", "n (distance)"), ("n_no_point", "no point"),
]


def headline_table(results: dict[str, dict]) -> pd.DataFrame:
    rows = []
    for name, r in results.items():
        m = r["metrics"]
        row = {"model": name, "point": _model_point_label(r, m.get("headline_point", ""))}
        row.update({label: m.get(k) for k, label in HEADLINE_COLUMNS})
        rows.append(row)
    return pd.DataFrame(rows)


def points_table(results: dict[str, dict]) -> pd.DataFrame:
    rows = []
    for name, r in results.items():
        pts = r["metrics"].get("points", {})
        seen = set()
        for kind, pm in pts.items():
            label = _model_point_label(r, kind)
            if label in seen:  # one point under several names (the median-point baseline): one row
                continue
            seen.add(label)
            rows.append({"model": name, "point": label, "mean km": pm.get("mean_km"),
                         "median km": pm.get("median_km"), "Acc@161": pm.get("acc_at_161"),
                         **{f"p{q} km": pm.get(f"p{q}_km") for q in (10, 25, 50, 75, 90)},
                         "n": pm.get("n_distance")})
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- rendering


def _md_table(df: pd.DataFrame) -> str:
    if df is None or not len(df):
        return "_(empty)_\n"
    f = _fmt_frame(df)
    esc = lambda s: str(s).replace("|", "\\|")
    lines = ["| " + " | ".join(esc(c) for c in f.columns) + " |", "|" + "---|" * len(f.columns)]
    lines += ["| " + " | ".join(esc(v) for v in row) + " |" for row in f.itertuples(index=False)]
    return "\n".join(lines) + "\n"


def _html_table(df: pd.DataFrame) -> str:
    if df is None or not len(df):
        return "<p><em>(empty)</em></p>"
    f = _fmt_frame(df)
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in f.columns)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in row) + "</tr>" for row in f.itertuples(index=False))
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


CSS = """body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:0.5em 0 1.5em;font-size:13px}th,td{border:1px solid #ccc;padding:3px 8px;text-align:right}
th{background:#f0f0f0}td:first-child,th:first-child{text-align:left}img{max-width:100%;border:1px solid #eee}
pre{background:#f7f7f7;padding:0.8em;overflow-x:auto;font-size:12px}figure{margin:1em 0}figcaption{font-size:13px;color:#555}"""


def _render(blocks: list[tuple], figures: dict[str, bytes]) -> tuple[str, str]:
    md, ht = [], []
    for b in blocks:
        kind = b[0]
        if kind == "h":
            md.append("#" * b[1] + " " + b[2] + "\n")
            ht.append(f"<h{b[1]}>{html.escape(b[2])}</h{b[1]}>")
        elif kind == "p":
            md.append(b[1] + "\n")
            ht.append(f"<p>{html.escape(b[1])}</p>")
        elif kind == "ul":
            md.append("\n".join(f"- {x}" for x in b[1]) + "\n")
            ht.append("<ul>" + "".join(f"<li>{html.escape(x)}</li>" for x in b[1]) + "</ul>")
        elif kind == "table":
            md.append(_md_table(b[1]))
            ht.append(_html_table(b[1]))
        elif kind == "pre":
            md.append("```\n" + b[1].rstrip() + "\n```\n")
            ht.append(f"<pre>{html.escape(b[1])}</pre>")
        elif kind == "img":
            name, caption = b[1], b[2]
            if name in figures:
                md.append(f"![{FIGURES.get(name, name)}]({name})\n\n_{caption}_\n")
                data = base64.b64encode(figures[name]).decode("ascii")
                ht.append(f'<figure><img alt="{html.escape(FIGURES.get(name, name))}" src="data:image/png;base64,{data}">'
                          f"<figcaption>{html.escape(caption)}</figcaption></figure>")
            else:
                md.append(f"_{caption}: figure not produced ({b[3] if len(b) > 3 else 'see log'})._\n")
                ht.append(f"<p><em>{html.escape(caption)}: figure not produced.</em></p>")
    title = "geoae evaluation report"
    page = (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{title}</title>"
            f"<style>{CSS}</style></head><body>\n" + "\n".join(ht) + "\n</body></html>\n")
    return "\n".join(md), page


def _primary(results: dict[str, dict]) -> str:
    for name, r in results.items():
        if not _is_baseline(name, r):
            return name
    return next(iter(results))


def write_report(out_dir: str | Path, results: dict[str, dict], provenance: dict | None = None,
                 *, map_sample: int = MAP_SAMPLE, seed: int = 0) -> dict[str, Path]:
    """Write metrics.json, report.md, report.html, PNG figures and CSV tables; return ``{file name: path}``.

    ``results`` maps model name -> ``evaluate_predictions`` output; the first
    model that is not a baseline is the *primary* one (per-state table,
    confusions, maps). ``provenance`` may hold ``data_files`` (file records
    with sha256), ``config``, ``seed``, ``versions``, ``wall_time_s``, ``split``
    and anything else JSON-able; missing ``versions`` are filled in.
    """
    if not results:
        raise ValueError("write_report needs at least one model's results")
    t0 = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    prov = dict(provenance or {})
    prov.setdefault("versions", versions())
    primary = _primary(results)
    pr = results[primary]
    head = pr["metrics"].get("headline_point", "regression")
    n_primary_points = len(pr["metrics"].get("points", {}))
    paths: dict[str, Path] = {}

    # figures: a failure is logged and reported, never fatal for the numbers
    figures: dict[str, bytes] = {}
    failed: dict[str, str] = {}
    makers = {
        "fig_error_cdf.png": lambda: fig_error_cdf(results, primary),
        "fig_map_points.png": lambda: fig_map_points(pr, primary, sample=map_sample, seed=seed),
        "fig_map_state_accuracy.png": lambda: fig_map_state_accuracy(pr, primary),
        "fig_confusion.png": lambda: fig_confusion(pr, primary),
        "fig_coverage.png": lambda: fig_coverage(results),
        "fig_calibration.png": lambda: fig_calibration(results),
    }
    for fname, make in makers.items():
        try:
            figures[fname] = make()
        except Exception as e:  # a broken figure must not lose the metrics
            log.warning("figure %s not produced: %s: %s", fname, type(e).__name__, e)
            failed[fname] = f"{type(e).__name__}: {e}"
            continue
        atomic_write_bytes(out / fname, figures[fname])
        paths[fname] = out / fname

    # tables
    for fname, df in (("per_state.csv", pr["per_state"]), ("confused_pairs.csv", pr["confused_pairs"]),
                      ("coverage.csv", pr["coverage"]), ("predictions.csv", pr["predictions"])):
        atomic_write_text(out / fname, df.to_csv(index=False))
        paths[fname] = out / fname

    metrics = {
        "primary_model": primary,
        "headline_point": head,
        "models": {name: r["metrics"] for name, r in results.items()},
        "figures_failed": failed,
        "provenance": prov,
    }
    write_json(out / "metrics.json", metrics)
    paths["metrics.json"] = out / "metrics.json"

    n_users = pr["metrics"].get("n_users")
    split = prov.get("split", "evaluation")
    try:  # the rows Figure 4 draws: fewer than CONFUSION_TOP_N where the split has fewer states
        n_confusion = len(confusion_matrix_top(pr, CONFUSION_TOP_N)[1])
    except Exception:  # the figure reports its own failure; the caption then keeps the nominal count
        n_confusion = CONFUSION_TOP_N
    # Baselines keep their state-median point while the primary may headline another: the primary's
    # point is then not the whole table's, and the captions name each row's own point column.
    one_head = len({r["metrics"].get("headline_point") for r in results.values()}) == 1
    # The baselines train on the model's training split(s), which need not be called "train" (GeoText: dev).
    train_users = "/".join(map(str, prov.get("train_splits") or ["train"]))
    head_title = (_point_label(head) if one_head
                  else f"each model's own point, in the 'point' column; {primary}: the {_point_label(head)}")
    blocks: list[tuple] = [
        ("h", 1, "geoae evaluation report"),
        ("p", f"Split: {split}; {n_users} users. Primary model: {primary}. Generated "
              f"{time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())}."),
        *(("p", f"Note: {n}.") for n in prov.get("notes") or []),
        ("h", 2, "How to read the numbers"),
        ("ul", [
            "state acc / region acc / top-3 state acc: fractions of users with a known true state (region = US Census region: "
            "Northeast, Midwest, South, West). A missing state prediction counts as a miss; top-3 needs class probabilities, and "
            "a true state never seen in training counts as a miss.",
            "Distances are great-circle (haversine, R = 6371.0088 km) over users with valid true coordinates and a predicted "
            "point; 'no point' counts users without one. Acc@161 = share of those users with error < 161 km (100 miles).",
            "Point predictions: 'regression head' = the model's directly predicted (lat, lon); 'state-median point' = median "
            "training coordinate of the predicted state; 'Bayes point' = the state point with the least expected (capped) "
            "error under the predicted state distribution; 'location point' = the state-median point when the top state's "
            "probability reaches the gate, otherwise the training-location cell with the least expected error under the state "
            "probabilities (and, for the SDAE, a kernel around the regression head's point). Baselines have no regression head.",
            f"Headline distance numbers use the {_point_label(head)}." if one_head else
            f"Headline distance numbers use each model's own headline point, named in the table's 'point' column "
            f"({primary}: the {_point_label(head)}).",
            *([f"Baselines are fitted on the {train_users} users of the same data: majority_state (most common "
               "training state for everyone), median_point (median training coordinate for everyone; predicts no state, "
               "so its state metrics are n/a), tfidf_logreg (TF-IDF + multinomial logistic regression, C tuned on dev "
               "users when available; the Rahimi/pigeo recipe: 10k features, min_df 2, mentions masked) and, when the "
               "model's TF-IDF differs from that recipe, tfidf_logreg_same_features (the same classifier on the model's "
               "own TF-IDF settings)."] if any(_is_baseline(n, r) for n, r in results.items()) else []),
        ]),
        ("h", 2, f"Headline metrics (distance: {head_title})"),
        ("table", headline_table(results)),
        ("h", 2, "Distance metrics by point prediction"),
        ("table", points_table(results)),
        ("h", 2, "Figures"),
        ("img", "fig_error_cdf.png", "Figure 1. CDF of the error (km, log scale) for every model at its headline point; "
                                     + (f"dashed: {primary}'s other point predictions. " if n_primary_points > 1 else "")
                                     + "Dotted line: 161 km.", failed.get("fig_error_cdf.png")),
        ("img", "fig_map_points.png", f"Figure 2. {primary}: true (blue dots) vs predicted ({_point_label(head)}, red crosses) "
                                      "locations for a random sample of users, with lines joining each pair.", failed.get("fig_map_points.png")),
        ("img", "fig_map_state_accuracy.png", f"Figure 3. {primary}: state accuracy of each true state's users "
                                              "(grey: no users of that state in this split).", failed.get("fig_map_state_accuracy.png")),
        ("img", "fig_confusion.png", f"Figure 4. {primary}: row-normalised confusion matrix of the {n_confusion} most frequent "
                                     "true states." if n_confusion else f"Figure 4. {primary}: no confusion matrix (no user "
                                     "with a known true state).", failed.get("fig_confusion.png")),
        ("img", "fig_coverage.png", "Figure 5. State accuracy and median error when abstaining on the least confident users "
                                    # the curve needs each user's true state, so at 100% its median can differ from
                                    # the headline median, which also counts located users without a state
                                    "with a known true state (models with a constant confidence are not drawn).",
         failed.get("fig_coverage.png")),
        ("img", "fig_calibration.png", "Figure 6. Reliability of the state probabilities: per bin of the top state "
                                       "probability (width 0.1), the share of users whose predicted state is right against "
                                       "the bin's mean probability; on the dashed diagonal a probability of 0.6 is right 6 "
                                       "times in 10. Below: users per bin.", failed.get("fig_calibration.png")),
        ("h", 2, "Calibration of the state probabilities"),
        ("p", "Over the users with a known true state and a state prediction. ECE = expected calibration error of the top "
              "state's probability (10 equal-width bins: the users-weighted mean gap between a bin's accuracy and its mean "
              "probability; 0 is perfect). NLL = mean -log p(true state) and Brier = mean sum over states of (p - 1[true])², "
              "both over the users whose true state is one of the model's classes; lower is better for all three. ECE "
              "alone also rewards a constant forecast (one probability, right as often as it says, for everyone): read it "
              "with NLL and Brier."),
        ("table", calibration_table(results)),
        ("h", 2, f"Per-state results ({primary})"),
        ("p", f"Sorted by number of users; km columns use the {_point_label(head)}. Also in per_state.csv."),
        ("table", pr["per_state"]),
        ("h", 2, f"Most confused state pairs ({primary})"),
        ("p", "share_of_true = count / users of the true state."),
        ("table", pr["confused_pairs"]),
        ("h", 2, f"Accuracy vs coverage ({primary})"),
        ("p", "Over the users with a known true state (n (state)), most confident first; median_km uses the "
              f"{_point_label(head)}."),
        ("table", pr["coverage"]),
        ("h", 2, "Provenance"),
    ]
    files = prov.get("data_files") or []
    if files:
        blocks += [("h", 3, "Data files"),
                   ("table", pd.DataFrame([{"path": f.get("path"), "bytes": f.get("bytes"), "sha256": f.get("sha256")} for f in files]))]
    mfiles = prov.get("model_files") or []
    if mfiles:
        blocks += [("h", 3, "Model files"),
                   ("table", pd.DataFrame([{"path": f.get("path"), "bytes": f.get("bytes"), "sha256": f.get("sha256")} for f in mfiles]))]
    wall = prov.get("wall_time_s")
    blocks += [
        ("ul", [f"seed: {prov.get('seed', 'n/a')}",
                f"wall time (evaluation before report): {_fmt(wall, 'km') if wall is not None else 'n/a'} s",
                f"report written in {time.perf_counter() - t0:.1f} s"]),
        ("h", 3, "Library versions"),
        ("table", pd.DataFrame([{"library": k, "version": v} for k, v in sorted(prov["versions"].items())])),
    ]
    if prov.get("baselines"):
        blocks += [("h", 3, "Baselines"), ("pre", json.dumps(prov["baselines"], indent=2, sort_keys=True, default=str))]
    if prov.get("config") is not None:
        blocks += [("h", 3, "Config"), ("pre", json.dumps(prov["config"], indent=2, sort_keys=True, default=str))]
    rest = {k: v for k, v in prov.items() if k not in {"data_files", "model_files", "versions", "config", "baselines", "seed", "wall_time_s", "notes"}}
    if rest:
        blocks += [("h", 3, "Other"), ("pre", json.dumps(rest, indent=2, sort_keys=True, default=str))]

    md, page = _render(blocks, figures)
    atomic_write_text(out / "report.md", md)
    atomic_write_text(out / "report.html", page)
    paths["report.md"] = out / "report.md"
    paths["report.html"] = out / "report.html"
    log.info("report written to %s (%d figures%s)", out, len(figures), f", {len(failed)} failed" if failed else "")
    return paths
