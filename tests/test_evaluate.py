"""Metrics on tiny hand-made cases with known answers, and the evaluate CLI with a fake predictor."""

from __future__ import annotations

import argparse
import json
import math
import sys
import types

import numpy as np
import pandas as pd
import pytest

from geoae.errors import DataError
from geoae.evaluate import (
    accuracy_vs_coverage,
    add_cli,
    compute_metrics,
    confused_pairs,
    evaluate_predictions,
    per_state_table,
    run_evaluate,
)
from geoae.geo import haversine_km

KM_PER_DEG_LAT = 6371.0088 * math.pi / 180.0

# user, true state, true lat, true lon
TRUTH = pd.DataFrame(
    {
        "user_id": ["u1", "u2", "u3", "u4", "u5"],
        "state": ["NY", "CA", "TX", "IL", ""],
        "lat": [40.7, 34.05, 29.76, 41.88, 45.0],
        "lon": [-74.0, -118.25, -95.37, -87.63, -100.0],
    }
)


def _pred(**over):
    d = {
        "user_id": ["u1", "u2", "u3", "u4", "u5"],
        "status": ["ok"] * 5,
        "state": ["NY", "NV", "OK", "NY", "SD"],
        # regression head: u1 exact, u2 Las Vegas, u3 one degree north, u4 New York, u5 exact
        "reg_lat": [40.7, 36.17, 30.76, 40.7, 45.0],
        "reg_lon": [-74.0, -115.14, -95.37, -74.0, -100.0],
        "state_lat": [40.7, 34.05, 29.76, 41.88, 45.0],
        "state_lon": [-74.0, -118.25, -95.37, -87.63, -100.0],
        "confidence": [0.9, 0.5, 0.4, 0.3, 0.2],
    }
    d.update(over)
    return pd.DataFrame(d)


def test_perfect_predictions():
    t = TRUTH
    m = compute_metrics(t.lat, t.lon, t.state, t.state, t.lat, t.lon)
    assert m["state_acc"] == 1.0 and m["region_acc"] == 1.0
    assert m["mean_km"] == pytest.approx(0.0, abs=1e-9) and m["median_km"] == pytest.approx(0.0, abs=1e-9)
    assert m["acc_at_161"] == 1.0
    assert m["n_users"] == 5 and m["n_state"] == 4 and m["n_distance"] == 5 and m["n_no_point"] == 0
    assert m["top3_state_acc"] is None  # no proba given
    json.dumps(m, allow_nan=False)


def test_hand_computed_case():
    t, p = TRUTH, _pred()
    classes = ["NY", "CA", "TX", "NV", "OK", "WA"]  # IL is not a class: u4 is a top-3 miss
    proba = np.array(
        [
            [0.70, 0.10, 0.05, 0.05, 0.05, 0.05],  # u1: NY top-1 -> hit
            [0.05, 0.30, 0.05, 0.40, 0.10, 0.10],  # u2: CA 2nd -> hit
            [0.05, 0.05, 0.10, 0.20, 0.40, 0.20],  # u3: TX 4th -> miss
            [0.50, 0.10, 0.10, 0.10, 0.10, 0.10],  # u4: IL absent -> miss
            [0.50, 0.10, 0.10, 0.10, 0.10, 0.10],  # u5: no true state -> not counted
        ]
    )
    m = compute_metrics(t.lat, t.lon, t.state, p.state, p.reg_lat, p.reg_lon, state_proba=proba, classes=classes)
    assert m["n_state"] == 4
    assert m["state_acc"] == pytest.approx(1 / 4)  # only u1
    assert m["region_acc"] == pytest.approx(3 / 4)  # NY=NY, CA/NV West, TX/OK South; IL (Midwest) vs NY (Northeast) no
    assert m["top3_state_acc"] == pytest.approx(2 / 4)
    e = np.array(
        [
            0.0,
            haversine_km(34.05, -118.25, 36.17, -115.14),
            KM_PER_DEG_LAT,
            haversine_km(41.88, -87.63, 40.7, -74.0),
            0.0,
        ]
    )
    assert 300 < e[1] < 400 and 1000 < e[3] < 1300
    assert m["n_distance"] == 5
    assert m["acc_at_161"] == pytest.approx(3 / 5)  # 0, 111 km, 0 < 161
    assert m["mean_km"] == pytest.approx(e.mean())
    assert m["median_km"] == pytest.approx(np.median(e))
    assert m["p90_km"] == pytest.approx(np.percentile(e, 90))
    assert m["p10_km"] <= m["p25_km"] <= m["p50_km"] <= m["p75_km"] <= m["p90_km"]
    json.dumps(m, allow_nan=False)


