"""scripts/bench_read.py's argument handling (timing runs are done by hand)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import load_script


def _bench_read():
    return load_script("bench_read")


@pytest.fixture
def users(tmp_path) -> Path:
    p = tmp_path / "users.txt"
    p.write_text("U1\t40.7\t-74.0\thello ||| world\nU2\t34.0\t-118.2\tlakers\n", encoding="utf-8")
    return p


def test_reads_and_saves_the_documents(users, tmp_path, capsys):
    assert _bench_read().main([str(users), "--save", str(tmp_path / "docs.parquet")]) == 0
    assert "2 users" in capsys.readouterr().out
    assert (tmp_path / "docs.parquet").is_file() and (tmp_path / "docs.parquet.log.json").is_file()


@pytest.mark.parametrize("repeat", ["0", "-1"])
def test_repeat_below_one_is_a_usage_error(users, repeat):
    with pytest.raises(SystemExit) as e:
        _bench_read().main([str(users), "--repeat", repeat])
    assert e.value.code == 2


def test_an_unreadable_input_is_one_line(tmp_path, capsys):
    (tmp_path / "empty.txt").write_bytes(b"")
    with pytest.raises(SystemExit) as e:
        _bench_read().main([str(tmp_path / "empty.txt"), "--format", "rahimi"])
    assert e.value.code == 2 and "is empty" in capsys.readouterr().err


@pytest.mark.parametrize("where", ["under_a_file", "a_directory"])
def test_a_save_path_that_cannot_be_written_is_refused_before_the_timed_runs(users, tmp_path, capsys, where):
    (tmp_path / "afile").write_text("x")
    (tmp_path / "adir").mkdir()
    save = tmp_path / ("afile/docs.parquet" if where == "under_a_file" else "adir")
    with pytest.raises(SystemExit) as e:
        _bench_read().main([str(users), "--save", str(save)])
    assert e.value.code == 2 and "--save" in capsys.readouterr().err
