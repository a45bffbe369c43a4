"""scripts/trace_predict_memory.py on the tiny model (the GeoText x100 trace is run by hand)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers import load_script
from tests.tiny_run import trained_model, write_users


def _trace():
    return load_script("trace_predict_memory")


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return trained_model(tmp_path_factory)


def test_traces_every_chunk(model, tmp_path, capsys):
    users = write_users(tmp_path / "users.txt", n_users=30)
    out = tmp_path / "trace" / "t.json"
    assert _trace().main([str(model), str(users), "--chunksize", "10", "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    assert res["users"] == 30 and len(res["trace"]) >= 3 and res["rss_first_chunk_mb"] > 0


def test_bad_arguments_are_one_line(model, tmp_path, capsys):
    users = write_users(tmp_path / "users.txt", n_users=5)
    out = tmp_path / "t.json"
    for argv, says in (([str(tmp_path), str(users)], "not a geoae model directory"),
                       ([str(model), str(tmp_path / "none.txt")], "file not found"),
                       ([str(model), str(users), "--out", str(tmp_path)], "--out")):
        with pytest.raises(SystemExit) as e:
            _trace().main([*argv, "--out", str(out)] if "--out" not in argv else argv)
        assert e.value.code == 2 and says in capsys.readouterr().err
    assert not out.exists()
