"""The GeoText benchmark: one command that prepares, trains, evaluates, runs the
ablations and the baselines on the same split, and writes a results table next
to the published anchors.

Protocols (stated in every output):

- ``in-house`` (default; what ``../shared`` allows): only the official *dev*
  and *test* users' text is available. Train on the official dev users minus a
  seeded 15% held out for model selection (``val``), report on the official
  test users. Test users are never used for fitting or tuning.
- ``official`` (``--full-text PATH``): the complete ``full_text.txt``; users
  split by the official fold rule (train folds 1-3, dev fold 4, test fold 5).

Every number comes from the run that wrote the file; the published anchors are
citations (``ANCHORS``), marked as trained on about 3x more users under the in-house protocol.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
from pathlib import Path

from geoae.config import Config, load_config
from geoae.errors import ConfigError, DataError
from geoae.manifest import Timer, atomic_write_text, check_writable, write_json

log = logging.getLogger(__name__)

# Published text-only GeoText results (../shared/anchors.md). (u) = unverified there.
ANCHORS = [
    # method, year, region acc %, state acc %, Acc@161 %, mean km, median km
    ("Eisenstein et al., geographic topic model", 2010, "58", "27 (u)", "–", "900 (u)", "494 (u)"),
    ("Wing & Baldridge", 2011, "–", "–", "–", "967 (u)", "479"),
    ("Roller et al.", 2012, "–", "–", "–", "897 (u)", "432 (u)"),
    ("Cha et al., sparse coding", 2015, "≈67", "≈41", "–", "581", "425"),
    ("Liu & Inkpen, SDAE", 2015, "61.1", "34.8 (u)", "–", "≈856 (u)", "≈733 (u)"),
    ("Rahimi et al., TF-IDF + LR", 2015, "–", "–", "38 (u)", "880 (u)", "397 (u)"),
    ("Rahimi et al., MLP + k-d tree", 2017, "–", "–", "≈38–40 (u)", "≈844 (u)", "≈389 (u)"),
    ("Rahimi et al., mixture density network", 2017, "–", "–", "≈42 (u)", "≈865 (u)", "≈412 (u)"),
]

# name -> (what it tests, config overrides)
ABLATIONS = {
    "no_pretrain": ("no greedy pretraining (random init, then joint fine-tuning)", ["pretrain.epochs=0"]),
    "state_only": ("single-task: state head only (no coordinate loss)", ["finetune.loss_weights.coord=0"]),
    "coord_only": ("single-task: coordinate head only (no state loss)", ["finetune.loss_weights.state=0", "finetune.point=regression"]),
    "no_recon": ("no reconstruction objective during fine-tuning", ["finetune.loss_weights.recon=0"]),
    "single_member": ("one fine-tuned network instead of an ensemble", ["finetune.ensemble=1"]),
    "noise_gaussian": ("input noise: Gaussian (sd 0.3 in unit-RMS space)",
                       ["model.noise[0]=gaussian:0.3"]),
    "noise_salt_pepper": ("input noise: salt-and-pepper 0.1", ["model.noise[0]=salt_pepper:0.1"]),
    "noise_dropout": ("input noise: dropout 0.3", ["model.noise[0]=dropout:0.3"]),
    "noise_masking": ("input noise: masking 0.3", ["model.noise[0]=masking:0.3"]),
    "noise_none": ("no input noise (plain autoencoder on layer 1)", ["model.noise[0]=none:0"]),
    "sigmoid": ("sigmoid units as in Liu & Inkpen (instead of ReLU)", ["model.activation=sigmoid"]),
    # {selection_and_test}: the run's own dev (model selection) and test splits, filled in by
    # run_benchmark: 'val' and 'test' in-house, 'dev' and 'test' under the official protocol.
    "transductive_pretrain": ("TF-IDF vocabulary and pretraining also see the model-selection and test users' "
                              "text (never their labels): semi-supervised, transductive",
                              ["data.unlabelled_splits={selection_and_test}"]),
    "refit": ("after early stopping, members refit on train + the model-selection users (the LR peer is not refit here)",
              ["finetune.refit=true"]),
    "freeze_first_layer": ("first encoder weight kept at its pretrained value while fine-tuning (one first layer "
                           "shared by all members: a speed option)", ["finetune.freeze_first_layer=true"]),
}


def _apply(cfg_path: str, overrides: list[str], sets: list[str] | None = None) -> list[str]:
    """Expand the ``model.noise[i]=kind:level`` shorthand into a full noise list override, edited
    from the noise list of the config *with* the run's ``sets`` (its ``--set`` overrides): the
    file's own list would undo a ``--set model.noise``, or not fit a ``--set model.hidden``."""
    out, noise_edits = [], {}
    for ov in overrides:
        key, _, val = ov.partition("=")
        if key.startswith("model.noise["):
            i = int(key[len("model.noise["):-1])
            kind, _, level = val.partition(":")
            noise_edits[i] = {"kind": kind, "level": float(level)}
        else:
            out.append(ov)
    if noise_edits:
        base = load_config(cfg_path, sets).model.noise
        noise = [{"kind": n.kind, "level": n.level} for n in base]
        for i, n in noise_edits.items():
            noise[i] = n
        out.append("model.noise=" + json.dumps(noise))
    return out


