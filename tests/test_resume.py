"""Killed-and-resumed training reaches exactly the weights of an uninterrupted run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import geoae.checkpoint as checkpoint_mod
from geoae.errors import ArtifactError, GeoaeError
from geoae.pipeline import train
from tests.tiny_run import killed_on_call, prepared_data, refused, tiny_config

# Three pretraining epochs per layer and four fine-tuning epochs (patience high
# enough that early stopping never ends the run before the kill points).
RESUME = ("pretrain.epochs=3", "finetune.epochs=4", "finetune.patience=10")


def cfg(*extra: str):
    return tiny_config(*RESUME, *extra)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return prepared_data(tmp_path_factory)


@pytest.fixture(scope="module")
def reference(data, tmp_path_factory) -> Path:
    """The uninterrupted run."""
    return train(cfg(), data, tmp_path_factory.mktemp("reference"))


def weights(model_dir: Path) -> dict[str, torch.Tensor]:
    idx = json.loads((model_dir / "artifact.json").read_text())
    return load_file(model_dir / idx["files"]["model"]["name"])


def assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    differ = [k for k in wa if not torch.equal(wa[k], wb[k])]
    assert not differ, f"tensors differ from the uninterrupted run: {differ}"
    ia = json.loads((a / "artifact.json").read_text())
    ib = json.loads((b / "artifact.json").read_text())
    assert ia["files"] == ib["files"]  # content-addressed: identical bytes, identical names
    for key in ("best_epoch", "best_epochs", "dev_metrics", "member_dev_metrics"):
        assert ia["meta"].get(key) == ib["meta"].get(key), key
    # The artifact keeps the best dev epoch, which may precede the kill point; the
    # per-epoch history and the final checkpoints (last-epoch weights, optimizer
    # moments, RNG states: pretraining's and each fine-tuning member's) must match too.
    ha = json.loads((a.parent / "history.json").read_text())
    hb = json.loads((b.parent / "history.json").read_text())
    assert ha == hb
    assert final_checkpoints(a.parent) == final_checkpoints(b.parent)


def final_checkpoints(run_dir: Path) -> dict[str, str]:
    """``{checkpoint dir relative to the run: sha256 of its tensors}`` for every checkpoint of a run."""
    found = {
        str(p.parent.relative_to(run_dir)): json.loads(p.read_text())["tensors_sha256"]
        for p in sorted((run_dir / "checkpoint").rglob("state.json"))
    }
    assert found, f"no checkpoint under {run_dir}"
    return found


def kill_at(stage: str, layer: int, epoch: int):
    """An ``on_epoch_end`` hook that interrupts training after the given epoch (0-based)."""
    seen = []

    def hook(s: str, k: int, e: int) -> None:
        seen.append((s, k, e))
        if (s, k, e) == (stage, layer, epoch):
            raise KeyboardInterrupt(f"killed after {s} layer {k} epoch {e}")

    hook.seen = seen
    return hook


@pytest.mark.parametrize(
    "where, extra",
    [
        (("pretrain", 1, 0), ()),                             # layer 2, epoch 1
        (("pretrain", 0, 2), ()),                             # end of layer 1 (layer boundary)
        (("finetune", 0, 1), ()),                             # inside fine-tuning
        (("finetune", 0, 2), ("train.checkpoint_every=2",)),  # epoch 3 not checkpointed: redo it
        (("pretrain", 1, 1), ("train.checkpoint_every=2",)),  # ditto in pretraining
    ],
    ids=["pretrain-l2e1", "pretrain-layer-end", "finetune-e2", "finetune-redo", "pretrain-redo"],
)
def test_killed_then_resumed_equals_uninterrupted(where, extra, data, reference, tmp_path, caplog):
    import logging

    c = cfg(*extra)
    hook = kill_at(*where)
    with pytest.raises(KeyboardInterrupt):
        train(c, data, tmp_path, on_epoch_end=hook)
    assert hook.seen[-1] == where
    assert not (tmp_path / "model").exists()
    with caplog.at_level(logging.INFO, logger="geoae"):
        model_dir = train(c, data, tmp_path, resume=True)
    assert_same_weights(reference, model_dir)
    # the resumed run says where it picks up
    said = [r.getMessage() for r in caplog.records if r.getMessage().startswith("resuming")]
    assert said and said[0].startswith({"pretrain": "resuming pretraining", "finetune": "resuming fine-tuning"}[where[0]]), said


def test_kill_between_checkpoint_writes_resumes_from_previous_checkpoint(data, reference, tmp_path, monkeypatch):
    """A kill after the tensors of a checkpoint were written but before its JSON: the previous checkpoint holds."""
    monkeypatch.setattr(checkpoint_mod, "atomic_write_text",
                        killed_on_call(checkpoint_mod.atomic_write_text, 3,
                                       "killed between the tensor and JSON writes of a checkpoint"))
    with pytest.raises(KeyboardInterrupt):
        train(cfg(), data, tmp_path)
    monkeypatch.undo()
    model_dir = train(cfg(), data, tmp_path, resume=True)
    assert_same_weights(reference, model_dir)


def test_resuming_a_finished_run_changes_nothing(data, reference, tmp_path):
    first = train(cfg(), data, tmp_path)
    hook = kill_at("none", -1, -1)  # records the epochs run; a rerun from scratch would match the weights too
    again = train(cfg(), data, tmp_path, resume=True, on_epoch_end=hook)
    assert hook.seen == [], "a finished run was trained again instead of resumed"
    assert_same_weights(reference, first)
    assert_same_weights(reference, again)


def test_stage_pretrain_then_finetune_equals_all(data, reference, tmp_path):
    out = train(cfg(), data, tmp_path, stage="pretrain")
    assert not (tmp_path / "model").exists()
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["stage"] == "train:pretrain"
    assert manifest["inputs"][0]["path"].endswith("documents.parquet") and len(manifest["inputs"][0]["sha256"]) == 64
    model_dir = train(cfg(), data, tmp_path, stage="finetune")
    assert_same_weights(reference, model_dir)


def test_no_resume_starts_afresh_and_still_matches(data, reference, tmp_path, caplog):
    import logging

    with pytest.raises(KeyboardInterrupt):
        train(cfg(), data, tmp_path, on_epoch_end=kill_at("finetune", 0, 0))
    # A resumed run would match the reference too: that it started afresh shows in the epochs it
    # ran (pretraining from layer 1, epoch 1, and fine-tuning from its first epoch) and in the log.
    hook = kill_at("none", -1, -1)
    with caplog.at_level(logging.INFO, logger="geoae"):
        model_dir = train(cfg(), data, tmp_path, resume=False, on_epoch_end=hook)
    assert hook.seen[0] == ("pretrain", 0, 0) and ("finetune", 0, 0) in hook.seen, hook.seen
    assert not [r for r in caplog.records if r.getMessage().startswith("resuming")]
    assert_same_weights(reference, model_dir)


def test_finetune_before_pretraining_is_a_clear_error(data, tmp_path):
    with refused(GeoaeError, "pretraining is not complete", tmp_path):
        train(cfg(), data, tmp_path, stage="finetune")
    assert not (tmp_path / "model").exists()


def test_finetune_after_partial_pretraining_is_a_clear_error(data, tmp_path):
    with pytest.raises(KeyboardInterrupt):
        train(cfg(), data, tmp_path, stage="pretrain", on_epoch_end=kill_at("pretrain", 1, 0))
    with refused(GeoaeError, "pretraining is not complete", tmp_path):
        train(cfg(), data, tmp_path, stage="finetune")


def _tensor_file(ckpt: Path) -> Path:
    files = sorted(ckpt.glob("*.safetensors"))
    assert len(files) == 1, files
    return files[0]


def test_checkpoint_with_altered_tensors_is_refused(data, tmp_path):
    with pytest.raises(KeyboardInterrupt):
        train(cfg(), data, tmp_path, on_epoch_end=kill_at("pretrain", 1, 0))
    p = _tensor_file(tmp_path / "checkpoint")
    blob = bytearray(p.read_bytes())
    blob[-5] ^= 0x10
    p.write_bytes(bytes(blob))
    with refused(ArtifactError, "do not match their recorded hash", tmp_path):
        train(cfg(), data, tmp_path, resume=True)


def test_checkpoint_with_missing_tensors_is_refused(data, tmp_path):
    with pytest.raises(KeyboardInterrupt):
        train(cfg(), data, tmp_path, on_epoch_end=kill_at("finetune", 0, 0))
    _tensor_file(tmp_path / "checkpoint").unlink()
    with refused(ArtifactError, "unreadable checkpoint", tmp_path):
        train(cfg(), data, tmp_path, resume=True)


def test_checkpoint_of_another_config_is_not_resumed(data, reference, tmp_path):
    with pytest.raises(KeyboardInterrupt):
        train(cfg("finetune.lr=0.05"), data, tmp_path, on_epoch_end=kill_at("finetune", 0, 0))
    model_dir = train(cfg(), data, tmp_path, resume=True)
    assert_same_weights(reference, model_dir)


def test_ensemble_killed_in_second_member_resumes_exactly(data, tmp_path):
    """With ``finetune.ensemble=2`` each member has its own checkpoint; a kill inside member 2 resumes there."""
    c = cfg("finetune.ensemble=2")
    ref = train(c, data, tmp_path / "ref")
    hook = kill_at("finetune", 1, 1)
    with pytest.raises(KeyboardInterrupt):
        train(c, data, tmp_path / "killed", on_epoch_end=hook)
    assert hook.seen[-1] == ("finetune", 1, 1)
    assert_same_weights(ref, train(c, data, tmp_path / "killed", resume=True))


def _count_finetune_epochs():
    seen = []

    def hook(stage, member, epoch):
        if stage == "finetune":
            seen.append((member, epoch))

    return seen, hook


def test_no_resume_pretraining_also_discards_member_checkpoints(data, tmp_path):
    train(cfg(), data, tmp_path)  # a finished run: member checkpoints exist
    train(cfg(), data, tmp_path, stage="pretrain", resume=False)
    seen, hook = _count_finetune_epochs()
    train(cfg(), data, tmp_path, stage="finetune", on_epoch_end=hook)
    assert seen, "fine-tuning was skipped: stale member checkpoints were resumed after a fresh pretraining"


def test_member_checkpoints_are_not_resumed_on_other_data(tmp_path_factory, tmp_path, caplog):
    import logging

    data_a = prepared_data(tmp_path_factory, n_users=150)
    data_b = prepared_data(tmp_path_factory, n_users=120)
    train(cfg(), data_a, tmp_path)
    seen, hook = _count_finetune_epochs()
    with caplog.at_level(logging.WARNING, logger="geoae.pipeline"):
        train(cfg(), data_b, tmp_path, on_epoch_end=hook)  # same config, other training users
    assert seen, "a checkpoint trained on other data was resumed"
    assert "was made with other training data (same config); starting afresh" in caplog.text  # not "another config"
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="geoae.pipeline"):
        train(cfg("finetune.lr=0.02"), data_b, tmp_path)
    assert "was made with another config; starting afresh" in caplog.text


def test_finetune_with_another_config_than_pretraining_says_why(data, tmp_path):
    train(cfg(), data, tmp_path, stage="pretrain")
    with pytest.raises(GeoaeError, match="pretraining checkpoint .* was made with another config"):
        train(cfg("finetune.lr=0.01"), data, tmp_path, stage="finetune")
    assert not (tmp_path / "model").exists()


@pytest.mark.parametrize("content", [b"\xff", b"[1]", b'{"tensors_file": "state.safetensors"}', b"[" * 100_000,
                                     b'{"position": ' + b"9" * 5000 + b"}"],
                         ids=["not-utf8", "a-list", "no-position", "too-deep", "huge-int"])
def test_a_damaged_checkpoint_record_is_one_clear_error(data, tmp_path, content):
    """Each of these was a traceback (UnicodeDecodeError, AttributeError, RecursionError, ValueError, or a
    KeyError later in the pipeline), not the 'unreadable checkpoint' the other damage gets."""
    with pytest.raises(KeyboardInterrupt):
        train(cfg(), data, tmp_path, on_epoch_end=kill_at("pretrain", 1, 0))
    (tmp_path / "checkpoint" / checkpoint_mod.STATE_JSON).write_bytes(content)
    with refused(ArtifactError, "unreadable checkpoint", tmp_path):
        train(cfg(), data, tmp_path, resume=True)


def test_checkpoint_tensors_that_are_not_safetensors_but_match_their_hash_are_refused(data, tmp_path):
    import hashlib

    with pytest.raises(KeyboardInterrupt):
        train(cfg(), data, tmp_path, on_epoch_end=kill_at("pretrain", 1, 0))
    p = _tensor_file(tmp_path / "checkpoint")
    p.write_bytes(b"not a safetensors file")
    js = tmp_path / "checkpoint" / checkpoint_mod.STATE_JSON
    doc = json.loads(js.read_text())
    doc["tensors_sha256"] = hashlib.sha256(b"not a safetensors file").hexdigest()
    js.write_text(json.dumps(doc))
    with refused(ArtifactError, "not valid safetensors", tmp_path):
        train(cfg(), data, tmp_path, resume=True)


def test_resumed_run_without_dev_users_records_the_metric_an_uninterrupted_run_does(data, tmp_path):
    """Without dev users early stopping falls back to the training loss; a member restored as already
    finished skipped the loop where that happens and recorded dev_loss instead."""
    c = cfg("finetune.ensemble=2", "data.dev_splits=[]")
    ref = train(c, data, tmp_path / "ref")
    with pytest.raises(KeyboardInterrupt):
        train(c, data, tmp_path / "killed", on_epoch_end=kill_at("finetune", 1, 1))
    resumed = train(c, data, tmp_path / "killed", resume=True)
    meta = [json.loads((d / "artifact.json").read_text())["meta"] for d in (ref, resumed)]
    assert meta[0]["select_metric"] == "loss"
    assert meta[1]["select_metric"] == meta[0]["select_metric"]
    assert_same_weights(ref, resumed)


def test_a_rejected_checkpoint_is_not_read_back_as_the_pretraining_of_a_run_without_one(data, tmp_path):
    """With pretrain.epochs=0 nothing overwrote the rejected checkpoint of an earlier config, and it
    was loaded back as every member's pretrained stack."""
    train(cfg(), data, tmp_path / "a")  # pretrained with the default epochs
    model_a = train(cfg("pretrain.epochs=0"), data, tmp_path / "a")  # same directory, no pretraining
    model_b = train(cfg("pretrain.epochs=0"), data, tmp_path / "b")  # a fresh directory
    assert_same_weights(model_b, model_a)