def test_missing_predictions_are_counted_not_hidden():
    t = TRUTH
    m = compute_metrics(t.lat, t.lon, t.state, ["NY", None, "TX", "", None], [40.7, np.nan, 29.76, np.nan, 45.0],
                        [-74.0, np.nan, -95.37, np.nan, -100.0])
    assert m["state_acc"] == pytest.approx(2 / 4)  # missing state predictions are misses
    assert m["n_no_state_prediction"] == 2
    assert m["n_distance"] == 3 and m["n_no_point"] == 2
    # a model that never predicts a state gets n/a, not 0
    m = compute_metrics(t.lat, t.lon, t.state, [None] * 5, t.lat, t.lon)
    assert m["state_acc"] is None and m["region_acc"] is None and m["acc_at_161"] == 1.0


def test_per_state_table_and_confused_pairs():
    true = ["CA", "CA", "CA", "CA", "TX", "TX", "NY", ""]
    pred = ["CA", "NV", "NV", "OR", "TX", "OK", None, "CA"]
    err = [0.0, 300.0, 500.0, 800.0, 10.0, 200.0, np.nan, 5.0]
    ps = per_state_table(true, pred, err)
    assert list(ps["state"]) == ["CA", "TX", "NY"]
    ca = ps.iloc[0]
    assert ca["n"] == 4 and ca["accuracy"] == pytest.approx(0.25)
    assert ca["median_km"] == pytest.approx(400.0) and ca["mean_km"] == pytest.approx(400.0)
    assert ca["most_common_wrong"] == "NV" and ca["most_common_wrong_n"] == 2
    ny = ps.iloc[2]
    assert ny["accuracy"] == 0.0 and np.isnan(ny["median_km"]) and ny["most_common_wrong"] == "(none)"

    cp = confused_pairs(true, pred, top=2)
    assert len(cp) == 2
    assert tuple(cp.iloc[0][["true_state", "pred_state", "count"]]) == ("CA", "NV", 2)
    assert cp.iloc[0]["share_of_true"] == pytest.approx(0.5)
    assert not ((cp["true_state"] == cp["pred_state"]).any())


def test_top3_ties_are_broken_by_class_order_like_the_predicted_state():
    # A class prior with ties (the majority baseline's): the predicted state is the first of the
    # tied top classes, so it must be in the top 3 too; an arbitrary pick among the ties made a
    # top-1 hit a top-3 miss.
    counts = [1, 1, 0, 0, 0, 0, 0, 0, 2, 1, 2, 1, 1, 2, 2, 1, 1, 1, 2, 0, 2, 2, 0, 1, 2, 1, 0, 2, 2, 2, 0, 0, 2, 0]
    classes = [f"S{i:02d}" for i in range(len(counts))]
    proba = np.array([counts], dtype=float) / sum(counts)
    first = classes[int(np.argmax(proba))]
    m = compute_metrics([40.0], [-100.0], [first], [first], [40.0], [-100.0], state_proba=proba, classes=classes)
    assert m["state_acc"] == 1.0 and m["top3_state_acc"] == 1.0


def test_accuracy_vs_coverage():
    correct = np.array([True, True, False, True, False, False, True, False, False, False])
    conf = np.array([0.99, 0.95, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, np.nan])
    err = np.arange(10, dtype=float) * 100
    cov = accuracy_vs_coverage(correct, conf, err)
    assert len(cov) == 20 and cov["coverage"].iloc[0] == pytest.approx(0.05) and cov["coverage"].iloc[-1] == 1.0
    full = cov.iloc[-1]
    assert full["n"] == 10 and full["state_acc"] == pytest.approx(0.4) and full["median_km"] == pytest.approx(450.0)
    c20 = cov[np.isclose(cov["coverage"], 0.2)].iloc[0]
    assert c20["n"] == 2 and c20["state_acc"] == 1.0 and c20["min_confidence"] == pytest.approx(0.95)
    c50 = cov[np.isclose(cov["coverage"], 0.5)].iloc[0]
    assert c50["n"] == 5 and c50["state_acc"] == pytest.approx(3 / 5) and c50["median_km"] == pytest.approx(200.0)


