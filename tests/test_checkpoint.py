"""A hand-edited checkpoint position (state.json is not covered by the tensors' hash) is refused with one
clear error naming the field, its value and what is allowed: never a traceback, never a resume that
trains the wrong number of epochs."""

from __future__ import annotations

import contextlib
import json
import re
from pathlib import Path

import pytest
import torch

from geoae.checkpoint import STATE_JSON, load_checkpoint, make_generators
from geoae.errors import ArtifactError
from geoae.finetune import finetune
from geoae.pretrain import pretrain
from geoae.sdae import GeoSDAE
from tests.helpers import tiny_config, tiny_set

CPU = torch.device("cpu")
# 3 layers, 3 pretraining epochs per layer, 4 fine-tuning epochs
CFG = tiny_config(pretrain={"epochs": 3}, finetune={"epochs": 4, "patience": 10})
TRAIN = tiny_set(40, seed=0)


def _model() -> GeoSDAE:
    torch.manual_seed(0)
    m = GeoSDAE(TRAIN.X.shape[1], 5, CFG.model)
    m.set_coord_scaler(torch.tensor(TRAIN.coords.mean(0)), torch.tensor(TRAIN.coords.std(0)))
    return m


class _Stop(Exception):
    pass


def _stop_after(stage: str, layer: int, epoch: int):
    def hook(s, k, e):
        if (s, k, e) == (stage, layer, epoch):
            raise _Stop

    return hook


def _epochs_run():
    seen = []
    return seen, lambda s, k, e: seen.append((s, k, e))


@pytest.fixture(scope="module")
def pretrain_ckpt(tmp_path_factory) -> Path:
    """A pretraining checkpoint after layer 2, epoch 1: position {layer: 1, epoch: 1}."""
    d = tmp_path_factory.mktemp("pretrain_ckpt")
    with pytest.raises(_Stop):
        pretrain(_model(), TRAIN.X, CFG, device=CPU, gens=make_generators(0, CPU), ckpt_dir=d,
                 on_epoch_end=_stop_after("pretrain", 1, 0))
    assert json.loads((d / STATE_JSON).read_text())["position"]["layer"] == 1
    return d


def _finetune_ckpt(d: Path, dev) -> Path:
    """Fine-tuning stopped after epoch 2 of 4, its checkpoint in ``d``."""
    with pytest.raises(_Stop):
        finetune(_model(), TRAIN, dev, CFG, device=CPU, gens=make_generators(0, CPU), ckpt_dir=d,
                 on_epoch_end=_stop_after("finetune", 0, 1))
    assert json.loads((d / STATE_JSON).read_text())["position"]["epoch"] == 2
    return d


@pytest.fixture(scope="module")
def finetune_ckpt(tmp_path_factory) -> Path:
    """A fine-tuning checkpoint after epoch 2 of 4 (no dev users: best_epoch 2, bad_epochs 0)."""
    return _finetune_ckpt(tmp_path_factory.mktemp("finetune_ckpt"), None)


def _edited(src: Path, dst: Path, **fields) -> Path:
    """A copy of checkpoint ``src`` in ``dst`` whose position has ``fields`` set (``...``: removed)."""
    dst.mkdir()
    for p in src.iterdir():
        (dst / p.name).write_bytes(p.read_bytes())
    doc = json.loads((dst / STATE_JSON).read_text())
    for k, v in fields.items():
        if v is ...:
            del doc["position"][k]
        else:
            doc["position"][k] = v
    (dst / STATE_JSON).write_text(json.dumps(doc))
    return dst


def _resume_pretraining(ckpt: Path, hook=None):
    return pretrain(_model(), TRAIN.X, CFG, device=CPU, gens=make_generators(0, CPU), ckpt_dir=ckpt,
                    resume=load_checkpoint(ckpt), on_epoch_end=hook)


