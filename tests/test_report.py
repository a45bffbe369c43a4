"""The report writes every file, embeds its figures, and its PNGs are valid."""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest

from geoae.evaluate import evaluate_predictions
from geoae.report import FIGURES, confusion_matrix_top, load_state_shapes, write_report

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
CENTRES = {"CA": (36.5, -119.5), "TX": (31.0, -99.0), "NY": (42.5, -75.5), "IL": (40.0, -89.0),
           "WA": (47.4, -120.5), "FL": (28.5, -81.7), "GA": (32.7, -83.4)}


def _synthetic(n: int = 120, seed: int = 0, skill: float = 0.7):
    rng = np.random.default_rng(seed)
    codes = list(CENTRES)
    true = rng.choice(codes, n, p=[0.3, 0.2, 0.15, 0.1, 0.1, 0.1, 0.05])
    tlat = np.array([CENTRES[s][0] for s in true]) + rng.normal(0, 1, n)
    tlon = np.array([CENTRES[s][1] for s in true]) + rng.normal(0, 1, n)
    right = rng.random(n) < skill
    pred = np.where(right, true, rng.choice(codes, n))
    truth = pd.DataFrame({"user_id": [f"u{i}" for i in range(n)], "state": true, "lat": tlat, "lon": tlon})
    conf = np.clip(np.where(right, 0.7, 0.4) + rng.normal(0, 0.15, n), 0, 1)
    pdf = pd.DataFrame({
        "user_id": truth.user_id, "status": "ok", "state": pred, "state_prob": conf, "region": "",
        "lat": tlat + rng.normal(0, 1.5, n), "lon": tlon + rng.normal(0, 1.5, n),
        "state_lat": [CENTRES[s][0] for s in pred], "state_lon": [CENTRES[s][1] for s in pred],
        "top_states": "[]", "confidence": conf,
    })
    proba = rng.dirichlet(np.ones(len(codes)), n)
    proba[np.arange(n), [codes.index(s) for s in pred]] += 1
    proba /= proba.sum(1, keepdims=True)
    return truth, pdf, proba, codes


def _results():
    truth, pdf, proba, codes = _synthetic()
    sdae = evaluate_predictions(truth, pdf, proba, codes)
    maj = pdf.assign(state="CA", state_lat=36.5, state_lon=-119.5, lat=36.5, lon=-119.5, confidence=0.3)
    base = evaluate_predictions(truth, maj)
    base["label"] = "baseline"
    return {"geoae-sdae": sdae, "baseline:majority_state": base}


def test_state_shapes_cover_the_states():
    shapes = load_state_shapes()
    assert {"CA", "TX", "NY", "DC", "AK", "HI"} <= set(shapes)
    ca = np.vstack(shapes["CA"])
    assert -125 < ca[:, 0].min() < -124 and 32 < ca[:, 1].min() < 33


def test_confusion_rows_sum_to_one():
    r = _results()["geoae-sdae"]
    mat, rows, cols = confusion_matrix_top(r, top_n=3)
    assert rows[0] == "CA" and cols[-1] == "other" and len(cols) == 4
    assert np.allclose(mat.sum(1), 1.0)


def test_write_report(tmp_path):
    results = _results()
    data = tmp_path / "documents.parquet"
    data.write_bytes(b"x")
    prov = {"split": "test", "seed": 7, "wall_time_s": 1.5, "config": {"model": {"hidden": [64, 32]}},
            "data_files": [{"path": str(data), "bytes": 1, "sha256": "ab" * 32}]}
    paths = write_report(tmp_path / "rep", results, prov)
    for name in ["metrics.json", "report.md", "report.html", "per_state.csv", "confused_pairs.csv", "coverage.csv",
                 "predictions.csv", *FIGURES]:
        assert name in paths and paths[name].is_file() and paths[name].stat().st_size > 0, name
    for name in FIGURES:
        b = paths[name].read_bytes()
        assert b.startswith(PNG_MAGIC) and len(b) > 5000, name
    from PIL import Image

    with Image.open(paths["fig_map_points.png"]) as im:
        assert im.size[0] > 600 and im.size[1] > 300

    metrics = json.loads(paths["metrics.json"].read_text(), parse_constant=lambda c: pytest.fail(f"non-JSON {c}"))
    assert set(metrics["models"]) == set(results)
    assert metrics["primary_model"] == "geoae-sdae" and metrics["figures_failed"] == {}
    assert metrics["provenance"]["seed"] == 7 and "numpy" in metrics["provenance"]["versions"]

    page = paths["report.html"].read_text()
    assert page.count("data:image/png;base64,") == len(FIGURES)
    # self-contained: no scripts, stylesheets or remote resources
    assert "<script" not in page and "<link" not in page and not re.search(r'src="(?!data:)', page)
    for needle in ("Headline metrics", "regression head", "state-median point", "baseline:majority_state",
                   "Provenance", "ab" * 32, "Library versions", "Per-state", "Most confused"):
        assert needle in page, needle
    md = paths["report.md"].read_text()
    assert "![" in md and "| model |" in md and "ab" * 32 in md and "fig_error_cdf.png" in md