def test_evaluate_predictions_both_points_and_alignment():
    p = _pred().iloc[::-1].reset_index(drop=True)  # shuffled order must not matter
    r = evaluate_predictions(TRUTH, p, point="both", headline="regression")
    m = r["metrics"]
    assert m["headline_point"] == "regression"
    assert set(m["points"]) == {"regression", "state_median"}
    assert m["points"]["state_median"]["mean_km"] == pytest.approx(0.0, abs=1e-9)
    assert m["points"]["regression"]["acc_at_161"] == pytest.approx(3 / 5)
    assert m["acc_at_161"] == m["points"]["regression"]["acc_at_161"]
    assert m["state_acc"] == pytest.approx(0.25)
    assert list(r["predictions"]["user_id"]) == list(TRUTH["user_id"])
    assert {"error_km_regression", "error_km_state_median"} <= set(r["predictions"].columns)
    assert r["predictions"]["error_km_state_median"].max() == pytest.approx(0.0, abs=1e-9)
    assert len(r["per_state"]) == 4 and len(r["coverage"]) == 20
    json.dumps(m, allow_nan=False)

    r2 = evaluate_predictions(TRUTH, p, point="both", headline="state_median")
    assert r2["metrics"]["headline_point"] == "state_median" and r2["metrics"]["mean_km"] == pytest.approx(0.0, abs=1e-9)
    r3 = evaluate_predictions(TRUTH, p, point="regression")
    assert set(r3["metrics"]["points"]) == {"regression"}


def test_evaluate_predictions_missing_user_and_proba_alignment():
    p = _pred().iloc[[3, 0, 2]].reset_index(drop=True)  # u2, u5 missing
    classes = ["NY", "TX", "IL"]
    proba = np.array([[0.1, 0.1, 0.8], [0.8, 0.1, 0.1], [0.1, 0.8, 0.1]])  # rows follow p: u4, u1, u3
    r = evaluate_predictions(TRUTH, p, proba, classes)
    m = r["metrics"]
    assert m["n_no_point"] == 2 and m["n_distance"] == 3
    assert m["top3_state_acc"] == pytest.approx(3 / 4)  # u1, u3, u4 hit; u2 (no prediction) misses
    assert r["predictions"].set_index("user_id").loc["u2", "status"] == "no_prediction"
    with pytest.raises(DataError):
        evaluate_predictions(TRUTH, pd.concat([p, p]))


def test_a_tweet_count_stays_a_whole_number_in_the_predictions_table():
    # predictions.csv of `geoae evaluate`: n_tweets as predict writes it (25, not 25.0), a user without
    # a prediction an empty field
    p = _pred(n_tweets=[25, 3, 1, 7, 2]).iloc[[3, 0, 2]].reset_index(drop=True)  # u2, u5 missing
    out = evaluate_predictions(TRUTH, p)["predictions"].set_index("user_id")
    assert out["n_tweets"].isna().tolist() == [False, True, False, False, True]
    csv = out[["n_tweets"]].to_csv().splitlines()
    assert csv == ["user_id,n_tweets", "u1,25", "u2,", "u3,1", "u4,7", "u5,"]


def test_a_user_missing_from_predictions_without_a_state_column_is_a_top3_miss():
    # Predictions from an outside model: points and probabilities, no ``state`` column. The user
    # missing from them gets an all-zero probability row when aligned, whose arbitrary top 3
    # must not count as a hit.
    truth = pd.DataFrame({"user_id": ["a", "b"], "lat": [40.7, 34.05], "lon": [-74.0, -118.2], "state": ["NY", "CA"]})
    pred = pd.DataFrame({"user_id": ["a"], "state_lat": [40.7], "state_lon": [-74.0]})
    m = evaluate_predictions(truth, pred, np.array([[0.0, 1.0, 0.0]]), ["CA", "NY", "TX"], point="state_median",
                             headline="state_median")["metrics"]
    assert m["top3_state_acc"] == pytest.approx(0.5)


def test_a_classifier_that_abstains_on_every_user_scores_zero_not_na():
    # every user had empty text (or no prediction row): misses, as when only some abstain
    p = _pred(status=["empty_text"] * 5, state=[None] * 5, confidence=[np.nan] * 5)
    classes = ["NY", "TX", "IL"]
    proba = np.tile([0.4, 0.3, 0.3], (5, 1))  # the scored empty vector: NY, TX, IL would all be top-3 "hits"
    m = evaluate_predictions(TRUTH, p, proba, classes)["metrics"]
    assert m["state_acc"] == 0.0 and m["region_acc"] == 0.0 and m["top3_state_acc"] == 0.0
    assert m["n_no_state_prediction"] == 4
    r = evaluate_predictions(TRUTH, _pred().assign(user_id=list("abcde")), proba, classes)  # no user matches
    assert r["metrics"]["state_acc"] == 0.0 and r["metrics"]["top3_state_acc"] == 0.0
    assert list(r["per_state"]["accuracy"]) == [0.0] * 4
    # without state classes (the median-point baseline) state metrics stay n/a
    m = evaluate_predictions(TRUTH, p, None, None)["metrics"]
    assert m["state_acc"] is None and m["top3_state_acc"] is None