def _resume_finetuning(ckpt: Path, hook=None):
    return finetune(_model(), TRAIN, None, CFG, device=CPU, gens=make_generators(0, CPU), ckpt_dir=ckpt,
                    resume=load_checkpoint(ckpt), on_epoch_end=hook, fixed_epochs=True)


@contextlib.contextmanager
def _refused(match: str):
    with pytest.raises(ArtifactError, match=match) as info:
        yield
    assert str(info.value).endswith("the file was edited or damaged: delete the checkpoint directory to start over")


PRETRAIN_EDITS = [
    ({"epoch": -1}, r"position\.epoch is -1, expected an integer (>= 0|in \[0, 2\])"),
    ({"epoch": "1"}, r"position\.epoch is '1', expected an integer"),
    ({"epoch": 1.0}, r"position\.epoch is 1\.0, expected an integer"),
    ({"epoch": True}, r"position\.epoch is True, expected an integer"),  # would run as epoch 1
    ({"epoch": ...}, r"position\.epoch is missing, expected an integer"),
    ({"epoch": 3}, r"position\.epoch is 3, expected an integer in \[0, 2\]"),  # pretrain.epochs is 3
    ({"epoch": 10**6}, r"position\.epoch is 1000000, expected an integer in \[0, 2\]"),
    ({"layer": 4}, r"position\.layer is 4, expected an integer in \[0, 3\]"),  # model.hidden has 3 layers
    ({"layer": -2}, r"position\.layer is -2, expected an integer in \[0, 3\]"),
    ({"layer": None}, r"position\.layer is None, expected an integer in \[0, 3\]"),
    ({"stage": "finetuning"}, r"position\.stage is 'finetuning', expected 'pretrain'"),
    ({"history": "abc"}, r"position\.history is 'abc', expected a list of per-epoch objects"),
]
FINETUNE_EDITS = [
    ({"epoch": -1}, r"position\.epoch is -1, expected an integer (>= 0|in \[0, 4\])"),
    ({"epoch": 5}, r"position\.epoch is 5, expected an integer in \[0, 4\]"),  # finetune.epochs is 4
    ({"epoch": "2"}, r"position\.epoch is '2', expected an integer"),
    ({"epoch": False}, r"position\.epoch is False, expected an integer"),
    ({"best_epoch": 3}, r"position\.best_epoch is 3, expected an integer in \[0, 2\]"),  # after the epoch reached
    ({"best_epoch": 2.5}, r"position\.best_epoch is 2\.5, expected an integer in \[0, 2\]"),
    ({"bad_epochs": -1}, r"position\.bad_epochs is -1, expected an integer in \[0, 2\]"),
    ({"finished": "yes"}, r"position\.finished is 'yes', expected true or false"),
    ({"best": [1]}, r"position\.best is \[1\], expected null or an object"),
    ({"ft_history": [1, 2]}, r"position\.ft_history is \[1, 2\], expected a list of per-epoch objects"),
    ({"stage": "pretrain", "layer": 3}, r"position\.stage is 'pretrain', expected 'finetune'"),
]


EDITS = [("pretrain", f, m) for f, m in PRETRAIN_EDITS] + [("finetune", f, m) for f, m in FINETUNE_EDITS]


@pytest.mark.parametrize("stage, fields, message", EDITS, ids=[f"{s}-{f!r}" for s, f, _ in EDITS])
def test_a_tampered_position_is_refused_naming_the_field(request, tmp_path, stage, fields, message):
    ckpt = _edited(request.getfixturevalue(f"{stage}_ckpt"), tmp_path / "ckpt", **fields)
    seen, hook = _epochs_run()
    with _refused(message):
        (_resume_pretraining if stage == "pretrain" else _resume_finetuning)(ckpt, hook)
    assert not seen, "an epoch was trained from a tampered checkpoint"


