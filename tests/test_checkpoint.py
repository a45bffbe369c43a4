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


@pytest.fixture(scope="module")
def finetune_ckpt(tmp_path_factory) -> Path:
    """A fine-tuning checkpoint after epoch 2 of 4 (no dev users: best_epoch 2, bad_epochs 0)."""
    d = tmp_path_factory.mktemp("finetune_ckpt")
    with pytest.raises(_Stop):
        finetune(_model(), TRAIN, None, CFG, device=CPU, gens=make_generators(0, CPU), ckpt_dir=d,
                 on_epoch_end=_stop_after("finetune", 0, 1))
    assert json.loads((d / STATE_JSON).read_text())["position"]["epoch"] == 2
    return d


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


@pytest.mark.parametrize("fields, message", PRETRAIN_EDITS, ids=[repr(f) for f, _ in PRETRAIN_EDITS])
def test_a_tampered_pretraining_position_is_refused_naming_the_field(pretrain_ckpt, tmp_path, fields, message):
    ckpt = _edited(pretrain_ckpt, tmp_path / "ckpt", **fields)
    seen, hook = _epochs_run()
    with _refused(message):
        _resume_pretraining(ckpt, hook)
    assert not seen, "an epoch was trained from a tampered checkpoint"


@pytest.mark.parametrize("fields, message", FINETUNE_EDITS, ids=[repr(f) for f, _ in FINETUNE_EDITS])
def test_a_tampered_finetuning_position_is_refused_naming_the_field(finetune_ckpt, tmp_path, fields, message):
    ckpt = _edited(finetune_ckpt, tmp_path / "ckpt", **fields)
    seen, hook = _epochs_run()
    with _refused(message):
        _resume_finetuning(ckpt, hook)
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
