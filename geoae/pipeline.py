"""Stage drivers: ``prepare`` (tweets -> labelled user documents) and ``train``
(documents -> features -> SDAE pretrain -> joint fine-tune -> artifact),
usable from Python and as ``geoae prepare`` / ``geoae train`` / ``geoae demo``.

Every run writes its resolved ``config.json`` and a ``manifest.json`` (inputs
with hashes, counts, skips by reason, wall time, versions) beside its outputs.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import os
import time
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch

from geoae.artifact import Artifact, save_artifact
from geoae.checkpoint import check_position, clear_checkpoint, load_checkpoint, make_generators, resolve_device, restore
from geoae.config import DEFAULT_CONFIG, Config, load_config
from geoae.errors import ConfigError, DataError, GeoaeError, RecordLog, breakdown, plural
from geoae.features import available_cpus
from geoae.finetune import TrainingSet, finetune, score
from geoae.geo import LocationRisk, haversine_km, median_point
from geoae.labels import US_STATES
from geoae.manifest import Timer, check_writable, file_record, write_json, write_run_files
from geoae.pretrain import pretrain
from geoae.sdae import GeoSDAE, GeoSDAEEnsemble

log = logging.getLogger(__name__)

DOCUMENTS = "documents.parquet"
# What the documents' state column may hold: a state code, or "" (no state: no or foreign coordinates).
STATE_VALUES = ("", *US_STATES)


# --------------------------------------------------------------------------- prepare


def prepare(cfg: Config, out_dir: str | Path, inputs: list[str] | None = None) -> pd.DataFrame:
    """Read tweets, build one document per user, assign splits, add state/region labels.

    Writes ``documents.parquet`` (user_id, text, n_tweets, lat, lon, split, state,
    region) plus config and manifest to ``out_dir``; returns the table.
    """
    from geoae.documents import assign_splits, read_documents
    from geoae.labels import add_labels

    out = Path(out_dir)
    d = cfg.data
    paths = list(inputs or d.inputs)
    if not paths:
        raise DataError("no input files: give them with --input or data.inputs in the config")
    check_writable(out, "--out", directory=True)
    rlog = RecordLog(policy=d.on_bad_record)
    with Timer() as t:
        docs = read_documents(paths, fmt=d.format, log=rlog, min_tweets=d.min_tweets, fix_swapped=d.fix_swapped,
                              columns=d.columns or None)
        # Labels first: users that data.outside_us drops must not count in the dev and test shares
        # (with 8 US users among 92 foreign ones, a 15 % carve was taken of 100 and could leave no dev user).
        labelled = add_labels(docs, outside_us=d.outside_us, log=rlog, fix_swapped=d.fix_swapped)
        docs, label_stats = labelled if isinstance(labelled, tuple) else (labelled, {})
        docs = assign_splits(
            docs, d.split, seed=d.seed, dev_fraction=d.dev_fraction, test_fraction=d.test_fraction,
            carve_from=tuple(d.carve_from), dev_label=d.carve_label, log=rlog,
        )
    if docs.empty:
        raise DataError(f"no usable users in {', '.join(paths)} after cleaning; see the skip counts: {rlog.to_dict()['skipped_by_reason']}")
    out.mkdir(parents=True, exist_ok=True)
    # Written beside, then renamed: an interrupted prepare must not leave a half-written table that a
    # later `train` reads as the documents (streamed to disk, not built in memory: it can be large).
    tmp = out / f".{DOCUMENTS}.tmp"
    try:
        docs.reset_index(drop=True).to_parquet(tmp, index=False)
        os.replace(tmp, out / DOCUMENTS)
    finally:
        tmp.unlink(missing_ok=True)
    counts = {
        "users": int(len(docs)),
        "tweets": int(docs["n_tweets"].sum()),
        "by_split": {str(k): int(v) for k, v in docs["split"].value_counts().items()},
        "with_state": int((docs["state"] != "").sum()),
        "states": int(docs.loc[docs["state"] != "", "state"].nunique()),
    }
    # The resolved config records the inputs actually read (--input overrides data.inputs), as
    # absolute paths, so `geoae prepare -c DATA/config.json` repeats this run from any directory.
    run_cfg = copy.deepcopy(cfg)
    run_cfg.data.inputs = [str(Path(p).resolve()) for p in paths]
    write_run_files(out, run_cfg, {
        "stage": "prepare",
        "inputs": [file_record(p) for p in paths],
        "counts": counts,
        "labels": label_stats,
        "bad_records": rlog.to_dict(),
        "wall_seconds": round(t.seconds, 3),
    })
    log.info("prepared %s (%s) in %.1fs; %s", plural(len(docs), "user"), counts["by_split"], t.seconds,
             plural(rlog.total, "bad record"))
    dropped = rlog.dropped
    if dropped:  # a warning, so -q still says it
        log.warning("%s dropped %s (examples in %s)", plural(sum(dropped.values()), "bad record"), dict(dropped),
                    out / "manifest.json")
    return docs


def documents_path(data_dir: str | Path) -> Path:
    """``documents.parquet`` of a prepared directory (or the file itself if given one)."""
    d = Path(data_dir)
    return d / DOCUMENTS if d.is_dir() or not d.suffix else d


def load_documents(data_dir: str | Path) -> pd.DataFrame:
    """Read the table ``geoae prepare`` wrote, checking it is readable and has the expected columns."""
    p = documents_path(data_dir)
    if not p.is_file():
        run_data = Path(data_dir) / "data"
        if (run_data / DOCUMENTS).is_file():  # a run directory of `geoae demo` or `geoae benchmark`
            raise DataError(f"{p} not found; did you mean --data {run_data}? (`geoae demo` and `geoae benchmark` "
                            "write the prepared documents to RUN/data)")
        raise DataError(f"{p} not found: run `geoae prepare` first (or point --data at its output directory)")
    try:
        docs = pd.read_parquet(p)
    except Exception as e:  # pyarrow raises many kinds
        raise DataError(f"{p}: cannot read parquet ({e}); rerun `geoae prepare`") from e
    # Before any column is looked up: with a name twice, or columns of several levels, ``docs[name]`` is a
    # table, not a column (an AttributeError deep in the checks below).
    if isinstance(docs.columns, pd.MultiIndex):
        raise DataError(f"{p}: the table's columns have {docs.columns.nlevels} levels of names (first: "
                        f"{docs.columns[0]!r}); prepare writes one name per column: rerun `geoae prepare`")
    if docs.columns.duplicated().any():
        dup = sorted({str(c) for c in docs.columns[docs.columns.duplicated()]})
        raise DataError(f"{p}: column names occur more than once ({', '.join(map(repr, dup))}); prepare writes "
                        "each once: fix the file or rerun `geoae prepare`")
    missing = [c for c in ("user_id", "text", "lat", "lon", "split", "state") if c not in docs.columns]
    if missing:
        raise DataError(f"{p}: missing columns {missing} (have {list(docs.columns)}); rerun `geoae prepare`")
    docs["user_id"] = docs["user_id"].astype(str)
    _check_documents(docs, p)
    return docs


def _check_documents(docs: pd.DataFrame, p: Path) -> None:
    """Refuse a documents table ``geoae prepare`` cannot have written (edited by hand, or by another
    tool): text/split/state not strings, coordinates not numbers or off the globe, a user twice.
    Missing split and state (None/NaN) read as "" (no split, no state), as prepare writes them."""
    again = "fix the file or rerun `geoae prepare`"
    for c in ("text", "split", "state"):
        col = docs[c]
        given = col[col.notna()]
        # infer_dtype settles the usual all-text column in C; only a mixed one is looked at per value
        text = pd.api.types.infer_dtype(given, skipna=False) in ("string", "empty")
        not_str = None if text else ~given.map(lambda v: isinstance(v, str)).astype(bool)
        if not_str is not None and not_str.any():
            i = not_str.to_numpy().nonzero()[0][0]
            raise DataError(f"{p}: column {c!r} must hold strings; {int(not_str.sum())} rows do not (first: user "
                            f"{docs['user_id'][given.index[i]]!r} has {type(given.iloc[i]).__name__} {given.iloc[i]}); {again}")
        if c != "text" and len(given) < len(col):
            docs[c] = col.fillna("")
    # Only the 50 states + DC (USPS codes) are labels, "" none: anything else would become a class of its
    # own, trained for nothing (the model could not be saved), or a state no model predicts.
    bad = ~docs["state"].isin(STATE_VALUES).to_numpy()
    if bad.any():
        i = bad.nonzero()[0][0]
        raise DataError(f"{p}: column 'state' has {int(bad.sum())} values that are not a state code (the USPS code "
                        f"of one of the 50 states or DC, e.g. 'CA', or '' for none; first: user "
                        f"{docs['user_id'].iloc[i]!r} has {docs['state'].iloc[i]!r}); {again}")
    for c, lim, what in (("lat", 90.0, "latitude"), ("lon", 180.0, "longitude")):
        col = docs[c]
        if not pd.api.types.is_numeric_dtype(col) or pd.api.types.is_bool_dtype(col):
            raise DataError(f"{p}: column {c!r} must be numeric (NaN = unknown), got dtype {col.dtype}; {again}")
        v = col.to_numpy(dtype=np.float64, na_value=np.nan)
        if col.dtype != np.float64:  # e.g. nullable Float64 with <NA>: the float64 the training code reads
            docs[c] = v
        bad = ~np.isnan(v) & ~(np.abs(v) <= lim)
        if bad.any():
            i = bad.nonzero()[0][0]
            raise DataError(f"{p}: column {c!r} has {int(bad.sum())} values that are not a {what} in "
                            f"[-{lim:g}, {lim:g}] nor NaN (first: user {docs['user_id'].iloc[i]!r} has {v[i]}); {again}")
    lat_nan, lon_nan = docs["lat"].isna().to_numpy(), docs["lon"].isna().to_numpy()
    bad = lat_nan != lon_nan
    if bad.any():
        raise DataError(f"{p}: {int(bad.sum())} users have only one of lat and lon (both, or neither: NaN NaN); "
                        f"first: user {docs['user_id'].iloc[bad.nonzero()[0][0]]!r}; {again}")
    dup = docs["user_id"].duplicated()
    if dup.any():
        raise DataError(f"{p}: {int(dup.sum())} user_ids occur more than once (first: "
                        f"{docs['user_id'][dup].iloc[0]!r}); prepare writes one document per "
                        f"user; {again}")


# --------------------------------------------------------------------------- train


def _targets(docs: pd.DataFrame, classes: list[str]) -> tuple[np.ndarray, np.ndarray]:
    index = {c: i for i, c in enumerate(classes)}
    state = docs["state"].map(index).fillna(-1).astype(np.int64).to_numpy()
    coords = docs[["lat", "lon"]].to_numpy(dtype=np.float32)
    return state, coords


def _fingerprint(X, state: np.ndarray, coords: np.ndarray) -> str:
    """sha256 of the training matrix and targets: ties checkpoints to the data they were trained on."""
    import hashlib

    h = hashlib.sha256()
    if sp.issparse(X):
        X = X.tocsr()
        for a in (X.indptr, X.indices, X.data):
            h.update(np.ascontiguousarray(a).tobytes())
    else:
        h.update(np.ascontiguousarray(X).tobytes())
    h.update(np.ascontiguousarray(state).tobytes())
    h.update(np.ascontiguousarray(coords).tobytes())
    return h.hexdigest()


def state_points(train: pd.DataFrame, classes: list[str]) -> np.ndarray:
    """Median training coordinate of each state class (the protocol's point for a class prediction)."""
    pts = np.zeros((len(classes), 2))
    for i, c in enumerate(classes):
        g = train[train["state"] == c]
        pts[i] = median_point(g["lat"].to_numpy(), g["lon"].to_numpy())
    return pts


def _location_model(users: pd.DataFrame, classes: list[str], cfg: Config) -> LocationRisk:
    """Where the labelled users live, per class, for the location point (``geo.LocationRisk``)."""
    return LocationRisk(cap_km=cfg.finetune.bayes_cap_km).fit(users["lat"], users["lon"], users["state"], classes)


def _start_member(k: int, cfg: Config, n_features: int, n_classes: int, scaler: tuple, pretrained: dict | None,
                  device) -> tuple[GeoSDAE, dict]:
    """Ensemble member ``k`` at its starting point, and its generators.

    Seeding comes first, so without pretraining member ``k`` always starts from the same
    random initialisation (the selection pass and the refit share it).
    """
    gens = make_generators(cfg.train.seed + 1 + 7919 * k, device)
    member = GeoSDAE(n_features, n_classes, cfg.model).to(device)
    member.set_coord_scaler(torch.tensor(scaler[0]), torch.tensor(scaler[1]))
    if pretrained is not None:
        member.load_state_dict(pretrained)
    return member, gens


def _matching_checkpoint(d: Path, tag: dict, resume: bool) -> tuple[dict, dict] | None:
    """The checkpoint in ``d`` if resuming and it was made with ``tag`` (config, data, start weights)."""
    state = load_checkpoint(d) if resume else None
    if state is not None and any(state[0]["position"].get(a) != b for a, b in tag.items()):
        log.warning("checkpoint in %s was made from other pretrained weights, data or config; it starts afresh", d)
        return None
    return state


def _refit(cfg: Config, tr: pd.DataFrame, dv: pd.DataFrame, train_set: TrainingSet, dev_set: TrainingSet,
           classes: list[str], results: list[dict], pretrained: dict | None, scaler: tuple, device,
           ckpt: Path, member_tag: dict, resume: bool, on_epoch_end,
           resumed_from: list[str]) -> tuple[GeoSDAEEnsemble, np.ndarray, dict]:
    """Fine-tune every member again on train + dev for the epochs early stopping chose for it.

    Same starting weights (the pretrained stack) and the same seeds as the selection pass,
    so the only change is the extra labelled users. State points are recomputed over
    train + dev; the class list stays the training one (a dev-only state has no class).
    The name of each refit checkpoint continued from is appended to ``resumed_from``.
    """
    import dataclasses

    X = sp.vstack([train_set.X, dev_set.X]).tocsr() if sp.issparse(train_set.X) else np.vstack([train_set.X, dev_set.X])
    full = TrainingSet(X, np.concatenate([train_set.state, dev_set.state]),
                       np.concatenate([train_set.coords, dev_set.coords]))
    tag = {**member_tag, "refit_data": _fingerprint(full.X, full.state, full.coords)}
    points = state_points(pd.concat([tr, dv], ignore_index=True), classes)
    members, epochs = [], []
    for k, r in enumerate(results):
        n_ep = max(int(r["best_epoch"]), 1)
        rcfg = dataclasses.replace(cfg, finetune=dataclasses.replace(cfg.finetune, epochs=n_ep))
        member, gens = _start_member(k, cfg, X.shape[1], len(classes), scaler, pretrained, device)
        rdir, rtag = ckpt / f"refit{k}", {**tag, "epochs": n_ep}
        hook = (lambda st, _layer, ep, k=k: on_epoch_end("refit", k, ep)) if on_epoch_end else None
        rstate = _matching_checkpoint(rdir, rtag, resume)
        if rstate is not None:
            resumed_from.append(rdir.name)
        finetune(member, full, None, rcfg, device=device, gens=gens, ckpt_dir=rdir, class_points=points,
                 resume=rstate, on_epoch_end=hook, ckpt_tag=rtag, fixed_epochs=True)
        members.append(member)
        epochs.append(n_ep)
    log.info("refit %s on %d train + dev users for %s epochs", plural(len(members), "member"), len(full), epochs)
    return GeoSDAEEnsemble(members).eval(), points, {"users": int(len(full)), "epochs": epochs}


def _check_out_dir(out: Path, data_dir: str | Path) -> None:
    """Refuse a run directory that is a file, or the prepared data directory itself (train's
    config.json and manifest.json would replace the ones prepare wrote there)."""
    check_writable(out, "--out", directory=True)
    data = documents_path(data_dir).parent
    if out.exists() and data.exists() and out.resolve() == data.resolve():
        raise GeoaeError(f"--out {out} is the data directory: train would overwrite the config.json and "
                         "manifest.json that `geoae prepare` wrote there; give another run directory")


def check_dev_splits(cfg: Config) -> None:
    """Refuse dev splits that are also training splits: early stopping would select on the training
    users themselves (and the refit count them twice). Checked by training, not in config validation:
    a model trained so by an earlier version must still load."""
    both = sorted(set(cfg.data.train_splits) & set(cfg.data.dev_splits))
    if both:
        raise ConfigError(f"data.dev_splits: {both} also in data.train_splits; the dev users choose the epoch "
                          "and the point kind, so they must be users the model is not trained on")


def train(
    cfg: Config,
    data_dir: str | Path,
    out_dir: str | Path,
    *,
    stage: str = "all",
    resume: bool = True,
    on_epoch_end: Callable[[str, int, int], None] | None = None,
) -> Path:
    """Train the model on prepared documents; returns the artifact directory.

    ``stage``: ``pretrain`` stops after greedy pretraining (checkpoint kept),
    ``finetune`` continues from that checkpoint, ``all`` does both. With
    ``resume`` a checkpoint in ``out_dir/checkpoint`` from the same config is
    continued; otherwise training starts afresh. The run's manifest.json records under
    ``resumed_from`` the checkpoints really continued from (``checkpoint``, ``member0``,
    ``refit0``, ...): empty when none was, even with ``resume`` (none there, or each one made
    with another config or data, which starts afresh).
    """
    from geoae.features import make_featurizer

    if stage not in ("pretrain", "finetune", "all"):
        raise GeoaeError(f"--stage must be pretrain, finetune or all; got {stage!r}")
    if stage == "finetune" and not resume and cfg.pretrain.epochs > 0:
        # Starting afresh deletes the pretraining checkpoint too, the very one this stage continues from.
        raise GeoaeError("--no-resume starts the whole run afresh, pretraining included, so it cannot go with "
                         "--stage finetune, which continues from the pretraining checkpoint: use --stage all "
                         "--no-resume to start over, or delete the checkpoint/member* (and refit*) directories "
                         "to fine-tune again from the same pretraining")
    check_dev_splits(cfg)
    out = Path(out_dir)
    ckpt = out / "checkpoint"
    t0 = time.perf_counter()
    _check_out_dir(out, data_dir)
    if cfg.train.threads:
        cpus = available_cpus()
        if cfg.train.threads > cpus:  # torch would start them all (a huge number exhausts memory)
            raise GeoaeError(f"train.threads: {cfg.train.threads} is more than the {cpus} CPUs available here; "
                             f"give at most {cpus}, or 0 for torch's default")
        torch.set_num_threads(cfg.train.threads)
    device = resolve_device(cfg.train.device)
    docs = load_documents(data_dir)
    data_record = file_record(documents_path(data_dir))  # provenance of both the pretrain and the final manifest
    d = cfg.data
    tr = docs[docs["split"].isin(d.train_splits)].reset_index(drop=True)
    dv = docs[docs["split"].isin(d.dev_splits)].reset_index(drop=True)
    if tr.empty:
        raise DataError(f"no training users: no document has split in {d.train_splits} (splits present: {sorted(docs['split'].unique())})")
    classes = sorted(s for s in tr["state"].unique() if s)
    if not classes:
        raise DataError("no training user has a US state label; check coordinates and data.outside_us")
    located = tr["lat"].notna() & tr["lon"].notna()
    if not located.any():
        raise DataError("no training user has valid coordinates")
    pointless = sorted(set(classes) - set(tr.loc[located, "state"]))
    if pointless:  # their state point would be NaN: NaN predictions wherever the model picks them
        raise DataError(f"no training user in state(s) {pointless} has coordinates, so they have no state point; "
                        "a state comes from the coordinates in `geoae prepare`: fix the documents or prepare again")
    log.info("train users %d, dev users %d, %d states, device %s", len(tr), len(dv), len(classes), device)
    if len(classes) == 1:  # a warning, so -q still says it: the state head has nothing to choose between
        log.warning("every labelled training user is in %s (%s): the state head can only ever "
                    "predict %s and the state points are that one state's; train on users from several states",
                    classes[0], plural(len(tr), "training user"), classes[0])

    timings: dict[str, float] = {}
    # Unlabelled users (data.unlabelled_splits): text only, for the unsupervised steps. Their
    # labels and coordinates are dropped here so nothing downstream can touch them.
    ul = docs.loc[docs["split"].isin(d.unlabelled_splits), ["user_id", "text"]]  # empty when none are named
    if d.unlabelled_splits:
        missing = sorted(set(d.unlabelled_splits) - set(docs["split"].unique()))
        if missing:
            raise DataError(f"data.unlabelled_splits: no document has split {missing} (splits present: "
                            f"{sorted(docs['split'].unique())})")
        evaluated = sorted(set(d.unlabelled_splits) & set(d.dev_splits + d.test_splits))
        log.info("unlabelled text for the unsupervised steps: %d users from %s%s", len(ul), d.unlabelled_splits,
                 f" (transductive: {evaluated} are also evaluated; only their text is used)" if evaluated else "")
    out.mkdir(parents=True, exist_ok=True)  # only now: a run refused above leaves no empty directory behind
    with Timer() as t:
        # Users in both train and unlabelled splits are counted once.
        extra = ul[~ul["user_id"].isin(tr["user_id"])]
        # Labels only matter to features.select=igr; unlabelled users count for the vocabulary and idf.
        featurizer = make_featurizer(cfg.features).fit(tr["text"].tolist() + extra["text"].tolist(),
                                                       tr["state"].fillna("").tolist() + [""] * len(extra))
        X_tr = featurizer.transform(tr["text"].tolist())
        X_dv = featurizer.transform(dv["text"].tolist()) if len(dv) else None
        X_ul = featurizer.transform(extra["text"].tolist()) if len(extra) else None
    timings["features_s"] = round(t.seconds, 3)
    train_set = TrainingSet(X_tr, *_targets(tr, classes))
    dev_set = TrainingSet(X_dv, *_targets(dv, classes)) if X_dv is not None else None
    ok = ~np.isnan(train_set.coords[:, 0])
    if not ok.any():
        raise DataError("no training user has valid coordinates")
    mean = train_set.coords[ok].mean(0)
    std = train_set.coords[ok].std(0)
    center = median_point(train_set.coords[ok, 0], train_set.coords[ok, 1])
    ref_median = None
    if dev_set is not None:
        okd = ~np.isnan(dev_set.coords[:, 0])
        if okd.any():
            ref_median = float(np.median(haversine_km(center[0], center[1], dev_set.coords[okd, 0], dev_set.coords[okd, 1])))

    class_points = state_points(tr, classes)
    gens = make_generators(cfg.train.seed, device)
    model = GeoSDAE(X_tr.shape[1], len(classes), cfg.model).to(device)
    model.set_coord_scaler(torch.tensor(mean), torch.tensor(std))
    # What a checkpoint must match to be resumed: the training config and the training data
    # (the data section of the config only names files; the features are what was trained on).
    config_json = json.dumps({k: v for k, v in cfg.to_dict().items() if k != "data"}, sort_keys=True)
    config_key = config_json + ":" + _fingerprint(X_tr, train_set.state, train_set.coords)
    X_pre = X_tr
    if X_ul is not None:
        X_pre = sp.vstack([X_tr, X_ul]).tocsr() if sp.issparse(X_tr) else np.vstack([X_tr, X_ul])
        config_key += ":unlabelled:" + _fingerprint(X_ul, np.zeros(0, np.int64), np.zeros((0, 2), np.float32))

    state = load_checkpoint(ckpt) if resume else None
    if state is not None and state[0]["position"].get("config") != config_key:
        if stage == "finetune":
            # Starting afresh cannot help here (this stage does not pretrain), and "pretraining is
            # not complete" would hide the reason.
            raise GeoaeError(f"the pretraining checkpoint in {ckpt} was made with another config or other training "
                             "data (every setting except data.* is part of a checkpoint's key, fine-tuning ones "
                             "included): fine-tune with the config it was pretrained with, or rerun "
                             "`geoae train --stage pretrain` with this one")
        stored = state[0]["position"].get("config")
        why = ("other training data (same config)" if isinstance(stored, str) and stored.startswith(config_json + ":")
               else "another config")
        log.warning("checkpoint in %s was made with %s; starting afresh", ckpt, why)
        # Deleted, not just ignored: with pretrain.epochs=0 nothing overwrites it, and it was read
        # back below as the pretrained stack of a run that asked for none.
        clear_checkpoint(ckpt)
        state = None
    # The checkpoints this run really continues from, for its manifest (a caller such as the
    # benchmark cannot tell from ``resume`` alone: a checkpoint of another config starts afresh).
    resumed_from = [ckpt.name] if state is not None else []
    if not resume:
        # Start afresh means the whole run: pretraining and every ensemble member.
        clear_checkpoint(ckpt)
        for mdir in [*ckpt.glob("member*"), *ckpt.glob("refit*")]:
            clear_checkpoint(mdir)
    # The run's own checkpoint is only ever written by pretraining (members have their own): a
    # hand-edited stage or position is refused here, before anything is skipped because of it.
    pos = (check_position(state[0]["position"], ckpt, stage="pretrain", layers=len(cfg.model.hidden),
                          epochs=cfg.pretrain.epochs) if state else {"stage": "pretrain", "layer": 0, "epoch": 0})
    if stage == "finetune" and pos["stage"] == "pretrain" and cfg.pretrain.epochs > 0 and pos["layer"] < len(cfg.model.hidden):
        raise GeoaeError(f"pretraining is not complete in {out} (run `geoae train --stage pretrain` first)")

    # Every checkpoint carries the config it was made with, so a resumed run cannot mix settings.
    tag = {"config": config_key}
    with Timer() as t:
        if pos["stage"] == "pretrain" and stage in ("pretrain", "all"):
            pt_hist = pretrain(model, X_pre, cfg, device=device, gens=gens, ckpt_dir=ckpt,
                               resume=state if state and pos["stage"] == "pretrain" else None,
                               on_epoch_end=on_epoch_end, ckpt_tag=tag)
            state = load_checkpoint(ckpt)
            pos = state[0]["position"] if state else {"stage": "pretrain", "layer": len(cfg.model.hidden), "epoch": 0}
        else:
            pt_hist = list(pos.get("history", []))
    timings["pretrain_s"] = round(t.seconds, 3)
    if stage == "pretrain":
        write_run_files(out, cfg, {"stage": "train:pretrain", "data": str(data_dir), "inputs": [data_record],
                                   "timings": timings, "pretrain_history": pt_hist, "resumed_from": resumed_from})
        log.info("pretraining done in %.1fs; continue with --stage finetune", t.seconds)
        return out
    # Fine-tune ``finetune.ensemble`` members, each from the pretrained weights (or, without
    # pretraining, its own seeded initialisation), each with its own checkpoint directory.
    if state is not None:
        restore(state[0], state[1], model, None, gens, ckpt_dir=ckpt)
    pretrained = {k: v.detach().clone() for k, v in model.state_dict().items()} if state is not None else None
    # A member checkpoint is only valid for the pretrained weights it started from, and for the dev
    # users it was early-stopped on (data.dev_splits is outside the config key).
    member_tag = {**tag, "pretrained": state[0]["tensors_sha256"] if state is not None else "none",
                  "dev_data": _fingerprint(dev_set.X, dev_set.state, dev_set.coords) if dev_set is not None else "none"}
    members, results = [], []
    with Timer() as t:
        for k in range(cfg.finetune.ensemble):
            member, mgens = _start_member(k, cfg, X_tr.shape[1], len(classes), (mean, std), pretrained, device)
            mdir = ckpt / f"member{k}"
            mstate = _matching_checkpoint(mdir, member_tag, resume)
            if mstate is not None:
                resumed_from.append(mdir.name)
            hook = (lambda st, _layer, ep, k=k: on_epoch_end(st, k, ep)) if on_epoch_end else None
            results.append(finetune(member, train_set, dev_set, cfg, device=device, gens=mgens, ref_median_km=ref_median,
                                    class_points=class_points, ckpt_dir=mdir, resume=mstate, on_epoch_end=hook,
                                    ckpt_tag=member_tag))
            members.append(member)
    timings["finetune_s"] = round(t.seconds, 3)
    ensemble = GeoSDAEEnsemble(members).eval()
    location = _location_model(tr, classes, cfg)
    # Validation metrics of the early-stopped ensemble: the refit below sees the dev users.
    dev_metrics = (score(ensemble, dev_set, device, ref_median, class_points, cfg.finetune, location)
                   if dev_set is not None else {})
    refit_meta = None
    if cfg.finetune.refit and dev_set is None:  # a warning, so -q still says the setting did nothing
        log.warning("finetune.refit: there are no dev users to refit on (data.dev_splits %s has none); the "
                    "members trained on the training users alone are kept", d.dev_splits)
    if cfg.finetune.refit and dev_set is not None and len(dev_set):
        with Timer() as t:
            ensemble, class_points, refit_meta = _refit(cfg, tr, dv, train_set, dev_set, classes, results, pretrained,
                                                        (mean, std), device, ckpt, member_tag, resume, on_epoch_end,
                                                        resumed_from)
            location = _location_model(pd.concat([tr, dv], ignore_index=True), classes, cfg)
        timings["refit_s"] = round(t.seconds, 3)

    timings["total_s"] = round(time.perf_counter() - t0, 3)
    point = cfg.finetune.point
    if point == "auto":
        # The point kind with the lowest median error on the validation users (never on test).
        point = dev_metrics.get("best_point")
        if point is None:
            # Nothing to choose on. The state-median point needs no validation and is far more robust
            # than the regression head's (GeoText test: Acc@161 36.3 against 5.4 %, BENCHMARKS.md).
            point = "state_median"
            log.warning("finetune.point=auto: no validation user with coordinates to choose the point kind on; "
                        "using the state-median point (set finetune.point to choose another)")
    meta = {
        "point": point,
        "train_users": int(len(tr)),
        "dev_users": int(len(dv)),
        "unlabelled_users": int(0 if X_ul is None else X_ul.shape[0]),
        "unlabelled_splits": list(d.unlabelled_splits),
        "data_dir": str(data_dir),
        "data_sha256": data_record["sha256"],  # lets `geoae evaluate` tell whether it scores the model's own data
        "members": len(members),
        "refit": refit_meta,
        "best_epochs": [r["best_epoch"] for r in results],
        "dev_metrics": dev_metrics,
        "member_dev_metrics": [r["best"] for r in results],
        "select_metric": results[0]["select_metric"],
        "device": str(device),
        "timings": timings,
        "train_median_point": [float(center[0]), float(center[1])],
    }
    art = Artifact(config=cfg, model=ensemble.cpu(), featurizer=featurizer, classes=classes,
                   state_points=class_points, meta=meta, location=location)
    model_dir = out / "model"
    save_artifact(model_dir, art)
    write_json(out / "history.json", {"pretrain": pt_hist, "finetune": [r["history"] for r in results]})
    # Not in meta: a resumed model is the same model as an uninterrupted one; only the run differs.
    write_run_files(out, cfg, {"stage": "train", **meta, "inputs": [data_record],
                               "data_manifest": str(Path(data_dir) / "manifest.json"), "resumed_from": resumed_from})
    log.info("trained in %.1fs; best epochs %s; dev %s", timings["total_s"], meta["best_epochs"], dev_metrics)
    return model_dir


# --------------------------------------------------------------------------- CLI


def cli_config(args: argparse.Namespace) -> Config:
    """The config a command runs with: ``-c/--config`` if given, else the packaged default (the same
    settings as ``configs/default.yaml``), plus the ``--set`` overrides; says which at INFO."""
    path = args.config or DEFAULT_CONFIG
    cfg = load_config(path, args.set)
    what = str(path) if args.config else f"the default config {path} (same as configs/default.yaml; -c to choose another)"
    log.info("config: %s%s", what, "".join(f" --set {s}" for s in args.set))
    log.debug("resolved config: %s", cfg.to_json())
    return cfg


# The data.* settings that shape what ``prepare`` writes. ``train`` only records them (in its
# config.json and the artifact), so they must be those the data was prepared with. Not here:
# how the inputs are read, data.inputs, format, columns and on_bad_record (prepare's -i, --format,
# --columns and --on-bad-record override them), and the *_splits lists, which train itself reads.
PREPARE_KEYS = ("split", "dev_fraction", "test_fraction", "carve_from", "carve_label", "fix_swapped",
                "outside_us", "min_tweets", "seed")


def _acting_prepare_keys(d: dict) -> set[str]:
    """The PREPARE_KEYS that change what ``prepare`` writes under the data settings ``d``: the seed
    and the carve-out settings do nothing when no users are drawn at random (the ``random`` rule
    ignores ``carve_*``; the other rules use them, and the seed, only to carve fractions)."""
    keys = set(PREPARE_KEYS)
    if d.get("split") == "random":
        return keys - {"carve_from", "carve_label"}
    if not (d.get("dev_fraction") or d.get("test_fraction")):
        keys -= {"seed", "carve_from", "carve_label"}
    return keys


def check_prepared_with(cfg: Config, data_dir: str | Path, label: str) -> None:
    """Refuse to train with data.* settings other than those ``data_dir`` was prepared with.

    ``label`` names the config in the message. A data directory without a readable
    ``config.json`` (older, or hand-made) is not checked.
    """
    docs = documents_path(data_dir)
    saved = docs.parent / "config.json"
    try:
        prepared = json.loads(saved.read_text(encoding="utf-8")).get("data") or {}
        if not isinstance(prepared, dict):  # hand-edited: as unreadable (it was an AttributeError below)
            raise ValueError("data is not a mapping")
    # ValueError: bad JSON or UTF-8, integers too long to read; RecursionError: nesting too deep to read
    except (OSError, ValueError, AttributeError, RecursionError):
        if docs.is_file() and docs.suffix == ".parquet":  # anything else: load_documents says what is wrong
            log.warning("%s: unreadable or absent, so the data settings of %s cannot be checked against this "
                        "config's", saved, data_dir)
        return
    mine = cfg.to_dict()["data"]
    acting = _acting_prepare_keys(prepared) | _acting_prepare_keys(mine)
    diff = [f"data.{k}: {json.dumps(prepared[k])} there, {json.dumps(mine[k])} here"
            for k in PREPARE_KEYS if k in acting and k in prepared and prepared[k] != mine[k]]
    if diff:
        raise GeoaeError(
            f"{data_dir} was prepared with other data settings than {label} ({'; '.join(diff)}); these act in "
            f"`geoae prepare`, so train with the config the data was prepared with (the same -c/--set as "
            f"prepare, or -c {saved}), or prepare the data again with this one")


def _config_label(args: argparse.Namespace) -> str:
    return (args.config or "the default config") + "".join(f" --set {s}" for s in args.set)


def _cmd_prepare(args: argparse.Namespace) -> int:
    cfg = cli_config(args)
    if args.on_bad_record:
        cfg.data.on_bad_record = args.on_bad_record
    if args.format:
        cfg.data.format = args.format
    if args.columns is not None:
        from geoae.tweets import parse_columns

        cfg.data.columns = parse_columns(args.columns)
    docs = prepare(cfg, args.out, args.input)
    print(f"prepared {len(docs)} users -> {Path(args.out) / DOCUMENTS}")
    print("users by split:", json.dumps(docs["split"].value_counts().to_dict()))
    bad = json.loads((Path(args.out) / "manifest.json").read_text())["bad_records"]
    print(f"bad records: {bad['skipped_total']} {breakdown(bad)} (examples in manifest.json)")
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    cfg = cli_config(args)
    check_prepared_with(cfg, args.data, _config_label(args))
    model_dir = train(cfg, args.data, args.out, stage=args.stage, resume=not args.no_resume)
    if args.stage == "pretrain" and cfg.pretrain.epochs == 0:  # no checkpoint was written
        print("nothing to pretrain (pretrain.epochs is 0); continue with --stage finetune")
    elif args.stage == "pretrain":
        print(f"pretrained checkpoint: {Path(args.out) / 'checkpoint'} (continue with --stage finetune)")
    else:
        print(f"model: {model_dir}")
    man = json.loads((Path(args.out) / "manifest.json").read_text())
    if man.get("dev_metrics"):
        dm = man["dev_metrics"]
        print(f"dev ({plural(len(man.get('best_epochs', [])), 'member')}, point {man.get('point')}): "
              + ", ".join(f"{k} {dm[k]:.4g}" for k in ("state_acc", "median_km", "mean_km", "acc161") if k in dm)
              + " (full metrics in manifest.json)")
    print("timings:", json.dumps(man.get("timings")))
    return 0


# Below this the synthetic corpus has a handful of dev and test users at most: the run works but
# its metrics mean nothing (3 is the hard floor of the default config).
DEMO_MIN_USERS = 20


def _cmd_demo(args: argparse.Namespace) -> int:
    """Generate the embedded synthetic corpus, then prepare, train and evaluate end to end."""
    from geoae.synthetic import write_twitter_jsonl

    # Everything the user gave is checked before anything is written.
    if args.users < DEMO_MIN_USERS:
        raise GeoaeError(f"--users must be at least {DEMO_MIN_USERS} (enough for train, dev and test users); "
                         f"got {args.users}")
    cfg = cli_config(args)
    if cfg.data.split != "random":
        raise GeoaeError(f"the demo corpus has no split of its own, so it needs data.split: random; "
                         f"{_config_label(args)} has {cfg.data.split!r}")
    if cfg.data.test_splits[:1] != ["test"] or round(args.users * cfg.data.test_fraction) < 1:
        raise GeoaeError(f"the demo evaluates on the random split's test users: it needs data.test_splits to start "
                         f"with test and --users x data.test_fraction >= 1 (got {cfg.data.test_splits} and "
                         f"{args.users} x {cfg.data.test_fraction} in {_config_label(args)})")
    check_dev_splits(cfg)  # train's own check, else only after the corpus is written and prepared
    out = check_writable(args.out, "--out", directory=True)
    corpus = out / "corpus" / "tweets.jsonl.gz"
    write_twitter_jsonl(corpus, n_users=args.users, seed=0)
    cfg.data.inputs = [str(corpus)]
    prepare(cfg, out / "data")
    model_dir = train(cfg, out / "data", out / "train")
    print(f"model: {model_dir}")
    from geoae.evaluate import print_summary, run_evaluate

    print_summary(run_evaluate(model_dir, out / "data", out / "report", split=cfg.data.test_splits[0]))
    return 0


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", "-c", metavar="FILE",
                   help="YAML/JSON config (see configs/); default: the packaged default, the same settings as "
                        "configs/default.yaml (the synthetic demo corpus), whatever the working directory")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, repeatable, the value read as YAML, e.g. "
                        "--set finetune.epochs=20 --set 'model.hidden=[512,256,128]' (a new layer count also needs "
                        "model.noise with one entry per layer)")