def test_what_the_file_alone_decides_is_refused_when_it_is_read(pretrain_ckpt, tmp_path):
    """Negative, non-integer and beyond the model's own layers: refused by load_checkpoint itself, which
    the pipeline also reads before it knows whether to pretrain (``--stage finetune``)."""
    for i, fields in enumerate([{"epoch": -1}, {"epoch": True}, {"layer": 99}, {"stage": None}]):
        ckpt = _edited(pretrain_ckpt, tmp_path / f"c{i}", **fields)
        with pytest.raises(ArtifactError, match=re.escape(f"{ckpt / STATE_JSON}: checkpoint field position")):
            load_checkpoint(ckpt)


def test_untampered_and_edge_positions_still_resume(pretrain_ckpt, finetune_ckpt, tmp_path):
    # the last epoch of a layer resumes: 1 epoch of layer 2, then the 3 of layer 3
    seen, hook = _epochs_run()
    _resume_pretraining(_edited(pretrain_ckpt, tmp_path / "p", epoch=2), hook)
    assert seen == [("pretrain", 1, 2), ("pretrain", 2, 0), ("pretrain", 2, 1), ("pretrain", 2, 2)]
    # every layer done (layer == its count): nothing left to pretrain
    seen, hook = _epochs_run()
    _resume_pretraining(_edited(pretrain_ckpt, tmp_path / "p2", layer=3, epoch=0), hook)
    assert seen == []
    # fine-tuning from epoch 2 of 4 runs epochs 3 and 4
    seen, hook = _epochs_run()
    res = _resume_finetuning(_edited(finetune_ckpt, tmp_path / "f"), hook)
    assert seen == [("finetune", 0, 2), ("finetune", 0, 3)] and len(res["history"]) == 4


def test_train_resume_refuses_a_tampered_checkpoint(tmp_path_factory, tmp_path):
    """Through ``geoae train`` (resume is its default): the clear error, for both stages it may resume."""
    from geoae.pipeline import train
    from tests.tiny_run import prepared_data, refused, tiny_config as run_config

    data = prepared_data(tmp_path_factory)
    cfg = run_config()  # model.hidden [16, 8, 4], pretrain.epochs 2
    with pytest.raises(_Stop):
        train(cfg, data, tmp_path, on_epoch_end=_stop_after("pretrain", 1, 0))
    ckpt = tmp_path / "checkpoint"
    original = (ckpt / STATE_JSON).read_text()
    for fields, stage, message in [
        ({"epoch": 2}, "all", r"position\.epoch is 2, expected an integer in \[0, 1\]"),
        ({"epoch": -1}, "all", r"position\.epoch is -1, expected an integer >= 0"),
        ({"layer": 99}, "finetune", r"position\.layer is 99, expected an integer in \[0, 3\]"),
        # The run's own checkpoint is pretraining's: as "finetune" it would skip the rest of pretraining.
        # (a member's fields are missing from it, or, were they added, the stage itself is refused).
        ({"stage": "finetune"}, "all", r"position\.best_epoch is missing"),
        ({"stage": "finetune", "best_epoch": 0, "bad_epochs": 0, "finished": False}, "finetune",
         r"position\.stage is 'finetune', expected 'pretrain'"),
    ]:
        doc = json.loads(original)
        doc["position"].update(fields)
        (ckpt / STATE_JSON).write_text(json.dumps(doc))
        with refused(ArtifactError, message, tmp_path):
            train(cfg, data, tmp_path, stage=stage, resume=True)
        assert not (tmp_path / "model").exists()


# --------------------------------------------------------------------------- the rest of a checkpoint
# The optimizer's record in state.json is outside the tensors' hash too, and the tensors can be rewritten
# with their hash recomputed: a TypeError or RuntimeError traceback from torch's load_state_dict, a
# KeyError from a history record, or an optimizer that fails (or trains otherwise) at its next step.

DEV = tiny_set(30, seed=1)


@pytest.fixture(scope="module")
def finetune_dev_ckpt(tmp_path_factory) -> Path:
    """A fine-tuning checkpoint after epoch 2 of 4 with dev users: it carries the best epoch's weights."""
    return _finetune_ckpt(tmp_path_factory.mktemp("finetune_dev_ckpt"), DEV)


