"""The model artifact: exact round trip, refusal of damaged directories, no pickle, crash-safe saves."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import save as st_save

import geoae
import geoae.artifact as artifact_mod
from geoae.artifact import INDEX, load_artifact, save_artifact
from geoae.errors import ArtifactError
from geoae.pipeline import load_documents
from geoae.predict import Predictor
from geoae.sdae import GeoSDAE
from tests.tiny_run import killed_on_call, prepared_data, refused, tiny_config, trained_model


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    return trained_model(tmp_path_factory)


@pytest.fixture(scope="module")
def docs(tmp_path_factory) -> pd.DataFrame:
    d = load_documents(prepared_data(tmp_path_factory))
    return d[["user_id", "text", "n_tweets"]]


@pytest.fixture
def model_dir(trained, tmp_path) -> Path:
    """A private copy of the trained model directory, free to damage."""
    return Path(shutil.copytree(trained, tmp_path / "model"))


def _index(d: Path) -> dict:
    return json.loads((d / INDEX).read_text())


def _write_index(d: Path, idx: dict, rehash: bool = True) -> None:
    """Write an edited index; ``rehash`` keeps its own checksum valid (so the edit under test, not
    the checksum, is what loading must catch); older artifacts have no checksum at all."""
    from geoae.artifact import _index_sha

    if rehash and "index_sha256" in idx:
        idx = {**idx, "index_sha256": _index_sha(idx)}
    (d / INDEX).write_text(json.dumps(idx))


def _weights(d: Path, role: str = "model") -> Path:
    return d / _index(d)["files"][role]["name"]


def _outputs(art, docs) -> tuple[np.ndarray, pd.DataFrame]:
    p = Predictor(art)
    return p.predict_proba(docs), p.predict(docs)


# --------------------------------------------------------------------------- round trip


def test_save_load_gives_identical_predictions(model_dir, docs, tmp_path):
    art = load_artifact(model_dir)
    proba1, pred1 = _outputs(art, docs)
    save_artifact(tmp_path / "again", art)
    art2 = load_artifact(tmp_path / "again")
    proba2, pred2 = _outputs(art2, docs)
    assert np.array_equal(proba1, proba2)
    pd.testing.assert_frame_equal(pred1, pred2, check_exact=True)
    assert pred1["status"].eq("ok").all()
    assert np.isfinite(pred1[["lat", "lon"]].to_numpy(dtype=float)).all()
    sd1, sd2 = art.model.state_dict(), art2.model.state_dict()
    assert sd1.keys() == sd2.keys()
    for k in sd1:
        assert torch.equal(sd1[k], sd2[k]), k
    assert art2.classes == art.classes
    assert np.array_equal(art2.state_points, art.state_points)
    assert art2.config.to_dict() == art.config.to_dict()
    # Same content, same (content-addressed) file names.
    assert _index(model_dir)["files"] == _index(tmp_path / "again")["files"]


def test_artifact_json_records_hash_and_size_of_every_file(model_dir):
    import hashlib

    idx = _index(model_dir)
    assert idx["format"] == "geoae-artifact" and idx["format_version"] == artifact_mod.FORMAT_VERSION
    for entry in idx["files"].values():
        blob = (model_dir / entry["name"]).read_bytes()
        assert entry["bytes"] == len(blob)
        assert entry["sha256"] == hashlib.sha256(blob).hexdigest()
        assert entry["name"].endswith(f"-{entry['sha256'][:12]}.safetensors")


# --------------------------------------------------------------------------- damaged directories


@pytest.mark.parametrize("role", ["model", "featurizer", "points"])
def test_flipped_byte_is_refused_by_sha256(model_dir, role):
    p = _weights(model_dir, role)
    blob = bytearray(p.read_bytes())
    blob[-3] ^= 0x01  # inside the tensor data: still valid safetensors, same size
    p.write_bytes(bytes(blob))
    with refused(ArtifactError, "sha256", model_dir.parent):
        load_artifact(model_dir)


def test_truncated_file_is_refused(model_dir):
    p = _weights(model_dir)
    p.write_bytes(p.read_bytes()[:-16])
    with refused(ArtifactError, "truncated or altered", model_dir.parent):
        load_artifact(model_dir)


def test_a_weight_file_of_another_size_is_refused_without_being_read(model_dir, monkeypatch):
    """The size was compared after reading the whole file: a huge file under the weight file's name
    (a sparse 64 GB one) was read into memory and reported as "out of memory"."""
    p = _weights(model_dir)
    with open(p, "r+b") as f:
        f.truncate(64 << 30)  # sparse: no disk used
    real = Path.read_bytes

    def read_bytes(self):
        assert self != p, "the oversized weight file was read"
        return real(self)

    monkeypatch.setattr(Path, "read_bytes", read_bytes)
    with refused(ArtifactError, rf"truncated or altered \({64 << 30} bytes, expected \d+\)", model_dir.parent):
        load_artifact(model_dir)


@pytest.mark.parametrize("role", ["model", "featurizer", "points"])
def test_missing_weight_file_is_refused(model_dir, role):
    _weights(model_dir, role).unlink()
    with refused(ArtifactError, "weights .* missing", model_dir.parent):
        load_artifact(model_dir)


def test_location_model_round_trips_and_older_artifacts_load_without_it(model_dir, docs):
    art = load_artifact(model_dir)
    assert art.location is not None and art.location.mass_.shape[0] == len(art.classes)
    before = Predictor(art).predict(docs)
    assert before.loc[before["status"] == "ok", "loc_lat"].notna().all()
    # An artifact written before the points file existed: no location point, everything else works.
    idx = _index(model_dir)
    idx.pop("index_sha256")  # nor had it an index checksum
    idx["files"].pop("points")
    if idx["meta"].get("point") == "location":
        idx["meta"]["point"] = "bayes"
    _write_index(model_dir, idx)
    old = load_artifact(model_dir)
    assert old.location is None
    out = Predictor(old).predict(docs)
    assert out["loc_lat"].isna().all()
    np.testing.assert_array_equal(out["bayes_lat"].to_numpy(), before["bayes_lat"].to_numpy())


def test_points_file_with_the_wrong_class_count_is_refused(model_dir):
    from safetensors.numpy import load as np_load
    from safetensors.numpy import save as np_save

    import hashlib

    idx = _index(model_dir)
    p = _weights(model_dir, "points")
    arrays = np_load(p.read_bytes())
    blob = np_save({"candidates": arrays["candidates"], "mass": arrays["mass"][:-1]})
    name = f"points-{hashlib.sha256(blob).hexdigest()[:12]}.safetensors"
    (model_dir / name).write_bytes(blob)
    idx["files"]["points"] = {"name": name, "sha256": hashlib.sha256(blob).hexdigest(), "bytes": len(blob)}
    _write_index(model_dir, idx)
    with refused(ArtifactError, "points file has", model_dir.parent):
        load_artifact(model_dir)


def test_missing_index_and_missing_dir(model_dir, tmp_path):
    with refused(ArtifactError, "not found", model_dir.parent):
        load_artifact(tmp_path / "nowhere")
    (model_dir / INDEX).unlink()
    with refused(ArtifactError, "no artifact.json", model_dir.parent):
        load_artifact(model_dir)


def test_a_model_path_that_is_a_file_says_so(model_dir):
    """A weight file (or any file) given as the model directory was reported as 'not found'."""
    weights = _weights(model_dir)
    with refused(ArtifactError, r"is a file, not a model directory.*give the directory.*did you mean <path>/model\?",
                 model_dir.parent):
        load_artifact(weights)


def test_corrupted_index_json_is_refused(model_dir):
    text = (model_dir / INDEX).read_text()
    (model_dir / INDEX).write_text(text[: len(text) // 2])
    with refused(ArtifactError, "not valid JSON", model_dir.parent):
        load_artifact(model_dir)


def test_wrong_format_version_is_refused(model_dir):
    idx = _index(model_dir)
    idx["format_version"] = artifact_mod.FORMAT_VERSION + 1
    _write_index(model_dir, idx)
    with refused(ArtifactError, r"format version \d+ is not supported", model_dir.parent):
        load_artifact(model_dir)


def test_unknown_config_key_in_artifact_is_refused(model_dir):
    idx = _index(model_dir)
    idx["config"]["model"]["bogus_knob"] = 3
    _write_index(model_dir, idx)
    with refused(ArtifactError, "bogus_knob", model_dir.parent):
        load_artifact(model_dir)


def test_config_keys_of_another_geoae_version_name_both_versions(model_dir):
    """A model written by another geoae version whose config has a key this one does not know: the
    message said only 'stored config is invalid', which reads as a damaged artifact."""
    idx = _index(model_dir)
    idx["config"]["model"]["knob_of_a_later_version"] = 3
    idx["geoae_version"] = "99.0.0"
    _write_index(model_dir, idx)
    with refused(ArtifactError, r"knob_of_a_later_version.*geoae 99\.0\.0.*" + re.escape(geoae.__version__),
                 model_dir.parent):
        load_artifact(model_dir)
    idx = _index(model_dir)  # the same for a featurizer setting
    del idx["config"]["model"]["knob_of_a_later_version"]
    idx["featurizer"]["params"]["knob_of_a_later_version"] = 3
    _write_index(model_dir, idx)
    with refused(ArtifactError, r"featurizer.*knob_of_a_later_version.*geoae 99\.0\.0", model_dir.parent):
        load_artifact(model_dir)


def test_weights_of_other_shapes_are_refused(model_dir):
    """A well-formed weight file with a correct hash but other shapes: only the shape check can catch it."""
    import hashlib

    idx = _index(model_dir)
    cfg = tiny_config("model.hidden=[16,8,5]")
    other = GeoSDAE(idx["n_features"], len(idx["classes"]), cfg.model)
    blob = st_save({k: v.contiguous() for k, v in other.state_dict().items()})
    sha = hashlib.sha256(blob).hexdigest()
    name = f"model-{sha[:12]}.safetensors"
    (model_dir / name).write_bytes(blob)
    idx["files"]["model"] = {"name": name, "sha256": sha, "bytes": len(blob)}
    _write_index(model_dir, idx)
    with refused(ArtifactError, "do not fit", model_dir.parent):
        load_artifact(model_dir)


def test_weight_name_escaping_the_directory_is_refused(model_dir):
    idx = _index(model_dir)
    idx["files"]["model"]["name"] = "../model.safetensors"
    _write_index(model_dir, idx)
    with refused(ArtifactError, "invalid file name", model_dir.parent):
        load_artifact(model_dir)


# --------------------------------------------------------------------------- no pickle


PACKAGE = Path(geoae.__file__).resolve().parent
FORBIDDEN = [
    (re.compile(r"^\s*(import|from)\s+(c?pickle|dill|cloudpickle|joblib|shelve|marshal)\b", re.M), "pickle-like import"),
    (re.compile(r"\bjoblib\b"), "joblib"),
    (re.compile(r"allow_pickle\s*=\s*True"), "numpy allow_pickle"),
]
TORCH_LOAD = re.compile(r"torch\.load\(([^)]*)\)")


def pickle_offences(source: str) -> list[str]:
    found = [what for rx, what in FORBIDDEN if rx.search(source)]
    found += [f"torch.load({m.group(1)})" for m in TORCH_LOAD.finditer(source) if "weights_only=True" not in m.group(1)]
    return found


def test_the_offence_scanner_catches_what_it_should():
    assert pickle_offences("import pickle\n")
    assert pickle_offences("from joblib import dump\n")
    assert pickle_offences("x = torch.load(path)\n")
    assert pickle_offences("x = torch.load(path, weights_only=False)\n")
    assert pickle_offences("np.load(p, allow_pickle=True)\n")
    assert not pickle_offences("x = torch.load(path, weights_only=True)\n")
    assert not pickle_offences('"""no pickle: safetensors only"""\n')


def test_package_source_never_unpickles():
    sources = sorted(PACKAGE.rglob("*.py"))
    assert len(sources) > 10
    offences = {str(p.relative_to(PACKAGE)): o for p in sources if (o := pickle_offences(p.read_text("utf-8")))}
    assert not offences, f"pickle-capable loading introduced: {offences}"


def test_model_directory_holds_only_json_and_safetensors(model_dir):
    names = sorted(p.name for p in model_dir.iterdir())
    assert INDEX in names
    assert all(n == INDEX or n.endswith(".safetensors") for n in names), names


# --------------------------------------------------------------------------- crash-safe save


def _perturbed(art):
    """The same artifact with different weights (what a newer training run would save)."""
    with torch.no_grad():
        for p in art.model.parameters():
            p.add_(0.05)
    return art


def test_kill_mid_save_leaves_previous_artifact_loadable(model_dir, docs, monkeypatch):
    before_files = set(p.name for p in model_dir.iterdir())
    proba0, pred0 = _outputs(load_artifact(model_dir), docs)
    new = _perturbed(load_artifact(model_dir))
    proba_new, _ = _outputs(new, docs)
    assert not np.array_equal(proba0, proba_new)

    def killed(*a, **k):
        raise KeyboardInterrupt("killed while replacing artifact.json")

    monkeypatch.setattr(artifact_mod, "atomic_write_text", killed)
    with pytest.raises(KeyboardInterrupt):
        save_artifact(model_dir, new)
    monkeypatch.undo()
    # The new weight files did get written before the kill ...
    assert len(set(p.name for p in model_dir.iterdir()) - before_files) >= 1
    # ... yet the directory still is the previous artifact, exactly.
    proba1, pred1 = _outputs(load_artifact(model_dir), docs)
    assert np.array_equal(proba0, proba1)
    pd.testing.assert_frame_equal(pred0, pred1, check_exact=True)


def test_kill_mid_weight_write_leaves_previous_artifact_loadable(model_dir, docs, monkeypatch):
    proba0, _ = _outputs(load_artifact(model_dir), docs)
    new = _perturbed(load_artifact(model_dir))
    monkeypatch.setattr(artifact_mod, "atomic_write_bytes",
                        killed_on_call(artifact_mod.atomic_write_bytes, 2, "killed while writing the featurizer weights"))
    with pytest.raises(KeyboardInterrupt):
        save_artifact(model_dir, new)
    monkeypatch.undo()
    proba1, _ = _outputs(load_artifact(model_dir), docs)
    assert np.array_equal(proba0, proba1)


def test_successful_saves_remove_unreferenced_weight_files(model_dir, docs, monkeypatch):
    old = set(_index(model_dir)["files"][r]["name"] for r in ("model", "featurizer"))
    # A save killed before artifact.json was replaced leaves orphans behind ...
    orphan_src = _perturbed(load_artifact(model_dir))
    monkeypatch.setattr(artifact_mod, "atomic_write_text", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        save_artifact(model_dir, orphan_src)
    monkeypatch.undo()
    # ... and the next successful save (of yet other weights) leaves only what its artifact.json names.
    final = _perturbed(_perturbed(load_artifact(model_dir)))
    save_artifact(model_dir, final)
    idx = _index(model_dir)
    referenced = {f["name"] for f in idx["files"].values()}
    on_disk = {p.name for p in model_dir.iterdir() if p.name != INDEX}
    assert on_disk == referenced
    assert not (old & on_disk) - {idx["files"]["featurizer"]["name"]}
    proba, _ = _outputs(load_artifact(model_dir), docs)
    assert np.array_equal(proba, _outputs(final, docs)[0])


@pytest.mark.parametrize("edit", ["classes", "state_points", "activation", "meta"])
def test_a_hand_edited_index_that_still_parses_is_refused(model_dir, edit):
    idx = _index(model_dir)
    if edit == "classes":
        idx["classes"][:2] = idx["classes"][1::-1]  # two states swapped: still distinct codes, so it parses
    elif edit == "state_points":
        idx["state_points"][0][0] += 1.0
    elif edit == "activation":
        idx["config"]["model"]["activation"] = "sigmoid"
    else:
        idx["meta"]["point"] = "state_median" if idx["meta"].get("point") != "state_median" else "bayes"
    _write_index(model_dir, idx, rehash=False)
    with pytest.raises(ArtifactError, match="edited after it was saved"):
        load_artifact(model_dir)


@pytest.mark.parametrize("meta", [None, [1]])
def test_malformed_fields_are_artifact_errors(model_dir, meta):
    idx = _index(model_dir)
    idx["meta"] = meta
    _write_index(model_dir, idx)
    with pytest.raises(ArtifactError, match="malformed field"):
        load_artifact(model_dir)
    idx["meta"], idx["n_members"] = {}, 0
    _write_index(model_dir, idx)
    with pytest.raises(ArtifactError, match="malformed field"):
        load_artifact(model_dir)


@pytest.mark.parametrize("key, value", [("data_dir", 7), ("data_dir", ["runs/demo/data"]), ("data_sha256", None)])
def test_meta_fields_evaluate_reads_must_be_strings(model_dir, key, value):
    """`geoae evaluate` compares meta.data_dir / data_sha256 with the data it scores: a data_dir that
    was a number or a list (and no data_sha256) was a TypeError traceback from pathlib."""
    idx = _index(model_dir)
    idx["meta"][key] = value
    _write_index(model_dir, idx)
    with refused(ArtifactError, rf"malformed field .*meta\.{key} is {type(value).__name__}, not a string",
                 model_dir.parent):
        load_artifact(model_dir)


def test_pointing_at_the_index_file_or_the_train_directory(model_dir, tmp_path):
    from geoae.artifact import INDEX

    assert load_artifact(Path(model_dir) / INDEX).classes  # the index file: its directory is meant
    train_dir = tmp_path / "train"
    (train_dir / "model").mkdir(parents=True)
    for p in Path(model_dir).iterdir():
        (train_dir / "model" / p.name).write_bytes(p.read_bytes())
    with pytest.raises(ArtifactError, match=r"did you mean .*train/model"):
        load_artifact(train_dir)


@pytest.mark.parametrize("sub, how", [("model", "geoae train -o"), ("train/model", "geoae demo --out"),
                                      ("sdae/model", "geoae benchmark -o")])
def test_a_run_directory_names_the_model_inside_it(model_dir, tmp_path, sub, how):
    """`-m runs/demo` (the demo's run directory, its model in train/model) said only 'not a geoae model
    directory (train one with `geoae train`)', though a model was right there."""
    run = tmp_path / "run"
    shutil.copytree(model_dir, run / sub)
    with refused(ArtifactError, rf"^<path>: no {INDEX}; this is not a geoae model directory; did you mean "
                 rf"<path>/{sub}\? \(`{how} <path>` writes", run):
        load_artifact(run)
    assert load_artifact(run / sub).classes  # the suggestion loads


def test_no_model_no_suggestion(tmp_path):
    """A hint names only a model that exists: an empty run layout (train/model without artifact.json) gets none."""
    run = tmp_path / "run"
    (run / "train" / "model").mkdir(parents=True)
    (run / "data").mkdir()
    with refused(ArtifactError, r"not a geoae model directory \(train one with `geoae train`\)$", run):
        load_artifact(run)


# --------------------------------------------------------------------------- hand-made or damaged indexes


def _replace_weights(d: Path, role: str, blob: bytes) -> None:
    """Swap in another weight file with a valid hash and size (only the content checks can catch it)."""
    import hashlib

    idx = _index(d)
    sha = hashlib.sha256(blob).hexdigest()
    name = f"{role}-{sha[:12]}.safetensors"
    (d / name).write_bytes(blob)
    idx["files"][role] = {"name": name, "sha256": sha, "bytes": len(blob)}
    _write_index(d, idx)


@pytest.mark.parametrize("edit, pattern", [
    (lambda i: i["files"].__setitem__("model", "model.safetensors"), r"files\.model is str, not a mapping"),
    (lambda i: i.__setitem__("files", None), r"files is NoneType, not a mapping"),
    (lambda i: i.__setitem__("n_features", -3), r"n_features must be a whole number >= 1"),
    (lambda i: i.__setitem__("n_members", 1.5), r"n_members must be a whole number >= 1"),
    (lambda i: i.__setitem__("n_members", 10**9), r"n_members=1000000000, the weight file holds members \[0\]"),
    (lambda i: i.__setitem__("format_version", True), r"format version True is not supported"),
    (lambda i: i["classes"].__setitem__(0, None), r"classes must be a list of non-empty strings"),
    (lambda i: i["classes"].__setitem__(1, i["classes"][0]), r"classes must be distinct"),
    (lambda i: i["classes"].__setitem__(0, "XX"), r"classes must be US state codes .*\['XX'\]"),
    (lambda i: i["classes"].__setitem__(0, "ny"), r"classes must be US state codes .*\['ny'\]"),
    (lambda i: i["state_points"].__setitem__(0, [95.0, 0.0]), r"state_points must be finite"),
    (lambda i: i["featurizer"]["vocabulary"].__setitem__(0, 7), r"vocabulary holds a term that is not a string"),
    (lambda i: i.__setitem__("config", ["data"]), r"config is list, not a mapping"),
    (lambda i: i["config"]["model"].__setitem__("hidden", [10**15, 256, 128]), r"layer width must be in \[1, 1048576\]"),
    (lambda i: i.__setitem__("state_points", np.ravel(i["state_points"]).tolist()), r"state_points has shape \(\d+,\), expected"),
    (lambda i: i.__setitem__("state_points", [[0.0] * (2 * len(i["classes"]))]), r"state_points has shape \(1, \d+\)"),
    (lambda i: i["featurizer"]["params"].__setitem__("ngram_max", 2), r"featurizer settings differ from config\.features \(ngram_max\)"),
    (lambda i: i["featurizer"]["params"].__setitem__("sublinear_tf", "no"), r"featurizer settings differ .*sublinear_tf"),
])
def test_index_fields_of_the_wrong_type_or_size_are_one_clear_error(model_dir, edit, pattern):
    """Each of these was a traceback, a hang (n_members=10**9 built a billion members), or
    loaded and predicted nonsense (None as a state, NaN points)."""
    idx = _index(model_dir)
    edit(idx)
    _write_index(model_dir, idx)
    with refused(ArtifactError, pattern, model_dir.parent):
        load_artifact(model_dir)


@pytest.mark.parametrize("text", ["[" * 100_000 + "]" * 100_000, '{"format": ' + "9" * 5000 + "}"])
def test_index_json_python_cannot_parse_is_corrupted_not_a_traceback(model_dir, text):
    (model_dir / INDEX).write_text(text)
    with refused(ArtifactError, "corrupted", model_dir.parent):
        load_artifact(model_dir)


@pytest.mark.parametrize("change, pattern", [
    (lambda t: {k: v.double() for k, v in t.items()}, r"is torch\.float64 .*expected torch\.float32"),
    (lambda t: {k: v.to(torch.int32) for k, v in t.items()}, r"is torch\.int32 .*expected torch\.float32"),
    (lambda t: {k: torch.full_like(v, float("nan")) for k, v in t.items()}, r"non-finite values"),
    (lambda t: {**t, "zzz": torch.zeros(2)}, r"unexpected tensor zzz"),
    # finite but impossible buffers put every regression point anywhere on (or off) the globe, silently
    (lambda t: {**t, "members.0.input_scale": t["members.0.input_scale"] * 1e30}, r"members\.0\.input_scale is .*, "
     r"expected sqrt\(n_features\)"),
    (lambda t: {**t, "members.0.coord_mean": torch.tensor([1e30, -90.0])}, r"coord_mean .* is not a \(lat, lon\) point"),
    (lambda t: {**t, "members.0.coord_std": torch.tensor([0.0, 10.0])}, r"coord_std .* is not the spread"),
])
def test_weight_files_with_valid_hashes_but_wrong_dtypes_values_or_names_are_refused(model_dir, change, pattern):
    """load_state_dict casts dtypes silently (int weights would predict nonsense) and takes NaN weights
    (every state NaN, the first class reported): the tensors are checked before the model is built."""
    from safetensors.torch import load as st_load

    tensors = change(st_load(_weights(model_dir).read_bytes()))
    _replace_weights(model_dir, "model", st_save({k: v.contiguous() for k, v in tensors.items()}))
    with refused(ArtifactError, pattern, model_dir.parent):
        load_artifact(model_dir)


def test_points_file_with_other_dtypes_or_values_is_refused(model_dir):
    from safetensors.numpy import load as np_load
    from safetensors.numpy import save as np_save

    if "points" not in _index(model_dir)["files"]:
        pytest.skip("this artifact has no points file")
    arrays = np_load(_weights(model_dir, "points").read_bytes())
    bad = {"candidates": arrays["candidates"].astype(np.int8), "mass": arrays["mass"]}
    _replace_weights(model_dir, "points", np_save(bad))
    with refused(ArtifactError, r"candidates is int8, expected float64", model_dir.parent):
        load_artifact(model_dir)
    bad = {"candidates": arrays["candidates"], "mass": -arrays["mass"]}
    _replace_weights(model_dir, "points", np_save(bad))
    with refused(ArtifactError, r"mass has negative values", model_dir.parent):
        load_artifact(model_dir)


@pytest.mark.parametrize("dtype", [np.int64, np.float16, np.complex64])
def test_featurizer_idf_of_another_dtype_is_refused(model_dir, dtype):
    """An int or float16 idf loaded and predicted silently; a complex one crashed in predict."""
    from safetensors.numpy import load as np_load
    from safetensors.numpy import save as np_save

    arrays = np_load(_weights(model_dir, "featurizer").read_bytes())
    _replace_weights(model_dir, "featurizer", np_save({"idf": np.ascontiguousarray(arrays["idf"].astype(dtype))}))
    with refused(ArtifactError, rf"idf is {np.dtype(dtype).name}, expected float32 or float64", model_dir.parent):
        load_artifact(model_dir)


def test_points_file_without_cells_is_refused_at_load(model_dir):
    """Zero candidate cells loaded and then crashed every prediction (argmin of an empty sequence)."""
    from safetensors.numpy import load as np_load
    from safetensors.numpy import save as np_save

    if "points" not in _index(model_dir)["files"]:
        pytest.skip("this artifact has no points file")
    mass = np_load(_weights(model_dir, "points").read_bytes())["mass"]
    _replace_weights(model_dir, "points", np_save({"candidates": np.zeros((0, 2)), "mass": np.zeros((len(mass), 0))}))
    with refused(ArtifactError, r"candidates has shape \(0, 2\)", model_dir.parent):
        load_artifact(model_dir)


def test_saving_over_a_hostile_index_deletes_nothing_outside_the_directory(model_dir, tmp_path):
    """The clean-up after a save removes the files the previous index named; names that leave the
    directory (relative or absolute) must never be touched."""
    art = load_artifact(model_dir)
    outside, absolute = tmp_path / "victim.txt", tmp_path / "victim2.txt"
    outside.write_text("keep me")
    absolute.write_text("keep me too")
    idx = _index(model_dir)
    idx["files"]["a"] = {"name": "../victim.txt"}
    idx["files"]["b"] = {"name": str(absolute)}
    _write_index(model_dir, idx)
    save_artifact(model_dir, art)
    assert outside.read_text() == "keep me" and absolute.read_text() == "keep me too"
    assert load_artifact(model_dir).classes == art.classes


def test_an_empty_model_path_is_not_the_working_directory():
    with pytest.raises(ArtifactError, match=r"the model path is empty"):
        load_artifact("")


def test_a_cuda_device_number_this_machine_does_not_have_is_one_clear_error(monkeypatch):
    """--device cuda:1 on a one-GPU machine passed the check and failed later in torch with a traceback
    (RuntimeError: invalid device ordinal)."""
    from geoae.artifact import torch_device
    from geoae.errors import GeoaeError

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert torch_device("cuda:0") == torch.device("cuda:0") and torch_device("cuda") == torch.device("cuda")
    with pytest.raises(GeoaeError, match=r"--device cuda:1: this machine has 1 CUDA GPU \(cuda:0\)"):
        torch_device("cuda:1")


@pytest.mark.parametrize("bad", ["ZZ", "ca"])
def test_a_model_loading_would_refuse_is_not_saved(model_dir, tmp_path, bad):
    """A documents table whose state column held other codes ('ZZ', 'ca') trained and saved, exit 0, a
    model every later command refused as damaged."""
    art = load_artifact(model_dir)
    art.classes = [bad, *art.classes[1:]]
    with refused(ArtifactError, rf"refusing to save a model that could not be loaded: .*\['{bad}'\]", tmp_path):
        save_artifact(tmp_path / "new", art)
    assert not (tmp_path / "new").exists()
