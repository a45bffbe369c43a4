"""Smoke test of scripts/bench_speed.py's input replication (the full benchmark is run by hand)."""

from __future__ import annotations

import gzip
import importlib.util
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _bench():
    spec = importlib.util.spec_from_file_location("bench_speed", REPO / "scripts" / "bench_speed.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("level", [None, 1])
def test_replicate_gives_unique_ids_and_keeps_fields(tmp_path, level):
    src = tmp_path / "user_info.test"
    src.write_bytes(b"USER_a\t40.7\t-74.0\thello ||| world\nUSER_b\t34.0\t-118.2\tlakers\n")
    dst = tmp_path / ("x3.gz" if level else "x3.txt")
    info = _bench().replicate(src, dst, 3, level)
    data = (gzip.open(dst, "rb").read() if level else dst.read_bytes()).decode()
    rows = [ln.split("\t") for ln in data.splitlines()]
    assert info["users"] == 6 and len(rows) == 6
    assert [r[0] for r in rows] == [f"USER_{u}_r{r:03d}" for r in range(3) for u in "ab"]
    assert rows[0][1:] == ["40.7", "-74.0", "hello ||| world"]
    assert not list(tmp_path.glob(".*partial"))


def test_cpu_per_user_is_the_marginal_cost_between_the_two_largest_inputs():
    pred = {"sdae": {"10": {"users": 20_000, "cpu_seconds": 9.0}, "100": {"users": 200_000, "cpu_seconds": 27.0}},
            "lr": {"10": {"users": 20_000, "cpu_seconds": 5.0}, "100": {"users": 200_000, "cpu_seconds": 4.0}}}
    got = _bench().cpu_per_user(pred, [1, 10, 100], n_cpus=2, chunksize=5000)
    # (27 - 9) s over 180,000 more users = 100 us each; two busy CPUs do 20,000 users/s at that cost.
    assert got["sdae"] == {"compared": "x100 vs x10", "cpu_us_per_user": 100.0, "ceiling_users_per_s": 20_000,
                           "cpus": 2, "meaningful": True}
    assert got["lr"]["ceiling_users_per_s"] is None  # start-up noise larger than the work: no ceiling claimed
    assert not _bench().cpu_per_user(pred, [1, 10, 100], n_cpus=2, chunksize=50_000)["sdae"]["meaningful"]
    assert _bench().cpu_per_user(pred, [100], n_cpus=2, chunksize=5000) == {}