def _tampered(src: Path, dst: Path, doc_edit=None, tensor_edit=None) -> Path:
    """A copy of checkpoint ``src`` in ``dst``: ``doc_edit(doc)`` edits state.json in place,
    ``tensor_edit(tensors)`` the tensors, rewritten with their hash recomputed (as a forger would)."""
    import hashlib

    from safetensors.torch import load as st_load
    from safetensors.torch import save as st_save

    dst.mkdir()
    doc = json.loads((src / STATE_JSON).read_text())
    blob = (src / doc["tensors_file"]).read_bytes()
    if tensor_edit is not None:
        tensors = st_load(blob)
        tensor_edit(tensors)
        blob = st_save(tensors)
        doc["tensors_sha256"] = hashlib.sha256(blob).hexdigest()
    (dst / doc["tensors_file"]).write_bytes(blob)
    if doc_edit is not None:
        doc_edit(doc)
    (dst / STATE_JSON).write_text(json.dumps(doc))
    return dst


def _set_groups(value):
    def edit(doc):
        doc["optimizer"]["param_groups"] = value
    return edit


def _set_group(key, value):
    def edit(doc):
        doc["optimizer"]["param_groups"][0][key] = value
    return edit


OPTIMIZER_EDITS = [
    (_set_groups(None), r"optimizer\.param_groups is None, expected a list of 1 parameter group"),
    (_set_groups(3), r"optimizer\.param_groups is 3, expected a list of 1 parameter group"),
    (_set_groups("abc"), r"optimizer\.param_groups is 'abc', expected a list of 1 parameter group"),
    (_set_groups([7]), r"optimizer\.param_groups\[0\] is 7, expected an object"),
    (_set_group("params", 5), r"optimizer\.param_groups\[0\]\.params is 5, expected \[0, 1, 2"),
    (_set_group("params", [0, 1]), r"optimizer\.param_groups\[0\]\.params is \[0, 1\], expected \[0, 1, 2"),
    (_set_group("params", [[0]] * 13), r"optimizer\.param_groups\[0\]\.params is \[\[0\], \[0\], "),
    (_set_group("params", list(range(100, 113))), r"optimizer\.param_groups\[0\]\.params is \[100, 101, "),
    (_set_group("lr", 5.0), r"optimizer\.param_groups\[0\]\.lr is 5\.0, expected 0\.01 \(this run's optimizer\)"),
    (lambda doc: doc.update(optimizer=None), r"field optimizer is None, expected an object with param_groups"),
    (lambda doc: doc["optimizer"].update(scalars=[1]), r"field optimizer is \{.*\}, expected an object"),
    (lambda doc: doc["optimizer"]["scalars"].update({"0.exp_avg": 1.5}),
     r"field optimizer\.scalars\.0\.exp_avg is the plain value 1\.5, expected a float tensor of shape \(60,\)"),
    (lambda doc: doc["optimizer"]["scalars"].update({"x.y": 1}), r"field optimizer\.scalars\.x\.y is no state of"),
]


@pytest.mark.parametrize("edit, message", OPTIMIZER_EDITS, ids=[m[:40] for _, m in OPTIMIZER_EDITS])
def test_a_tampered_optimizer_record_is_refused_naming_the_field(finetune_ckpt, tmp_path, edit, message):
    ckpt = _tampered(finetune_ckpt, tmp_path / "ckpt", doc_edit=edit)
    seen, hook = _epochs_run()
    with _refused(re.escape(f"{ckpt / STATE_JSON}: checkpoint ") + ".*" + message):
        _resume_finetuning(ckpt, hook)
    assert not seen, "an epoch was trained from a tampered checkpoint"


