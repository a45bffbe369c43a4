"""Baselines on a synthetic corpus where each state has its own words."""

from __future__ import annotations

import importlib
import json
import sys
import types

import numpy as np
import pandas as pd
import pytest
from sklearn.exceptions import NotFittedError

import geoae.baselines as baselines_mod
from geoae.baselines import DEFAULT_C_GRID, LOCATION_GATE, PRED_COLUMNS, MajorityState, MedianPoint, TfidfLogReg, run_baselines
from geoae.evaluate import evaluate_predictions

CENTRES = {"CA": (36.5, -119.5), "TX": (31.0, -99.0), "NY": (42.5, -75.5), "IL": (40.0, -89.0)}
WORDS = {
    "CA": "surf bay hella avocado sierra",
    "TX": "yall rodeo brisket longhorn bayou",
    "NY": "subway bodega bagel knicks borough",
    "IL": "deepdish cubs loop windy lakeshore",
}
COMMON = "the a lol good day night game work home love".split()


@pytest.fixture(autouse=True)
def _featurizer(monkeypatch):
    """Private stand-in for geoae.features.TfidfFeaturizer until that module lands."""
    try:
        importlib.import_module("geoae.features")
        return
    except ModuleNotFoundError:
        pass
    from sklearn.feature_extraction.text import TfidfVectorizer

    class TfidfFeaturizer:
        def __init__(self, max_features=10000, min_df=2, sublinear_tf=True):
            self.vec = TfidfVectorizer(max_features=max_features, min_df=min_df, sublinear_tf=sublinear_tf, dtype=np.float32)

        def fit(self, texts):
            self.vec.fit(texts)
            return self

        def transform(self, texts):
            return self.vec.transform(texts)

    mod = types.ModuleType("geoae.features")
    mod.TfidfFeaturizer = TfidfFeaturizer
    monkeypatch.setitem(sys.modules, "geoae.features", mod)


def corpus(sizes: dict[str, int], seed: int, split: str, signal: int = 2) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for s, n in sizes.items():
        own = WORDS[s].split()
        for i in range(n):
            words = list(rng.choice(COMMON, 12)) + list(rng.choice(own, signal))
            # a little cross-talk: one word from a random state
            words += list(rng.choice(WORDS[str(rng.choice(list(WORDS)))].split(), 1))
            lat, lon = CENTRES[s]
            rows.append({"user_id": f"{split}-{s}-{i}", "text": " ".join(words), "n_tweets": 10,
                         "lat": lat + rng.normal(0, 1.0), "lon": lon + rng.normal(0, 1.0), "split": split,
                         "state": s, "region": ""})
    return pd.DataFrame(rows)


TRAIN = {"CA": 40, "TX": 25, "NY": 25, "IL": 20}
EVAL = {"CA": 10, "TX": 10, "NY": 10, "IL": 10}


def test_majority_predicts_the_majority():
    train = corpus(TRAIN, 0, "train")
    test = corpus(EVAL, 1, "test")
    m = MajorityState().fit(train)
    p = m.predict(test)
    assert list(p.columns) == list(PRED_COLUMNS)
    assert (p["state"] == "CA").all() and m.state_ == "CA"
    assert p["state_prob"].iloc[0] == pytest.approx(40 / 110)
    ca = train[train.state == "CA"]
    assert p["lat"].iloc[0] == pytest.approx(ca.lat.median()) and p["lon"].iloc[0] == pytest.approx(ca.lon.median())
    assert (p["region"] == "West").all()
    proba = m.predict_proba(test)
    assert proba.shape == (40, 4) and np.allclose(proba.sum(1), 1)
    assert json.loads(p["top_states"].iloc[0])[0][0] == "CA"


def test_median_point_predicts_no_state():
    train = corpus(TRAIN, 0, "train")
    m = MedianPoint().fit(train)
    p = m.predict(corpus(EVAL, 1, "test"))
    assert p["state"].isna().all()
    assert p["lat"].iloc[0] == pytest.approx(train.lat.median()) and p["lon"].iloc[0] == pytest.approx(train.lon.median())
    r = evaluate_predictions(corpus(EVAL, 1, "test"), p)
    assert r["metrics"]["state_acc"] is None and r["metrics"]["median_km"] > 0