POINT_NAMES = {"regression": "regression head", "state_median": "state-median point", "bayes": "Bayes point",
               "location": "location point"}


def _row(name: str, m: dict, point: str | None = None, note: str = "", point_name: str | None = None) -> dict:
    pm = m["points"].get(point, m) if point else m
    kind = point or m.get("headline_point")
    return {
        "model": name,
        "point": point_name or POINT_NAMES.get(kind, kind),
        "state_acc": m.get("state_acc"),
        "region_acc": m.get("region_acc"),
        "acc161": pm.get("acc_at_161"),
        "mean_km": pm.get("mean_km"),
        "median_km": pm.get("median_km"),
        "note": note,
    }


def _fmt(v, pct: bool = False) -> str:
    if v is None:
        return "–"
    return f"{100 * v:.1f}" if pct else f"{v:.0f}"


def table(rows: list[dict]) -> str:
    lines = ["| model | point | state acc % | region acc % | Acc@161 % | mean km | median km | note |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['point']} | {_fmt(r['state_acc'], True)} | {_fmt(r['region_acc'], True)} | "
                     f"{_fmt(r['acc161'], True)} | {_fmt(r['mean_km'])} | {_fmt(r['median_km'])} | {r['note']} |")
    return "\n".join(lines)


def anchors_table() -> str:
    lines = ["| method (published, ~5,685 training users) | year | region acc % | state acc % | Acc@161 % | mean km | median km |",
             "|---|---|---|---|---|---|---|"]
    lines += [f"| {a[0]} | {a[1]} | {a[2]} | {a[3]} | {a[4]} | {a[5]} | {a[6]} |" for a in ANCHORS]
    return "\n".join(lines)


def protocol_statement(cfg: Config, full_text: str | None) -> str:
    """The protocol line every output starts with, from the config the run really uses (a ``--set``
    may move the held-out share or its label). Refuses a config that trains or selects on its test
    split: the benchmark promises test users are never used for fitting or tuning."""
    d = cfg.data
    leak = sorted(set(d.test_splits) & (set(d.train_splits) | set(d.dev_splits)))
    if leak:
        raise ConfigError(f"data.test_splits {leak} are also in data.train_splits {d.train_splits} or data.dev_splits "
                          f"{d.dev_splits}: the benchmark never fits or selects on the test users")
    if full_text:
        return ("official: full_text.txt, users split by the official fold rule (id % 5: folds 1-3 train, "
                "4 dev for model selection, 5 test)")
    return ("in-house (../shared has text for the official dev and test users only): train on the official dev "
            f"users minus a seeded {100 * d.dev_fraction:g}% held out for model selection ('{d.carve_label}'), "
            "evaluate on the official test users")


CHECKPOINT = "checkpoint"  # what ``train`` writes its resumable state to, inside its run directory


def _plain(d: dict) -> dict:
    """``d`` as JSON reads it back (lists for tuples): how a run's config.json and artifact.json hold a config."""
    return json.loads(json.dumps(d, default=str))


def _config_diff(stored, wanted, prefix: str = "") -> list[str]:
    """The dotted keys whose values differ between two config dicts (a few, for a log line)."""
    if isinstance(stored, dict) and isinstance(wanted, dict):
        out = []
        for k in sorted(set(stored) | set(wanted), key=str):
            out += _config_diff(stored.get(k), wanted.get(k), f"{prefix}{k}.")
        return out
    return [] if stored == wanted else [prefix.rstrip(".")]


