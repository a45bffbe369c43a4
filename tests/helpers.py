"""Tiny synthetic data shared by the model tests (no featurizer needed), and the scripts' loader."""

import importlib.util
from pathlib import Path

import numpy as np

from geoae.config import config_from_dict
from geoae.finetune import TrainingSet

# Class centres: NY, CA, TX, IL, WA
CENTRES = np.array([[40.7, -74.0], [34.0, -118.2], [29.8, -95.4], [41.9, -87.6], [47.6, -122.3]])


def tiny_config(**over):
    raw = {
        "model": {"hidden": [32, 16, 8], "activation": "relu", "head_dropout": 0.0},
        "pretrain": {"epochs": 3, "batch_size": 16, "lr": 0.01},
        "finetune": {"epochs": 25, "batch_size": 16, "lr": 0.01, "patience": 25},
        "train": {"device": "cpu", "seed": 0},
    }
    for k, v in over.items():
        raw.setdefault(k, {}).update(v)
    return config_from_dict(raw)


def tiny_set(n=200, n_features=60, seed=0, class_weights=(0.4, 0.2, 0.15, 0.15, 0.1)):
    """Users of 5 classes; each class turns on its own block of features, plus shared noise."""
    rng = np.random.default_rng(seed)
    k = len(CENTRES)
    y = rng.choice(k, size=n, p=np.asarray(class_weights))
    X = (rng.random((n, n_features)) < 0.05).astype(np.float32)
    block = n_features // (2 * k)
    for i in range(n):
        cols = y[i] * block + rng.choice(block, size=3, replace=False)
        X[i, cols] = 1.0
    X /= np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-9)
    coords = (CENTRES[y] + rng.normal(0, 0.2, size=(n, 2))).astype(np.float32)
    return TrainingSet(X, y.astype(np.int64), coords)


def load_script(name: str):
    """``scripts/NAME.py`` as a module (the scripts are not a package), loaded afresh each call."""
    path = Path(__file__).resolve().parents[1] / "scripts" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod
