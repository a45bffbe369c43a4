"""The ``geoae`` entry point on bad invocations: one clear line on stderr and exit status 2."""

from __future__ import annotations

from pathlib import Path

from geoae.cli import main


def test_benchmark_default_config_outside_the_repository_says_where_it_looked(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["-q", "benchmark", "-o", str(tmp_path / "b"), "--ablations", ""]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1
    assert str(tmp_path) in err and "-c/--config" in err
    assert str(Path(__file__).resolve().parents[1]) in err  # the checkout that has the default config
    assert not (tmp_path / "b").exists()


def test_undetectable_input_names_the_format_option(tmp_path, capsys):
    src = tmp_path / "mystery.dat"
    src.write_text("just some words\nand more\n")
    assert main(["-q", "prepare", "-i", str(src), "-o", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "--format" in err and len(err.strip().splitlines()) == 1