# --------------------------------------------------------------------------- CLI


class FakePredictor:
    """Predicts the true state for users whose text mentions it; needs no model."""

    classes_ = ["CA", "NY", "TX"]
    POINTS = {"CA": (36.0, -119.0), "NY": (42.0, -75.0), "TX": (31.0, -99.0)}

    def predict_proba(self, docs):
        assert "state" not in docs.columns and "lat" not in docs.columns  # no labels leak to the model
        out = np.full((len(docs), 3), 0.1)
        for i, t in enumerate(docs["text"]):
            for j, c in enumerate(self.classes_):
                if c.lower() in t:
                    out[i, j] = 0.8
        return out / out.sum(1, keepdims=True)

    def predict(self, docs):
        pr = self.predict_proba(docs)
        st = [self.classes_[j] for j in pr.argmax(1)]
        pts = [self.POINTS[s] for s in st]
        return pd.DataFrame(
            {
                "user_id": docs["user_id"].to_numpy(), "status": "ok", "state": st, "state_prob": pr.max(1),
                "region": ["West" if s == "CA" else "Northeast" if s == "NY" else "South" for s in st],
                "reg_lat": [p[0] + 0.1 for p in pts], "reg_lon": [p[1] for p in pts],
                "state_lat": [p[0] for p in pts], "state_lon": [p[1] for p in pts],
                "top_states": "[]", "confidence": pr.max(1),
            }
        )


def _documents(tmp_path):
    rng = np.random.default_rng(0)
    rows = []
    for split, n in (("train", 30), ("dev", 6), ("test", 9)):
        for i in range(n):
            s = ["CA", "NY", "TX"][i % 3]
            lat, lon = FakePredictor.POINTS[s]
            words = {"CA": "surf ca beach", "NY": "subway ny bagel", "TX": "rodeo tx bbq"}[s]
            rows.append({"user_id": f"{split}{i}", "text": f"{words} hello {rng.integers(100)}", "n_tweets": 5,
                         "lat": lat + rng.normal(0, 0.5), "lon": lon + rng.normal(0, 0.5), "split": split, "state": s,
                         "region": ""})
    d = tmp_path / "prepared"
    d.mkdir()
    pd.DataFrame(rows).to_parquet(d / "documents.parquet")
    return d


def test_run_evaluate_with_fake_predictor(tmp_path):
    d = _documents(tmp_path)
    paths = run_evaluate(None, d, tmp_path / "rep", baselines=False, predictor=FakePredictor(), model_name="fake")
    metrics = json.loads(paths["metrics.json"].read_text())
    m = metrics["models"]["fake"]
    assert m["state_acc"] == 1.0 and m["n_users"] == 9 and m["top3_state_acc"] == 1.0
    assert metrics["provenance"]["data_files"][0]["sha256"]
    assert paths["report.html"].exists()
    with pytest.raises(DataError, match="splits present"):
        run_evaluate(None, d, tmp_path / "rep2", split="nope", baselines=False, predictor=FakePredictor())


def test_cli_parses_and_runs(tmp_path, monkeypatch, capsys):
    d = _documents(tmp_path)
    from types import SimpleNamespace

    from geoae.config import Config

    cfg = Config()
    cfg.finetune.epochs = 3

    def load(path):
        pred = FakePredictor()
        pred.artifact = SimpleNamespace(config=cfg, meta={})  # provenance takes the artifact's config
        return pred

    fake = types.ModuleType("geoae.predict")
    fake.load_predictor = load
    monkeypatch.setitem(sys.modules, "geoae.predict", fake)
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "config.json").write_text('{"seed": 3}')  # not the model's config: ignored
    parser = argparse.ArgumentParser()
    add_cli(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["evaluate", "--model", str(tmp_path / "model"), "--data", str(d), "--out",
                              str(tmp_path / "rep"), "--no-baselines", "--point", "both"])
    assert args.func(args) == 0
    assert "report:" in capsys.readouterr().out
    metrics = json.loads((tmp_path / "rep" / "metrics.json").read_text())
    assert metrics["provenance"]["config"] == cfg.to_dict() and metrics["provenance"]["config"]["finetune"]["epochs"] == 3
    with pytest.raises(DataError):
        args = parser.parse_args(["evaluate", "--model", str(tmp_path / "model"), "--data", str(tmp_path), "--out", str(tmp_path / "x")])
        args.func(args)


