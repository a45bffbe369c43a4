"""Shared pytest fixtures (keep minimal: each module's own fixtures live in its test file)."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def shared_geotext() -> Path:
    """The partial GeoText copy under ../shared/data/geotext; skips the test when absent."""
    path = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "geotext"
    if not path.is_dir():
        pytest.skip("../shared absent")
    return path