def test_report_survives_a_model_without_states(tmp_path):
    truth, pdf, _, _ = _synthetic(n=30)
    med = pdf.assign(state=None, lat=38.0, lon=-95.0, state_lat=38.0, state_lon=-95.0, confidence=np.nan)
    r = evaluate_predictions(truth, med)
    paths = write_report(tmp_path, {"median_point": r}, {})
    m = json.loads(paths["metrics.json"].read_text())["models"]["median_point"]
    assert m["state_acc"] is None and "n/a" in paths["report.md"].read_text()


@pytest.mark.parametrize("headline", ["bayes", "location"])
def test_every_figure_is_drawn_whatever_the_headline_point(tmp_path, headline):
    truth, pdf, proba, codes = _synthetic()
    la, lo = {"bayes": ("bayes_lat", "bayes_lon"), "location": ("loc_lat", "loc_lon")}[headline]
    pdf = pdf.assign(**{la: pdf["state_lat"], lo: pdf["state_lon"]})
    sdae = evaluate_predictions(truth, pdf, proba, codes, point="all", headline=headline)
    assert sdae["metrics"]["headline_point"] == headline
    paths = write_report(tmp_path / "rep", {"geoae-sdae": sdae}, {"split": "test"})
    for name in FIGURES:
        assert paths[name].read_bytes().startswith(PNG_MAGIC), name


def test_points_table_has_one_row_per_distinct_point_and_honest_baseline_labels():
    from geoae.report import points_table

    res = _results()
    res["baseline:majority_state"]["point_label"] = "median training point, no regression head"
    t = points_table(res)
    base = t[t["model"] == "baseline:majority_state"]
    assert len(base) == 1  # its points are one point under several names
    assert len(t[t["model"] == "geoae-sdae"]) == len(res["geoae-sdae"]["metrics"]["points"])
    del res["baseline:majority_state"]["point_label"]
    labels = set(points_table(res).loc[lambda f: f["model"] == "baseline:majority_state", "point"])
    assert not any(lab.startswith("regression head") for lab in labels), labels


def test_confusion_caption_counts_the_states_drawn(tmp_path):
    truth, pdf, proba, codes = _synthetic(n=60)
    keep = truth["state"].isin(["CA", "TX", "NY"]).to_numpy()  # three true states only
    r = {"geoae-sdae": evaluate_predictions(truth[keep].reset_index(drop=True), pdf[keep].reset_index(drop=True),
                                            proba[keep], codes)}
    md = write_report(tmp_path / "rep", r, {"split": "test"})["report.md"].read_text()
    assert "confusion matrix of the 3 most frequent true states" in md


def test_headline_caption_does_not_give_the_primary_point_to_every_model(tmp_path):
    # The baselines' headline is their state-median point while the SDAE's is its regression head:
    # the section title and the how-to-read line named the SDAE's point for the whole table.
    results = _results()
    truth, pdf, proba, codes = _synthetic()
    results["geoae-sdae"] = evaluate_predictions(truth, pdf.assign(reg_lat=pdf["lat"], reg_lon=pdf["lon"]), proba, codes)
    results = {"geoae-sdae": results.pop("geoae-sdae"), **results}
    heads = {n: r["metrics"]["headline_point"] for n, r in results.items()}
    assert heads == {"geoae-sdae": "regression", "baseline:majority_state": "state_median"}
    md = write_report(tmp_path / "rep", results, {"split": "test"})["report.md"].read_text()
    assert "distance: regression head)" not in md and "numbers use the regression head." not in md
    assert "geoae-sdae: the regression head" in md
    # one headline point for all: named as before
    one = {"geoae-sdae": results["geoae-sdae"]}
    md = write_report(tmp_path / "rep1", one, {"split": "test"})["report.md"].read_text()
    assert "## Headline metrics (distance: regression head)" in md and "numbers use the regression head." in md


def test_coverage_caption_names_its_users(tmp_path):
    # The coverage curve is over the users with a known true state (it needs their state to score
    # accuracy), so at 100% its median differs from the headline median over every located user.
    truth, pdf, proba, codes = _synthetic()
    truth.loc[:9, "state"] = ""  # ten located users outside the states
    r = evaluate_predictions(truth, pdf, proba, codes)
    assert r["coverage"]["n"].iloc[-1] == r["metrics"]["n_state"] < r["metrics"]["n_distance"]
    md = write_report(tmp_path / "rep", {"geoae-sdae": r}, {"split": "test"})["report.md"].read_text()
    fig5 = next(line for line in md.splitlines() if line.startswith("_Figure 5."))
    assert "known true state" in fig5