def test_run_evaluate_with_baselines_in_the_same_tables(tmp_path):
    pytest.importorskip("geoae.features")
    d = _documents(tmp_path)
    paths = run_evaluate(None, d, tmp_path / "rep", baselines=True, predictor=FakePredictor(), model_name="fake")
    metrics = json.loads(paths["metrics.json"].read_text())
    assert set(metrics["models"]) == {"fake", "baseline:majority_state", "baseline:median_point", "baseline:tfidf_logreg"}
    assert metrics["primary_model"] == "fake"
    assert metrics["models"]["baseline:median_point"]["state_acc"] is None
    assert metrics["provenance"]["baselines"]["tfidf_logreg"]["C_source"].startswith("dev grid")
    assert all(m["n_users"] == 9 for m in metrics["models"].values())
    assert "baseline:tfidf_logreg" in paths["report.html"].read_text()


def _cli_evaluate(tmp_path, monkeypatch, d, *extra):
    """``geoae evaluate`` through the real entry point, the model being a FakePredictor."""
    import geoae.predict
    from geoae.cli import main

    monkeypatch.setattr(geoae.predict, "load_predictor", lambda path: FakePredictor())
    (tmp_path / "model").mkdir(exist_ok=True)
    return main(["evaluate", "--model", str(tmp_path / "model"), "--data", str(d), "--out",
                 str(tmp_path / "rep"), "--no-baselines", *extra])


def test_headline_must_be_a_scored_point(tmp_path, monkeypatch, capsys):
    d = _documents(tmp_path)
    assert _cli_evaluate(tmp_path, monkeypatch, d, "--point", "regression", "--headline", "state_median") == 2
    err = capsys.readouterr().err
    assert "--headline state_median conflicts with --point regression" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "rep").exists()  # refused before any work
    # a point the model does not provide, asked for explicitly: refused, naming the ones it has
    for args in (("--headline", "bayes"), ("--point", "bayes")):
        assert _cli_evaluate(tmp_path, monkeypatch, d, *args) == 2
        assert "provides no bayes point" in capsys.readouterr().err
    # agreeing options, and a single point with the default headline: that point is the headline
    for args in (("--point", "state_median", "--headline", "state_median"), ("--point", "state_median")):
        assert _cli_evaluate(tmp_path, monkeypatch, d, *args) == 0
        m = json.loads((tmp_path / "rep" / "metrics.json").read_text())["models"]["geoae-sdae"]
        assert m["headline_point"] == "state_median" and list(m["points"]) == ["state_median"]


def test_data_pointing_at_a_run_directory_names_its_data(tmp_path, monkeypatch, capsys):
    """`geoae evaluate --data runs/demo` (documents in runs/demo/data/) said only 'not found: run
    `geoae prepare` first'; the hint names RUN/data, and only when its documents are there."""
    run = tmp_path / "run"
    (run / "train").mkdir(parents=True)
    _documents(tmp_path).rename(run / "data")
    assert _cli_evaluate(tmp_path, monkeypatch, run) == 2
    err = capsys.readouterr().err
    assert f"{run / 'documents.parquet'} not found; did you mean --data {run / 'data'}?" in err
    assert not (tmp_path / "rep").exists()
    assert _cli_evaluate(tmp_path, monkeypatch, run / "data") == 0  # the suggestion works
    capsys.readouterr()
    (run / "data" / "documents.parquet").unlink()
    assert _cli_evaluate(tmp_path, monkeypatch, run) == 2
    err = capsys.readouterr().err
    assert "did you mean" not in err and "not found: run `geoae prepare` first" in err


def _unlabel(d, cols):
    docs = pd.read_parquet(d / "documents.parquet")
    test = docs["split"] == "test"
    for c in cols:
        docs.loc[test, c] = np.nan if c in ("lat", "lon") else ""
    docs.to_parquet(d / "documents.parquet")


