"""A tiny synthetic corpus and a tiny trained model, shared by the end-to-end tests.

Everything here is sized to take a few seconds on two CPU cores: ~150 users
with 3-8 tweets each, a [16, 8, 4] stack, 2 pretraining epochs per layer and 3
fine-tuning epochs. Trained artifacts are cached per pytest session (keyed by
the overrides) so several test modules can share one.
"""

from __future__ import annotations

import contextlib
import re
from pathlib import Path

import pytest

from geoae.config import Config, load_config
from geoae.synthetic import write_rahimi, write_twitter_jsonl

# Overrides applied on top of the built-in defaults (no config file needed).
TINY = [
    "model.hidden=[16,8,4]",
    "model.head_dropout=0.1",
    "features.max_features=300",
    "pretrain.epochs=2",
    "pretrain.batch_size=32",
    "finetune.epochs=3",
    "finetune.batch_size=32",
    "finetune.patience=3",
    "train.device=cpu",
    "train.threads=1",
    "train.seed=0",
    "data.split=random",
    "data.dev_fraction=0.15",
    "data.test_fraction=0.2",
]

_CACHE: dict = {}


def tiny_config(*extra: str) -> Config:
    return load_config(None, TINY + list(extra))


def write_corpus(path: str | Path, n_users: int = 150, seed: int = 0) -> Path:
    """Twitter-API JSON lines for ``n_users`` synthetic users (3-7 tweets each)."""
    return write_twitter_jsonl(path, n_users=n_users, seed=seed, tweets_per_user=(3, 8))


def write_users(path: str | Path, n_users: int = 40, seed: int = 1) -> Path:
    """Rahimi per-user lines (one user per line) for prediction inputs."""
    return write_rahimi(path, n_users=n_users, seed=seed, tweets_per_user=(2, 5))


def prepared_data(tmp_path_factory, n_users: int = 150) -> Path:
    """A ``geoae prepare`` output directory on the tiny corpus (cached per session)."""
    from geoae.pipeline import prepare

    key = ("data", n_users)
    if key not in _CACHE:
        root = tmp_path_factory.mktemp("tiny_data")
        corpus = write_corpus(root / "tweets.jsonl", n_users=n_users)
        prepare(tiny_config(), root / "data", [str(corpus)])
        _CACHE[key] = root / "data"
    return _CACHE[key]


def trained_model(tmp_path_factory, *extra: str) -> Path:
    """The ``model`` directory of a tiny training run (cached per session and overrides)."""
    from geoae.pipeline import train

    key = ("model", extra)
    if key not in _CACHE:
        data = prepared_data(tmp_path_factory)
        out = tmp_path_factory.mktemp("tiny_train")
        _CACHE[key] = train(tiny_config(*extra), data, out)
    return _CACHE[key]


@contextlib.contextmanager
def refused(exc: type[BaseException], pattern: str, *paths: str | Path):
    """Like ``pytest.raises(exc, match=pattern)``, but the message is searched with
    ``paths`` (the test's temporary directories, whose names echo the test's
    name) blanked out, so a word can only match what the error itself says."""
    with pytest.raises(exc) as info:
        yield info
    msg = str(info.value)
    for p in sorted((str(p) for p in paths), key=len, reverse=True):
        msg = msg.replace(p, "<path>")
    assert re.search(pattern, msg), f"{pattern!r} not in {msg!r}"


def killed_on_call(real, n: int, message: str):
    """A stand-in for the writer ``real`` that raises ``KeyboardInterrupt(message)`` on its ``n``-th
    call (a kill at that moment) and otherwise writes as ``real`` does."""
    calls = []

    def write(path, data):
        calls.append(path)
        if len(calls) == n:
            raise KeyboardInterrupt(message)
        real(path, data)

    return write
