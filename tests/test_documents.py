"""Tests of geoae.documents: in-memory and streaming documents, split assignment."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from geoae.documents import DOC_COLUMNS, assign_splits, build_documents, iter_documents, read_documents
from geoae.tweets import read_tweets
from geoae.errors import ConfigError, DataError, RecordLog
from geoae.tweets import GRANULARITY_ATTR


def tweets(rows, granularity="tweet"):
    """rows: (user, text, lat, lon, split[, n_tweets])."""
    df = pd.DataFrame(
        [
            {"user_id": r[0], "text": r[1], "lat": r[2], "lon": r[3], "split": r[4],
             "n_tweets": r[5] if len(r) > 5 else 1, "source": "mem", "line": i + 1}
            for i, r in enumerate(rows)
        ]
    )
    df.attrs[GRANULARITY_ATTR] = granularity
    return df


NAN = float("nan")


def test_build_documents_schema_order_and_first_valid_coordinate():
    log = RecordLog()
    docs = build_documents(
        tweets([
            ("b", "b1", NAN, NAN, "dev"),
            ("a", "a1", 1.0, 2.0, "train"),
            ("b", "b2", 3.0, 4.0, "dev"),
            ("a", "a2", 5.0, 6.0, "train"),
            ("b", "", 7.0, 8.0, "dev"),
        ]),
        log=log,
    )
    assert tuple(docs.columns) == DOC_COLUMNS
    assert docs["user_id"].tolist() == ["b", "a"]  # first appearance
    assert docs["text"].tolist() == ["b1\nb2", "a1\na2"]  # input order, empty tweet left out
    assert docs["n_tweets"].tolist() == [3, 2]
    assert (docs.loc[0, "lat"], docs.loc[0, "lon"]) == (3.0, 4.0)  # first VALID coordinate
    assert (docs.loc[1, "lat"], docs.loc[1, "lon"]) == (1.0, 2.0)
    assert docs["split"].tolist() == ["dev", "train"]
    assert docs["n_tweets"].dtype == np.int64 and docs["lat"].dtype == np.float64
    assert log.total == 0


def test_first_valid_coordinate_skips_the_null_island_placeholder():
    # (0, 0) is the usual placeholder of a missing position, which labels.add_labels discards: a user
    # whose first tweet carries it and a later one a real point must get the real point, not lose
    # both. A user with nothing but (0, 0) keeps it, so add_labels still counts it as invalid.
    docs = build_documents(tweets([
        ("a", "a1", 0.0, 0.0, "train"),
        ("a", "a2", 40.7, -74.0, "train"),
        ("z", "z1", 0.0, 0.0, "train"),
        ("z", "z2", NAN, NAN, "train"),
        ("o", "o1", 0.0, 0.0, "train"),
    ]))
    assert docs[["user_id", "lat", "lon"]].values.tolist() == [["a", 40.7, -74.0], ["z", 0.0, 0.0], ["o", 0.0, 0.0]]


def test_empty_user_counted_and_left_out():
    log = RecordLog()
    docs = build_documents(tweets([("a", "x", 1, 1, "train"), ("e", "  ", 1, 1, "train"), ("e", "", 1, 1, "train")]),
                           log=log)
    assert docs["user_id"].tolist() == ["a"]
    assert log.counts["empty_user"] == 1


def test_min_tweets_counted():
    log = RecordLog()
    docs = build_documents(tweets([("a", "x", 1, 1, ""), ("a", "y", 1, 1, ""), ("b", "z", 1, 1, "")]), log=log,
                           min_tweets=2)
    assert docs["user_id"].tolist() == ["a"] and log.counts["too_few_tweets"] == 1


def test_conflicting_split_counted_first_kept():
    log = RecordLog()
    docs = build_documents(tweets([("a", "x", 1, 1, "train"), ("a", "y", 1, 1, ""), ("a", "z", 1, 1, "test")]),
                           log=log)
    assert docs["split"].tolist() == ["train"] and log.counts["conflicting_split"] == 1


def test_conflicting_split_keeps_only_the_first_splits_tweets():
    """A user in two splits was kept under the first with the tweets of BOTH merged into its document:
    its test tweets (and test coordinates) then trained the model. Only the first split's tweets (and
    those without a split) stay; the message says how many were kept and dropped, from which split."""
    log = RecordLog()
    docs = build_documents(tweets([
        ("a", "train one", NAN, NAN, "train"),
        ("b", "other", 5, 5, "dev"),
        ("a", "test one", 9, 9, "test"),
        ("a", "no split", NAN, NAN, ""),
        ("a", "train two", 1, 2, "train"),
        ("a", "test two", 9, 9, "test"),
        ("a", "dev one", 8, 8, "dev"),
    ]), log=log)
    a = docs.set_index("user_id").loc["a"]
    assert a["split"] == "train"
    assert a["text"] == "train one\nno split\ntrain two" and "test" not in a["text"] and "dev" not in a["text"]
    assert a["n_tweets"] == 3 and (a["lat"], a["lon"]) == (1, 2)  # not the test split's point
    assert log.counts["conflicting_split"] == 1 and log.kept["conflicting_split"] == 1
    (msg,) = log.examples["conflicting_split"]
    assert ("appears in splits ['train', 'test', 'dev']; kept its 2 tweets from split 'train' (and 1 tweet without "
            "a split) and dropped its 2 tweets from split 'test' and 1 tweet from split 'dev'") in msg


def test_conflicting_split_of_per_user_rows_counts_their_tweets(tmp_path):
    """Rahimi's user_info.train and user_info.test both holding a user: one document, from train only,
    and the dropped row's n_tweets in the message; not a merged duplicate_user."""
    (tmp_path / "user_info.train").write_text("u\t40.7\t-74.0\ttrain a ||| train b\nv\t34.0\t-118.2\tvv\n")
    (tmp_path / "user_info.test").write_text("u\t41.9\t-87.6\ttest a ||| test b ||| test c\n")
    log = RecordLog()
    docs = read_documents([tmp_path / "user_info.train", tmp_path / "user_info.test"], log=log)
    u = docs.set_index("user_id").loc["u"]
    assert u["split"] == "train" and "test" not in u["text"] and u["n_tweets"] == 2
    assert (u["lat"], u["lon"]) == (40.7, -74.0)
    assert log.counts["duplicate_user"] == 0
    (msg,) = log.examples["conflicting_split"]
    assert "kept its 2 tweets from split 'train' and dropped its 3 tweets from split 'test'" in msg


