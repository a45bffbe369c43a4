"""scripts/crossval_geotext.py on a tiny stored result set (the training runs are done by hand)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.helpers import load_script


def _cv():
    return load_script("crossval_geotext")


CITIES = {"NY": (40.7, -74.0), "CA": (34.0, -118.2), "TX": (29.8, -95.4)}


def _store(out: Path, variants=("lr",), k: int = 2, n: int = 12) -> None:
    """What run_fold leaves behind: per fold the held-out truth and one .npz per variant."""
    cv, rng = _cv(), np.random.default_rng(0)
    classes = sorted(CITIES)
    for f in range(k):
        fdir = out / f"fold{f}"
        fdir.mkdir(parents=True)
        states = [classes[i % 3] for i in range(n)]
        truth = pd.DataFrame({"user_id": [f"u{f}_{i}" for i in range(n)], "lat": [CITIES[s][0] for s in states],
                              "lon": [CITIES[s][1] for s in states], "state": states})
        truth.to_parquet(fdir / "truth.parquet", index=False)
        fitted = pd.concat([truth.assign(lat=truth["lat"] + 0.1 * j) for j in range(3)], ignore_index=True)
        for v in variants:
            probs = rng.dirichlet(np.ones(3), size=n)
            cv._save(fdir / f"{v}.npz", probs, np.full((n, 2), np.nan), classes, fitted)


def test_analyse_only_pools_the_stored_folds(tmp_path, capsys):
    _store(tmp_path, ("lr", "lr_refit"))
    assert _cv().main(["--out", str(tmp_path), "--analyse-only", "--folds", "2", "--variants", "lr,lr_refit"]) == 0
    md = (tmp_path / "cv.md").read_text()
    assert md.startswith("24 held-out official dev users, 2 folds") and "| lr@location |" in md
    assert "| lr_refit@location |" in md


def test_analyse_only_refuses_a_variant_without_stored_results_and_keeps_the_earlier_table(tmp_path, capsys):
    _store(tmp_path)
    cv = _cv()
    assert cv.main(["--out", str(tmp_path), "--analyse-only", "--folds", "2", "--variants", "lr"]) == 0
    before = (tmp_path / "cv.json").read_text(), (tmp_path / "cv.md").read_text()
    capsys.readouterr()
    assert cv.main(["--out", str(tmp_path), "--analyse-only", "--folds", "2", "--variants", "lr,lr_typo"]) == 2
    err = capsys.readouterr().err
    assert "lr_typo" in err and "fold0" in err and "Traceback" not in err
    assert ((tmp_path / "cv.json").read_text(), (tmp_path / "cv.md").read_text()) == before


@pytest.mark.parametrize("where", ["missing", "file"])
def test_an_out_without_results_is_one_line(tmp_path, capsys, where):
    out = tmp_path / "cv"
    if where == "file":
        out.write_text("not a directory")
    assert _cv().main(["--out", str(out), "--analyse-only", "--variants", "lr"]) == 2
    assert "error:" in capsys.readouterr().err


def test_missing_data_is_one_line_before_any_fold(tmp_path, capsys):
    out = tmp_path / "cv"
    assert _cv().main(["--data", str(tmp_path / "nodata"), "--out", str(out), "--variants", "lr"]) == 2
    assert "documents.parquet" in capsys.readouterr().err
    assert not out.exists()


def test_fewer_than_two_folds_is_a_usage_error(tmp_path):
    with pytest.raises(SystemExit) as e:
        _cv().main(["--out", str(tmp_path), "--analyse-only", "--folds", "1"])
    assert e.value.code == 2


def test_an_interrupted_save_leaves_no_result_a_rerun_would_take_as_done(tmp_path, monkeypatch):
    cv = _cv()
    truth = pd.DataFrame({"lat": [40.7], "lon": [-74.0], "state": ["NY"]})

    def dies_midway(file, **arrays):
        (open(file, "wb") if isinstance(file, (str, Path)) else file).write(b"PK\x03\x04 partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(cv.np, "savez", dies_midway)
    with pytest.raises(KeyboardInterrupt):
        cv._save(tmp_path / "lr.npz", np.ones((1, 1)), np.zeros((1, 2)), ["NY"], truth)
    assert not (tmp_path / "lr.npz").exists()  # run_fold skips a variant whose .npz exists
