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


def test_no_command_prints_usage_and_exits_2(capsys):
    import pytest

    with pytest.raises(SystemExit) as e:
        main([])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: geoae") and "a command is required" in err and "prepare" in err


def test_logging_options_before_or_after_the_command():
    from geoae.cli import build_parser

    parser = build_parser()
    for argv, quiet, verbose in ((["prepare", "-o", "x"], False, 0), (["-q", "prepare", "-o", "x"], True, 0),
                                 (["prepare", "-o", "x", "-q"], True, 0), (["train", "-d", "d", "-o", "x", "-v"], False, 1),
                                 (["-vv", "predict", "-m", "m", "-i", "i", "-o", "o"], False, 2)):
        args = parser.parse_args(argv)
        assert (args.quiet, args.verbose) == (quiet, verbose), argv


def test_verbose_enables_debug_logging(tmp_path, caplog):
    import logging

    geoae_log = logging.getLogger("geoae")
    assert geoae_log.getEffectiveLevel() > logging.DEBUG
    try:
        assert main(["prepare", "-v", "-i", str(tmp_path / "none.jsonl"), "-o", str(tmp_path / "o")]) == 2
        assert geoae_log.getEffectiveLevel() == logging.DEBUG
    finally:
        geoae_log.setLevel(logging.NOTSET)
    assert any(r.levelno == logging.DEBUG and "resolved config" in r.getMessage() for r in caplog.records)


def test_every_option_has_help_and_shows_its_default():
    import argparse

    from geoae.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for cmd, p in sub.choices.items():
        for action in p._actions:
            assert action.help, f"geoae {cmd} {'/'.join(action.option_strings)} has no help"
        text = p.format_help()
        for action in p._actions:
            if isinstance(action.default, int) and not isinstance(action.default, bool):
                assert str(action.default) in text, f"geoae {cmd} {action.option_strings}: default not shown"
    predict = sub.choices["predict"].format_help()
    assert "(default: 3)" in predict and "(default: 5000)" in predict and "(default: cpu)" in predict


def test_bad_chunksize_names_the_option(tmp_path, capsys):
    rc = main(["-q", "predict", "-m", str(tmp_path / "m"), "-i", str(tmp_path / "i"), "-o", str(tmp_path / "o.csv"),
               "--chunksize", "0"])
    assert rc == 2
    err = capsys.readouterr().err
    assert err.strip() == "geoae predict: error: --chunksize must be >= 1; got 0"


def test_quiet_prints_nothing_on_success_and_errors_still_reach_stderr(tmp_path, capsys):
    from geoae.synthetic import write_twitter_jsonl

    src = write_twitter_jsonl(tmp_path / "t.jsonl", n_users=40, seed=0)
    assert main(["prepare", "-i", str(src), "-o", str(tmp_path / "loud")]) == 0
    assert "prepared 40 users" in capsys.readouterr().out
    assert main(["prepare", "-q", "-i", str(src), "-o", str(tmp_path / "quiet")]) == 0
    out = capsys.readouterr()
    assert out.out == "" and out.err == ""
    assert (tmp_path / "quiet" / "documents.parquet").exists()
    assert main(["-q", "prepare", "-i", str(tmp_path / "none.jsonl"), "-o", str(tmp_path / "x")]) == 2
    assert "none.jsonl" in capsys.readouterr().err


def test_a_refused_train_leaves_no_output_directory(tmp_path, capsys):
    assert main(["-q", "train", "-d", str(tmp_path / "no_data"), "-o", str(tmp_path / "t")]) == 2
    assert "geoae prepare" in capsys.readouterr().err
    assert not (tmp_path / "t").exists()


def test_sigterm_unwinds_like_ctrl_c(monkeypatch, capsys):
    import os
    import signal
    import time

    import geoae.predict

    def fake_predict(args):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # the handler raises in here
        raise AssertionError("SIGTERM did not interrupt the command")

    monkeypatch.setattr(geoae.predict, "_cmd_predict", fake_predict)
    before = signal.getsignal(signal.SIGTERM)
    assert main(["-q", "predict", "-m", "m", "-i", "i", "-o", "o.csv"]) == 143
    assert capsys.readouterr().err.strip() == "geoae predict: terminated (SIGTERM)"
    assert signal.getsignal(signal.SIGTERM) is before  # restored for whoever called main()