def test_member_checkpoints_are_not_resumed_with_other_dev_users(data, tmp_path):
    """data.dev_splits is outside the checkpoint's config key and the training users are the same, so
    the finished members of a run that early-stopped on other dev users were resumed as they were:
    a model selected on the old dev users, unlike an uninterrupted run with the new setting."""
    train(cfg(), data, tmp_path / "run")
    other = cfg("data.dev_splits=[test]")
    seen, hook = _count_finetune_epochs()
    resumed = train(other, data, tmp_path / "run", on_epoch_end=hook)
    assert seen, "members early-stopped on other dev users were resumed"
    assert_same_weights(train(other, data, tmp_path / "fresh"), resumed)


def test_finetune_stage_without_resume_keeps_the_pretraining_and_says_why(data, tmp_path):
    """--no-resume deleted the pretraining checkpoint --stage finetune continues from, then said
    "pretraining is not complete" (it had been, a moment before)."""
    train(cfg(), data, tmp_path, stage="pretrain")
    before = final_checkpoints(tmp_path)
    with refused(GeoaeError, r"--no-resume .* --stage finetune", tmp_path):
        train(cfg(), data, tmp_path, stage="finetune", resume=False)
    assert final_checkpoints(tmp_path) == before
    assert not (tmp_path / "model").exists()
    # Without pretraining there is nothing to keep: fine-tuning afresh is what it asks for.
    train(cfg("pretrain.epochs=0"), data, tmp_path / "none", stage="finetune", resume=False)