def test_error_cdf_steps_run_from_zero_to_one():
    # step(x, i/n, where="post") alone drew nothing for one user and, for a few, stopped at the last
    # error without the final level 1 (nor the rise from 0 at the first error).
    from geoae.report import _ecdf_steps

    x, y = _ecdf_steps(np.array([77.8]))
    assert y[0] == 0.0 and y[-1] == 1.0 and x[-1] > 77.8 and x[0] == pytest.approx(77.8)
    x, y = _ecdf_steps(np.array([300.0, 0.2, 50.0]))  # sorted, errors < 1 km drawn at 1 km
    assert list(x[:4]) == [1.0, 1.0, 50.0, 300.0] and list(y[:4]) == pytest.approx([0.0, 1 / 3, 2 / 3, 1.0])
    assert y[-1] == 1.0 and x[-1] >= 10000


def test_calibration_section_lists_the_models_with_probabilities(tmp_path):
    results = _results()
    paths = write_report(tmp_path / "rep", results)
    md = paths["report.md"].read_text()
    section = md.split("## Calibration of the state probabilities", 1)[1].split("\n## ", 1)[0]
    ece = results["geoae-sdae"]["metrics"]["state_ece"]
    assert ece is not None and f"| geoae-sdae | {ece:.3f} |" in section
    assert "baseline:majority_state" not in section  # no probabilities given to it here: nothing to check
    assert "fig_calibration.png" in md and "Figure 6" in md


def _figure(monkeypatch, make):
    """The matplotlib figure a ``fig_*`` function draws, drawn but not encoded."""
    import geoae.report as report

    seen = []
    monkeypatch.setattr(report, "_png", lambda fig: seen.append(fig) or b"")
    make()
    seen[0].canvas.draw()
    return seen[0]


def test_calibration_counts_read_as_plain_numbers_from_one_user_up(monkeypatch):
    """The users-per-bin axis labelled a small range "4x10^1, 3x10^1, 6x10^0" and drew a single user's
    bin between 10^-1 and 10^1 (a tenth of a user)."""
    from geoae.report import fig_calibration

    truth, pdf, proba, codes = _synthetic(n=40)
    r = {"geoae-sdae": evaluate_predictions(truth, pdf, proba, codes)}
    fig = _figure(monkeypatch, lambda: fig_calibration(r))
    counts = fig.axes[1]
    lo, hi = counts.get_ylim()
    labels = [t.get_text() for t in counts.get_yticklabels() + counts.get_yticklabels(minor=True)
              if t.get_text() and lo <= t.get_position()[1] <= hi]  # the ticks drawn
    assert labels and not [x for x in labels if "times" in x or "^" in x or "e" in x.lower()], labels
    one = {"geoae-sdae": evaluate_predictions(truth[:1], pdf[:1], proba[:1], codes)}
    fig = _figure(monkeypatch, lambda: fig_calibration(one))
    assert 0.5 <= fig.axes[1].get_ylim()[0] < 1


def test_empty_error_cdf_and_confusion_say_why(monkeypatch, tmp_path):
    """No located user (or no user with a state): an empty frame, and a confusion matrix of "the 0 most
    frequent true states", without a word."""
    from geoae.report import fig_confusion, fig_error_cdf

    truth, pdf, proba, codes = _synthetic(n=30)
    truth = truth.assign(lat=np.nan, lon=np.nan, state="")
    r = evaluate_predictions(truth, pdf, proba, codes)
    fig = _figure(monkeypatch, lambda: fig_error_cdf({"geoae-sdae": r}, "geoae-sdae"))
    assert any("no user with true coordinates" in t.get_text() for t in fig.axes[0].texts)
    fig = _figure(monkeypatch, lambda: fig_confusion(r, "geoae-sdae"))
    assert any("no user of this split has a known true state" in t.get_text() for t in fig.axes[0].texts)
    md = write_report(tmp_path / "rep", {"geoae-sdae": r}, {"split": "test"})["report.md"].read_text()
    assert "0 most frequent" not in md and "Figure 4. geoae-sdae: no confusion matrix" in md


def test_baselines_line_names_their_training_splits_and_is_left_out_without_baselines(tmp_path):
    results = _results()
    md = write_report(tmp_path / "a", results, {"train_splits": ["dev"]})["report.md"].read_text()
    assert "Baselines are fitted on the dev users of the same data" in md
    md = write_report(tmp_path / "b", {"geoae-sdae": results["geoae-sdae"]})["report.md"].read_text()
    assert "Baselines are fitted" not in md