def _not_reusable(run_dir: Path, cfg: Config, data_sha: str) -> str | None:
    """Why the run in ``run_dir`` cannot stand for training ``cfg`` on the prepared data whose
    ``documents.parquet`` has sha256 ``data_sha``; None when it can: its model loads (every weight
    file present and matching its hash), and the model's config, the run's config.json, and the
    data hash that both the model's meta and the run's manifest record are this run's."""
    from geoae.artifact import INDEX, load_artifact
    from geoae.errors import GeoaeError

    if not (run_dir / "model" / INDEX).is_file():
        return "no finished model"
    try:
        manifest = json.loads((run_dir / "manifest.json").read_text(encoding="utf-8"))
        run_config = json.loads((run_dir / "config.json").read_text(encoding="utf-8"))
        index_config = json.loads((run_dir / "model" / INDEX).read_text(encoding="utf-8"))["config"]
        if not isinstance(manifest, dict) or manifest.get("stage") != "train":
            return "its manifest.json is not a finished training's"
        manifest_sha = (manifest.get("inputs") or [{}])[0].get("sha256")
    except (OSError, ValueError, KeyError, TypeError, AttributeError, IndexError) as e:
        return f"its run files are unreadable ({e})"
    try:
        art = load_artifact(run_dir / "model")
    except GeoaeError as e:
        return f"its model does not load ({e})"
    wanted = _plain(cfg.to_dict())
    for what, stored in (("model", index_config), ("config.json", run_config)):
        if stored != wanted:
            keys = _config_diff(stored, wanted)
            return (f"its {what} was trained with another config ({', '.join(keys[:5])}"
                    f"{', ...' if len(keys) > 5 else ''} differ)")
    if art.meta.get("data_sha256") != data_sha or manifest_sha != data_sha:
        return "it was trained on other prepared data (documents.parquet sha256 differs)"
    return None


def _train_run(name: str, cfg: Config, data_dir: Path, run_dir: Path, data_sha: str, resume: bool) -> tuple[Path, str]:
    """Train one benchmark run (the main model or an ablation) into ``run_dir``; returns its model
    directory and how it came about: ``trained``, ``retrained`` (a finished model of another config
    or data was there), ``resumed`` (from its checkpoint) or ``reused`` (only with ``resume``)."""
    from geoae.artifact import INDEX
    from geoae.checkpoint import STATE_JSON
    from geoae.pipeline import train

    if not resume:
        return train(cfg, data_dir, run_dir, resume=False), "trained"
    why = _not_reusable(run_dir, cfg, data_sha)
    if why is None:
        log.info("%s: reused the finished model in %s (same config, same prepared data); not retrained",
                 name, run_dir / "model")
        return run_dir / "model", "reused"
    had_model = (run_dir / "model" / INDEX).is_file()
    fresh = "retrained" if had_model else "trained"
    # train checks a checkpoint against the config and the training data itself, and starts
    # afresh (with a warning) from one that does not match; its manifest says which it did.
    if any((run_dir / CHECKPOINT).rglob(STATE_JSON)):
        log.info("%s: resuming from its checkpoint in %s (%s; a checkpoint of another config or data is not "
                 "resumed from)", name, run_dir / CHECKPOINT, why)
        model_dir = train(cfg, data_dir, run_dir, resume=True)
        if _resumed_from(run_dir):
            return model_dir, "resumed"
        log.info("%s: its checkpoint was made with another config or data, so it was %s afresh", name, fresh)
        return model_dir, fresh
    log.info("%s: %s: %s", name, "retraining" if had_model else "training", why)
    return train(cfg, data_dir, run_dir, resume=False), fresh


def _resumed_from(run_dir: Path) -> list[str]:
    """The checkpoints the training just finished in ``run_dir`` continued from, as its manifest
    records them (empty when it started afresh)."""
    manifest = json.loads((run_dir / "manifest.json").read_text(encoding="utf-8"))
    return list(manifest.get("resumed_from") or [])


def _drop_checkpoint(name: str, run_dir: Path) -> float:
    """Delete ``run_dir/checkpoint`` (the run has its model and its evaluation); returns the MB freed.
    A symlink there is left alone: it points at something the benchmark did not create."""
    ckpt = run_dir / CHECKPOINT
    if ckpt.is_symlink():
        log.warning("%s: %s is a symlink; left as is (the benchmark only deletes a checkpoint directory it wrote)",
                    name, ckpt)
        return 0.0
    if not ckpt.is_dir():
        return 0.0
    size = 0
    for root, _dirs, files in os.walk(ckpt):  # symlinks not followed
        for f in files:
            try:
                size += os.lstat(os.path.join(root, f)).st_size
            except OSError:
                pass
    try:
        shutil.rmtree(ckpt)
    except OSError as e:  # the run is trained and evaluated: its results are not lost over this
        log.warning("%s: could not delete its checkpoint %s (%s); delete it by hand", name, ckpt, e)
        return 0.0
    mb = size / 2**20
    log.info("%s: deleted its checkpoint %s, %.1f MB freed (the model does not need it; --keep-checkpoints keeps it)",
             name, ckpt, mb)
    return mb


def run_benchmark(config: str, out: str | Path, *, ablations: list[str] | None = None, full_text: str | None = None,
                  sets: list[str] | None = None, keep_checkpoints: bool = False, resume: bool = False) -> dict:
    """Prepare, train, evaluate, run the ablations; writes ``benchmark.{json,md}`` to ``out``.

    Each run's ``checkpoint/`` is deleted once it is trained and evaluated, unless
    ``keep_checkpoints``. With ``resume`` a run whose finished model was trained with the same
    config on the same prepared data is reused, one with only a checkpoint continues from it, any
    other is trained; evaluations are always recomputed. Without it every run is trained afresh.
    """
    from geoae.evaluate import run_evaluate
    from geoae.manifest import sha256_file
    from geoae.pipeline import check_dev_splits, documents_path, prepare

    out = check_writable(out, "--out", directory=True)
    sets = list(sets or [])
    if full_text:
        # The official fold rule decides every split: nothing is carved from the training users
        # (a config's dev_fraction / test_fraction would otherwise move some of them).
        sets += [f"data.inputs={json.dumps([full_text])}", "data.split=column", "data.dev_fraction=0.0",
                 "data.test_fraction=0.0", "data.train_splits=[train]", "data.dev_splits=[dev]", "data.test_splits=[test]"]
    cfg: Config = load_config(config, sets)
    protocol = protocol_statement(cfg, full_text)
    check_dev_splits(cfg)  # train's own check, else only after prepare has run
    test_split = cfg.data.test_splits[0]
    # Every ablation's config is built and validated before anything trains: a bad name or
    # override fails now, not after an hour of training.
    fill = {"selection_and_test": json.dumps(list(cfg.data.dev_splits) + list(cfg.data.test_splits))}
    ablation_runs: dict[str, tuple[list[str], Config]] = {}
    for name in ablations or []:
        if name not in ABLATIONS:
            raise ConfigError(f"--ablations: unknown ablation {name!r}; choose from {', '.join(ABLATIONS)}")
        ovs = [o.format(**fill) for o in ABLATIONS[name][1]]
        ablation_runs[name] = (ovs, load_config(config, sets + _apply(config, ovs, sets)))
    results: dict = {"protocol": protocol, "config": config, "overrides": sets, "stages": {}, "ablations": {},
                     "selection_split": "/".join(cfg.data.dev_splits), "checkpoints_kept": keep_checkpoints,
                     "training": {}}
    log.info("protocol: %s", protocol)

    with Timer() as t:
        docs = prepare(cfg, out / "data")
    results["stages"]["prepare_s"] = round(t.seconds, 1)
    if full_text and not {"train", "dev", "test"} <= set(docs["split"].astype(str)):
        raise DataError(f"--full-text {full_text}: its users do not fall into the official train / dev / test folds "
                        f"(splits found: {sorted(set(docs['split'].astype(str)))}); is it GeoText's full_text.txt "
                        "(6 tab-separated fields: user, time, location, lat, lon, text)? The in-house protocol needs "
                        "no --full-text")
    data_sha = sha256_file(documents_path(out / "data")) if resume else ""
    with Timer() as t:
        model_dir, how = _train_run("main model", cfg, out / "data", out / "sdae", data_sha, resume)
    results["training"]["sdae"] = how
    timings = json.loads((out / "sdae" / "manifest.json").read_text())["timings"]
    # A reused model took no time now: its training time is the one its manifest records.
    results["stages"]["train_s"] = round(timings["total_s"] if how == "reused" else t.seconds, 1)
    results["stages"]["train_timings"] = timings
    with Timer() as t:
        paths = run_evaluate(model_dir, out / "data", out / "report", split=test_split, baselines=True, seed=cfg.train.seed)
    results["stages"]["evaluate_s"] = round(t.seconds, 1)
    metrics = json.loads(Path(paths["metrics.json"]).read_text())["models"]
    results["models"] = metrics
    if not keep_checkpoints:
        _drop_checkpoint("main model", out / "sdae")

    for name, (ovs, acfg) in ablation_runs.items():
        desc = ABLATIONS[name][0]
        if acfg.to_dict() == cfg.to_dict():
            log.info("ablation %s is the main model's own setting: skipped", name)
            continue
        run_dir = out / "ablations" / name
        with Timer() as t:
            mdir, how = _train_run(f"ablation {name}", acfg, out / "data", run_dir, data_sha, resume)
        train_s = (json.loads((run_dir / "manifest.json").read_text())["timings"]["total_s"] if how == "reused"
                   else t.seconds)
        results["training"][name] = how
        p = run_evaluate(mdir, out / "data", run_dir / "report", split=test_split, baselines=False, seed=cfg.train.seed)
        m = json.loads(Path(p["metrics.json"]).read_text())["models"]["geoae-sdae"]
        results["ablations"][name] = {"description": desc, "overrides": ovs, "train_s": round(train_s, 1), "metrics": m}
        log.info("ablation %s: state %.3f, median %.0f km (%.0fs)", name, m["state_acc"] or 0, m["median_km"] or 0, t.seconds)
        if not keep_checkpoints:
            _drop_checkpoint(f"ablation {name}", run_dir)

    return write_tables(results, out)