def test_baseline_points_straddling_the_antimeridian_stay_among_the_users():
    from geoae.baselines import state_medians

    # Alaska users in Anchorage and on Attu (lon 173): the plain median longitude, 11.6, is in Europe.
    train = pd.DataFrame({"user_id": ["a", "b"], "text": ["x", "y"], "lat": [61.22, 52.85], "lon": [-149.9, 173.1],
                          "split": "train", "state": "AK", "region": "West"})
    lat, lon = state_medians(train)["AK"]
    assert lat == pytest.approx(57.035) and lon == pytest.approx(-168.4)
    assert MedianPoint().fit(train).point_ == pytest.approx((57.035, -168.4))


def test_not_fitted():
    with pytest.raises(NotFittedError):
        MajorityState().predict(corpus(EVAL, 1, "test"))
    with pytest.raises(NotFittedError):
        TfidfLogReg().predict(corpus(EVAL, 1, "test"))


def test_tfidf_logreg_beats_majority_and_tunes_C(monkeypatch):
    train, dev, test = corpus(TRAIN, 0, "train"), corpus(EVAL, 2, "dev"), corpus(EVAL, 1, "test")
    lr = TfidfLogReg(min_df=2).fit(train, dev)
    assert lr.C_ in DEFAULT_C_GRID and lr.C_source_.startswith("dev grid")
    assert set(lr.dev_scores_) == {str(c) for c in DEFAULT_C_GRID} and max(DEFAULT_C_GRID) >= 1e4
    assert lr.dev_scores_[str(lr.C_)] == max(lr.dev_scores_.values())
    p = lr.predict(test)
    assert list(p.columns) == list(PRED_COLUMNS)
    proba = lr.predict_proba(test)
    assert proba.shape == (40, 4) and np.allclose(proba.sum(1), 1)
    acc = float(np.mean(p["state"].to_numpy() == test["state"].to_numpy()))
    majority = float(np.mean(MajorityState().fit(train).predict(test)["state"].to_numpy() == test["state"].to_numpy()))
    assert majority == pytest.approx(0.25) and acc > 0.8  # majority gets exactly 0.25 on the balanced test set
    # point = the predicted state's median training coordinate
    row = p.iloc[0]
    tr = train[train.state == row["state"]]
    assert row["state_lat"] == pytest.approx(tr.lat.median()) and row["lat"] == row["state_lat"]
    # the location point: sure users keep their state's point, the rest a training-location cell
    sure = p["confidence"].to_numpy() >= LOCATION_GATE
    assert p["loc_lat"].notna().all()
    np.testing.assert_array_equal(p.loc[sure, "loc_lat"], p.loc[sure, "state_lat"])
    monkeypatch.setattr(baselines_mod, "LOCATION_GATE", 1.01)  # nobody is sure: every row is a training cell
    unsure = lr.predict(test)
    cells = {tuple(c) for c in np.round(lr.location_.candidates_, 6)}
    assert all((round(a, 6), round(b, 6)) in cells for a, b in unsure[["loc_lat", "loc_lon"]].to_numpy())
    # no dev -> the default C, recorded
    lr2 = TfidfLogReg().fit(train)
    assert lr2.C_ == 10.0 and "default" in lr2.C_source_
    assert lr.refit_users_ == 0 and lr2.refit_users_ == 0
    # refit: same C, classifier refit on train + dev, state points over both
    lr3 = TfidfLogReg(min_df=2, refit=True).fit(train, dev)
    assert lr3.C_ == lr.C_ and lr3.refit_users_ == len(train) + len(dev) and lr3.info()["refit_users"] == lr3.refit_users_
    both = pd.concat([train, dev])
    st = lr3.predict(test).iloc[0]["state"]
    assert lr3.state_points_[st][0] == pytest.approx(both[both.state == st].lat.median())
    assert not np.allclose(lr3.model_.coef_, lr.model_.coef_)


def test_few_users_per_state_do_not_print_sklearn_regression_guesses():
    """21 training users in 12 states: scikit-learn's "could represent a regression problem" warning was
    printed once per C of the grid (twice over with the same-features peer), also under -q."""
    import warnings

    states = ["CA", "TX", "NY", "IL", "WA", "FL", "GA", "OH", "PA", "MI", "NC", "AZ"]
    rng = np.random.default_rng(0)

    def users(split, per_state):
        return pd.DataFrame([{"user_id": f"{split}{s}{i}", "text": f"w{s.lower()} the lol {s.lower()}x", "n_tweets": 3,
                              "lat": 35 + rng.normal(), "lon": -95 + rng.normal(), "split": split, "state": s,
                              "region": ""} for k, s in enumerate(states) for i in range(per_state - (k >= 9))])

    train, dev = users("train", 2), users("dev", 1)  # more classes than half of (over 20) samples
    with warnings.catch_warnings(record=True) as rec:
        TfidfLogReg(min_df=1, C_grid=(1.0, 10.0)).fit(train, dev)
    assert not [w for w in rec if "unique classes" in str(w.message)], [str(w.message) for w in rec]


