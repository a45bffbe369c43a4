"""Provenance helpers: the progress-bar switch shared by the long stages."""

from __future__ import annotations

import logging
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