def test_a_cuda_device_the_machine_lacks_is_a_config_error(monkeypatch):
    """cuda:3 on a one-GPU machine failed at the first tensor moved there (invalid device ordinal)."""
    from geoae.errors import ConfigError

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(ConfigError, match=r"train.device='cuda:3' but this machine has 1 CUDA device \(cuda:0\)"):
        checkpoint_mod.resolve_device("cuda:3")
    assert checkpoint_mod.resolve_device("cuda:0") == torch.device("cuda:0")


def test_training_and_prediction_share_one_cuda_ordinal_check(monkeypatch):
    """resolve_device (train.device) and artifact.torch_device (--device) each had their own copy of the
    "invalid device ordinal" check; both now ask checkpoint.missing_cuda_ordinal."""
    import geoae.artifact as artifact_mod
    from geoae.errors import ConfigError

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    check = checkpoint_mod.missing_cuda_ordinal
    for ok in ("cpu", "cuda", "cuda:0", "cuda:1"):
        assert check(torch.device(ok)) is None, ok
    assert check(torch.device("cuda:2")) == 2 and check(torch.device("cuda:7")) == 2
    asked = []

    def spy(device):
        asked.append(str(device))
        return check(device)

    monkeypatch.setattr(checkpoint_mod, "missing_cuda_ordinal", spy)
    monkeypatch.setattr(artifact_mod, "missing_cuda_ordinal", spy)
    with pytest.raises(ConfigError, match=r"train.device='cuda:2' but this machine has 2 CUDA devices \(cuda:0, cuda:1\)"):
        checkpoint_mod.resolve_device("cuda:2")
    with pytest.raises(GeoaeError, match=r"--device cuda:2: this machine has 2 CUDA GPUs \(cuda:0 to cuda:1\)"):
        artifact_mod.torch_device("cuda:2")
    assert asked == ["cuda:2", "cuda:2"]