def test_split_without_coordinates_says_distances_cannot_be_computed(tmp_path, monkeypatch, capsys):
    d = _documents(tmp_path)
    _unlabel(d, ["lat", "lon"])
    assert _cli_evaluate(tmp_path, monkeypatch, d) == 0
    out = capsys.readouterr().out
    assert "None" not in out
    assert "state acc 1.000  median n/a  Acc@161 n/a" in out
    assert "distance metrics (km, Acc@161) cannot be computed: no user in split 'test' has coordinates" in out
    metrics = json.loads((tmp_path / "rep" / "metrics.json").read_text())
    assert metrics["models"]["geoae-sdae"]["median_km"] is None and metrics["provenance"]["notes"]
    assert "cannot be computed" in (tmp_path / "rep" / "report.md").read_text()


def test_split_without_any_label_is_an_error(tmp_path, monkeypatch, capsys):
    d = _documents(tmp_path)
    _unlabel(d, ["lat", "lon", "state"])
    assert _cli_evaluate(tmp_path, monkeypatch, d) == 2
    err = capsys.readouterr().err
    assert "none of the 9 users in split 'test' has coordinates or a known state" in err
    with pytest.raises(DataError, match="nothing can be scored"):
        run_evaluate(None, d, tmp_path / "rep2", baselines=False, predictor=FakePredictor())


def test_single_point_the_baselines_lack_is_a_note_not_a_silent_na(tmp_path):
    pytest.importorskip("geoae.features")
    d = _documents(tmp_path)
    paths = run_evaluate(None, d, tmp_path / "rep", baselines=True, predictor=FakePredictor(), model_name="fake",
                         point="regression")
    metrics = json.loads(paths["metrics.json"].read_text())
    assert metrics["models"]["baseline:tfidf_logreg"]["median_km"] is None
    notes = metrics["provenance"]["notes"]
    assert any("tfidf_logreg" in n and "no regression point" in n for n in notes), notes
    assert metrics["models"]["fake"]["median_km"] is not None


def test_a_model_scored_on_other_data_than_it_was_trained_on_gets_a_note(tmp_path):
    from types import SimpleNamespace

    from geoae.manifest import sha256_file

    d = _documents(tmp_path)
    own = sha256_file(d / "documents.parquet")
    for sha, expect in ((own, False), ("0" * 64, True)):
        pred = FakePredictor()
        pred.artifact = SimpleNamespace(meta={"data_dir": "runs/elsewhere/data", "data_sha256": sha}, config=None)
        paths = run_evaluate(None, d, tmp_path / f"rep{int(expect)}", baselines=False, predictor=pred, model_name="fake")
        notes = json.loads(paths["metrics.json"].read_text())["provenance"].get("notes", [])
        assert any("trained on runs/elsewhere/data" in n for n in notes) == expect, notes
        # --no-baselines: neither the note nor the how-to-read list speaks of baselines that did not run
        assert not any("baseline" in n for n in notes), notes
        assert "Baselines are fitted" not in paths["report.md"].read_text()


def test_a_model_data_dir_that_is_no_path_still_gets_the_note(tmp_path):
    """An artifact without data_sha256 (older, or edited) is compared by its data_dir: one with a NUL
    byte was a ValueError traceback from pathlib."""
    from types import SimpleNamespace

    d = _documents(tmp_path)
    pred = FakePredictor()
    pred.artifact = SimpleNamespace(meta={"data_dir": "runs/x\x00/data"}, config=None)
    paths = run_evaluate(None, d, tmp_path / "rep", baselines=False, predictor=pred, model_name="fake")
    notes = json.loads(paths["metrics.json"].read_text())["provenance"].get("notes", [])
    assert any("the model was trained on runs/x\x00/data" in n for n in notes), notes


def test_scoring_a_training_split_is_flagged_in_the_report(tmp_path):
    d = _documents(tmp_path)
    paths = run_evaluate(None, d, tmp_path / "rep", split="train", baselines=False, predictor=FakePredictor(),
                         model_name="fake")
    notes = json.loads(paths["metrics.json"].read_text())["provenance"].get("notes", [])
    assert any("trained or tuned on" in n for n in notes), notes
    assert "trained or tuned on" in paths["report.md"].read_text()


def test_a_transductive_model_scored_on_its_unlabelled_split_gets_a_note(tmp_path):
    from types import SimpleNamespace

    from geoae.config import Config

    d = _documents(tmp_path)
    for unlabelled, expect in (([], False), (["test"], True)):
        cfg = Config()
        cfg.data.unlabelled_splits = unlabelled
        pred = FakePredictor()
        pred.artifact = SimpleNamespace(meta={}, config=cfg)
        paths = run_evaluate(None, d, tmp_path / f"rep{int(expect)}", baselines=False, predictor=pred, model_name="fake")
        notes = json.loads(paths["metrics.json"].read_text())["provenance"].get("notes", [])
        assert any(n.startswith("transductive") for n in notes) == expect, notes
        assert ("idf and pretraining also used the text" in paths["report.md"].read_text()) == expect