def write_tables(results: dict, out: str | Path) -> dict:
    """The results table (``benchmark.md``, ``rows`` in ``benchmark.json``) from a benchmark's metrics.

    Ablation rows are given at the main model's headline point (each ablation's own
    validation choice is named in its note when it differs), so that a row differs from the
    main model by the one setting it names, not also by how its point is chosen.
    """
    out = Path(out)
    metrics = results["models"]
    head = metrics["geoae-sdae"]["headline_point"]
    official = str(results.get("protocol", "")).startswith("official")
    # The model-selection users' split: as the run recorded it (a --set may rename it), else (results
    # of earlier versions) each protocol's own.
    sel = results.get("selection_split") or ("dev" if official else "val")
    rows = [_row("geoae SDAE (this work)", metrics["geoae-sdae"], note=f"headline point chosen on {sel}")]
    for kind in metrics["geoae-sdae"]["points"]:
        if kind != head:
            rows.append(_row("geoae SDAE (this work)", metrics["geoae-sdae"], kind, "other point of the same model"))
    for name, a in results["ablations"].items():
        m = a["metrics"]
        # An ablation that fixes its own point (coord_only: no state head to locate with) keeps it.
        fixed = any(o.startswith("finetune.point=") for o in a.get("overrides", []))
        kind = head if head in m["points"] and not fixed else m["headline_point"]
        own = m["headline_point"]
        note = a["description"] + ("" if own == kind else f" (its own {sel} choice: {POINT_NAMES.get(own, own)})")
        rows.append(_row(f"ablation: {name}", m, kind, note))
    notes = {"baseline:tfidf_logreg": f"Rahimi/pigeo recipe, C tuned on {sel}",
             "baseline:tfidf_logreg_same_features": f"same classifier on the SDAE's own TF-IDF input, C tuned on {sel}"}
    for name in ("baseline:tfidf_logreg", "baseline:tfidf_logreg_same_features", "baseline:majority_state",
                 "baseline:median_point"):
        if name in metrics:
            m = metrics[name]
            # Majority / median point have one point each; the LR peers get all their points.
            for kind in (m["points"] if "logreg" in name else [m["headline_point"]]):
                rows.append(_row(name.replace("baseline:", "baseline: "), m, kind, notes.get(name, ""),
                                 "median training point" if "median_point" in name else None))
    results["rows"] = rows
    results["table_md"] = table(rows)
    results["anchors_md"] = anchors_table()
    results["anchors_caption"] = ("Published anchors (same official protocol and training users as this run)" if official
                                  else "Published anchors (trained on about 3x more users than the in-house protocol)")
    write_json(out / "benchmark.json", results)
    # Atomic like the JSON beside it: an interrupted rewrite (--tables-only) keeps the earlier table.
    atomic_write_text(
        out / "benchmark.md",
        f"# GeoText benchmark\n\nProtocol: {results['protocol']}.\n\nConfig: `{results['config']}` "
        f"{' '.join(results.get('overrides', []))}\n\n"
        f"{results['table_md']}\n\n{results['anchors_caption']}:\n\n"
        f"{results['anchors_md']}\n\nStage times (s): {json.dumps(results['stages'])}\n")
    return results


