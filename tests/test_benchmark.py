"""The benchmark's results table, from metrics alone (the full run trains for ~15 minutes by hand)."""

from __future__ import annotations

import json
import logging
import os
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


# --------------------------------------------------------------------------- checkpoints and --resume
# A tiny in-house benchmark (synthetic corpus, main model + one ablation), run once per module and
# copied by the tests that change it.

ABLATION = "no_recon"
RUNS = ("sdae", f"ablations/{ABLATION}")


class _Records(logging.Handler):
    def __init__(self):
        super().__init__(logging.INFO)
        self.messages: list[str] = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def _run(out, sets, **kw):
    """run_benchmark on the tiny setup; returns its results and the benchmark's INFO log lines."""
    from geoae.benchmark import run_benchmark

    logger, rec = logging.getLogger("geoae.benchmark"), _Records()
    level = logger.level
    logger.setLevel(logging.INFO)
    logger.addHandler(rec)
    try:
        res = run_benchmark(str(Path(__file__).resolve().parents[1] / "configs" / "default.yaml"), out,
                            ablations=[ABLATION], sets=sets, **kw)
    finally:
        logger.removeHandler(rec)
        logger.setLevel(level)
    return res, rec.messages


@pytest.fixture(scope="module")
def tiny_sets(tmp_path_factory):
    from geoae.synthetic import write_twitter_jsonl

    corpus = tmp_path_factory.mktemp("corpus") / "tweets.jsonl.gz"
    write_twitter_jsonl(corpus, n_users=150, seed=0)
    return ["model.hidden=[16,8,4]", "features.max_features=300", "pretrain.epochs=1", "finetune.epochs=2",
            "finetune.ensemble=1", "train.threads=1", f"data.inputs={json.dumps([str(corpus)])}"]


@pytest.fixture(scope="module")
def finished(tmp_path_factory, tiny_sets):
    """A finished benchmark with the default checkpoint handling: (out, results, log lines)."""
    out = tmp_path_factory.mktemp("finished") / "b"
    return (out, *_run(out, tiny_sets))


@pytest.fixture(scope="module")
def kept(tmp_path_factory, tiny_sets):
    """The same benchmark run with keep_checkpoints=True: (out, results)."""
    out = tmp_path_factory.mktemp("kept") / "b"
    return out, _run(out, tiny_sets, keep_checkpoints=True)[0]


