"""Provenance helpers: the progress-bar switch shared by the long stages."""

from __future__ import annotations

import logging

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
