"""The benchmark's results table, from metrics alone (the full run trains for ~15 minutes by hand)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from geoae.benchmark import ABLATIONS, write_tables
from geoae.cli import main


def _m(head: str, state: float, **points) -> dict:
    pts = {k: {"acc_at_161": v[0], "mean_km": v[1], "median_km": v[2]} for k, v in points.items()}
    return {"headline_point": head, "state_acc": state, "region_acc": 0.5, "points": pts, **pts[head]}


def _results() -> dict:
    sdae = _m("location", 0.35, location=(0.34, 900, 480), bayes=(0.35, 990, 537), regression=(0.05, 936, 599))
    lr = _m("state_median", 0.35, state_median=(0.367, 1068, 556), bayes=(0.369, 1009, 534), location=(0.367, 1042, 553))
    return {
        "protocol": "test protocol", "config": "configs/x.yaml", "overrides": [], "stages": {"train_s": 1.0},
        "models": {"geoae-sdae": sdae, "baseline:tfidf_logreg": lr},
        "ablations": {
            "no_recon": {"description": "no reconstruction", "overrides": ABLATIONS["no_recon"][1],
                         "metrics": _m("bayes", 0.34, location=(0.33, 910, 482), bayes=(0.36, 970, 506))},
            "coord_only": {"description": "coordinates only", "overrides": ABLATIONS["coord_only"][1],
                           "metrics": _m("regression", 0.004, location=(0.2, 938, 570), regression=(0.05, 917, 567))},
        },
    }


def test_ablations_are_shown_at_the_main_models_point_unless_they_fix_their_own(tmp_path):
    res = write_tables(_results(), tmp_path)
    rows = {(r["model"], r["point"]): r for r in res["rows"]}
    nr = rows[("ablation: no_recon", "location point")]
    assert (nr["acc161"], nr["median_km"]) == (0.33, 482) and "own val choice: Bayes point" in nr["note"]
    assert ("ablation: coord_only", "regression head") in rows  # it fixes finetune.point=regression
    # the peer is shown at every point it has; the SDAE's headline row first
    assert {p for m, p in rows if m == "baseline: tfidf_logreg"} == {"state-median point", "Bayes point", "location point"}
    assert res["rows"][0]["point"] == "location point" and "chosen on val" in res["rows"][0]["note"]
    md = (tmp_path / "benchmark.md").read_text()
    assert "| geoae SDAE (this work) | location point | 35.0 | 50.0 | 34.0 | 900 | 480 |" in md
    assert json.loads((tmp_path / "benchmark.json").read_text())["rows"] == res["rows"]


def test_tables_only_rewrites_from_json_and_needs_a_run(tmp_path, capsys):
    write_tables(_results(), tmp_path)
    (tmp_path / "benchmark.md").unlink()
    assert main(["-q", "benchmark", "-o", str(tmp_path), "--tables-only"]) == 0
    assert (tmp_path / "benchmark.md").is_file()
    assert main(["-q", "benchmark", "-o", str(tmp_path / "none"), "--tables-only"]) == 2
    assert "run the benchmark first" in capsys.readouterr().err


@pytest.mark.parametrize("name", sorted(ABLATIONS))
def test_every_ablation_names_what_it_tests(name):
    desc, overrides = ABLATIONS[name]
    assert desc and overrides


def test_official_protocol_runs_end_to_end_on_a_full_text_file(tmp_path, capsys):
    """``--full-text``: the official fold split (users numbered by first appearance, id % 5), and an
    ablation whose overrides name the selection split (``dev`` here, ``val`` in-house) still runs."""
    import pandas as pd

    from geoae.synthetic import generate_users

    src = tmp_path / "full_text.txt"
    with open(src, "w", encoding="latin-1") as f:
        for i, (_, lat, lon, _, tweets) in enumerate(generate_users(120, seed=4, tweets_per_user=(3, 6))):
            for t in tweets:
                f.write(f"USER_{i:08x}\t2010-03-03T04:15:26\tÜT: {lat:.5f},{lon:.5f}\t{lat:.5f}\t{lon:.5f}\t{t}\n")
    out = tmp_path / "bench"
    tiny = ["model.hidden=[16,8,4]", "features.max_features=300", "pretrain.epochs=1", "finetune.epochs=2",
            "finetune.ensemble=1", "train.threads=1"]
    args = ["benchmark", "-c", str(Path(__file__).resolve().parents[1] / "configs" / "default.yaml"), "-o", str(out), "--full-text", str(src),
            "--ablations", "transductive_pretrain"] + [a for s in tiny for a in ("--set", s)]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("Protocol: official") and "same official protocol" in printed
    res = json.loads((out / "benchmark.json").read_text())
    assert res["ablations"]["transductive_pretrain"]["overrides"] == ['data.unlabelled_splits=["dev", "test"]']
    assert any(r["model"] == "ablation: transductive_pretrain" for r in res["rows"])
    docs = pd.read_parquet(out / "data" / "documents.parquet")
    num = docs["user_id"].str[5:].map(lambda h: int(h, 16) + 1)  # first-appearance number
    fold = num % 5
    expected = fold.map(lambda k: "test" if k == 0 else ("dev" if k == 4 else "train"))
    assert (docs["split"] == expected).all() and set(docs["split"]) == {"train", "dev", "test"}


def test_unknown_ablation_is_one_line_before_any_work(tmp_path, capsys):
    assert main(["-q", "benchmark", "-o", str(tmp_path / "b"), "--ablations", "no_recon,nope"]) == 2
    assert "unknown ablation 'nope'" in capsys.readouterr().err
    assert not (tmp_path / "b").exists()


def test_full_text_that_is_not_geotext_says_so_before_training(tmp_path, capsys):
    src = tmp_path / "users.txt"  # Rahimi per-user lines: no official folds
    src.write_text("".join(f"U{i}\t40.{i}\t-74.0\tword{i} ||| more text here\n" for i in range(30)), "utf-8")
    args = ["-q", "benchmark", "-c", str(Path(__file__).resolve().parents[1] / "configs" / "default.yaml"),
            "-o", str(tmp_path / "b"), "--full-text", str(src), "--ablations", ""]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "do not fall into the official train / dev / test folds" in err and "full_text.txt" in err
    assert not (tmp_path / "b" / "sdae").exists()


def test_noise_ablations_edit_the_noise_of_the_run_with_its_overrides():
    """A noise ablation changes layer 1's noise of the noise list the run really uses (the config
    *with* its --set overrides), so that it differs from the main model by that one setting."""
    from geoae.benchmark import _apply
    from geoae.config import load_config

    cfg = str(Path(__file__).resolve().parents[1] / "configs" / "geotext.yaml")
    sets = ["model.hidden=[64,32]", "model.noise=[{kind: masking, level: 0.2}, {kind: gaussian, level: 0.05}]"]
    noise = load_config(cfg, sets + _apply(cfg, ABLATIONS["noise_gaussian"][1], sets)).model.noise
    assert [(n.kind, n.level) for n in noise] == [("gaussian", 0.3), ("gaussian", 0.05)]


def test_in_house_protocol_states_the_held_out_share_and_label_the_config_uses():
    from geoae.benchmark import protocol_statement
    from geoae.config import load_config

    cfg = str(Path(__file__).resolve().parents[1] / "configs" / "geotext.yaml")
    assert "a seeded 15% held out for model selection ('val')" in protocol_statement(load_config(cfg), None)
    moved = load_config(cfg, ["data.dev_fraction=0.25", "data.carve_label=sel", "data.dev_splits=[sel]"])
    text = protocol_statement(moved, None)
    assert text.startswith("in-house") and "a seeded 25% held out for model selection ('sel')" in text


def test_a_config_that_fits_or_selects_on_the_test_users_is_refused_before_any_work(tmp_path, capsys):
    cfg = str(Path(__file__).resolve().parents[1] / "configs" / "geotext.yaml")
    for bad in ("data.train_splits=[dev,test]", "data.dev_splits=[test]"):
        assert main(["-q", "benchmark", "-c", cfg, "-o", str(tmp_path / "b"), "--ablations", "", "--set", bad]) == 2
        assert "test users" in capsys.readouterr().err
        assert not (tmp_path / "b").exists()
    # selecting on the training users: train refuses it, and the benchmark before it prepares anything
    assert main(["-q", "benchmark", "-c", cfg, "-o", str(tmp_path / "b"), "--ablations", "", "--set",
                 "data.dev_splits=[dev]"]) == 2
    assert "also in data.train_splits" in capsys.readouterr().err
    assert not (tmp_path / "b").exists()


def test_notes_name_the_model_selection_split_the_run_used(tmp_path):
    res = write_tables({**_results(), "selection_split": "sel"}, tmp_path)
    assert "chosen on sel" in res["rows"][0]["note"]
    assert "chosen on val" in write_tables(_results(), tmp_path)["rows"][0]["note"]  # earlier runs' JSON: as before