def _copy(src: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(src, dst)
    return dst


def _spy_train(monkeypatch):
    """Record every train() call the benchmark makes (its run directory, resume, epochs run)."""
    import geoae.pipeline as pipeline

    real, calls = pipeline.train, []

    def spy(cfg, data_dir, out_dir, **kw):
        call = {"run": Path(out_dir), "resume": kw.get("resume"), "epochs": 0}
        calls.append(call)
        return real(cfg, data_dir, out_dir, on_epoch_end=lambda *_: call.__setitem__("epochs", call["epochs"] + 1), **kw)

    monkeypatch.setattr(pipeline, "train", spy)
    return calls


def test_each_runs_checkpoint_is_deleted_once_it_is_trained_and_evaluated(finished):
    out, res, logs = finished
    assert (out / "report" / "metrics.json").is_file() and (out / RUNS[1] / "report" / "metrics.json").is_file()
    for run in RUNS:
        assert (out / run / "model" / "artifact.json").is_file() and not (out / run / "checkpoint").exists()
    assert sum("MB freed" in m for m in logs) == 2
    assert res["checkpoints_kept"] is False and res["training"] == {"sdae": "trained", ABLATION: "trained"}
    assert json.loads((out / "benchmark.json").read_text())["checkpoints_kept"] is False


def test_keep_checkpoints_keeps_them(kept):
    out, res = kept
    for run in RUNS:
        assert (out / run / "checkpoint" / "state.json").is_file()
    assert json.loads((out / "benchmark.json").read_text())["checkpoints_kept"] is True


def test_resume_on_a_finished_benchmark_retrains_nothing_and_gives_the_same_tables(finished, tiny_sets, tmp_path,
                                                                                   monkeypatch):
    src, first, _ = finished
    out = _copy(src, tmp_path / "b")
    calls = _spy_train(monkeypatch)
    models = {run: (out / run / "model" / "artifact.json").stat().st_mtime_ns for run in RUNS}
    for run in ("report", f"ablations/{ABLATION}/report"):  # evaluations are recomputed: make them look old
        os.utime(out / run / "metrics.json", ns=(0, 0))
    res, logs = _run(out, tiny_sets, resume=True)
    assert calls == []
    assert {run: (out / run / "model" / "artifact.json").stat().st_mtime_ns for run in RUNS} == models
    assert sum("reused the finished model" in m for m in logs) == 2
    assert res["training"] == {"sdae": "reused", ABLATION: "reused"}
    assert res["rows"] == first["rows"] and res["table_md"] == first["table_md"]
    for run in ("report", f"ablations/{ABLATION}/report"):
        assert (out / run / "metrics.json").stat().st_mtime_ns > 0
    assert res["stages"]["train_timings"] == first["stages"]["train_timings"]


def test_resume_retrains_the_run_whose_config_changed_and_says_why(finished, tiny_sets, tmp_path, monkeypatch):
    src, first, _ = finished
    out = _copy(src, tmp_path / "b")
    desc, ovs = ABLATIONS[ABLATION]
    monkeypatch.setitem(ABLATIONS, ABLATION, (desc, [*ovs, "finetune.patience=1"]))
    calls = _spy_train(monkeypatch)
    res, logs = _run(out, tiny_sets, resume=True)
    assert [(c["run"], c["resume"]) for c in calls] == [(out / "ablations" / ABLATION, False)] and calls[0]["epochs"] > 0
    assert res["training"] == {"sdae": "reused", ABLATION: "retrained"}
    assert any(f"ablation {ABLATION}: retraining" in m and "another config" in m and "finetune.patience" in m
               for m in logs)
    stored = json.loads((out / "ablations" / ABLATION / "model" / "artifact.json").read_text())["config"]
    assert stored["finetune"]["patience"] == 1
    assert not (out / "ablations" / ABLATION / "checkpoint").exists()


def test_resume_continues_a_run_from_its_checkpoint_when_its_model_is_missing(kept, tiny_sets, tmp_path, monkeypatch):
    import shutil

    src, _ = kept
    out = _copy(src, tmp_path / "b")
    shutil.rmtree(out / "ablations" / ABLATION / "model")  # killed before the model was saved
    calls = _spy_train(monkeypatch)
    res, logs = _run(out, tiny_sets, resume=True)
    # train(resume=True) on a checkpoint at the end of training: no epoch is run again
    assert [(c["run"], c["resume"], c["epochs"]) for c in calls] == [(out / "ablations" / ABLATION, True, 0)]
    assert res["training"] == {"sdae": "reused", ABLATION: "resumed"}
    assert json.loads((out / "ablations" / ABLATION / "manifest.json").read_text())["resumed_from"]
    assert (out / "ablations" / ABLATION / "model" / "artifact.json").is_file()
    assert not any((out / run / "checkpoint").exists() for run in RUNS)  # deleted once evaluated


@pytest.mark.parametrize("model_there", [False, True], ids=["model_missing", "model_of_the_old_config"])
def test_resume_from_a_checkpoint_of_another_config_is_recorded_as_trained_not_resumed(
        kept, tiny_sets, tmp_path, monkeypatch, model_there):
    """train(resume=True) starts afresh from a checkpoint made with another config: benchmark.json
    says the run was trained (or retrained, over a model that was there), not resumed."""
    import shutil

    src, _ = kept
    out = _copy(src, tmp_path / "b")
    if not model_there:
        shutil.rmtree(out / "ablations" / ABLATION / "model")
    desc, ovs = ABLATIONS[ABLATION]
    monkeypatch.setitem(ABLATIONS, ABLATION, (desc, [*ovs, "finetune.patience=1"]))  # its checkpoint is stale
    calls = _spy_train(monkeypatch)
    res, logs = _run(out, tiny_sets, resume=True)
    assert [(c["run"], c["resume"]) for c in calls] == [(out / "ablations" / ABLATION, True)] and calls[0]["epochs"] > 0
    how = "retrained" if model_there else "trained"
    assert res["training"] == {"sdae": "reused", ABLATION: how}
    assert json.loads((out / "benchmark.json").read_text())["training"][ABLATION] == how
    assert any(f"ablation {ABLATION}: its checkpoint was made with another config or data, so it was {how} afresh"
               in m for m in logs)
    manifest = json.loads((out / "ablations" / ABLATION / "manifest.json").read_text())
    assert manifest["resumed_from"] == []


def test_without_resume_every_run_is_trained_afresh(finished, tiny_sets, tmp_path, monkeypatch):
    src, _, _ = finished
    out = _copy(src, tmp_path / "b")
    calls = _spy_train(monkeypatch)
    res, _ = _run(out, tiny_sets, keep_checkpoints=True)
    assert [(c["run"], c["resume"]) for c in calls] == [(out / "sdae", False), (out / "ablations" / ABLATION, False)]
    assert all(c["epochs"] > 0 for c in calls)
    assert res["training"] == {"sdae": "trained", ABLATION: "trained"}
    assert all((out / run / "checkpoint" / "state.json").is_file() for run in RUNS)


def test_a_run_is_reused_only_with_the_same_config_and_data_and_a_model_that_loads(finished, tmp_path):
    from geoae.benchmark import _not_reusable
    from geoae.config import load_config
    from geoae.manifest import sha256_file

    src, _, _ = finished
    cfg_path = str(Path(__file__).resolve().parents[1] / "configs" / "default.yaml")
    sets = json.loads((src / "benchmark.json").read_text())["overrides"]
    cfg = load_config(cfg_path, sets)
    sha = sha256_file(src / "data" / "documents.parquet")
    assert _not_reusable(src / "sdae", cfg, sha) is None
    assert "other prepared data" in _not_reusable(src / "sdae", cfg, "0" * 64)
    assert "finetune.epochs" in _not_reusable(src / "sdae", load_config(cfg_path, sets + ["finetune.epochs=3"]), sha)
    assert _not_reusable(tmp_path / "none", cfg, sha) == "no finished model"
    out = _copy(src / "sdae", tmp_path / "sdae")
    cj = json.loads((out / "config.json").read_text())  # config.json of another run beside this model
    cj["finetune"]["lr"] = 0.5
    (out / "config.json").write_text(json.dumps(cj))
    assert "config.json was trained with another config (finetune.lr differ)" in _not_reusable(out, cfg, sha)
    out = _copy(src / "sdae", tmp_path / "sdae2")
    weights = next((out / "model").glob("model-*.safetensors"))
    weights.write_bytes(weights.read_bytes()[:-8])
    assert "does not load" in _not_reusable(out, cfg, sha)


def test_checkpoint_and_resume_flags_reach_run_benchmark(tmp_path, monkeypatch):
    import geoae.benchmark as bench

    seen = []

    def fake(config, out, **kw):
        seen.append(kw)
        return {"protocol": "p", "table_md": "", "anchors_caption": "", "anchors_md": "", "stages": {}}

    monkeypatch.setattr(bench, "run_benchmark", fake)
    base = ["-q", "benchmark", "-c", "x.yaml", "-o", str(tmp_path), "--ablations", ""]
    assert main(base) == 0 and main(base + ["--keep-checkpoints"]) == 0 and main(base + ["--resume"]) == 0
    assert [(k["keep_checkpoints"], k["resume"]) for k in seen] == [(False, False), (True, False), (False, True)]
