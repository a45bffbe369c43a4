"""Training and prediction on a CUDA GPU: skipped where there is none (CI never has one).

Run on a GPU machine with ``python -m pytest tests/test_gpu.py``. What is checked: the same
seed gives the same weights on the GPU, a killed-and-resumed GPU run equals the uninterrupted
one (the GPU's RNG is in the checkpoint), a CPU run on a GPU machine leaves the GPU alone, and a
model predicts the same on the GPU as on the CPU.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from geoae.pipeline import train
from geoae.predict import load_predictor, predict_files
from tests.test_resume import assert_same_weights, kill_at
from tests.tiny_run import prepared_data, tiny_config, trained_model, write_users

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

# As tests/test_resume.py, on the GPU; dropout in the heads draws from the GPU's RNG.
ON_GPU = ("train.device=cuda", "pretrain.epochs=3", "finetune.epochs=4", "finetune.patience=10",
          "model.head_dropout=0.3")


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return prepared_data(tmp_path_factory)


@pytest.fixture(scope="module")
def reference(data, tmp_path_factory) -> Path:
    return train(tiny_config(*ON_GPU), data, tmp_path_factory.mktemp("gpu_reference"))


def test_same_seed_same_weights_on_the_gpu(data, reference, tmp_path):
    assert json.loads((reference / "artifact.json").read_text())["config"]["train"]["device"] == "cuda"
    assert_same_weights(reference, train(tiny_config(*ON_GPU), data, tmp_path))


@pytest.mark.parametrize("where", [("pretrain", 1, 1), ("finetune", 0, 1)], ids=["pretrain", "finetune"])
def test_killed_then_resumed_on_the_gpu_equals_uninterrupted(where, data, reference, tmp_path):
    with pytest.raises(KeyboardInterrupt):
        train(tiny_config(*ON_GPU), data, tmp_path, on_epoch_end=kill_at(*where))
    torch.cuda.manual_seed_all(12345)  # whatever the GPU's RNG holds now, the checkpoint's state must win
    assert_same_weights(reference, train(tiny_config(*ON_GPU), data, tmp_path, resume=True))


def test_cpu_training_on_a_gpu_machine_leaves_the_gpu_alone(data, tmp_path):
    # In a fresh interpreter: this one has used the GPU already.
    code = ("import sys, torch; from geoae.pipeline import train; from tests.tiny_run import tiny_config; "
            "train(tiny_config('train.device=cpu'), sys.argv[1], sys.argv[2]); "
            "print('cuda initialized:', torch.cuda.is_initialized())")
    out = subprocess.run([sys.executable, "-c", code, str(data), str(tmp_path)], capture_output=True, text=True,
                         cwd=Path(__file__).resolve().parents[1], timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "cuda initialized: False" in out.stdout


@pytest.mark.parametrize("half", [False, True], ids=["float32", "half"])
def test_a_model_predicts_the_same_on_the_gpu_as_on_the_cpu(tmp_path_factory, tmp_path, half):
    model = trained_model(tmp_path_factory)
    users = write_users(tmp_path / "users.txt", n_users=200)
    frames = {}
    for dev in ("cpu", "cuda"):
        assert load_predictor(model, device=dev, half=half).device.type == dev
        out = tmp_path / f"{dev}.csv"
        summary = predict_files(model, [users], out, device=dev, half=half, progress=False, chunksize=7)
        assert summary["rows_out"] == 200
        frames[dev] = pd.read_csv(out, dtype={"user_id": str})
    a, b = frames["cpu"], frames["cuda"]
    assert (a["user_id"] == b["user_id"]).all() and (a["state"] == b["state"]).all()
    assert np.allclose(a["state_prob"], b["state_prob"], atol=1e-4)
    assert np.allclose(a[["lat", "lon"]], b[["lat", "lon"]], atol=1e-3)