def test_skipped_baselines_are_noted_in_the_report(tmp_path):
    pytest.importorskip("geoae.features")
    d = _documents(tmp_path)
    docs = pd.read_parquet(d / "documents.parquet")
    docs.loc[docs["split"] != "test", "state"] = "CA"  # a one-state model: no classifier peer can be fitted
    docs.to_parquet(d / "documents.parquet")
    paths = run_evaluate(None, d, tmp_path / "rep", baselines=True, predictor=FakePredictor(), model_name="fake")
    metrics = json.loads(paths["metrics.json"].read_text())
    assert set(metrics["models"]) == {"fake", "baseline:majority_state", "baseline:median_point"}
    assert any("tfidf_logreg" in n and "one state" in n for n in metrics["provenance"]["notes"])
    # no training users at all: every baseline skipped, said in the report, not only in the log
    paths = run_evaluate(None, d, tmp_path / "rep2", baselines=True, predictor=FakePredictor(), model_name="fake",
                         train_splits=["nope"])
    notes = json.loads(paths["metrics.json"].read_text())["provenance"]["notes"]
    assert any("baselines skipped" in n for n in notes), notes
    assert "baselines skipped" in paths["report.md"].read_text()
    # training users without any label (a data dir prepared for another model): the same, not a DataError
    docs.loc[docs["split"] == "train", ["state", "lat", "lon"]] = ["", np.nan, np.nan]
    docs.to_parquet(d / "documents.parquet")
    paths = run_evaluate(None, d, tmp_path / "rep3", baselines=True, predictor=FakePredictor(), model_name="fake")
    metrics = json.loads(paths["metrics.json"].read_text())
    assert set(metrics["models"]) == {"fake"} and any("baselines skipped" in n for n in metrics["provenance"]["notes"])


def test_report_directory_inside_the_model_directory_is_refused(tmp_path, monkeypatch, capsys):
    import geoae.predict
    from geoae.cli import main

    d = _documents(tmp_path)
    monkeypatch.setattr(geoae.predict, "load_predictor", lambda path: FakePredictor())
    (tmp_path / "model").mkdir()
    for out in (tmp_path / "model", tmp_path / "model" / "report"):
        assert main(["-q", "evaluate", "--model", str(tmp_path / "model"), "--data", str(d), "--out", str(out),
                     "--no-baselines"]) == 2
        assert "inside the model directory" in capsys.readouterr().err
    assert list((tmp_path / "model").iterdir()) == []


def test_calibration_of_calibrated_and_overconfident_probabilities():
    from geoae.evaluate import calibration

    rng = np.random.default_rng(0)
    classes = ["CA", "NY", "TX"]
    n = 20000
    # Top probability c in {0.4, 0.7, 0.95}; the top class is right with probability c exactly.
    c = rng.choice([0.4, 0.7, 0.95], n)
    proba = np.c_[c, (1 - c) / 2, (1 - c) / 2]
    truth = np.where(rng.random(n) < c, "CA", np.where(rng.random(n) < 0.5, "NY", "TX"))
    cal = calibration(truth, proba, classes)
    assert cal["n"] == n and cal["ece"] < 0.015
    assert [b["n"] for b in cal["bins"]][4] > 0 and cal["bins"][9]["confidence"] == pytest.approx(0.95)
    # The same users with every top probability pushed to 0.99: off by the mean gap.
    over = np.c_[np.full(n, 0.99), np.full(n, 0.005), np.full(n, 0.005)]
    cal_over = calibration(truth, over, classes)
    right = (truth == "CA").mean()
    assert cal_over["ece"] == pytest.approx(0.99 - right, abs=1e-12)
    # NLL and Brier by their definitions (sklearn's log_loss agrees on the NLL).
    from sklearn.metrics import log_loss

    assert cal["nll"] == pytest.approx(log_loss(truth, proba, labels=classes), rel=1e-9)
    onehot = (np.asarray(classes)[None, :] == truth[:, None]).astype(float)
    assert cal["brier"] == pytest.approx(((proba - onehot) ** 2).sum(1).mean(), rel=1e-9)