def add_cli(sub) -> None:
    p = sub.add_parser("prepare", help="tweets -> labelled user documents (documents.parquet)")
    _common(p)
    p.add_argument("--input", "-i", nargs="+", help="input files (override data.inputs)")
    p.add_argument("--format", help="auto, geotext, rahimi, twitter_json, csv, tsv, parquet (default: data.format)")
    p.add_argument("--on-bad-record", choices=("skip", "fail"),
                   help="skip (count) or fail on the first bad record (default: data.on_bad_record)")
    p.add_argument("--columns", metavar="NAME=COLUMN[,...]",
                   help="CSV/TSV/Parquet: which of the file's columns hold what, e.g. author_id=user_id,tweet=text "
                        "(override data.columns); without either the header must use geoae's names")
    p.add_argument("--out", "-o", required=True, help="output directory")
    p.set_defaults(func=_cmd_prepare)

    p = sub.add_parser(
        "train", help="pretrain the SDAE and fine-tune the joint heads",
        description="Pretrain the SDAE and fine-tune the joint heads on a `geoae prepare` output. The config is "
                    "-c/--set (default: the packaged default, as configs/default.yaml), not the one saved in the "
                    "data directory; its data.* settings that act in prepare (split, fractions, carve, outside_us, "
                    "min_tweets, seed, fix_swapped) must equal those the data was prepared with, else it is an "
                    "error: pass the same -c/--set as to prepare (or -c DATA/config.json).")
    _common(p)
    p.add_argument("--data", "-d", required=True, help="directory written by `geoae prepare`")
    p.add_argument("--out", "-o", required=True, help="run directory (model/ and checkpoint/ go here)")
    p.add_argument("--stage", choices=("pretrain", "finetune", "all"), default="all",
                   help="pretrain: stop after greedy pretraining (checkpoint kept); finetune: continue from that "
                        "checkpoint; all: both (default: %(default)s)")
    p.add_argument("--no-resume", action="store_true",
                   help="start afresh: an existing checkpoint in --out (pretraining and every member) is deleted, "
                        "not only ignored; not with --stage finetune, which continues from the pretraining")
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("demo", help="generate a small synthetic corpus and run prepare, train and evaluate on it")
    _common(p)
    p.add_argument("--out", "-o", default="runs/demo",
                   help="run directory: corpus/, data/, train/ and report/ go here (default: %(default)s)")
    p.add_argument("--users", type=int, default=800,
                   help=f"synthetic users to generate, at least {DEMO_MIN_USERS} (default: %(default)s)")
    p.set_defaults(func=_cmd_demo)