def test_duplicate_per_user_rows_merged_and_counted():
    log = RecordLog()
    f1 = tweets([("a", "x\ny", 1, 1, "dev", 2), ("b", "q", 2, 2, "dev", 1)], granularity="user")
    f2 = tweets([("a", "z", 3, 3, "dev", 1)], granularity="user")
    docs = build_documents([f1, f2], log=log)
    assert log.counts["duplicate_user"] == 1
    a = docs.set_index("user_id").loc["a"]
    assert a["text"] == "x\ny\nz" and a["n_tweets"] == 3 and a["lat"] == 1


def test_many_tweets_of_one_user_are_not_duplicates():
    log = RecordLog()
    build_documents(tweets([("a", "x", 1, 1, ""), ("a", "y", 1, 1, "")]), log=log)
    assert log.total == 0


def test_build_documents_fail_policy_raises():
    with pytest.raises(DataError, match="empty_user"):
        build_documents(tweets([("e", "", 1, 1, "")]), log=RecordLog(policy="fail"))


def _jsonl(path, users):
    import json

    path.write_text("".join(json.dumps({"text": t, "user": {"id_str": u}}) + "\n" for u, t in users))
    return path


def test_aggregate_one_row_groups_equal_the_general_path():
    from geoae.documents import _aggregate

    rows = [("a", "t1", 1.0, 2.0, "train", 3), ("b", "  ", 3.0, NAN, "", 1), ("c", "", NAN, NAN, None, 2),
            ("d", "x\ny", -5.0, 6.0, "dev", 1), ("e", "last", 7.0, 8.0, "test", 1)]
    df = tweets(rows + [rows[-1]])
    # Every group one row: the shortcut. One group of two rows: the groupby path.
    fast = _aggregate(df.iloc[:-1].reset_index(drop=True), np.arange(len(rows)))
    general = _aggregate(df, np.minimum(np.arange(len(df)), len(rows) - 1))
    pd.testing.assert_frame_equal(fast.iloc[:-1], general.iloc[:-1])
    assert fast["text"].tolist() == ["t1", "", "", "x\ny", "last"]
    assert fast["n_tweets"].tolist() == [3, 1, 2, 1, 1]
    assert np.isnan(fast.loc[1, "lat"]) and fast.loc[3, "lat"] == -5.0
    assert fast["split"].tolist() == ["train", "", "", "dev", "test"]