DEFAULT_CONFIG = "configs/geotext.yaml"


def default_config() -> str:
    """``configs/geotext.yaml`` of the current directory, which must be the repository root: the
    config's data paths (``../shared/...``) are relative to it, so a copy found elsewhere (e.g. in
    the checkout geoae was installed from) would only fail later on its data. Anything else is a
    ``ConfigError`` that says where it looked and how to pass a config."""
    if Path(DEFAULT_CONFIG).is_file():
        return DEFAULT_CONFIG
    checkout = Path(__file__).resolve().parents[1]
    where = f" ({checkout}, where it is)" if (checkout / DEFAULT_CONFIG).is_file() else ""
    raise ConfigError(f"no --config given, and the default {DEFAULT_CONFIG} is not in the current directory {Path.cwd()}: "
                      f"run from the geoae repository root{where}, since that config's data paths (../shared/...) are "
                      "relative to it, or pass a config with -c/--config PATH")


def _cmd(args: argparse.Namespace) -> int:
    abl = list(ABLATIONS) if args.ablations == "all" else [a for a in (args.ablations or "").split(",") if a]
    if args.tables_only:
        src = Path(args.out) / "benchmark.json"
        if not src.is_file():
            from geoae.errors import GeoaeError

            raise GeoaeError(f"--tables-only: {src} not found; run the benchmark first")
        res = write_tables(json.loads(src.read_text(encoding="utf-8")), args.out)
    else:
        res = run_benchmark(args.config or default_config(), args.out, ablations=abl, full_text=args.full_text,
                            sets=args.set, keep_checkpoints=args.keep_checkpoints, resume=args.resume)
    print(f"Protocol: {res['protocol']}\n")
    print(res["table_md"])
    print(f"\n{res['anchors_caption']}:\n")
    print(res["anchors_md"])
    print(f"\nstage times: {json.dumps(res['stages'])}\nresults: {Path(args.out) / 'benchmark.json'}")
    return 0


def add_cli(sub) -> None:
    p = sub.add_parser("benchmark", help="GeoText benchmark: SDAE, ablations and baselines on one split, beside the anchors")
    p.add_argument("--config", "-c", metavar="PATH",
                   help=f"YAML/JSON config (default: {DEFAULT_CONFIG} in the current directory, which must then be the "
                        "repository root: that config's data paths are relative to it)")
    p.add_argument("--out", "-o", default="runs/benchmark",
                   help="output directory: benchmark.json, benchmark.md and the runs behind them")
    p.add_argument("--ablations", default="all", help="comma-separated names, 'all' (default) or '' for none: " + ", ".join(ABLATIONS))
    p.add_argument("--full-text", help="a complete GeoText full_text.txt: run the official protocol instead")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override")
    p.add_argument("--keep-checkpoints", action="store_true",
                   help="keep each run's checkpoint/ (resumable training state, ~425 MB a run on GeoText); by default "
                        "it is deleted once the run is trained and evaluated (its model does not need it)")
    p.add_argument("--resume", action="store_true",
                   help="continue an earlier benchmark in --out: reuse each run whose model was trained with the same "
                        "config on the same prepared data, continue one that has only a checkpoint, train the others; "
                        "evaluations are recomputed (without it every run is trained afresh)")
    p.add_argument("--tables-only", action="store_true",
                   help="rewrite benchmark.md and the rows of benchmark.json from an earlier run's metrics (no training)")
    p.set_defaults(func=_cmd)