def test_a_child_process_dies_with_its_parent(tmp_path):
    # The parent exits abruptly (no cleanup, as under SIGKILL); its reader/worker children must not linger.
    import os
    import subprocess
    import sys
    import time

    script = tmp_path / "parent.py"
    script.write_text(
        "import multiprocessing as mp, os, sys, time\n"
        "from geoae.documents import die_with_parent\n"
        "def child():\n"
        "    die_with_parent()\n"
        "    time.sleep(60)\n"
        "if __name__ == '__main__':\n"
        "    p = mp.get_context('spawn').Process(target=child, daemon=True)\n"
        "    p.start()\n"
        "    time.sleep(3)\n"
        "    print(p.pid, flush=True)\n"
        "    os._exit(0)\n")
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60,
                         cwd=str(Path(__file__).resolve().parents[1]))
    pid = int(out.stdout.strip())

    def alive() -> bool:  # a zombie nobody reaps (PID 1 in some containers) has ended too
        try:
            return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
        except (FileNotFoundError, ProcessLookupError):
            return False

    for _ in range(50):
        if not alive():
            return
        time.sleep(0.1)
    os.kill(pid, 9)
    raise AssertionError("the child outlived its parent")


def test_out_of_memory_is_one_line_not_a_traceback(monkeypatch, capsys):
    import pytest

    import geoae.predict

    for exc in (MemoryError(), RuntimeError("[enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: "
                                            "not enough memory: you tried to allocate 4000000000 bytes. can't allocate memory")):
        def fake_predict(args, exc=exc):
            raise exc

        monkeypatch.setattr(geoae.predict, "_cmd_predict", fake_predict)
        assert main(["-q", "predict", "-m", "m", "-i", "i", "-o", "o.csv"]) == 2
        err = capsys.readouterr().err
        assert err.startswith("geoae predict: error: out of memory") and "--chunksize" in err and len(err.splitlines()) == 1

    def other_runtime_error(args):
        raise RuntimeError("a bug")

    monkeypatch.setattr(geoae.predict, "_cmd_predict", other_runtime_error)
    with pytest.raises(RuntimeError, match="a bug"):  # not disguised as a memory problem
        main(["-q", "predict", "-m", "m", "-i", "i", "-o", "o.csv"])