def test_iter_documents_merges_runs_across_chunk_boundaries(tmp_path):
    p = _jsonl(tmp_path / "t.jsonl", [("a", "1"), ("a", "2"), ("a", "3"), ("b", "4"), ("b", "5"), ("c", "6")])
    log = RecordLog()
    frames = list(iter_documents(p, chunksize=2, log=log))
    docs = pd.concat(frames, ignore_index=True)
    assert tuple(docs.columns) == DOC_COLUMNS
    assert docs["user_id"].tolist() == ["a", "b", "c"]
    assert docs["text"].tolist() == ["1\n2\n3", "4\n5", "6"]
    assert docs["n_tweets"].tolist() == [3, 2, 1]
    assert log.total == 0


def test_iter_documents_non_contiguous_user_counted_and_yielded_twice(tmp_path):
    p = _jsonl(tmp_path / "t.jsonl", [("a", "1"), ("b", "2"), ("a", "3")])
    log = RecordLog()
    docs = pd.concat(list(iter_documents(p, chunksize=10, log=log)), ignore_index=True)
    assert docs["user_id"].tolist() == ["a", "b", "a"]
    assert docs["text"].tolist() == ["1", "2", "3"]
    assert log.counts["user_not_contiguous"] == 1


def test_iter_documents_yields_empty_users_with_empty_text(tmp_path):
    p = _jsonl(tmp_path / "t.jsonl", [("a", "1"), ("e", ""), ("c", "3")])
    log = RecordLog()
    docs = pd.concat(list(iter_documents(p, log=log)), ignore_index=True)
    assert docs["user_id"].tolist() == ["a", "e", "c"]
    assert docs.loc[1, "text"] == ""
    assert log.counts["empty_user"] == 1 and log.counts["empty_text"] == 1


def test_iter_documents_matches_read_documents_on_sorted_input(tmp_path):
    rng = np.random.default_rng(0)
    users = [(f"u{u}", f"w{rng.integers(100)}") for u in range(30) for _ in range(rng.integers(1, 5))]
    p = _jsonl(tmp_path / "t.jsonl", users)
    streamed = pd.concat(list(iter_documents(p, chunksize=7)), ignore_index=True)
    whole = read_documents(p)
    pd.testing.assert_frame_equal(streamed, whole)


@pytest.mark.geotext
def test_read_documents_real_cmu_dev_and_test(shared_geotext):
    log = RecordLog()
    cmu = shared_geotext / "cmu"
    docs = read_documents([cmu / "user_info.dev.gz", cmu / "user_info.test.gz"], log=log)
    assert len(docs) == 3790 and docs["user_id"].is_unique
    assert docs["split"].value_counts().to_dict() == {"dev": 1895, "test": 1895}
    ui = pd.read_csv(shared_geotext / "processed_data" / "user_info.test", sep="\t", header=None,
                     names=["u", "lat", "lon"]).set_index("u")
    test = docs[docs.split == "test"].set_index("user_id")
    np.testing.assert_array_equal(test.loc[ui.index, "lat"].to_numpy(), ui["lat"].to_numpy())
    assert log.total == 0


# --------------------------------------------------------------------------- splits


def _docs(n, split="train"):
    return pd.DataFrame({"user_id": [f"u{i}" for i in range(n)], "text": "x", "n_tweets": 1, "lat": 1.0, "lon": 1.0,
                         "split": split})


def test_assign_splits_column_keeps_and_carves_dev_from_train():
    d = _docs(100)
    d.loc[:9, "split"] = "test"
    out = assign_splits(d, "column", dev_fraction=0.2, seed=1)
    assert out["split"].value_counts().to_dict() == {"train": 72, "dev": 18, "test": 10}
    assert (out.loc[:9, "split"] == "test").all()
    assert d["split"].value_counts()["train"] == 90  # input not modified
    again = assign_splits(d.iloc[::-1], "column", dev_fraction=0.2, seed=1)
    assert again.set_index("user_id")["split"].equals(out.set_index("user_id")["split"].loc[again["user_id"]])
    other_seed = assign_splits(d, "column", dev_fraction=0.2, seed=2)
    assert not other_seed["split"].equals(out["split"])


def test_assign_splits_column_without_any_split_warns(caplog):
    import logging

    d = _docs(20)
    d["split"] = ""
    with caplog.at_level(logging.WARNING, logger="geoae"):
        out = assign_splits(d, "column")
    assert (out["split"] == "").all()
    assert any("none of the 20 users has a split" in r.getMessage() for r in caplog.records)
    caplog.clear()
    d.loc[:4, "split"] = "train"
    with caplog.at_level(logging.WARNING, logger="geoae"):
        assign_splits(d, "column")
    assert not caplog.records