def test_a_tampered_optimizer_record_of_pretraining_is_refused_too(pretrain_ckpt, tmp_path):
    ckpt = _tampered(pretrain_ckpt, tmp_path / "ckpt", doc_edit=_set_group("params", [0, "1", 2, 3]))
    with _refused(r"optimizer\.param_groups\[0\]\.params is \[0, '1', 2, 3\], expected \[0, 1, 2\]"):
        _resume_pretraining(ckpt)


def _drop(*keys):
    def edit(tensors):
        for k in keys:
            del tensors[k]
    return edit


def _reshape(key, shape):
    def edit(tensors):
        tensors[key] = torch.zeros(shape, dtype=tensors[key].dtype)
    return edit


def _add(key, value):
    def edit(tensors):
        tensors[key] = value
    return edit


TENSOR_EDITS = [
    (_drop("model.layers.0.encoder.weight"), r"model weights \(model\.\*\) do not fit this run's model: "
                                             r"layers\.0\.encoder\.weight missing"),
    (_reshape("model.state_head.bias", (4,)), r"model weights .* state_head\.bias of shape \(4,\), the model's is \(5,\)"),
    (_add("model.extra_layer", torch.zeros(2)), r"model weights .* extra_layer not in the model"),
    (lambda t: t.clear(), r"model weights .* coord_head\.bias, coord_head\.weight, coord_mean and \d+ more missing"),
    (_drop("opt.1.exp_avg"), r"tensor opt\.1\.exp_avg is missing \(parameter 1 has the optimizer's exp_avg_sq, step"),
    (_drop(*[f"opt.1.{n}" for n in ("exp_avg", "exp_avg_sq")]), r"tensor opt\.1\.exp_avg is missing"),
    (_reshape("opt.1.exp_avg", (3,)), r"tensor opt\.1\.exp_avg is a torch\.float32 tensor of shape \(3,\), "
                                      r"expected a float tensor of shape \(32, 60\)"),
    (_reshape("opt.1.step", (32,)), r"tensor opt\.1\.step is a torch\.float32 tensor of shape \(32,\), expected a "
                                    r"float tensor of shape \(\)"),
    (_add("opt.1.exp_avg", torch.zeros(32, 60, dtype=torch.int64)), r"opt\.1\.exp_avg is a torch\.int64 tensor of "
                                                                   r"shape \(32, 60\), expected a float tensor"),
    (_add("opt.99.exp_avg", torch.zeros(2)), r"tensor opt\.99\.exp_avg is no state of this run's optimizer "
                                             r"\(its 13 parameters each keep exp_avg, exp_avg_sq, step\)"),
    (_add("opt.bogus", torch.zeros(2)), r"tensor opt\.bogus is no state"),
    (_drop("rng.shuffle"), r"tensor rng\.shuffle \(a random generator's state\) is missing"),
    (_reshape("rng.global", (7,)), r"tensor rng\.global is not a random generator's state"),
    (_add("rng.noise", torch.zeros(5056)), r"tensor rng\.noise is not a random generator's state"),
]


@pytest.mark.parametrize("edit, message", TENSOR_EDITS, ids=[m[:40] for _, m in TENSOR_EDITS])
def test_checkpoint_tensors_rewritten_with_their_hash_are_refused_naming_the_tensor(finetune_ckpt, tmp_path, edit,
                                                                                    message):
    ckpt = _tampered(finetune_ckpt, tmp_path / "ckpt", tensor_edit=edit)
    tensors_file = ckpt / json.loads((ckpt / STATE_JSON).read_text())["tensors_file"]
    seen, hook = _epochs_run()
    with _refused(re.escape(f"{tensors_file}: checkpoint ") + ".*" + message):
        _resume_finetuning(ckpt, hook)
    assert not seen, "an epoch was trained from a tampered checkpoint"