def test_run_baselines_in_the_same_tables():
    train, dev, test = corpus(TRAIN, 0, "train"), corpus(EVAL, 2, "dev"), corpus(EVAL, 1, "test")
    out = run_baselines(train, test, dev, seed=0)
    assert set(out) == {"majority_state", "median_point", "tfidf_logreg"}
    res = {k: evaluate_predictions(test, p, proba, classes) for k, (p, proba, classes) in out.items()}
    assert res["majority_state"]["metrics"]["state_acc"] == pytest.approx(0.25)
    assert res["tfidf_logreg"]["metrics"]["state_acc"] > res["majority_state"]["metrics"]["state_acc"]
    assert res["tfidf_logreg"]["metrics"]["median_km"] < res["median_point"]["metrics"]["median_km"]
    assert res["median_point"]["metrics"]["state_acc"] is None
    assert "C" in out["tfidf_logreg"][0].attrs["baseline"]
    for r in res.values():
        json.dumps(r["metrics"], allow_nan=False)


def test_same_features_peer_only_when_the_model_input_differs():
    train, dev, test = corpus(TRAIN, 0, "train"), corpus(EVAL, 2, "dev"), corpus(EVAL, 1, "test")
    recipe = {"max_features": 10000, "min_df": 2, "mentions": "mask"}
    assert "tfidf_logreg_same_features" not in run_baselines(train, test, dev, same_features=recipe)
    out = run_baselines(train, test, dev, same_features={**recipe, "mentions": "keep", "min_df": 1})
    p, proba, classes = out["tfidf_logreg_same_features"]
    info = p.attrs["baseline"]
    assert info["mentions"] == "keep" and info["min_df"] == 1 and out["tfidf_logreg"][0].attrs["baseline"]["mentions"] == "mask"
    assert proba.shape == (len(test), len(classes)) and list(p.columns) == list(PRED_COLUMNS)


def test_a_one_value_C_grid_is_used_and_named():
    """With dev users, a grid of one C was skipped for default_C (reported as 'no dev users')."""
    train, dev = corpus(TRAIN, 0, "train"), corpus(EVAL, 2, "dev")
    lr = TfidfLogReg(min_df=2, C_grid=(1.0,)).fit(train, dev)
    assert lr.C_ == 1.0 and lr.C_source_ == "dev grid [1.0]" and set(lr.dev_scores_) == {"1.0"}
    lr = TfidfLogReg(min_df=2, C_grid=()).fit(train, dev)
    assert lr.C_ == 10.0 and lr.C_source_ == "default (empty C grid)"
    assert TfidfLogReg(min_df=2).fit(train).C_source_ == "default (no dev users)"


def test_same_features_peer_takes_every_tfidf_setting_of_the_model():
    """Only max_features, min_df, mentions and select were passed on: a bigram model's 'same
    features' peer ran on unigrams."""
    train, dev, test = corpus(TRAIN, 0, "train"), corpus(EVAL, 2, "dev"), corpus(EVAL, 1, "test")
    model = {"max_features": 10000, "min_df": 2, "max_df": 0.9, "sublinear_tf": False, "binary": True, "ngram_max": 2,
             "mentions": "mask", "select": "frequency"}
    out = run_baselines(train, test, dev, same_features=model)
    lr = TfidfLogReg(**model).fit(train, dev)
    assert lr.featurizer_.get_params() == {k: model[k] for k in lr.featurizer_.get_params()}
    assert any(" " in t for t in lr.featurizer_.vocabulary_)  # bigrams
    np.testing.assert_array_equal(out["tfidf_logreg_same_features"][1], lr.predict_proba(test))
    info = out["tfidf_logreg_same_features"][0].attrs["baseline"]
    assert {k: info[k] for k in model} == model  # what the report shows is what ran


def test_a_one_state_training_set_leaves_out_the_classifier_peer_instead_of_failing():
    """``geoae train`` accepts training users from one state (with a warning); the LR peer cannot be
    fitted on one class, and its DataError failed the whole ``geoae evaluate`` of such a model."""
    train, dev, test = corpus({"CA": 30}, 0, "train"), corpus({"CA": 5}, 2, "dev"), corpus(EVAL, 1, "test")
    out = run_baselines(train, test, dev, same_features={"min_df": 1})
    assert set(out) == {"majority_state", "median_point"}
    assert out["majority_state"][2] == ["CA"]