def test_assign_splits_carve_without_the_carve_split_names_the_splits_and_the_fix():
    """data.split column on a corpus without a split column, with a dev fraction: the error said only
    "no user has a split in ['train']", not that no user has any split, nor what to do."""
    d = _docs(20)
    d["split"] = ""
    with pytest.raises(ConfigError, match=r"no user has a split in data\.carve_from \['train'\] \(splits present: "
                                          r"\[''\]\); the inputs give no user a split .*use data\.split: random"):
        assign_splits(d, "column", dev_fraction=0.2)
    d["split"] = "dev"
    with pytest.raises(ConfigError, match=r"\(splits present: \['dev'\]\); set data\.carve_from"):
        assign_splits(d, "column", test_fraction=0.2)


def test_assign_splits_carve_from_other_split_with_label():
    d = _docs(10, "dev")
    out = assign_splits(d, "column", dev_fraction=0.3, carve_from=("dev",), dev_label="val")
    assert out["split"].value_counts().to_dict() == {"dev": 7, "val": 3}


def test_assign_splits_random_is_seeded_and_exact():
    d = _docs(50, "")
    a = assign_splits(d, "random", dev_fraction=0.1, test_fraction=0.2, seed=3)
    b = assign_splits(d, "random", dev_fraction=0.1, test_fraction=0.2, seed=3)
    assert a["split"].equals(b["split"])
    assert a["split"].value_counts().to_dict() == {"train": 35, "test": 10, "dev": 5}


def test_assign_splits_geotext_folds():
    out = assign_splits(_docs(10, ""), "geotext_folds")
    assert out["split"].tolist() == ["train", "train", "train", "dev", "test"] * 2


def test_assign_splits_rejects_bad_rule_and_fractions():
    with pytest.raises(ConfigError):
        assign_splits(_docs(3), "alphabetical")
    with pytest.raises(ConfigError):
        assign_splits(_docs(3), "random")
    with pytest.raises(ConfigError):
        assign_splits(_docs(3), "random", dev_fraction=0.6, test_fraction=0.5)
    with pytest.raises(ConfigError, match="no user has a split"):
        assign_splits(_docs(3, "dev"), "column", dev_fraction=0.5)


def test_seen_ids_matches_a_set_and_stays_compact():
    import random

    from geoae.documents import SeenIds

    seen, ref, rng = SeenIds(), set(), random.Random(1)
    for _ in range(2000):
        ids = [f"user{rng.randrange(20000)}" for _ in range(rng.randrange(0, 40))]
        expected = []
        for u in ids:  # a repeat inside one call counts too, from its second occurrence
            expected.append(u in ref)
            ref.add(u)
        assert seen.add(ids).tolist() == expected
    assert len(seen) == len(ref)
    # Sorted levels, each more than twice the size of the next: logarithmically many to search.
    sizes = [len(a) for a in seen._levels]
    assert all(a > 2 * b for a, b in zip(sizes, sizes[1:]))
    assert all((np.diff(a) > 0).all() for a in seen._levels)
    assert seen.add([]).shape == (0,)


def test_record_log_tells_dropped_from_kept_records_and_merges_both():
    from geoae.errors import RecordLog

    a, b = RecordLog(), RecordLog()
    a.bad("malformed_json", "x", line=1)
    a.bad("invalid_coordinates", "lat=999", line=2, kept=True)
    b.bad("empty_text", "user 'u'", line=3, kept=True)
    a.merge(b)
    d = a.to_dict()
    assert (d["skipped_total"], d["dropped_total"], d["kept_total"]) == (3, 1, 2)
    assert d["kept_by_reason"] == {"empty_text": 1, "invalid_coordinates": 1}
    assert a.summary().startswith("3 bad records (1 dropped, 2 kept: repaired or flagged)")


def test_duplicate_tweets_dropped_in_prepare_and_kept_by_the_flat_memory_stream(tmp_path):
    # The same tweet in two crawls doubled its text in the user's document and in n_tweets.
    import json

    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    a.write_text("".join(json.dumps({"id_str": str(i), "text": f"t{i}", "user": {"id_str": "u"}}) + "\n"
                         for i in range(3)))
    b.write_text("".join(json.dumps({"id_str": str(i), "text": f"t{i}", "user": {"id_str": "u"}}) + "\n"
                         for i in range(2, 5)))
    log = RecordLog(policy="skip")
    docs = read_documents([a, b], log=log)  # prepare
    assert docs[["user_id", "text", "n_tweets"]].values.tolist() == [["u", "t0\nt1\nt2\nt3\nt4", 5]]
    assert log.counts == {"duplicate_tweet": 1} and log.examples["duplicate_tweet"][0].startswith(f"{b}:1: ")
    # predict's stream keeps no tweet ids (its memory stays flat in the number of tweets): both copies read
    log = RecordLog(policy="skip")
    docs = pd.concat(list(iter_documents([a, b], chunksize=2, log=log)))
    assert docs[["user_id", "text", "n_tweets"]].values.tolist() == [["u", "t0\nt1\nt2\nt2\nt3\nt4", 6]]
    assert log.counts == {}