def test_the_best_epochs_weights_rewritten_with_their_hash_are_refused(finetune_dev_ckpt, tmp_path):
    """With dev users the best epoch's weights are kept at the end: missing, they were a RuntimeError then
    (or, all gone, the last epoch's weights shipped as the best one's)."""
    resume = lambda ckpt: finetune(_model(), TRAIN, DEV, CFG, device=CPU, gens=make_generators(0, CPU),  # noqa: E731
                                   ckpt_dir=ckpt, resume=load_checkpoint(ckpt))
    for i, (edit, message) in enumerate([
        (_drop("extra.best.layers.1.encoder.bias"), r"weights extra\.best\.\* do not fit this run's model: "
                                                    r"layers\.1\.encoder\.bias missing"),
        (lambda t: [t.pop(k) for k in list(t) if k.startswith("extra.")], r"weights extra\.best\.\* do not fit .* more missing"),
        (_reshape("extra.best.state_head.weight", (5, 3)), r"extra\.best\.\* .* state_head\.weight of shape \(5, 3\)"),
    ]):
        with _refused(message):
            resume(_tampered(finetune_dev_ckpt, tmp_path / f"c{i}", tensor_edit=edit))
    resume(_tampered(finetune_dev_ckpt, tmp_path / "untouched"))


def _edit_record(i, key, value=...):
    def edit(doc):
        rec = doc["position"]["ft_history"][i]
        if value is ...:
            del rec[key]
        else:
            rec[key] = value
    return edit


def _edit_best(**fields):
    def edit(doc):
        doc["position"]["best"].update(fields)
    return edit


RECORD_EDITS = [
    (_edit_record(0, "train_loss"), r"position\.ft_history\[0\]\.train_loss is missing, expected a number"),
    (_edit_record(1, "train_loss", "0.5"), r"position\.ft_history\[1\]\.train_loss is '0\.5', expected a number"),
    (_edit_record(1, "train_state", None), r"position\.ft_history\[1\]\.train_state is None, expected a number"),
    (_edit_record(1, "epoch"), r"position\.ft_history\[1\]\.epoch is missing, expected 2"),
    (_edit_record(1, "epoch", 5), r"position\.ft_history\[1\]\.epoch is 5, expected 2"),
    (_edit_record(0, "dev_combined", [1]), r"position\.ft_history\[0\]\.dev_combined is \[1\], expected a number"),
    (_edit_record(0, "dev_best_point", 3), r"position\.ft_history\[0\]\.dev_best_point is 3, expected a point kind"),
    (lambda doc: doc["position"]["ft_history"].pop(), r"position\.ft_history is a list of 1 records, expected 2 "
                                                      r"\(one per epoch run: position\.epoch\)"),
    (lambda doc: doc["position"].update(best={}), r"position\.best is \{\}, expected the scores of epoch \d in ft_history"),
    (_edit_best(combined=2.0), r"position\.best is \{.*\}, expected the scores of epoch \d in ft_history"),
    (lambda doc: doc["position"]["best"].pop("loss"), r"position\.best is .* expected the scores of epoch"),
    (lambda doc: doc["position"].update(best_epoch=0), r"position\.best is .* expected null, as position\.best_epoch is 0"),
]


@pytest.mark.parametrize("edit, message", RECORD_EDITS, ids=[m[:50] for _, m in RECORD_EDITS])
def test_tampered_fine_tuning_records_are_refused_naming_the_field(finetune_dev_ckpt, tmp_path, edit, message):
    """A record missing train_loss was a KeyError in fine-tuning; a best without the metric early stopping
    compares, a KeyError at the next epoch; a record removed, silently the wrong best epoch without dev users."""
    ckpt = _tampered(finetune_dev_ckpt, tmp_path / "ckpt", doc_edit=edit)
    seen, hook = _epochs_run()
    with _refused(message):
        finetune(_model(), TRAIN, DEV, CFG, device=CPU, gens=make_generators(0, CPU), ckpt_dir=ckpt,
                 resume=load_checkpoint(ckpt), on_epoch_end=hook)
    assert not seen, "an epoch was trained from a tampered checkpoint"
