"""Provenance helpers: the progress-bar switch shared by the long stages."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from geoae.manifest import bar_disabled


def test_progress_bars_follow_quiet_unless_told():
    lg = logging.getLogger("geoae.test_bar")
    lg.setLevel(logging.INFO)
    assert bar_disabled(lg) is None  # tqdm decides: shown on a terminal, hidden in a pipe
    lg.setLevel(logging.WARNING)  # -q
    assert bar_disabled(lg) is True
    assert bar_disabled(lg, progress=True) is False  # an explicit choice wins either way
    lg.setLevel(logging.INFO)
    assert bar_disabled(lg, progress=False) is True


def test_check_writable_refuses_before_any_work_and_creates_nothing(tmp_path):
    import pytest

    from geoae.errors import GeoaeError
    from geoae.manifest import check_writable

    afile = tmp_path / "afile"
    afile.write_text("x")
    assert check_writable(tmp_path / "new" / "deeper", "--out", directory=True) == tmp_path / "new" / "deeper"
    assert check_writable(tmp_path / "new" / "out.csv", "output", directory=False) == tmp_path / "new" / "out.csv"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"]  # nothing created, no probe left
    with pytest.raises(GeoaeError, match=r"--out .*afile: is a file; it must be a directory"):
        check_writable(afile, "--out", directory=True)
    with pytest.raises(GeoaeError, match=r"--save .*: is a directory; give the name of a file to write"):
        check_writable(tmp_path, "--save", directory=False)
    for directory in (True, False):
        with pytest.raises(GeoaeError, match=r"afile is a file, so nothing can be created under it"):
            check_writable(afile / "sub" / "x.csv", "output", directory=directory)
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        probe = ro / "p"
        try:
            probe.write_text("")  # root ignores the mode: then only /proc can show the refusal
            probe.unlink()
            target = Path("/proc/geoae_out")
        except PermissionError:
            target = ro / "out"
        with pytest.raises(GeoaeError, match=r"cannot write in"):
            check_writable(target, "--out", directory=True)
    finally:
        ro.chmod(0o700)


def test_atomic_write_keeps_the_mode_of_the_file_it_replaces(tmp_path):
    import stat

    from geoae.manifest import atomic_write_bytes, file_mode

    new = tmp_path / "new.json"
    atomic_write_bytes(new, b"{}")
    assert stat.S_IMODE(new.stat().st_mode) == file_mode()  # a new file: as open() makes it
    for mode in (0o600, 0o664):  # kept private / shared with the group by its owner
        old = tmp_path / f"old{mode:o}.json"
        old.write_bytes(b"old")
        old.chmod(mode)
        atomic_write_bytes(old, b"new")
        assert old.read_bytes() == b"new"
        assert stat.S_IMODE(old.stat().st_mode) == mode
    assert sorted(p.name for p in tmp_path.iterdir()) == ["new.json", "old600.json", "old664.json"]


def test_atomic_write_makes_the_rename_durable(tmp_path, monkeypatch):
    import stat

    import geoae.manifest as manifest

    synced = []
    real = os.fsync

    def fsync(fd):
        synced.append(stat.S_ISDIR(os.fstat(fd).st_mode))
        real(fd)

    monkeypatch.setattr(manifest.os, "fsync", fsync)
    manifest.atomic_write_bytes(tmp_path / "a.json", b"{}")
    assert synced == [False, True]  # the data, then the directory entry the rename changed


def test_write_json_writes_valid_json_for_nan_inf_and_numpy_scalars(tmp_path):
    import json

    import numpy as np

    from geoae.manifest import write_json

    p = tmp_path / "m.json"
    write_json(p, {"a": float("nan"), "b": [np.float32("inf"), -np.inf, 1.5], "c": np.array([np.nan, 2.0]),
                   "d": {"e": np.float64("nan")}, "f": np.bool_(True), "g": np.int64(3), "h": np.str_("x"),
                   "i": (1, "j", None)})

    def strict(name):  # what jq, JavaScript or any strict parser does with NaN / Infinity
        raise ValueError(f"not JSON: {name}")

    got = json.loads(p.read_text(), parse_constant=strict)
    assert got == {"a": None, "b": [None, None, 1.5], "c": [None, 2.0], "d": {"e": None}, "f": True, "g": 3, "h": "x",
                   "i": [1, "j", None]}
