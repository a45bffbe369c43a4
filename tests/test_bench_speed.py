"""Smoke test of scripts/bench_speed.py's input replication (the full benchmark is run by hand)."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from tests.helpers import load_script

REPO = Path(__file__).resolve().parents[1]


def _bench():
    return load_script("bench_speed")


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


def _refused(argv: list[str]) -> str:
    """bench_speed's one-line refusal (a SystemExit with a message, as its own checks give)."""
    with pytest.raises(SystemExit) as e:
        _bench().main(argv)
    assert isinstance(e.value.code, str) and "Traceback" not in e.value.code
    return e.value.code


def test_bad_arguments_are_refused_before_any_work(tmp_path):
    run = tmp_path / "run"
    (tmp_path / "afile").write_text("x")
    quick = ["--quick", "--run-dir", str(run), "--out", str(tmp_path / "speed.json")]
    # the results JSON would only be written at the end, after every measured step
    assert "--out" in _refused([*quick, "--out", str(tmp_path)])
    assert "--out" in _refused([*quick, "--out", str(tmp_path / "afile" / "speed.json")])
    assert "--run-dir" in _refused([*quick, "--run-dir", str(tmp_path / "afile")])
    assert "config file not found" in _refused([*quick, "-c", str(tmp_path / "nope.yaml")])
    assert "--scales" in _refused([*quick, "--scales", "1,ten"])
    # a --model that is not a model fails now, not after the training stages
    assert "artifact.json" in _refused([*quick, "--model", str(tmp_path)])
    assert not run.exists() and not (tmp_path / "speed.json").exists()


def test_a_missing_test_file_is_one_line(tmp_path):
    with pytest.raises(SystemExit) as e:
        _bench().replicate(tmp_path / "user_info.test.gz", tmp_path / "x1.txt", 1, None)
    assert "user_info.test.gz" in str(e.value.code) and "--test-file" in str(e.value.code)


def test_the_cpu_ceiling_counts_the_cpus_this_process_may_use():
    # a container pinned to 2 of a host's 64 CPUs: os.cpu_count() says 64, the affinity mask 2
    assert _bench().usable_cpus({"cpu_count": 64, "cpu_affinity": 2}) == 2
    assert _bench().usable_cpus({"cpu_count": 8, "cpu_affinity": None}) == 8  # no affinity on this OS


def test_a_childs_peak_rss_is_its_own_not_the_spawning_parents(tmp_path):
    """Linux keeps a process's ru_maxrss across fork + exec, so a child of a parent that once held
    400 MB would report at least 400 MB whatever it used itself: the peak must be the child's own."""
    import json
    import resource
    import subprocess
    import sys

    held = bytearray(400 * 2**20)
    held[::4096] = b"\x01" * len(held[::4096])  # resident, not just reserved
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 >= 400
    code = (f"import importlib.util, json; s = importlib.util.spec_from_file_location('b', {str(REPO / 'scripts' / 'bench_speed.py')!r}); "
            "m = importlib.util.module_from_spec(s); s.loader.exec_module(m); print(json.dumps(m._peak_rss_mb()))")
    child = json.loads(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)
    del held
    assert child < 200  # a bare interpreter with the script's own imports: tens of MB