def test_an_empty_per_user_line_is_one_bad_record_with_its_real_fate(tmp_path):
    """One empty GeoText/Rahimi user line was counted twice (empty_text 'row kept' and empty_user),
    and in prepare the 'kept' one was in fact left out."""
    p = tmp_path / "user_info.test"
    p.write_bytes(b"U_a\t40\t-75\thello ||| world\nU_e\t40\t-75\t  \nU_b\t41\t-74\tbye\n")
    log = RecordLog()
    docs = pd.concat(list(iter_documents(p, log=log)), ignore_index=True)  # predict: yielded, kept
    assert docs["user_id"].tolist() == ["U_a", "U_e", "U_b"]
    assert dict(log.counts) == {"empty_user": 1} and log.kept == {"empty_user": 1}
    log = RecordLog()
    docs = build_documents(read_tweets(p, log=log), log=log)  # training: left out, dropped
    assert docs["user_id"].tolist() == ["U_a", "U_b"]
    assert dict(log.counts) == {"empty_user": 1} and not log.kept


def test_streaming_documents_do_not_number_geotext_users_for_splits(tmp_path, monkeypatch):
    """Numbering GeoText users by first appearance (for the official folds) kept every id seen,
    ~100 bytes per user, in a stream that ignores splits; reading for training still numbers them."""
    import geoae.tweets as tw

    p = tmp_path / "full_text.txt"
    p.write_text("".join(f"U{i}\t2010\tloc\t40.{i}\t-74.0\ttweet {i}\n" for i in range(12)), "latin-1")
    seen = []
    real = tw.geotext_fold_split
    monkeypatch.setattr(tw, "geotext_fold_split", lambda nums: seen.append(len(nums)) or real(nums))
    docs = pd.concat(list(iter_documents(p, user_info=False, chunksize=5)), ignore_index=True)
    assert len(docs) == 12 and set(docs["split"]) == {""} and not seen
    assert set(read_tweets(p, user_info=False)["split"]) == {"train", "dev", "test"} and seen


@pytest.mark.parametrize("min_tweets", [1, 2])
def test_geotext_folds_number_users_left_out_of_the_documents_too(tmp_path, min_tweets):
    """``data.split: geotext_folds`` numbered the users *kept* by build_documents: one empty user (or,
    with min_tweets, one with too few tweets) shifted every later user into another official fold
    (user 5, official test, became dev; user 6, train, became test). As in user_info, every user read
    keeps its number; the numbering does not reach the written table."""
    rows = []
    for i in range(1, 11):
        rows.append((f"U{i}", "" if i == 2 else f"tweet {i}", 40.7, -74.0, ""))
        if min_tweets == 2 and i not in (2, 3):
            rows.append((f"U{i}", f"more {i}", 40.7, -74.0, ""))
    docs = build_documents(tweets(rows), min_tweets=min_tweets)
    left_out = {"U2"} | ({"U3"} if min_tweets == 2 else set())
    assert set(docs["user_id"]) == {f"U{i}" for i in range(1, 11)} - left_out
    out = assign_splits(docs, "geotext_folds")
    official = {1: "train", 2: "train", 3: "train", 4: "dev", 0: "test"}  # id % 5
    assert out["split"].tolist() == [official[int(u[1:]) % 5] for u in out["user_id"]]
    assert not out.attrs  # nothing of it is written by prepare's to_parquet
    out.to_parquet(tmp_path / "d.parquet")
    docs.to_parquet(tmp_path / "raw.parquet")  # build_documents' own output still writes (a short note)
    assert len(pd.read_parquet(tmp_path / "raw.parquet").attrs["user_order"]) < 100
    # A table not built by build_documents is numbered in its own order.
    plain = docs.copy()
    plain.attrs = {}
    by_position = assign_splits(plain, "geotext_folds")["split"].tolist()
    assert by_position == [official[i % 5] for i in range(1, len(docs) + 1)] != out["split"].tolist()