def test_calibration_leaves_out_and_counts_what_it_cannot_score():
    from geoae.evaluate import calibration

    classes = ["CA", "NY"]
    truth = ["CA", "NY", "", "WA", "CA", "NY"]
    proba = np.array([[1.0, 0.0], [0.5, 0.5], [0.9, 0.1], [0.8, 0.2], [0.0, 0.0], [0.3, 0.7]])
    pred = ["CA", "CA", "CA", "CA", "", ""]  # the last user abstained (empty text)
    cal = calibration(truth, proba, classes, pred)
    # no true state: left out; no probability mass or no prediction: left out and counted
    assert cal["n"] == 3 and cal["n_no_probability"] == 2
    # WA is no class: in the ECE (its top state is a miss), not in NLL/Brier
    assert cal["n_unseen_state"] == 1 and cal["n_scored"] == 2
    assert cal["bins"][9]["n"] == 1  # a probability of 1.0 is in the last bin
    assert cal["nll"] == pytest.approx((-np.log(1.0) - np.log(0.5)) / 2)
    # tie in the second user: the earlier class (CA) is the prediction, right is NY
    assert cal["ece"] == pytest.approx((abs(1 - 1.0) + abs(0 - 0.5) + abs(0 - 0.8)) / 3)
    # a probability of exactly 0 for the true state is finite
    assert np.isfinite(calibration(["NY"], np.array([[1.0, 0.0]]), classes)["nll"])
    empty = calibration(["", ""], np.array([[0.5, 0.5], [0.5, 0.5]]), classes)
    assert empty["n"] == 0 and empty["ece"] is None and empty["nll"] is None


def test_metrics_carry_calibration_only_for_models_with_probabilities():
    truth = TRUTH.copy()
    pred = _pred()
    classes = ["CA", "IL", "NY", "TX"]
    proba = np.full((len(pred), 4), 0.25)
    with_p = evaluate_predictions(truth, pred, proba, classes)["metrics"]
    assert with_p["state_ece"] is not None and with_p["calibration"]["n"] == 4
    assert with_p["state_nll"] == pytest.approx(np.log(4))
    assert "state_ece" not in with_p["points"]["state_median"]  # once per model, not per point
    without = evaluate_predictions(truth, pred)["metrics"]
    assert without["state_ece"] is None and without["calibration"] is None


def test_calibration_treats_a_row_with_a_nan_probability_as_no_probability_like_top3():
    # Top-3 counts such a row as a miss (no usable probabilities); calibration scored it with the
    # NaN read as 0, so a broken row cost -log(1e-15) = 34.5 in the NLL.
    classes = ["CA", "NY"]
    proba = np.array([[np.nan, 0.3], [0.8, 0.2]])
    m = compute_metrics([34.0, 34.0], [-118.0, -118.0], ["CA", "CA"], ["NY", "CA"], [34.0, 34.0], [-118.0, -118.0],
                        state_proba=proba, classes=classes)
    assert m["top3_state_acc"] == 0.5
    cal = m["calibration"]
    assert cal["n"] == 1 and cal["n_no_probability"] == 1
    assert cal["nll"] == pytest.approx(-math.log(0.8))


def test_calibration_of_out_of_range_probabilities_stays_valid_json():
    from geoae.evaluate import calibration

    with np.errstate(over="ignore"):
        cal = calibration(["CA", "NY"], np.array([[1e200, 0.3], [0.5, 0.5]]), ["CA", "NY"])
    json.dumps(cal, allow_nan=False)  # metrics.json: no NaN or Infinity


@pytest.mark.parametrize("seed", ["-1", str(2**32)])
def test_a_seed_the_baselines_cannot_take_is_one_line_before_any_work(tmp_path, monkeypatch, capsys, seed):
    d = _documents(tmp_path)
    assert _cli_evaluate(tmp_path, monkeypatch, d, "--baselines", "--seed", seed) == 2
    err = capsys.readouterr().err
    assert f"--seed must be a whole number in [0, {2**32 - 1}]; got {seed}" in err and "Traceback" not in err
    assert not (tmp_path / "rep").exists()


def test_baselines_help_names_the_models_training_splits(capsys):
    """The help said the baselines train "on the train split"; they train on the model's data.train_splits
    (GeoText: its dev users), as the report says."""
    parser = argparse.ArgumentParser()
    add_cli(parser.add_subparsers(dest="command"))
    with pytest.raises(SystemExit):
        parser.parse_args(["evaluate", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "on the train split" not in text and "model's own training split(s) (its data.train_splits" in text