def test_an_error_message_with_line_breaks_is_printed_as_one_line(tmp_path, monkeypatch, capsys):
    """A message built from a library's text can hold line breaks: pyarrow's for a damaged
    documents.parquet ends "Couldn't deserialize thrift: ...\\n", which put "); rerun `geoae prepare`"
    on a line of its own."""
    import geoae.evaluate
    from geoae.errors import DataError

    def fake_evaluate(*args, **kwargs):
        raise DataError("documents.parquet: cannot read parquet (Couldn't deserialize thrift: TProtocolException\n"
                        "\r\n  ); rerun `geoae prepare`")

    monkeypatch.setattr(geoae.evaluate, "run_evaluate", fake_evaluate)
    assert main(["-q", "evaluate", "--model", "m", "--data", "d", "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert err == ("geoae evaluate: error: documents.parquet: cannot read parquet (Couldn't deserialize thrift: "
                   "TProtocolException ); rerun `geoae prepare`\n")
    # the real thing: a parquet file whose footer is garbage
    data = tmp_path / "data"
    data.mkdir()
    (data / "documents.parquet").write_bytes(b"PAR1" + b"\x00" * 100 + b"PAR1")
    monkeypatch.undo()
    assert main(["-q", "evaluate", "--model", "m", "--data", str(data), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("geoae evaluate: error: ") and "cannot read parquet" in err and len(err.splitlines()) == 1


def test_a_closed_stdout_pipe_exits_quietly_like_a_unix_tool(tmp_path):
    # `geoae evaluate ... | head -c 0`: the reader went away while the command printed. Status 141
    # (SIGPIPE), no traceback, and no "Exception ignored ... BrokenPipeError" when Python flushes at exit.
    import os
    import subprocess
    import sys

    script = tmp_path / "printer.py"
    script.write_text(
        "import sys\n"
        "import geoae.predict\n"
        "from geoae.cli import main\n"
        "def printer(args):\n"
        "    print('x' * 100 + '\\n' * 2000)  # more than any pipe buffer holds\n"
        "    return 0\n"
        "geoae.predict._cmd_predict = printer\n"
        "raise SystemExit(main(['predict', '-m', 'm', '-i', 'i', '-o', 'o.csv']))\n")
    r, w = os.pipe()
    os.close(r)
    try:
        out = subprocess.run([sys.executable, str(script)], stdout=w, stderr=subprocess.PIPE, text=True,
                             timeout=120, cwd=str(Path(__file__).resolve().parents[1]))
    finally:
        os.close(w)
    assert out.returncode == 141, out.stderr
    assert "Traceback" not in out.stderr and "BrokenPipe" not in out.stderr and "error" not in out.stderr, out.stderr


def test_a_broken_pipe_that_is_not_stdout_is_still_an_error(monkeypatch, capsys):
    import geoae.predict

    def fake_predict(args):
        raise BrokenPipeError(32, "Broken pipe")  # e.g. a reader process's pipe: the output may be incomplete

    monkeypatch.setattr(geoae.predict, "_cmd_predict", fake_predict)
    assert main(["-q", "predict", "-m", "m", "-i", "i", "-o", "o.csv"]) == 2
    assert "Broken pipe" in capsys.readouterr().err


def test_a_closed_stdout_pipe_exits_quietly_also_when_the_output_is_short(tmp_path):
    # A summary of a few lines stays in Python's buffer until exit, where the broken pipe was
    # "Exception ignored ... BrokenPipeError" and status 120. (PYTHONUNBUFFERED hides this.)
    import os
    import subprocess
    import sys

    script = tmp_path / "printer.py"
    script.write_text(
        "import geoae.predict\n"
        "from geoae.cli import main\n"
        "def printer(args):\n"
        "    print('report: r.html')\n"
        "    return 0\n"
        "geoae.predict._cmd_predict = printer\n"
        "raise SystemExit(main(['predict', '-m', 'm', '-i', 'i', '-o', 'o.csv']))\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    r, w = os.pipe()
    os.close(r)
    try:
        out = subprocess.run([sys.executable, str(script)], stdout=w, stderr=subprocess.PIPE, text=True, env=env,
                             timeout=120, cwd=str(Path(__file__).resolve().parents[1]))
    finally:
        os.close(w)
    assert out.returncode == 141, out.stderr
    assert "BrokenPipe" not in out.stderr, out.stderr


def test_with_q_a_broken_pipe_is_an_error_even_when_stdout_is_closed(monkeypatch, capsys):
    # -q writes nothing to stdout, so a broken pipe is a reader's or worker's, not the reader of stdout leaving.
    import geoae.cli
    import geoae.predict

    def fake_predict(args):
        raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr(geoae.predict, "_cmd_predict", fake_predict)
    monkeypatch.setattr(geoae.cli, "_stdout_closed", lambda: True)
    assert main(["-q", "predict", "-m", "m", "-i", "i", "-o", "o.csv"]) == 2
    assert "Broken pipe" in capsys.readouterr().err


def test_an_empty_path_is_refused_not_read_as_the_current_directory(tmp_path, monkeypatch, capsys):
    """--out '' once wrote a whole report (or demo run, or prepared data) into the working directory,
    and --summary '' / --full-text '' were ignored as if not given."""
    monkeypatch.chdir(tmp_path)
    src = tmp_path / "t.jsonl"
    src.write_text('{"id_str": "1", "text": "hi", "user": {"id_str": "u"}}\n')
    cases = [
        (["evaluate", "--model", "m", "--data", "d", "--out", ""], "--out"),
        (["prepare", "-i", str(src), "-o", ""], "--out"),
        (["demo", "--out", "", "--users", "20"], "--out"),
        (["predict", "-m", "m", "-i", str(src), "-o", "p.csv", "--summary", ""], "--summary"),
        (["predict", "-m", "m", "-i", str(src), "", "-o", "p.csv"], "--input"),
        (["benchmark", "--full-text", "", "-o", "b"], "--full-text"),
    ]
    for argv, option in cases:
        assert main(["-q", *argv]) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith(f"geoae {argv[0]}: error: {option} is an empty path")
        assert len(err.strip().splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.jsonl"]  # nothing written anywhere