def _rewrite_checkpoint(ckpt: Path, doc_edit=None, tensor_edit=None) -> None:
    """Edit a checkpoint in place as a forger would: state.json by hand, the tensors rewritten with
    their hash recomputed (so only the checks of what they hold can tell)."""
    import hashlib

    from safetensors.torch import load as st_load
    from safetensors.torch import save as st_save

    js = ckpt / checkpoint_mod.STATE_JSON
    doc = json.loads(js.read_text())
    if tensor_edit is not None:
        p = ckpt / doc["tensors_file"]
        tensors = st_load(p.read_bytes())
        tensor_edit(tensors)
        blob = st_save(tensors)
        p.write_bytes(blob)
        doc["tensors_sha256"] = hashlib.sha256(blob).hexdigest()
    if doc_edit is not None:
        doc_edit(doc)
    js.write_text(json.dumps(doc))


@pytest.fixture(scope="module")
def killed_in_finetuning(data, tmp_path_factory) -> Path:
    """A run killed after fine-tuning epoch 2 of member 0: its checkpoint/member0 holds optimizer moments."""
    run = tmp_path_factory.mktemp("killed_in_finetuning")
    with pytest.raises(KeyboardInterrupt):
        train(cfg(), data, run, on_epoch_end=kill_at("finetune", 0, 1))
    return run


@pytest.mark.parametrize("doc_edit, tensor_edit, message", [
    (lambda d: d["optimizer"].update(param_groups=None), None,
     r"member0/state\.json: checkpoint field optimizer\.param_groups is None, expected a list of 1 parameter group"),
    (lambda d: d["optimizer"]["param_groups"][0].update(params=[0, [1], 2]), None,
     r"member0/state\.json: checkpoint field optimizer\.param_groups\[0\]\.params is \[0, \[1\], 2\], expected"),
    (None, lambda t: t.pop("model.layers.1.encoder.weight"),
     r"member0/state-[0-9a-f]{12}\.safetensors: checkpoint model weights \(model\.\*\) do not fit this run's model: "
     r"layers\.1\.encoder\.weight missing"),
    (None, lambda t: t.update({"model.coord_head.weight": torch.zeros(3, 3)}),
     r"member0/state-[0-9a-f]{12}\.safetensors: .* coord_head\.weight of shape \(3, 3\), the model's is \(2, 4\)"),
    (None, lambda t: t.clear(), r"member0/state-[0-9a-f]{12}\.safetensors: .* and \d+ more missing"),
    (lambda d: d["position"]["ft_history"][0].pop("train_loss"), None,
     r"member0/state\.json: checkpoint field position\.ft_history\[0\]\.train_loss is missing, expected a number"),
], ids=["param-groups-none", "params-entry-a-list", "tensor-missing", "tensor-shape", "no-tensors", "no-train-loss"])
def test_train_resume_refuses_a_hand_edited_member_checkpoint(data, killed_in_finetuning, tmp_path, doc_edit,
                                                              tensor_edit, message):
    """Through ``geoae train`` (resume is its default): a TypeError inside torch's Optimizer.load_state_dict,
    a RuntimeError from load_state_dict, a KeyError in fine-tuning's early stopping; now one clear error."""
    import shutil

    run = Path(shutil.copytree(killed_in_finetuning, tmp_path / "run"))
    _rewrite_checkpoint(run / "checkpoint" / "member0", doc_edit, tensor_edit)
    with refused(ArtifactError, message + r".*the file was edited or damaged: delete the checkpoint directory", tmp_path):
        train(cfg(), data, run, resume=True)
    assert not (run / "model").exists()
