"""Tests of geoae.tweets: every format, and one test per bad-input defence.

All data is generated in ``tmp_path`` (tiny, fast); the tests on the real
GeoText copy skip when ../shared is absent.
"""

from __future__ import annotations

import gzip
import json
import random
import zlib

import numpy as np
import pandas as pd
import pytest

from geoae.errors import DataError, RecordLog
from geoae.tweets import TWEET_COLUMNS, detect_format, iter_tweets, read_tweets

# --------------------------------------------------------------------------- helpers


def geotext_line(user: str, lat, lon, text: str, ts: str = "2010-03-03T04:15:26") -> str:
    return f"{user}\t{ts}\tÜT: {lat},{lon}\t{lat}\t{lon}\t{text}\n"


def write_bytes(path, data: bytes):
    path.write_bytes(data)
    return path


def write_geotext(path, lines: list[str], encoding: str = "latin-1"):
    return write_bytes(path, "".join(lines).encode(encoding))


def skip_log() -> RecordLog:
    return RecordLog(policy="skip")


def assert_schema(df: pd.DataFrame) -> None:
    assert tuple(df.columns) == TWEET_COLUMNS
    assert df["n_tweets"].dtype == np.int64
    assert df["line"].dtype == np.int64
    assert df["lat"].dtype == np.float64 and df["lon"].dtype == np.float64
    for c in ("user_id", "text", "split", "source"):
        assert pd.api.types.is_string_dtype(df[c]), c


@pytest.fixture
def geotext_file(tmp_path):
    lines = [
        geotext_line("USER_a", 47.5, -122.1, "I need to get my life together"),
        geotext_line("USER_a", 47.6, -122.2, "second"),
        geotext_line("USER_b", 40.2, -74.8, "hello"),
        geotext_line("USER_c", 40.6, -73.9, "caf\u00e9"),
        geotext_line("USER_d", 33.0, -84.0, "d1"),
        geotext_line("USER_e", 35.0, -90.0, "e1"),
    ]
    d = tmp_path / "geo"
    d.mkdir()
    return write_geotext(d / "full_text.txt", lines)


# --------------------------------------------------------------------------- formats


def test_geotext_schema_folds_by_first_appearance_and_latin1(geotext_file):
    log = skip_log()
    df = read_tweets(geotext_file, log=log)
    assert_schema(df)
    assert log.total == 0
    assert df["user_id"].tolist() == ["USER_a", "USER_a", "USER_b", "USER_c", "USER_d", "USER_e"]
    assert df["line"].tolist() == [1, 2, 3, 4, 5, 6]
    # ids 1..5 -> folds 1,2,3 train, 4 dev, 5 test
    assert df["split"].tolist() == ["train", "train", "train", "train", "dev", "test"]
    assert df.loc[3, "text"] == "caf\u00e9"  # latin-1 byte \xe9 decoded, not mangled
    assert df.loc[0, "lat"] == 47.5 and df.loc[0, "lon"] == -122.1
    assert (df["n_tweets"] == 1).all()


def test_geotext_user_info_sets_split_and_coordinates(geotext_file, tmp_path):
    ui = tmp_path / "user_info"
    # USER_e first: its id becomes 1 (train); USER_a id 4 (dev)
    ui.write_text("USER_e\t1.0\t2.0\nUSER_d\t3\t4\nUSER_c\t5\t6\nUSER_a\t7\t8\nUSER_b\t9\t10\n")
    df = read_tweets(geotext_file, user_info=ui)
    got = df.drop_duplicates("user_id").set_index("user_id")
    assert got.loc["USER_e", "split"] == "train"
    assert got.loc["USER_a", "split"] == "dev"
    assert got.loc["USER_b", "split"] == "test"
    assert (got.loc["USER_a", "lat"], got.loc["USER_a", "lon"]) == (7.0, 8.0)


@pytest.mark.parametrize("bad_line", [1, 3])
def test_geotext_user_info_with_a_fourth_field_is_refused(geotext_file, tmp_path, bad_line):
    # On line 1, pandas would have read the ids as an index and the latitudes as ids, silently.
    lines = ["USER_e\t1.0\t2.0", "USER_d\t3\t4", "USER_c\t5\t6", "USER_a\t7\t8", "USER_b\t9\t10"]
    lines[bad_line - 1] += "\t0"
    ui = tmp_path / "user_info"
    ui.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=rf"user_info:{bad_line}: more than three tab-separated fields"):
        read_tweets(geotext_file, user_info=ui)


def test_geotext_user_info_found_beside_the_text(geotext_file):
    pd_dir = geotext_file.parent / "processed_data"
    pd_dir.mkdir()
    (pd_dir / "user_info").write_text("USER_b\t1\t1\nUSER_a\t2\t2\nUSER_c\t3\t3\nUSER_d\t4\t4\nUSER_e\t5\t5\n")
    df = read_tweets(geotext_file)
    assert df.drop_duplicates("user_id").set_index("user_id")["split"].to_dict() == {
        "USER_a": "train", "USER_b": "train", "USER_c": "train", "USER_d": "dev", "USER_e": "test"}
    # user_info=False turns the discovery off: order of first appearance again
    df2 = read_tweets(geotext_file, user_info=False)
    assert df2["split"].iloc[-1] == "test" and df2.loc[df2.user_id == "USER_d", "split"].iat[0] == "dev"


def test_geotext_unknown_user_is_counted(geotext_file, tmp_path):
    ui = tmp_path / "ui"
    ui.write_text("USER_a\t1\t1\nUSER_b\t2\t2\nUSER_c\t3\t3\nUSER_d\t4\t4\n")
    log = skip_log()
    df = read_tweets(geotext_file, user_info=ui, log=log)
    assert log.counts["unknown_user"] == 1
    e = df[df.user_id == "USER_e"].iloc[0]
    assert e["split"] == "" and e["lat"] == 35.0  # the message's own coordinates


@pytest.mark.geotext
def test_geotext_fold_rule_agrees_with_official_split_files(shared_geotext, tmp_path):
    pdata = shared_geotext / "processed_data"
    ui = pd.read_csv(pdata / "user_info", sep="\t", header=None, names=["u", "lat", "lon"]).head(40)
    lines = []
    for r in ui.itertuples():
        lines.append(geotext_line(r.u, r.lat, r.lon, "first"))
        lines.append(geotext_line(r.u, r.lat + 0.1, r.lon, "second"))
    f = write_geotext(tmp_path / "full_text.txt", lines)
    official = {}
    for split in ("train", "dev", "test"):
        for u in pd.read_csv(pdata / f"user_info.{split}", sep="\t", header=None)[0]:
            official[u] = split
    for kwargs in ({"user_info": False}, {"user_info": pdata / "user_info"}):
        df = read_tweets(f, **kwargs)
        got = df.drop_duplicates("user_id").set_index("user_id")["split"]
        assert all(got[u] == official[u] for u in ui["u"]), kwargs
        assert set(got) == {"train", "dev", "test"}


def test_rahimi_reads_users_splits_and_counts(tmp_path):
    p = tmp_path / "user_info.dev"
    p.write_bytes(b"USER_1\t40.1\t-74.2\tone ||| two ||| three\nUSER_2\t33.0\t-84.0\tsolo caf\xe9\n")
    df = read_tweets(p)
    assert_schema(df)
    assert df["n_tweets"].tolist() == [3, 1]
    assert df["text"].tolist() == ["one\ntwo\nthree", "solo caf\u00e9"]
    assert df["split"].tolist() == ["dev", "dev"]
    assert df.attrs["granularity"] == "user"


def test_rahimi_gzip_transparent(tmp_path):
    p = tmp_path / "user_info.test.gz"
    p.write_bytes(gzip.compress(b"USER_1\t40.1\t-74.2\ta ||| b\n"))
    assert detect_format(p) == "rahimi"
    df = read_tweets(p)
    assert df["split"].tolist() == ["test"] and df["n_tweets"].tolist() == [2]


@pytest.mark.geotext
def test_real_cmu_dev_users_coordinates_and_split(shared_geotext):
    ui = pd.read_csv(shared_geotext / "processed_data" / "user_info.dev", sep="\t", header=None,
                     names=["u", "lat", "lon"])
    log = skip_log()
    df = read_tweets(shared_geotext / "cmu" / "user_info.dev.gz", log=log)
    assert len(df) == 1895 and df["user_id"].is_unique
    assert log.total == 0
    assert df["user_id"].tolist() == ui["u"].tolist()
    np.testing.assert_array_equal(df["lat"].to_numpy(), ui["lat"].to_numpy())
    np.testing.assert_array_equal(df["lon"].to_numpy(), ui["lon"].to_numpy())
    assert (df["split"] == "dev").all()
    assert df["n_tweets"].sum() == 76238  # segments split on ' ||| ', per SOURCE.md


def test_twitter_json_v11_coordinate_orders_and_text_fields(tmp_path):
    tweets = [
        {"id_str": "1", "text": "trunc", "extended_tweet": {"full_text": "long text"},
         "user": {"id_str": "u1", "screen_name": "a"}, "coordinates": {"type": "Point", "coordinates": [-122.0, 47.0]}},
        {"id_str": "2", "full_text": "full", "user": {"id": 42}, "geo": {"coordinates": [40.0, -74.0]}},
        {"id_str": "3", "text": "place", "user": {"screen_name": "bob"},
         "place": {"bounding_box": {"coordinates": [[[-80.0, 30.0], [-80.0, 32.0], [-78.0, 32.0], [-78.0, 30.0]]]}}},
        {"id_str": "4", "text": "nowhere", "user": {"id_str": "u4"}, "coordinates": None, "geo": None},
    ]
    p = tmp_path / "t.jsonl"
    p.write_text("\n".join(json.dumps(t) for t in tweets) + "\n")
    df = read_tweets(p)
    assert_schema(df)
    assert df["user_id"].tolist() == ["u1", "42", "bob", "u4"]
    assert df["text"].tolist() == ["long text", "full", "place", "nowhere"]
    assert (df.loc[0, "lat"], df.loc[0, "lon"]) == (47.0, -122.0)  # GeoJSON [lon, lat]
    assert (df.loc[1, "lat"], df.loc[1, "lon"]) == (40.0, -74.0)  # geo is [lat, lon]
    assert (df.loc[2, "lat"], df.loc[2, "lon"]) == (31.0, -79.0)  # bbox centroid
    assert np.isnan(df.loc[3, "lat"])


def test_twitter_json_v2_single_and_envelope(tmp_path):
    single = {"id": "9", "author_id": "a1", "text": "v2", "geo": {"coordinates": {"type": "Point",
                                                                              "coordinates": [-100.0, 35.0]}}}
    env = {"data": [{"id": "10", "author_id": "a2", "text": "in place", "geo": {"place_id": "p1"}},
                    {"id": "11", "author_id": "a3", "text": "no geo"}],
           "includes": {"places": [{"id": "p1", "geo": {"bbox": [-90.0, 40.0, -88.0, 42.0]}}]}}
    p = tmp_path / "v2.json.gz"
    p.write_bytes(gzip.compress((json.dumps(single) + "\n" + json.dumps(env) + "\n").encode()))
    df = read_tweets(p)
    assert df["user_id"].tolist() == ["a1", "a2", "a3"]
    assert df["line"].tolist() == [1, 2, 2]
    assert (df.loc[0, "lat"], df.loc[0, "lon"]) == (35.0, -100.0)
    assert (df.loc[1, "lat"], df.loc[1, "lon"]) == (41.0, -89.0)
    assert np.isnan(df.loc[2, "lat"])


def test_csv_with_renamed_columns_and_optional_fields(tmp_path):
    p = tmp_path / "t.csv"
    p.write_text('user,tweet,lat,lon,split\nu1,"hi, there",40.0,-74.0,train\nu2,yo,,,Validation\n')
    df = read_tweets(p, columns={"user": "user_id", "tweet": "text"})
    assert_schema(df)
    assert df["text"].tolist() == ["hi, there", "yo"]
    assert df["split"].tolist() == ["train", "dev"]
    assert df["line"].tolist() == [2, 3]
    assert np.isnan(df.loc[1, "lat"])


def test_tsv_and_parquet(tmp_path):
    t = tmp_path / "t.tsv"
    t.write_text("user_id\ttext\tn_tweets\nu1\ta b\t5\n")
    df = read_tweets(t)
    assert df["n_tweets"].tolist() == [5] and df.attrs["granularity"] == "user"
    q = tmp_path / "t.parquet"
    pd.DataFrame({"user_id": ["x", "y"], "text": ["a", "b"], "lat": [1.0, 2.0], "lon": [3.0, 4.0]}).to_parquet(q)
    df = read_tweets(q)
    assert df["user_id"].tolist() == ["x", "y"] and df["lat"].tolist() == [1.0, 2.0]
    assert df["line"].tolist() == [1, 2]


def test_detect_format_by_name_and_content(tmp_path, geotext_file):
    assert detect_format(geotext_file) == "geotext"
    renamed = tmp_path / "renamed.txt"
    renamed.write_bytes(geotext_file.read_bytes())
    assert detect_format(renamed) == "geotext"
    r = tmp_path / "data.txt"
    r.write_text("USER_1\t40\t-74\ttext ||| more\n")
    assert detect_format(r) == "rahimi"
    j = tmp_path / "stream.txt"
    j.write_text('{"text": "x", "user": {"id_str": "1"}}\n')
    assert detect_format(j) == "twitter_json"
    c = tmp_path / "table.dat"
    c.write_text("user_id,text\n1,a\n")
    assert detect_format(c) == "csv"


def test_chunks_are_bounded_and_line_numbers_physical(tmp_path):
    lines = [geotext_line(f"USER_{i}", 40, -74, f"t{i}") for i in range(7)]
    lines.insert(3, "\n")  # a blank line still counts as a physical line
    f = write_geotext(tmp_path / "full_text.txt", lines)
    frames = list(iter_tweets(f, chunksize=3, user_info=False))
    assert [len(x) for x in frames] == [3, 3, 1]
    assert pd.concat(frames)["line"].tolist() == [1, 2, 3, 5, 6, 7, 8]


# --------------------------------------------------------------------------- bad input: one test per defence


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(DataError, match="not found"):
        list(iter_tweets(tmp_path / "nope.txt"))


def test_geotext_short_line_counted_and_dropped(geotext_file):
    data = geotext_file.read_bytes() + b"USER_x\tonly three\tfields\n"
    geotext_file.write_bytes(data)
    log = skip_log()
    df = read_tweets(geotext_file, log=log)
    assert log.counts["malformed_line"] == 1
    assert len(df) == 6 and "USER_x" not in set(df["user_id"])


def test_malformed_line_under_fail_policy_names_file_and_line(geotext_file):
    # after a blank line and in the second chunk: the physical line, not the row's place in its chunk
    geotext_file.write_bytes(geotext_file.read_bytes() + b"\nbroken line\n")
    with pytest.raises(DataError, match=r"full_text\.txt:8: malformed_line"):
        read_tweets(geotext_file, log=RecordLog(policy="fail"), chunksize=4)


def test_geotext_extra_tabs_are_kept_in_text(tmp_path):
    f = write_geotext(tmp_path / "full_text.txt", [geotext_line("USER_a", 1, 2, "left\tright")])
    df = read_tweets(f, user_info=False)
    assert df["text"].tolist() == ["left\tright"]


def test_rahimi_short_line_counted_and_extra_tab_kept(tmp_path):
    p = tmp_path / "user_info.train"
    p.write_text("USER_1\t40\t-74\ta\tb ||| c\nUSER_2\t40\n")
    log = skip_log()
    df = read_tweets(p, log=log)
    assert log.counts["malformed_line"] == 1
    assert df["text"].tolist() == ["a\tb\nc"] and df["n_tweets"].tolist() == [2]


def test_non_utf8_bytes_decode_as_latin1_without_crash(tmp_path):
    # latin-1 'Ü' (as GeoText documents), a UTF-8 'é', and a UTF-8 sequence cut in half (as in Rahimi's copy)
    raw = b"USER_a\t2010\t\xdcT: 1,2\t1\t2\t\xdcT caf\xc3\xa9 \xe2\x98\n"
    f = write_bytes(tmp_path / "full_text.txt", raw)
    df = read_tweets(f, user_info=False)
    assert df["text"].tolist() == ["\u00dcT caf\u00e9 \u00e2\u0098"]
    forced = read_tweets(f, user_info=False, encoding="latin-1")
    assert forced["text"].tolist() == [raw.split(b"\t")[5].rstrip(b"\n").decode("latin-1")]


def test_empty_text_is_counted_and_row_kept(tmp_path):
    f = write_geotext(tmp_path / "full_text.txt", [geotext_line("USER_a", 1, 2, "ok"), geotext_line("USER_b", 1, 2, "  ")])
    log = skip_log()
    df = read_tweets(f, log=log, user_info=False)
    assert log.counts["empty_text"] == 1
    assert df["user_id"].tolist() == ["USER_a", "USER_b"] and df["text"].iloc[1].strip() == ""


@pytest.mark.parametrize(
    "lat,lon",
    [("nan", "-74"), ("", "-74"), ("abc", "-74"), ("95", "200"), ("40", "181"), ("inf", "10")],
)
def test_invalid_coordinates_become_nan_and_are_counted(tmp_path, lat, lon):
    f = write_geotext(tmp_path / "full_text.txt",
                      [geotext_line("USER_a", 40, -74, "good"), geotext_line("USER_b", lat, lon, "bad coords")])
    log = skip_log()
    df = read_tweets(f, log=log, user_info=False)
    assert log.counts["invalid_coordinates"] == 1
    assert len(df) == 2  # the text is kept
    assert np.isnan(df.loc[1, "lat"]) and np.isnan(df.loc[1, "lon"])
    assert df.loc[0, "lat"] == 40.0


def test_swapped_coordinates_counted_nan_unless_fix_swapped(tmp_path):
    f = write_geotext(tmp_path / "full_text.txt", [geotext_line("USER_a", -122.5, 47.5, "swapped")])
    log = skip_log()
    df = read_tweets(f, log=log, user_info=False)
    assert log.counts["swapped_coordinates"] == 1 and log.counts["invalid_coordinates"] == 0
    assert np.isnan(df.loc[0, "lat"])
    log = skip_log()
    fixed = read_tweets(f, log=log, user_info=False, fix_swapped=True)
    assert log.counts["swapped_coordinates"] == 1
    assert (fixed.loc[0, "lat"], fixed.loc[0, "lon"]) == (47.5, -122.5)


def test_json_out_of_range_coordinates_counted_missing_not(tmp_path):
    p = tmp_path / "t.jsonl"
    p.write_text(json.dumps({"text": "a", "user": {"id_str": "1"}, "coordinates": {"coordinates": [500, 20]}}) + "\n"
                 + json.dumps({"text": "b", "user": {"id_str": "2"}}) + "\n")
    log = skip_log()
    df = read_tweets(p, log=log)
    assert log.counts == {"invalid_coordinates": 1}  # a tweet without geo is normal, not bad
    assert df["lat"].isna().all()


def _truncated_gzip(path, n_lines=3000):
    rng = random.Random(0)
    body = "".join(f"USER_{i}\t40\t-74\t{''.join(rng.choices('abcdefghijkl ', k=80))}\n" for i in range(n_lines))
    blob = gzip.compress(body.encode())
    path.write_bytes(blob[: int(len(blob) * 0.6)])
    return path


def test_truncated_gzip_under_skip_keeps_rows_and_counts(tmp_path):
    p = _truncated_gzip(tmp_path / "user_info.train.gz")
    log = skip_log()
    df = read_tweets(p, log=log)
    assert log.counts["truncated_file"] == 1
    assert 0 < len(df) < 3000
    assert df["line"].tolist() == list(range(1, len(df) + 1))


def test_truncated_gzip_under_fail_names_file_and_last_good_line(tmp_path):
    p = _truncated_gzip(tmp_path / "user_info.train.gz")
    last = int(read_tweets(p, log=skip_log())["line"].max())  # the last line the cut left whole
    with pytest.raises(DataError, match=rf"user_info\.train\.gz:{last}: truncated_file.*after line {last} "):
        read_tweets(p, log=RecordLog(policy="fail"))


def test_empty_file_is_a_clear_error(tmp_path):
    p = tmp_path / "full_text.txt"
    p.write_bytes(b"")
    with pytest.raises(DataError, match="is empty"):
        read_tweets(p)
    g = tmp_path / "user_info.dev.gz"
    g.write_bytes(gzip.compress(b"\n\n"))
    with pytest.raises(DataError, match="is empty"):
        read_tweets(g)


def test_empty_file_among_others_is_counted(tmp_path, geotext_file):
    empty = tmp_path / "user_info.dev"
    empty.write_bytes(b"")
    log = skip_log()
    df = read_tweets([geotext_file, empty], log=log, user_info=False)
    assert len(df) == 6 and log.counts["empty_file"] == 1


def test_binary_file_is_a_clear_error(tmp_path):
    p = tmp_path / "full_text.txt"
    p.write_bytes(bytes(range(256)) * 10)
    with pytest.raises(DataError, match="binary"):
        read_tweets(p)


def test_wrong_format_is_a_clear_error(tmp_path):
    p = tmp_path / "tweets.txt"
    p.write_text('{"text": "x", "user": {"id_str": "1"}}\n' * 3)
    with pytest.raises(DataError, match="no line could be read as geotext"):
        read_tweets(p, fmt="geotext")


def test_a_file_none_of_whose_lines_reads_says_why_in_the_error(tmp_path):
    # Python reprs written instead of JSON (str(dict)): the error gave only the counts and asked
    # "is this the right file?", and the run stops there, so no manifest or summary shows an example.
    other = write_bytes(tmp_path / "ok.jsonl", b'{"id_str": "9", "text": "x", "user": {"id_str": "u"}}\n')
    p = tmp_path / "t.jsonl"
    p.write_text("".join(str({"id_str": str(i), "text": "x", "user": {"id_str": "u"}}) + "\n" for i in range(3)))
    for paths in ([p], [other, p]):
        with pytest.raises(DataError, match=r"no line could be read as twitter_json \(bad records: "
                                            r"\{'malformed_json': 3\}; e\.g\. .*t\.jsonl:1: not valid JSON "
                                            r"\(JSONDecodeError: Expecting property name enclosed in double quotes"):
            read_tweets(paths)


def test_undetectable_format_is_a_clear_error(tmp_path):
    p = tmp_path / "notes.txt"
    p.write_text("just some prose\nwith no structure\n")
    with pytest.raises(DataError, match="cannot tell the format"):
        read_tweets(p)


def test_malformed_json_non_tweet_and_missing_user_counted(tmp_path):
    p = tmp_path / "t.jsonl"
    p.write_text(
        json.dumps({"text": "ok", "user": {"id_str": "1"}}) + "\n"
        + '{"text": "broken", \n'
        + json.dumps({"delete": {"status": {"id": 1}}}) + "\n"
        + json.dumps({"text": "anonymous", "user": {}}) + "\n"
        + "42\n"
    )
    log = skip_log()
    df = read_tweets(p, log=log)
    assert df["user_id"].tolist() == ["1"]
    assert log.counts == {"malformed_json": 2, "not_a_tweet": 1, "missing_user": 1}


def test_csv_wrong_column_count_counted_with_line(tmp_path):
    p = tmp_path / "t.csv"
    p.write_text("user_id,text\nu1,a\nu2,b,extra\nu3,c\n")
    log = skip_log()
    df = read_tweets(p, log=log)
    assert log.counts["malformed_line"] == 1
    assert log.examples["malformed_line"][0].startswith(f"{p}:3")
    assert df["user_id"].tolist() == ["u1", "u3"] and df["line"].tolist() == [2, 4]


def test_csv_missing_required_column_is_a_clear_error(tmp_path):
    p = tmp_path / "t.csv"
    p.write_text("author,tweet\nu1,a\n")
    with pytest.raises(DataError, match=r"required column.*columns=\{"):
        read_tweets(p)


def test_csv_invalid_n_tweets_and_split_counted(tmp_path):
    p = tmp_path / "t.csv"
    p.write_text("user_id,text,n_tweets,split\nu1,a,-3,train\nu2,b,2.5,holdout\nu3,c,4,test\n")
    log = skip_log()
    df = read_tweets(p, log=log)
    assert log.counts["invalid_n_tweets"] == 2 and log.counts["invalid_split"] == 1
    assert df["n_tweets"].tolist() == [1, 1, 4] and df["split"].tolist() == ["train", "", "test"]


def test_corrupt_parquet_is_a_clear_error(tmp_path):
    p = tmp_path / "t.parquet"
    p.write_bytes(b"PAR1" + b"garbage" * 10)
    with pytest.raises(DataError, match="parquet"):
        read_tweets(p)


def test_bad_gzip_header_is_a_clear_error(tmp_path):
    p = tmp_path / "user_info.dev.gz"
    p.write_bytes(b"\x1f\x8b" + b"\xff" * 40)
    with pytest.raises(DataError, match=r"user_info\.dev\.gz: cannot be read as gzip"):
        read_tweets(p)


# --------------------------------------------------------------------------- block reader (user_info fast path)


def per_line_rule(raw: bytes):
    """The documented per-line rule for user_info lines, written independently of the block reader:
    decode (UTF-8, latin-1 per bad byte), drop trailing "\\r", 4 tab fields, " ||| " -> "\\n"."""
    rows, malformed = [], []
    for n, line in enumerate(raw.split(b"\n"), 1):
        if not line.strip():
            continue
        f = line.decode("utf-8", "geoae_latin1_fallback").rstrip("\r").split("\t", 3)
        if len(f) < 4:
            malformed.append(n)
            continue
        rows.append((n, f[0].strip(), f[3].replace(" ||| ", "\n"), f[3].count(" ||| ") + 1))
    return rows, malformed


USER_LINES = [
    "U_utf8\t40.1\t-74.2\tcaf\u00e9 \U0001F600 ||| \u4e2d\u6587 ||| x\n".encode(),
    b"U_latin1\t40.1\t-74.2\tcaf\xe9 na\xefve ||| \xff\n",  # a latin-1 line among UTF-8 lines
    b"U_cut\t40.1\t-74.2\tcut mid-character \xe2\x82\r\n",  # truncated UTF-8 before a CRLF
    b"U_cut_sep\t40.1\t-74.2\tcut \xe2\x82 ||| before a separator\n",
    b"U_crlf\t40.1\t-74.2\ta ||| b\r\n",
    b"U_crs\t40.1\t-74.2\tte\rxt ||| \r\r\n",
    b"U_short\t40.1\n",  # malformed: 2 fields
    b"\n",
    b"  \t \r\n",  # blank: skipped, still numbered
    b"U_range\t95.0\t-174.2\tlatitude out of range\n",
    b"U_empty\t40.1\t-74.2\t\n",
    b"U_tabs\t40.1\t-74.2\tleft\tright ||| more\ttabs\n",
    b"U_shared\t40.1\t-74.2\ta ||| ||| b\n",  # two separators sharing a space: only the first counts
    b"U_nospace\t40.1\t-74.2\ta||| b ||| c |||| d ||||| e\n",
    b"U_edges\t40.1\t-74.2\t ||| starts and ends ||| \n",
    b"U_lead\t40.1\t-74.2\t||| no space before\n",
    b"U ||| sep\t40.1\t-74.2\tseparator in the user ||| x\n",
    b"U_lat\t40.1 ||| \t-74.2\tseparator in the latitude ||| x\n",
    b"U_long\t40.1\t-74.2\t" + b"long tweet ||| " * 400 + b"end\n",
    b"  U_spaced  \t40.1\t-74.2\tspaces around the user\n",
    b"U_last\t40.1\t-74.2\tlast line without newline ||| y",
]


@pytest.mark.parametrize("read_bytes", [7, 100, 1 << 22])
@pytest.mark.parametrize("chunksize", [1, 4, 1000])
def test_user_lines_block_reader_matches_per_line_rule(tmp_path, monkeypatch, read_bytes, chunksize):
    import geoae.tweets as tw

    monkeypatch.setattr(tw, "_READ_BYTES", read_bytes)  # cut lines (and "\r\n") across reads
    raw = b"".join(USER_LINES)
    p = write_bytes(tmp_path / "user_info.test", raw)
    log = skip_log()
    frames = list(iter_tweets(p, chunksize=chunksize, log=log))
    df = pd.concat(frames, ignore_index=True)
    assert_schema(df)
    rows, malformed = per_line_rule(raw)
    assert list(zip(df["line"], df["user_id"], df["text"], df["n_tweets"])) == rows
    assert log.counts["malformed_line"] == len(malformed) == 1
    assert log.counts["invalid_coordinates"] == 2  # 95.0 and "40.1 ||| "
    # U_empty: in a per-user format the row is the user's document, counted once as empty_user
    # when documents are built, not here as well
    assert log.counts.get("empty_text", 0) == 0 and df.set_index("user_id").loc["U_empty", "text"] == ""
    got = df.set_index("user_id")
    assert np.isnan(got.loc["U_range", "lat"]) and got.loc["U_utf8", "lat"] == 40.1
    assert got.loc["U_latin1", "text"] == "caf\u00e9 na\u00efve\n\u00ff"
    assert got.loc["U_shared", "text"] == "a\n||| b"
    assert got.loc["U_edges", "text"] == "\nstarts and ends\n"
    assert got.loc["U_last", "n_tweets"] == 2


def test_user_lines_malformed_line_under_fail_names_line(tmp_path):
    p = write_bytes(tmp_path / "user_info.test", b"".join(USER_LINES))
    with pytest.raises(DataError, match=r"user_info\.test:7: malformed_line: expected 4 .* got 2"):
        read_tweets(p, log=RecordLog(policy="fail"))


def test_user_lines_gzip_equals_plain(tmp_path):
    raw = b"".join(USER_LINES)
    plain = write_bytes(tmp_path / "user_info.test", raw)
    gz = write_bytes(tmp_path / "user_info.test.gz", gzip.compress(raw))
    a, b = skip_log(), skip_log()
    pd.testing.assert_frame_equal(read_tweets(plain, log=a, chunksize=3).drop(columns="source"),
                                  read_tweets(gz, log=b, chunksize=3).drop(columns="source"))
    assert a.counts == b.counts


@pytest.mark.parametrize("read_bytes", [1, 5, 64])
def test_line_reader_blocks_same_lines_and_chunks_as_chunks(tmp_path, monkeypatch, read_bytes):
    import geoae.tweets as tw

    monkeypatch.setattr(tw, "_READ_BYTES", read_bytes)
    rng = random.Random(3)
    pieces = [b"", b" ", b"\t", b"\r", b"x", b"ab\tc", b"\xe9", b"  y "]
    raw = b"".join(b"".join(rng.choice(pieces) for _ in range(rng.randint(0, 4))) + b"\n" for _ in range(300))
    raw += b"tail without newline"
    p = write_bytes(tmp_path / "lines.txt", raw)
    for chunksize in (1, 7, 1000):
        old = [[(n, r.rstrip(b"\n")) for n, r in c] for c in tw._LineReader(p, skip_log(), chunksize).chunks()]
        new = [[(int(n), blk.data[s:e].tobytes()) for blk in c for n, s, e in zip(blk.nums, blk.starts, blk.ends)]
               for c in tw._LineReader(p, skip_log(), chunksize).blocks()]
        assert new == old and len(old) == -(-sum(map(len, old)) // chunksize)


def test_lone_surrogate_escapes_are_repaired_and_counted(tmp_path):
    src = tmp_path / "t.jsonl"
    src.write_text('{"text": "knicks \\ud83d", "user": {"id_str": "s\\udc80x"}}\n'
                   '{"text": "lakers", "user": {"id_str": "s2"}}\n', encoding="utf-8")
    log = skip_log()
    df = read_tweets(src, log=log)
    assert len(df) == 2 and log.counts["invalid_unicode"] == 2
    for s in (*df["user_id"], *df["text"]):
        s.encode("utf-8")  # writable by every output
    assert df["text"].iat[0].startswith("knicks ")


def test_parquet_integer_ids_with_nulls_stay_exact(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    p = tmp_path / "u.parquet"
    pq.write_table(pa.table({"user_id": pa.array([1234567890123456789, 1234567890123456790, None], pa.int64()),
                             "text": ["knicks", "lakers", "bulls"]}), p)
    log = skip_log()
    df = read_tweets(p, log=log)
    assert list(df["user_id"]) == ["1234567890123456789", "1234567890123456790"]  # two users, not one float
    assert log.counts["missing_user"] == 1
    q = tmp_path / "f.parquet"
    pq.write_table(pa.table({"user_id": pa.array([0.0, 1.0, float("nan")]), "text": ["a b", "c d", "e f"]}), q)
    assert list(read_tweets(q, log=skip_log())["user_id"]) == ["0", "1"]


@pytest.mark.parametrize("chunksize", [2, 5000])
def test_parquet_float_ids_are_written_the_same_in_every_batch(tmp_path, chunksize, caplog):
    """Whole floats became integers only where a whole batch was whole numbers below 2**53: with a
    small chunk size one user came out as "783214.0" and "783214", two rows."""
    import logging

    import pyarrow as pa
    import pyarrow.parquet as pq

    p = tmp_path / "g.parquet"
    pq.write_table(pa.table({"user_id": [1.3e18, 783214.0, 783214.0, 783214.0, 55.0, 2.5],
                             "text": ["texas austin", "houston rocks", "dallas", "go", "boston", "x"]}), p)
    with caplog.at_level(logging.WARNING, logger="geoae.tweets"):
        df = read_tweets(p, log=skip_log(), chunksize=chunksize)
    assert list(df["user_id"]) == ["1300000000000000000", "783214", "783214", "783214", "55", "2.5"]
    assert caplog.text.count("2**53 or more are not exact") == 1  # once per file, not per batch


# --------------------------------------------------------------------------- review: BOM, NA-like ids, fail order

BOM = b"\xef\xbb\xbf"
_RAHIMI = b"USER_1\t40.0\t-75.0\thello ||| world\nUSER_2\t41.0\t-74.0\thi\n"
_JSONL = b'{"user": {"id_str": "1"}, "text": "a"}\n{"user": {"id_str": "2"}, "text": "b"}\n'


@pytest.mark.parametrize("name, data, kwargs, read_bytes", [
    ("user_info.train", _RAHIMI, {}, None),  # the fast block reader
    ("user_info.train", _RAHIMI, {}, 2),  # ... with reads shorter than the BOM
    ("user_info.train", _RAHIMI, {"encoding": "latin-1"}, None),  # the per-line reader
    ("user_info.dev.gz", _RAHIMI, {}, None),  # gzip
    ("full_text.txt", "".join([geotext_line("USER_1", 40.0, -75.0, "hello"),
                               geotext_line("USER_2", 41.0, -74.0, "hi")]).encode(), {"user_info": False}, None),
    ("t.jsonl", _JSONL, {}, None),
    ("t.jsonl.gz", _JSONL, {}, None),
    ("tweets.txt", _JSONL, {}, None),  # detected from the content, behind the BOM
    ("t.csv", b"user_id,text\n1,a\n2,b\n", {"encoding": "latin-1"}, None),
    ("t.tsv", b"user_id\ttext\n1\ta\n2\tb\n", {}, None),
], ids=["rahimi-blocks", "rahimi-blocks-tiny-reads", "rahimi-per-line", "rahimi-gzip", "geotext", "jsonl",
        "jsonl-gzip", "json-sniffed", "csv-latin1", "tsv"])
def test_bom_at_file_start_is_skipped_in_every_reader(tmp_path, monkeypatch, name, data, kwargs, read_bytes):
    import geoae.tweets as tw

    if read_bytes:
        monkeypatch.setattr(tw, "_READ_BYTES", read_bytes)
    p = tmp_path / name
    p.write_bytes(gzip.compress(BOM + data) if name.endswith(".gz") else BOM + data)
    log = skip_log()
    df = read_tweets(p, log=log, **kwargs)
    assert not log.counts, dict(log.counts)
    assert [u for u in df["user_id"] if not u.isascii()] == []
    assert df["line"].iat[0] == (2 if name.endswith(("csv", "tsv")) else 1)


def test_bom_only_file_is_empty_and_bom_later_in_a_file_is_data(tmp_path):
    with pytest.raises(DataError, match="is empty"):
        read_tweets(write_bytes(tmp_path / "user_info.train", BOM + b"\n"))
    p = write_bytes(tmp_path / "user_info.test", _RAHIMI + BOM + b"USER_3\t40.0\t-75.0\tx" + BOM + b"y\n")
    df = read_tweets(p, log=skip_log())
    assert list(df["user_id"]) == ["USER_1", "USER_2", "\ufeffUSER_3"] and df["text"].iat[2] == "x\ufeffy"


@pytest.mark.parametrize("fmt", ["csv", "tsv", "jsonl", "rahimi", "parquet"])
def test_na_like_user_ids_are_ids_and_empty_ids_a_counted_skip(tmp_path, fmt):
    ids = ["nan", "NaN", "NA", "null", "None", "N/A"]
    if fmt in ("csv", "tsv"):
        sep = "," if fmt == "csv" else "\t"
        p = tmp_path / f"t.{fmt}"
        p.write_text(f"user_id{sep}text\n" + "".join(f"{u}{sep}t{u}\n" for u in ids) + f"{sep}empty\n", "utf-8")
        reasons = ["user id is empty"]
    elif fmt == "jsonl":
        p = tmp_path / "t.jsonl"
        p.write_text("".join(json.dumps({"user": {"id_str": u}, "text": f"t{u}"}) + "\n" for u in ids)
                     + '{"user": {}, "text": "none"}\n', "utf-8")
        reasons = ["user id is missing (null)"]
    elif fmt == "rahimi":
        p = tmp_path / "user_info.train"
        p.write_text("".join(f"{u}\t40\t-75\tt{u}\n" for u in ids) + "  \t40\t-75\tblank\n", "utf-8")
        reasons = ["user id is blank (whitespace only)"]
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        p = tmp_path / "t.parquet"
        pq.write_table(pa.table({"user_id": [*ids, None, ""], "text": [f"t{u}" for u in ids] + ["x", "y"]}), p)
        reasons = ["user id is missing (null)", "user id is empty"]
    log = skip_log()
    df = read_tweets(p, log=log)
    assert list(df["user_id"]) == ids and list(df["text"]) == [f"t{u}" for u in ids]
    assert log.counts == {"missing_user": len(reasons)}
    assert [e.split(": ", 1)[1].split(";")[0] for e in log.examples["missing_user"]] == reasons


@pytest.mark.parametrize("sep", [",", "\t"])
@pytest.mark.parametrize("chunksize", [1, 2, 1000])
def test_an_extra_field_in_the_first_row_does_not_shift_the_columns(tmp_path, sep, chunksize):
    # pandas reads a first data row with one field more than the header as "the first column is
    # the index" and shifts every column of the file by one: ids became text, text latitude.
    p = tmp_path / ("t.csv" if sep == "," else "t.tsv")
    rows = [["u0", "hello", "40", "-75", "extra"], ["u1", "hi there", "41", "-74"], ["u2", "yo", "42", "-73"],
            ["u3", "two more", "43", "-72", "x", "y"], ["u4", "end", "44", "-71", ""]]  # "": a trailing delimiter
    p.write_text(sep.join(["user_id", "text", "lat", "lon"]) + "\n" + "".join(sep.join(r) + "\n" for r in rows), "utf-8")
    log = skip_log()
    df = read_tweets(p, log=log, chunksize=chunksize)
    assert df[["user_id", "text"]].values.tolist() == [["u1", "hi there"], ["u2", "yo"], ["u4", "end"]]
    assert df["lat"].tolist() == [41.0, 42.0, 44.0] and df["line"].tolist() == [3, 4, 6]
    assert log.counts == {"malformed_line": 2}
    assert sorted(log.examples["malformed_line"]) == [
        f"{p}:2: expected 4 fields (the header's), saw 5; row dropped",
        f"{p}:5: expected 4 fields (the header's), saw 6; row dropped"]


def test_na_like_user_ids_survive_into_documents(tmp_path):
    from geoae.documents import read_documents

    p = tmp_path / "t.csv"
    p.write_text("user_id,text\nnan,a\nNA,b\nnan,c\n", "utf-8")
    docs = read_documents(p, log=skip_log())
    assert sorted(docs["user_id"]) == ["NA", "nan"]
    assert docs.set_index("user_id").loc["nan", "n_tweets"] == 2


_CSV_BAD = {"coords": "u{},hello,999,999", "fields": "u{},hello,40,-75,extra", "nouser": ",hello,40,-75",
            "ntweets": "u{},hello,40,-75,0"}


@pytest.mark.parametrize("chunksize", [1, 3, 1000])
@pytest.mark.parametrize("first, later", [("nouser", "fields"), ("coords", "fields"), ("nouser", "coords"),
                                          ("coords", "nouser"), ("ntweets", "fields")])
def test_fail_policy_names_the_first_bad_line_of_a_csv(tmp_path, first, later, chunksize):
    rows = ["user_id,text,lat,lon" + (",n_tweets" if "ntweets" in (first, later) else "")]
    for ln in range(2, 10):
        kind = first if ln == 3 else later if ln == 7 else None
        row = (_CSV_BAD[kind] if kind else "u{},hello,40,-75").format(ln)
        if "ntweets" in (first, later) and kind != "ntweets" and kind != "fields":
            row += ",1"
        rows.append(row)
    p = tmp_path / "mixed.csv"
    p.write_text("\n".join(rows) + "\n", "utf-8")
    with pytest.raises(DataError, match=r"mixed\.csv:3: "):
        read_tweets(p, log=RecordLog(policy="fail"), chunksize=chunksize)
    log = skip_log()
    read_tweets(p, log=log, chunksize=chunksize)
    assert log.total == 2


def test_fail_policy_names_the_first_bad_line_of_user_lines(tmp_path):
    p = write_bytes(tmp_path / "user_info.train",
                    b"u1\t40\t-75\ta\nu2\t40\t-75\tb\nu3\t999\t999\tc\nu4\t40\t-75\td\nu5\t40\t-75\te\nu6\t40\n")
    with pytest.raises(DataError, match=r"user_info\.train:3: invalid_coordinates"):
        read_tweets(p, log=RecordLog(policy="fail"))


def test_format_errors_name_the_cli_option(tmp_path):
    p = write_bytes(tmp_path / "mystery.dat", b"just some words\nand more\n")
    with pytest.raises(DataError, match="--format") as e:
        read_tweets(p)
    assert "fmt=" in str(e.value)  # the Python keyword too
    with pytest.raises(DataError, match="--format"):
        read_tweets(write_bytes(tmp_path / "x.txt", b"not json at all\n"), fmt="twitter_json")


def test_fail_policy_message_says_the_run_stopped_not_what_skip_would_do(tmp_path):
    # The details describe the skip policy's action ("row kept with text=''"); under fail the
    # message must not read as if that happened.
    p = tmp_path / "t.csv"
    p.write_text("user_id,text,lat,lon\nu1,hello,40,-75\nu2,,40,-75\n", "utf-8")
    with pytest.raises(DataError, match=r"t\.csv:3: empty_text") as e:
        read_tweets(p, log=RecordLog(policy="fail"))
    assert "stopped, as on_bad_record is fail" in str(e.value) and "keeps them as described" in str(e.value)
    p.write_text("user_id,text,lat,lon\n,hello,40,-75\n", "utf-8")
    with pytest.raises(DataError, match=r"t\.csv:2: missing_user") as e:
        read_tweets(p, log=RecordLog(policy="fail"))
    assert "drops them" in str(e.value)


# --------------------------------------------------------------------------- review: quotes, JSON arrays, ids, columns


_SWALLOW_ROWS = ['u1\t"lakers tonight in hollywood', "u1\tdodgers game", "u2\tyankees bronx subway",
                 'u2\tknicks" at msg', "u3\tcubs wrigley"]


@pytest.mark.parametrize("sep", ["\t", ","])
def test_unbalanced_quote_swallowing_rows_is_counted_not_merged(tmp_path, sep):
    p = tmp_path / ("t.tsv" if sep == "\t" else "t.csv")
    p.write_text(f"user_id{sep}text\n" + "".join(r.replace("\t", sep) + "\n" for r in _SWALLOW_ROWS) + f"u4{sep}x\n")
    log = skip_log()
    df = read_tweets(p, log=log)
    # the quoted row and the 3 lines it swallowed are counted, each at its physical line
    assert log.counts == {"malformed_line": 4}
    assert log.examples["malformed_line"][0].startswith(f"{p}:2: ")
    assert "unbalanced quote" in log.examples["malformed_line"][0] and "3 following line(s) 3-5" in \
        log.examples["malformed_line"][0]
    assert df["user_id"].tolist() == ["u3", "u4"] and df["line"].tolist() == [6, 7]
    with pytest.raises(DataError, match=r":2: .*unbalanced quote"):
        read_tweets(p, log=RecordLog(policy="fail"))


def test_unbalanced_quote_never_closed_says_so(tmp_path):
    p = tmp_path / "t.tsv"
    p.write_text('user_id\ttext\nu1\t"lakers tonight\nu2\tknicks\n')
    with pytest.raises(DataError, match="never closes"):
        read_tweets(p)


@pytest.mark.parametrize("sep", [",", "\t"])
def test_quoted_multiline_fields_still_read_with_physical_lines(tmp_path, sep):
    texts = ["hello\nwell, that was fun, ok", "lol\nwow, amazing", 'he said "hi",\n3 times', "plain"]
    src = pd.DataFrame({"user_id": ["u1", "u2", "u3", "u4"], "text": texts,
                        "lat": ["40.7", "", "41.0", "42"], "lon": ["-74", "", "-87.6", "-71"]})
    p = tmp_path / ("t.csv" if sep == "," else "t.tsv")
    src.to_csv(p, index=False, sep=sep)
    log = skip_log()
    df = read_tweets(p, log=log)
    assert not log.counts
    assert df["text"].tolist() == texts and df["line"].tolist() == [2, 4, 6, 8]
    # a malformed row after multi-line fields is reported at its physical line
    with open(p, "a") as f:
        f.write(sep.join(["u5", "a", "1", "2", "extra"]) + "\nu6" + sep + "b" + sep + sep + "\n")
    log = skip_log()
    df = read_tweets(p, log=log)
    assert log.counts == {"malformed_line": 1} and log.examples["malformed_line"][0].startswith(f"{p}:9: ")
    assert df["line"].tolist() == [2, 4, 6, 8, 10]
    # and so is a row pandas itself skips (two fields too many), counted past the quoted newlines
    with open(p, "a") as f:
        f.write(sep.join(["u7", "a", "1", "2", "x", "y"]) + "\n")
    log = skip_log()
    df = read_tweets(p, log=log)
    assert log.counts == {"malformed_line": 2}
    assert [e.split(": ")[0] for e in log.examples["malformed_line"]] == [f"{p}:9", f"{p}:11"]
    assert df["line"].tolist() == [2, 4, 6, 8, 10]


def test_json_array_one_object_per_line_reads_every_tweet(tmp_path):
    objs = [json.dumps({"user": {"id_str": str(i)}, "text": f"t{i}"}) for i in range(4)]
    p = tmp_path / "a.json"
    p.write_text("[\n" + ",\n".join(objs) + "\n ]\n")
    log = skip_log()
    df = read_tweets(p, log=log)
    assert df["user_id"].tolist() == ["0", "1", "2", "3"] and df["line"].tolist() == [2, 3, 4, 5]
    assert not log.counts


def test_pretty_printed_json_is_a_clear_error(tmp_path):
    p = tmp_path / "a.json"
    p.write_text(json.dumps([{"user": {"id_str": "1"}, "text": "a"}], indent=2) + "\n")
    with pytest.raises(DataError, match=r"multi-line .*not supported.*jq -c '\.\[\]'"):
        read_tweets(p)
    p.write_text(json.dumps({"user": {"id_str": "1"}, "text": "a"}, indent=2) + "\n")
    with pytest.raises(DataError, match=r"multi-line .*jq -c \."):
        read_tweets(p)


def test_json_array_of_non_objects_is_one_bad_record(tmp_path):
    p = tmp_path / "a.jsonl"
    p.write_text('{"user": {"id_str": "1"}, "text": "a"}\n[1,2,3]\n{"data": [4, 5]}\n7\n')
    log = skip_log()
    read_tweets(p, log=log)
    assert log.counts == {"malformed_json": 3}
    assert "array holding 3 non-object(s) (int)" in log.examples["malformed_json"][0]
    assert "got int;" in log.examples["malformed_json"][2]


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_user_ids_are_not_stripped(tmp_path, fmt):
    ids = ["a", " a", "a ", "\ta"]
    if fmt == "csv":
        p = tmp_path / "t.csv"
        pd.DataFrame({"user_id": ids + ["  "], "text": ["x"] * 5}).to_csv(p, index=False)
    elif fmt == "jsonl":
        p = tmp_path / "t.jsonl"
        p.write_text("".join(json.dumps({"user": {"id_str": u}, "text": "x"}) + "\n" for u in ids + ["  "]))
    else:
        p = tmp_path / "t.parquet"
        pd.DataFrame({"user_id": ids + ["  "], "text": ["x"] * 5}).to_parquet(p)
    log = skip_log()
    df = read_tweets(p, log=log)
    assert df["user_id"].tolist() == ids
    assert log.counts == {"missing_user": 1} and "blank (whitespace only)" in log.examples["missing_user"][0]


def test_geotext_and_rahimi_ids_still_stripped(geotext_file, tmp_path):
    # their ids are fields of tab-separated lines: spaces around them are layout (as before)
    with open(geotext_file, "ab") as f:
        f.write(geotext_line(" USER_b ", 40.2, -74.8, "again").encode("latin-1"))
    df = read_tweets(geotext_file, user_info=False)
    assert sorted(df["user_id"].unique()) == ["USER_a", "USER_b", "USER_c", "USER_d", "USER_e"]
    p = tmp_path / "user_info.train"
    p.write_text("USER_1\t40\t-75\ta ||| b\r\n USER_2 \t41\t-74\tc\r\n")
    assert read_tweets(p)["user_id"].tolist() == ["USER_1", "USER_2"]


def test_parquet_binary_columns_are_decoded_as_text(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    p = tmp_path / "b.parquet"
    pq.write_table(pa.table({"user_id": pa.array([b"a", b"b", None], pa.binary()),
                             "text": pa.array(["caf\u00e9".encode(), b"caf\xe9", b"x"], pa.binary()),
                             "split": pa.array([b"train", b"dev", b"test"], pa.binary())}), p)
    log = skip_log()
    df = read_tweets(p, log=log)
    assert df["user_id"].tolist() == ["a", "b"] and df["text"].tolist() == ["caf\u00e9", "caf\u00e9"]
    assert df["split"].tolist() == ["train", "dev"] and log.counts == {"missing_user": 1}


def test_empty_json_user_id_is_reported_as_empty(tmp_path):
    p = tmp_path / "t.jsonl"
    p.write_text('{"user": {"id_str": ""}, "text": "a"}\n{"user": {"id_str": "", "id": 5}, "text": "b"}\n')
    log = skip_log()
    assert read_tweets(p, log=log)["user_id"].tolist() == ["5"]
    assert log.examples["missing_user"][0].split(": ", 1)[1].startswith("user id is empty;")


@pytest.mark.parametrize("name,data", [("h.csv", b"user_id,text\n"), ("h.jsonl", b"[\n]\n")])
def test_header_only_file_among_others_is_counted_as_empty(tmp_path, name, data):
    good = tmp_path / "g.csv"
    good.write_text("user_id,text\nu1,a\n")
    h = write_bytes(tmp_path / name, data)
    log = skip_log()
    assert read_tweets([good, h], log=log)["user_id"].tolist() == ["u1"]
    assert log.counts == {"empty_file": 1} and log.examples["empty_file"][0].startswith(str(h))
    with pytest.raises(DataError, match="a header, but no records"):
        read_tweets(h)


def test_table_column_names_match_up_to_case(tmp_path):
    p = tmp_path / "t.csv"
    p.write_text("User_ID, Text,LAT,Lon\nu1,a,40,-74\n")
    df = read_tweets(p)
    assert df["user_id"].tolist() == ["u1"] and df["text"].tolist() == ["a"] and df["lat"].tolist() == [40.0]
    import pyarrow as pa
    import pyarrow.parquet as pq

    q = tmp_path / "t.parquet"
    pq.write_table(pa.table({"USER_ID": pa.array([1234567890123456789, None], pa.int64()), "Text": ["x", "y"]}), q)
    assert read_tweets(q, log=skip_log())["user_id"].tolist() == ["1234567890123456789"]


def test_semicolon_separated_file_is_named_in_the_error(tmp_path):
    p = tmp_path / "t.csv"
    p.write_text("user_id;text\nu1;a\n")
    with pytest.raises(DataError, match="semicolon-separated"):
        read_tweets(p)


# --------------------------------------------------------------------------- review: silently mis-read input


@pytest.mark.parametrize("header, kwargs", [
    ("user_id,text,text", {}),  # pandas named the second "text.1" and it was ignored
    ("user_id,user_id,text", {}),
    ("user_id,text,User_ID", {}),  # the exact name won over the other, without a word
    ("user_id,tweet,text", {"columns": {"tweet": "text"}}),  # two "text" columns: a ValueError traceback
])
def test_a_column_read_twice_is_refused_not_half_read(tmp_path, header, kwargs):
    p = tmp_path / "t.csv"
    p.write_text(header + "\nu1,a,b\n")
    with pytest.raises(DataError, match=r"t\.csv: columns \[.*\] all read as"):
        read_tweets(p, log=skip_log(), **kwargs)


@pytest.mark.parametrize("names", [["user_id", "text", "text"], ["user_id", "text", "Text"],
                                   ["user_id", "text", "user_id"]])
def test_parquet_column_read_twice_is_refused(tmp_path, names):
    import pyarrow as pa
    import pyarrow.parquet as pq

    p = tmp_path / "t.parquet"
    pq.write_table(pa.Table.from_arrays([pa.array(["1", "2"]), pa.array(["a", "b"]), pa.array(["c", "d"])],
                                        names=names), p)
    with pytest.raises(DataError, match=r"t\.parquet: columns \[.*\] all read as"):
        read_tweets(p, log=skip_log())


@pytest.mark.parametrize("column", ["text", "user_id", "lat"])
def test_parquet_nested_column_is_refused_not_read_as_its_repr(tmp_path, column):
    import pyarrow as pa
    import pyarrow.parquet as pq

    cols = {"user_id": pa.array(["u1", "u2"]), "text": pa.array(["a", "b"]), "lat": pa.array([40.0, 41.0]),
            "lon": pa.array([-74.0, -75.0])}
    cols[column] = pa.array([{"v": "x"}, {"v": "y"}]) if column != "lat" else pa.array([[40.0], [41.0]])
    p = tmp_path / "t.parquet"
    pq.write_table(pa.table(cols), p)  # the text was read as "{'v': 'x'}"
    with pytest.raises(DataError, match=rf"column '{column}' .*nested type"):
        read_tweets(p, log=skip_log())


@pytest.mark.parametrize("header", ["user_id,text,lat", "user_id,text,LON"])
def test_half_a_coordinate_pair_is_refused_not_dropped(tmp_path, header):
    p = tmp_path / "t.csv"
    p.write_text(header + "\nu1,a,40\n")  # the lone column's values were dropped without a word
    with pytest.raises(DataError, match="found but no '(lat|lon)' column"):
        read_tweets(p, log=skip_log())


def test_huge_n_tweets_is_counted_not_wrapped_to_a_negative(tmp_path):
    p = tmp_path / "t.csv"
    p.write_text("user_id,text,n_tweets\nu1,a,99999999999999999999\nu2,b,1e300\nu3,c,9007199254740992\n")
    log = skip_log()
    df = read_tweets(p, log=log)
    assert df["n_tweets"].tolist() == [1, 1, 2**53]  # was -9223372036854775808 twice
    assert log.counts == {"invalid_n_tweets": 2} and log.kept == {"invalid_n_tweets": 2}


@pytest.mark.parametrize("content, where", [
    ("USER_e\t1.0\t2.0\nUSER_d\t3\t4\nUSER_c\t5\t6\nUSER_a\t97\t8\nUSER_b\t9\t10\n", "user_info:4: lat='97'"),
    ("USER_e\t1.0\t2.0\nUSER_d\t3\t4\nUSER_c\tabc\t6\nUSER_a\t7\t8\nUSER_b\t9\t10\n", "user_info:3: lat='abc'"),
    ("USER_e\t1.0\t2.0\nUSER_d\t3\nUSER_c\t5\t6\nUSER_a\t7\t8\nUSER_b\t9\t10\n", "user_info:2: lat='3' lon=''"),
    # a blank line renumbered every later user: USER_b (id 5, test) became id 4, dev
    ("USER_e\t1.0\t2.0\nUSER_d\t3\t4\nUSER_c\t5\t6\n\nUSER_a\t7\t8\nUSER_b\t9\t10\n", "user_info:4: no user id"),
], ids=["out-of-range", "not-a-number", "missing-field", "blank-line"])
def test_geotext_user_info_bad_coordinates_or_blank_lines_are_refused(geotext_file, tmp_path, content, where):
    # These coordinates replace every message's own, and were taken unchecked (97 degrees, NaN).
    ui = tmp_path / "user_info"
    ui.write_text(content)
    with pytest.raises(DataError, match=where):
        read_tweets(geotext_file, user_info=ui, log=skip_log())


@pytest.mark.parametrize("cut", ["header", "middle", "crc"])
def test_geotext_user_info_cut_or_damaged_gzip_is_refused(geotext_file, tmp_path, cut):
    # Was a bare EOFError traceback. A partial user_info is not kept as far as it goes: its line numbers
    # are the user ids, so the users after the cut would silently lose their split and coordinates.
    body = "".join(f"USER_{i}\t{i % 80}.5\t-{i % 170}.5\n" for i in range(1, 201))
    z = bytearray(gzip.compress(body.encode()))
    if cut == "crc":
        z[-8] ^= 0xFF
    ui = tmp_path / "user_info.gz"
    ui.write_bytes(bytes(z if cut == "crc" else z[:10] if cut == "header" else z[:len(z) // 2]))
    with pytest.raises(DataError, match=r"user_info\.gz: truncated or damaged gzip file .*used whole"):
        read_tweets(geotext_file, user_info=ui, log=skip_log())


def test_geotext_user_info_trailing_blank_lines_and_crlf_still_read(geotext_file, tmp_path):
    ui = tmp_path / "user_info"
    ui.write_bytes(b"USER_e\t1.0\t2.0\r\nUSER_d\t3\t4\r\nUSER_c\t5\t6\r\nUSER_a\t7\t8\r\nUSER_b\t9\t10\r\n\r\n\n")
    log = skip_log()
    got = read_tweets(geotext_file, user_info=ui, log=log).drop_duplicates("user_id").set_index("user_id")
    assert not log.counts and got.loc["USER_b", "split"] == "test" and got.loc["USER_b", "lon"] == 10.0


def test_json_place_box_with_altitudes_has_the_right_centre(tmp_path):
    box = [[[-80.0, 30.0, 5.0], [-80.0, 32.0, 5.0], [-78.0, 32.0, 5.0], [-78.0, 30.0, 5.0]]]  # [lon, lat, alt]
    p = tmp_path / "t.jsonl"
    p.write_text(json.dumps({"text": "t", "user": {"id_str": "u"}, "place": {"bounding_box": {"coordinates": box}}}))
    df = read_tweets(p, log=skip_log())
    assert (df["lat"].iat[0], df["lon"].iat[0]) == (31.0, -79.0)  # was read as pairs (lon,lat) (alt,lon) (lat,alt)...


def test_boolean_coordinates_are_invalid_not_one_and_zero_degrees(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    p = tmp_path / "t.jsonl"
    p.write_text(json.dumps({"text": "t", "user": {"id_str": "u"}, "coordinates": {"coordinates": [True, False]}})
                 + "\n" + json.dumps({"text": "t", "user": {"id_str": "v"}, "coordinates": {"coordinates": [-74, 40]}}))
    q = tmp_path / "t.parquet"
    pq.write_table(pa.table({"user_id": ["u", "v"], "text": ["a", "b"], "lat": [True, False], "lon": [False, True]}), q)
    for path in (p, q):
        log = skip_log()
        df = read_tweets(path, log=log)
        assert df["lat"].isna().sum() == (1 if path == p else 2), path  # was lat 0.0 lon 1.0
        assert log.counts == {"invalid_coordinates": 1 if path == p else 2}


def test_json_object_array_or_boolean_ids_and_texts_are_counted_not_stringified(tmp_path):
    lines = [{"text": "a", "user": {"id": {"x": 1}}}, {"text": "b", "user": {"id_str": True}},
             {"author_id": [1, 2], "text": "c", "id": "9"}, {"text": ["x", "y"], "user": {"id_str": "u4"}},
             {"text": "ok", "user": {"id": 5}}, {"text": 12345, "user": {"id_str": "u6"}}]
    p = tmp_path / "t.jsonl"
    p.write_text("".join(json.dumps(t) + "\n" for t in lines))
    log = skip_log()
    df = read_tweets(p, log=log)
    assert df[["user_id", "text"]].values.tolist() == [["5", "ok"], ["u6", "12345"]]  # was "{'x': 1}", "True"...
    assert log.counts == {"missing_user": 3, "not_a_tweet": 1}
    assert log.examples["missing_user"][0] == f"{p}:1: user id is a JSON object, not a string or number; row dropped"


@pytest.mark.parametrize("name, codec", [("t.jsonl", "utf-16"), ("t.csv", "utf-16-le"), ("tweets.txt", "utf-32")])
def test_utf16_file_is_named_as_such_not_only_binary(tmp_path, name, codec):
    p = tmp_path / name
    text = '{"user": {"id_str": "1"}, "text": "a"}\n' if name.endswith("jsonl") else "user_id,text\n1,a\n"
    p.write_bytes(text.encode(codec))  # Windows tools write UTF-16; its NUL bytes read as "binary"
    with pytest.raises(DataError, match="looks like UTF-16 or UTF-32 text.*convert it to UTF-8"):
        read_tweets(p, log=skip_log())


@pytest.mark.parametrize("sep, lead", [(",", "\n"), (",", "  \n\r\n"), (",", " \t\n"), ("\t", "\n \n")])
def test_blank_lines_before_the_header_do_not_make_it_a_row(tmp_path, sep, lead):
    # skiprows=1 skipped only the blank line, and the header was read as a user "user_id" with text "text".
    p = tmp_path / ("t.csv" if sep == "," else "t.tsv")
    p.write_text(lead + sep.join(["user_id", "text"]) + "\nu1" + sep + "a\nu2" + sep + "b" + sep + "x\n", "utf-8")
    log = skip_log()
    df = read_tweets(p, log=log)
    n = lead.count("\n")
    assert df[["user_id", "text", "line"]].values.tolist() == [["u1", "a", n + 2]]
    assert log.examples["malformed_line"] == [f"{p}:{n + 3}: expected 2 fields (the header's), saw 3; row dropped"]


@pytest.mark.parametrize("header, row, aliased", [
    ("user_id,text,Latitude, LONGITUDE ", "u1,a,40.5,-74.5", ["'Latitude' as lat", "' LONGITUDE ' as lon"]),
    ("user_id,text,latitude,lng", "u1,a,40.5,-74.5", ["'latitude' as lat", "'lng' as lon"]),
    ("user_id,text,latitude,long", "u1,a,40.5,-74.5", ["'latitude' as lat", "'long' as lon"]),
    ("user_id,text,latitude,lon", "u1,a,40.5,-74.5", ["'latitude' as lat"]),  # was refused: "lon" but no "lat"
    ("user_id,text,lat,lon,latitude", "u1,a,40.5,-74.5,1", []),  # "lat" wins, "latitude" is left alone
])
def test_latitude_longitude_columns_are_read_as_coordinates(tmp_path, caplog, header, row, aliased):
    p = tmp_path / "t.csv"
    p.write_text(header + "\n" + row + "\n")  # the columns were ignored: every coordinate silently unknown
    log = skip_log()
    with caplog.at_level("INFO", logger="geoae.tweets"):
        df = read_tweets(p, log=log)
    assert (df["lat"].iat[0], df["lon"].iat[0]) == (40.5, -74.5) and not log.counts
    said = [r.getMessage() for r in caplog.records if "reading column" in r.getMessage()]
    assert said == [f"{p}: reading column {a}" for a in aliased]  # once per file, not per chunk


def test_latitude_longitude_columns_in_tsv_and_parquet(tmp_path):
    t = tmp_path / "t.tsv"
    t.write_text("user_id\ttext\tLatitude\tLng\nu1\ta\t1.5\t2.5\n")
    q = tmp_path / "t.parquet"
    pd.DataFrame({"user_id": ["u1"], "text": ["a"], "latitude": [1.5], "longitude": [2.5]}).to_parquet(q)
    for path in (t, q):
        df = read_tweets(path, log=skip_log())
        assert (df["lat"].iat[0], df["lon"].iat[0]) == (1.5, 2.5), path


def test_two_longitude_aliases_are_refused_not_one_dropped(tmp_path):
    p = tmp_path / "t.csv"
    p.write_text("user_id,text,latitude,lng,long\nu1,a,1,2,3\n")
    with pytest.raises(DataError, match=r"columns \['lng', 'long'\] all read as 'lon'"):
        read_tweets(p, log=skip_log())


def test_json_place_box_across_the_antimeridian_is_counted_not_centred_in_europe(tmp_path):
    alaska = [[[-179.231086, 51.175092], [-179.231086, 71.441059], [179.859681, 71.441059],
               [179.859681, 51.175092]]]
    v11 = {"text": "anchorage", "user": {"id_str": "u1"}, "place": {"bounding_box": {"coordinates": alaska}}}
    v2 = {"data": [{"id": "1", "author_id": "u2", "text": "juneau", "geo": {"place_id": "ak"}}],
          "includes": {"places": [{"id": "ak", "geo": {"bbox": [-179.231086, 51.175092, 179.859681, 71.441059]}}]}}
    p = tmp_path / "t.jsonl"
    p.write_text(json.dumps(v11) + "\n" + json.dumps(v2) + "\n")
    log = skip_log()
    df = read_tweets(p, log=log)
    assert df["text"].tolist() == ["anchorage", "juneau"]
    assert df["lon"].isna().all() and df["lat"].isna().all()  # the centre was lon 0.3: Europe
    assert log.counts == {"invalid_coordinates": 2} and log.kept == {"invalid_coordinates": 2}
    assert log.examples["invalid_coordinates"][0].startswith(
        f"{p}:1: the place box spans more than 180 degrees of longitude (-179.231 to 179.86): it crosses the "
        "antimeridian")


@pytest.mark.parametrize("tweet, said", [
    ({"coordinates": [-73, 40]}, "coordinates is [-73, 40], not a point object"),
    ({"coordinates": {"type": "Point", "coordinates": [5]}}, "coordinates has coordinates [5], not two numbers"),
    ({"coordinates": {"type": "Point", "coordinates": ["a", "b"]}}, 'coordinates ["a", "b"], not two numbers'),
    ({"coordinates": {"type": "Point", "coordinates": [None, None]}}, "coordinates [null, null], not two numbers"),
    ({"coordinates": {"type": "Point", "coordinates": [[1], [2]]}}, "coordinates [[1], [2]], not two numbers"),
    ({"coordinates": {"type": "Point"}}, "coordinates has no coordinates"),
    ({"geo": [40, -73]}, "geo is [40, -73], not a point object"),
    ({"geo": {"coordinates": [float("nan"), 1.0]}}, "geo has coordinates [NaN, 1.0], not two numbers [lat, lon]"),
    ({"id": "9", "author_id": "u", "geo": {"coordinates": {"coordinates": [1]}}}, "geo.coordinates has"),
], ids=["array", "one-value", "text", "nulls", "nested", "no-coordinates", "geo-array", "geo-nan", "v2"])
def test_json_malformed_coordinates_are_counted_not_unknown(tmp_path, tweet, said):
    p = tmp_path / "t.jsonl"
    place = {"bounding_box": {"coordinates": [[[-80.0, 30.0], [-80.0, 32.0], [-78.0, 32.0], [-78.0, 30.0]]]}}
    base = {"text": "t"} if "author_id" in tweet else {"text": "t", "user": {"id_str": "u"}}
    with_place = [] if "author_id" in tweet else [json.dumps({**base, **tweet, "place": place})]
    p.write_text("\n".join([json.dumps({**base, **tweet}), *with_place]) + "\n")
    log = skip_log()
    df = read_tweets(p, log=log)
    assert df["text"].tolist() == ["t"] * (1 + len(with_place))
    assert np.isnan(df["lat"].iat[0]) and np.isnan(df["lon"].iat[0])  # was silently unknown
    assert log.counts == {"invalid_coordinates": 1} and log.kept == {"invalid_coordinates": 1}
    assert said in log.examples["invalid_coordinates"][0] and log.examples["invalid_coordinates"][0].startswith(f"{p}:1:")
    if with_place:  # a usable place box gives the point: the record is fine, not counted
        assert (df["lat"].iat[1], df["lon"].iat[1]) == (31.0, -79.0)


def test_json_duplicate_tweet_ids_are_counted_and_dropped_across_files(tmp_path):
    # Overlapping crawls hold the same tweet twice: both copies were read, doubling the text.
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    a.write_text("\n".join(json.dumps(o) for o in [
        {"id_str": "1", "text": "one", "user": {"id_str": "u"}},
        {"id": 1, "text": "one", "user": {"id_str": "u"}, "coordinates": [1, 2]},  # same id as a number
        {"text": "no id", "user": {"id_str": "u"}},
        {"text": "no id", "user": {"id_str": "u"}},  # no tweet id: never a duplicate
        {"data": [{"id": "2", "author_id": "v", "text": "two"}, {"id": "2", "author_id": "v", "text": "two"}]},
    ]) + "\n")
    b.write_text(json.dumps({"id_str": "2", "text": "two", "user": {"id_str": "v"}}) + "\n")  # only a duplicate
    log = skip_log()
    df = read_tweets([a, b], log=log)
    assert df[["user_id", "text", "line"]].values.tolist() == [["u", "one", 1], ["u", "no id", 3], ["u", "no id", 4],
                                                              ["v", "two", 5]]
    assert log.counts == {"duplicate_tweet": 3} and not log.kept  # the bad point of line 2 is not counted too
    assert [e.split(": tweet id")[0] for e in log.examples["duplicate_tweet"]] == [f"{a}:2", f"{a}:5", f"{b}:1"]
    assert "tweet id '1' was already read earlier in the inputs" in log.examples["duplicate_tweet"][0]
    with pytest.raises(DataError, match=r"a\.jsonl:2: duplicate_tweet"):
        read_tweets([a, b], log=RecordLog(policy="fail"))


@pytest.mark.parametrize("sep", [",", "\t"])
def test_blank_lines_between_rows_keep_physical_line_numbers(tmp_path, sep):
    # pandas skipped blank lines without saying where: "2,b" on line 5 was reported as line 3.
    p = tmp_path / ("t.csv" if sep == "," else "t.tsv")
    rows = ["user_id,text", "", "1,a", "  ", "2,b,x", "", '3,"q', 'r"', "", ",", "4,z", "", ""]
    p.write_text("\n".join(r.replace(",", sep) for r in rows), "utf-8")
    log = skip_log()
    df = read_tweets(p, log=log)
    assert df[["user_id", "text", "line"]].values.tolist() == [["1", "a", 3], ["3", "q\nr", 7], ["4", "z", 11]]
    assert log.examples["malformed_line"] == [f"{p}:5: expected 2 fields (the header's), saw 3; row dropped"]
    # a line of empty fields is a record, not a blank line
    assert log.examples["missing_user"] == [f"{p}:10: user id is empty; row dropped"]


@pytest.mark.parametrize("box, said", [
    ([[["a", "b"], [-80.0, 32.0]]], 'corners [[["a", "b"], [-80.0, 32.0]]], not [lon, lat] numbers'),
    ([[[-80.0, float("nan")], [-78.0, 32.0]]], "corners [[[-80.0, NaN], [-78.0, 32.0]]], not [lon, lat] numbers"),
    ([[[-80.0, None], [-78.0, 32.0]]], "not [lon, lat] numbers"),
    (5, "corners 5, not [lon, lat] numbers"),
], ids=["text", "nan", "null", "scalar"])
def test_json_place_box_with_bad_corners_is_counted_not_unknown(tmp_path, box, said):
    p = tmp_path / "t.jsonl"
    bad = {"text": "t", "user": {"id_str": "u"}, "place": {"bounding_box": {"coordinates": box}}}
    fine = {**bad, "coordinates": {"type": "Point", "coordinates": [-73.0, 40.0]}}  # another usable point
    p.write_text(json.dumps(bad) + "\n" + json.dumps(fine) + "\n")
    log = skip_log()
    df = read_tweets(p, log=log)
    assert df["text"].tolist() == ["t", "t"] and np.isnan(df["lat"].iat[0]) and df["lat"].iat[1] == 40.0
    assert log.counts == {"invalid_coordinates": 1} and log.kept == {"invalid_coordinates": 1}
    assert log.examples["invalid_coordinates"][0].startswith(f"{p}:1: the place box has") and said in \
        log.examples["invalid_coordinates"][0]


def test_json_place_without_box_or_with_bad_v2_bbox_reads(tmp_path):
    # A null box (v1.1) or a place without geo (v2) was a ValueError traceback.
    p = tmp_path / "t.jsonl"
    p.write_text("\n".join(json.dumps(o) for o in [
        {"text": "a", "user": {"id_str": "u"}, "place": {"bounding_box": {"coordinates": None}}},
        {"data": [{"id": "1", "author_id": "v", "text": "b", "geo": {"place_id": "p"}}],
         "includes": {"places": [{"id": "p", "geo": {}}]}},
        {"data": [{"id": "2", "author_id": "v", "text": "c", "geo": {"place_id": "q"}}],
         "includes": {"places": [{"id": "q", "geo": {"bbox": [1, 2, 3]}}]}},
    ]) + "\n")
    log = skip_log()
    df = read_tweets(p, log=log)
    assert df["text"].tolist() == ["a", "b", "c"] and df["lat"].isna().all()
    assert log.counts == {"invalid_coordinates": 1}
    assert log.examples["invalid_coordinates"][0].startswith(f"{p}:3: the place bbox is [1, 2, 3], not [west,")


def test_a_row_without_a_user_is_counted_once_as_missing_user_not_also_for_its_coordinates(tmp_path):
    """Its coordinates were reported as 'set to NaN, text kept' for a row that is then dropped."""
    p = write_bytes(tmp_path / "user_info.test", b"U_ok\t40\t-75\thello\n\t\t\torphan text\n \t95\t-75\tblank id\n")
    log = skip_log()
    df = read_tweets(p, log=log)
    assert df["user_id"].tolist() == ["U_ok"]
    assert dict(log.counts) == {"missing_user": 2}
    j = tmp_path / "t.jsonl"
    j.write_text('{"user": {"id_str": null}, "text": "x", "coordinates": {"coordinates": [-75, 95]}}\n'
                 '{"user": {"id_str": "u"}, "text": "y"}\n', "utf-8")
    log = skip_log()
    assert read_tweets(j, log=log)["user_id"].tolist() == ["u"]
    assert dict(log.counts) == {"missing_user": 1}


def test_table_header_messages_point_at_the_fix(tmp_path, caplog):
    import logging

    t = tmp_path / "tabs.csv"  # tab-separated, named .csv
    t.write_text("user_id\tlat\tlon\ttext\nu\t40\t-75\thi\n", "utf-8")
    with pytest.raises(DataError, match=r"the header holds tabs: a tab-separated file\? read it with --format tsv"):
        read_tweets(t)
    c = tmp_path / "t.csv"
    c.write_text("author,tweet\nu,hi\n", "utf-8")
    with pytest.raises(DataError, match=r"--columns names \['nonexist'\], not a column of this file"):
        read_tweets(c, columns={"author": "user_id", "nonexist": "text"})
    wide = tmp_path / "wide.csv"  # one long 'name' per field: cut in the message
    wide.write_text(",".join("x" * 500 + str(i) for i in range(30)) + "\n1\n", "utf-8")
    with pytest.raises(DataError) as e:
        read_tweets(wide)
    assert len(str(e.value)) < 1500 and "30 in all" in str(e.value)
    r = write_bytes(tmp_path / "user_info.test", b"U\t40\t-75\thello\n")
    with caplog.at_level(logging.WARNING, logger="geoae.tweets"):
        assert read_tweets(r, columns={"author": "user_id"})["user_id"].tolist() == ["U"]
    assert "applies to CSV, TSV and Parquet only" in caplog.text


@pytest.mark.parametrize("path, pattern", [("", r"an input path is empty"), ("-", r"input '-' \(standard input\) is not supported")])
def test_empty_and_stdin_input_paths_say_what_they_are(path, pattern):
    with pytest.raises(DataError, match=pattern):
        read_tweets(path)


def test_json_wrappers_of_the_wrong_type_are_ignored_not_a_traceback(tmp_path):
    # extended_tweet / note_tweet / includes given as a string or array, or a place whose id is an
    # array, raised AttributeError / TypeError out of the reader (a traceback from the CLI).
    lines = [{"id_str": "1", "text": "a", "user": {"id_str": "u"}, "extended_tweet": "zz"},
             {"id": "2", "author_id": "v", "text": "b", "note_tweet": ["x"]},
             {"data": [{"id": "3", "author_id": "w", "text": "c"}], "includes": ["x"]},
             {"data": [{"id": "4", "author_id": "x", "text": "d", "geo": {"place_id": "p"}}],
              "includes": {"places": [{"id": ["p"]}, {"id": "p", "geo": {"bbox": [-75, 40, -73, 42]}}]}},
             {"data": [{"id": "5", "author_id": "y", "text": "e"}], "includes": {"places": 5}}]
    p = tmp_path / "t.jsonl"
    p.write_text("".join(json.dumps(t) + "\n" for t in lines))
    log = skip_log()
    df = read_tweets(p, log=log)
    assert df[["user_id", "text"]].values.tolist() == [["u", "a"], ["v", "b"], ["w", "c"], ["x", "d"], ["y", "e"]]
    assert (df["lat"].iat[3], df["lon"].iat[3]) == (41.0, -74.0) and not log.counts


@pytest.mark.parametrize("sep", [",", "\t"])
@pytest.mark.parametrize("chunksize", [50_000, 100])
def test_truncated_gzip_csv_keeps_the_rows_before_the_cut(tmp_path, sep, chunksize):
    # The rows of the chunk pandas was parsing were lost with the error: with the default chunksize
    # a truncated CSV kept nothing ("no usable records") though the message said rows were kept.
    rng = random.Random(0)
    body = "user_id,text\n" + "".join(f"U{i},{''.join(rng.choices('abcdefghijkl ', k=80))}\n" for i in range(3000))
    blob = gzip.compress(body.replace(",", sep).encode())
    p = write_bytes(tmp_path / ("t.csv.gz" if sep == "," else "t.tsv.gz"), blob[: int(len(blob) * 0.6)])
    log = skip_log()
    df = read_tweets(p, log=log, chunksize=chunksize)
    assert log.counts == {"truncated_file": 1} and log.kept == {"truncated_file": 1}
    assert 1000 < len(df) < 3000
    assert df["line"].tolist() == list(range(2, len(df) + 2))
    # the line cut by the truncation is dropped, not read as a shorter tweet
    full = dict(ln.split(sep, 1) for ln in body.replace(",", sep).splitlines()[1:])
    assert df["text"].tolist() == [full[u] for u in df["user_id"]]
    assert f"after line {len(df) + 1} " in log.examples["truncated_file"][0]
    with pytest.raises(DataError, match=rf"{p.name}:{len(df) + 1}: truncated_file"):
        read_tweets(p, log=RecordLog(policy="fail"), chunksize=chunksize)


def test_truncated_gzip_csv_cut_inside_a_quoted_field_is_a_truncation_not_a_stray_quote(tmp_path):
    body = ("user_id,text\n" + "".join(f'{i},"multi {i}\nline {i}"\n' for i in range(300))).encode()
    co = zlib.compressobj(6, zlib.DEFLATED, 31)  # gzip, flushed so that the cut lands exactly here
    cut = body.index(b'"multi 250\n') + len('"multi 250\nline 2')
    blob = co.compress(body[:cut]) + co.flush(zlib.Z_FULL_FLUSH) + co.compress(body[cut:])
    p = write_bytes(tmp_path / "t.csv.gz", blob)
    log = skip_log()
    df = read_tweets(p, log=log, chunksize=100)
    assert df["user_id"].tolist() == [str(i) for i in range(200)]  # the chunks before the cut
    assert log.counts == {"truncated_file": 1}
    assert "inside a quoted field after line 401 " in log.examples["truncated_file"][0]


def test_parquet_null_timestamp_id_is_a_missing_user_not_the_user_nat(tmp_path):
    # A null in a date/time column reached pandas as NaT, which was not taken for missing: every
    # such row became one user "NaT".
    import pyarrow as pa
    import pyarrow.parquet as pq

    p = tmp_path / "t.parquet"
    pq.write_table(pa.table({"user_id": pa.array([pd.Timestamp("2020-01-01"), None, None]),
                             "text": ["a", "b", "c"]}), p)
    log = skip_log()
    df = read_tweets(p, log=log)
    assert df["user_id"].tolist() == ["2020-01-01 00:00:00"]
    assert log.counts == {"missing_user": 2}
    assert log.examples["missing_user"][0] == f"{p}:2: user id is missing (null); row dropped"


def test_json_numbers_beyond_float_or_int_limits_are_counted_not_a_traceback(tmp_path):
    # An integer of 400 digits as a coordinate overflowed pandas' / numpy's float conversion, and
    # one of 5000 digits made json.loads raise a ValueError that is not a JSONDecodeError: tracebacks.
    big = int("1" + "0" * 400)
    p = tmp_path / "t.jsonl"
    p.write_text("\n".join([
        json.dumps({"text": "a", "user": {"id_str": "u"}, "coordinates": {"type": "Point", "coordinates": [big, 40]}}),
        json.dumps({"text": "b", "user": {"id_str": "v"}, "place": {"bounding_box": {"coordinates": [[[big, 40]]]}}}),
        '{"text": "c", "user": {"id": 1' + "0" * 5000 + "}}",
        json.dumps({"text": "d", "user": {"id_str": "w"}, "coordinates": {"type": "Point", "coordinates": [-74, 40]}}),
    ]) + "\n")
    log = skip_log()
    df = read_tweets(p, log=log)
    assert df["text"].tolist() == ["a", "b", "d"] and df["lat"].isna().tolist() == [True, True, False]
    assert log.counts == {"invalid_coordinates": 2, "malformed_json": 1}
    assert [e.split(":")[1] for e in log.examples["invalid_coordinates"]] == ["1", "2"]
    assert log.examples["invalid_coordinates"][0].startswith(f"{p}:1: lat=40 lon=1000")
    assert "the place box has corners" in log.examples["invalid_coordinates"][1]
    assert log.examples["malformed_json"][0].startswith(f"{p}:3: not valid JSON (ValueError: Exceeds the limit")


def test_parquet_boolean_user_ids_are_refused_and_boolean_n_tweets_counted(tmp_path):
    # A boolean column read as user ids made every row the user "True" or "False", and True as
    # n_tweets was read as 1 tweet, silently (booleans as coordinates are already invalid).
    import pyarrow as pa
    import pyarrow.parquet as pq

    p = tmp_path / "ids.parquet"
    pq.write_table(pa.table({"user_id": [True, False], "text": ["a", "b"]}), p)
    with pytest.raises(DataError, match=r"ids\.parquet: column 'user_id' holds booleans \(true/false\), not user ids"):
        read_tweets(p, log=skip_log())
    q = tmp_path / "n.parquet"
    pq.write_table(pa.table({"user_id": ["u", "v", "w"], "text": ["a", "b", "c"], "n_tweets": [True, False, None]}), q)
    log = skip_log()
    df = read_tweets(q, log=log)
    assert df["n_tweets"].tolist() == [1, 1, 1]
    assert log.counts == {"invalid_n_tweets": 3}


def test_a_file_name_that_is_not_utf8_is_a_clear_error(tmp_path):
    # Linux allows any bytes in a name; Python gives them as surrogates, which no UTF-8 column (the
    # source of every row) can hold: an UnicodeEncodeError traceback from pandas.
    import os

    p = write_bytes(tmp_path / os.fsdecode(b"caf\xe9.csv"), b"user_id,text\n1,a\n")
    with pytest.raises(DataError, match=r"caf\\xe9\.csv: the file name is not valid UTF-8"):
        read_tweets(p, log=skip_log())


def test_json_place_box_of_the_wrong_type_is_counted_not_unknown(tmp_path):
    # A place whose bounding_box (v1.1) or geo (v2) is not an object gave no point without a word,
    # while a malformed box inside one was counted.
    p = tmp_path / "t.jsonl"
    p.write_text("\n".join(json.dumps(o) for o in [
        {"text": "a", "user": {"id_str": "u"}, "place": {"bounding_box": "x"}},
        {"data": [{"id": "1", "author_id": "v", "text": "b", "geo": {"place_id": "p"}}],
         "includes": {"places": [{"id": "p", "geo": [1, 2]}]}},
        {"text": "c", "user": {"id_str": "w"}, "place": {"bounding_box": None}},  # no box: nothing wrong
    ]) + "\n")
    log = skip_log()
    df = read_tweets(p, log=log)
    assert df["text"].tolist() == ["a", "b", "c"] and df["lat"].isna().all()
    assert log.counts == {"invalid_coordinates": 2}
    assert log.examples["invalid_coordinates"][0].startswith(f'{p}:1: the place bounding_box is "x", not an object')
    assert log.examples["invalid_coordinates"][1].startswith(f"{p}:2: the place geo is [1, 2], not an object")


def test_a_file_given_twice_is_refused_not_read_twice(tmp_path, monkeypatch):
    # A CSV has no tweet id to tell a copy by: read twice, every user's text and n_tweets doubled
    # with no bad record counted. Any spelling of the same file is the same file.
    p = tmp_path / "c.csv"
    pd.DataFrame({"user_id": ["u1", "u2"], "text": ["hello la", "boston"], "lat": [34.05, 42.36],
                  "lon": [-118.2, -71.06]}).to_csv(p, index=False)
    monkeypatch.chdir(tmp_path)
    for twice in ([p, p], [str(p), "./c.csv"], ["c.csv", str(tmp_path / "." / "c.csv")]):
        with pytest.raises(DataError, match="is given twice"):
            read_tweets(twice)
    other = tmp_path / "d.csv"
    other.write_bytes(p.read_bytes())  # the same content in another file is another input
    assert len(read_tweets([p, other])) == 4


@pytest.mark.parametrize("name,line", [
    ("user_info.train.gz", "U{i}\t40\t-74\t{t}\n"),  # the line reader (Rahimi, GeoText)
    ("t.jsonl.gz", '{{"id_str": "{i}", "user": {{"id_str": "U{i}"}}, "text": "{t}"}}\n'),
    ("t.csv.gz", "U{i},{t}\n"),  # pandas' reader, through _WholeLines
], ids=["rahimi", "json", "csv"])
@pytest.mark.parametrize("damage", ["crc", "length"])
def test_a_gzip_failing_its_checksum_is_damaged_not_truncated(tmp_path, name, line, damage):
    # A gzip member whose CRC-32 or length does not match what was decompressed is damaged
    # somewhere (corrupted deflate data can decode to plausible garbage: 100 flipped bytes gave
    # 19,000 lines of one user id) and this is found only at its end. It was counted as
    # truncated_file ("ends early after line N; the lines before it were kept") and every line
    # kept; a file of under 64 KiB with the same damage was already refused.
    rng = random.Random(0)
    body = ("user_id,text\n" if name.endswith(".csv.gz") else "") + "".join(
        line.format(i=i, t="".join(rng.choices("abcdefghijkl ", k=80))) for i in range(3000))
    blob = bytearray(gzip.compress(body.encode()))
    blob[-8 if damage == "crc" else -4] ^= 1  # the trailer: CRC-32, then ISIZE
    p = write_bytes(tmp_path / name, bytes(blob))
    for policy in ("skip", "fail"):
        log = RecordLog(policy=policy)
        with pytest.raises(DataError, match=rf"{name}: damaged gzip data \((CRC check failed|Incorrect length)"):
            read_tweets(p, log=log)
        assert not log.counts


# Bodies of each reader kind: the line readers (Twitter JSON, GeoText, Rahimi) and pandas' (CSV).
_CUT_BODIES = {
    "json": "".join(json.dumps({"id_str": str(i), "user": {"id_str": f"U{i}"}, "text": f"tweet {i}"}) + "\n"
                    for i in range(200)),
    "geotext": "".join(geotext_line(f"U{i}", 40.7, -74.0, f"tweet {i}") for i in range(200)),
    "rahimi": "".join(f"U{i}\t40.7\t-74.0\ttweet {i}\n" for i in range(200)),
    "csv": "user_id,text\n" + "".join(f"U{i},tweet {i}\n" for i in range(200)),
}


def _gzip_cut(body: str, cut: str) -> bytes:
    """A gzip of ``body`` cut short: ``header`` (its 10-byte header only), ``deflate`` (20 bytes: some
    compressed data, none of it decompressible yet) or ``line`` (flushed and cut inside the first line)."""
    if cut == "line":
        co = zlib.compressobj(6, zlib.DEFLATED, 31)
        return co.compress(body[:3].encode()) + co.flush(zlib.Z_FULL_FLUSH)
    blob = gzip.compress(body.encode())
    return blob[:10] if cut == "header" else blob[:20]


@pytest.mark.parametrize("cut", ["header", "deflate", "line"])
@pytest.mark.parametrize("kind", sorted(_CUT_BODIES))
@pytest.mark.parametrize("name", ["t.gz", "named"])
def test_a_gzip_cut_before_any_line_is_truncated_not_empty(tmp_path, kind, cut, name):
    # A gzip cut before its first line was read was "is empty" when its format had to be sniffed
    # (a name like t.gz), which hides that the download broke. It is a truncated_file, as a stream
    # cut later is (and as it already was under a name that gives the format): counted among other
    # inputs, the error when it is the only one, and under ``fail`` stops the run.
    fname = {"json": "t.jsonl.gz", "geotext": "full_text.txt.gz", "rahimi": "user_info.train.gz",
             "csv": "t.csv.gz"}[kind] if name == "named" else name
    p = write_bytes(tmp_path / fname, _gzip_cut(_CUT_BODIES[kind], cut))
    kw = {"user_info": False} if kind == "geotext" else {}
    with pytest.raises(DataError, match=r"truncated_file.*compressed stream ends early") as e:
        read_tweets(p, log=skip_log(), **kw)
    assert "is empty" not in str(e.value)
    with pytest.raises(DataError, match=rf"{p.name}(:\d+)?: truncated_file: compressed stream ends early"):
        read_tweets(p, log=RecordLog(policy="fail"), **kw)
    good = write_bytes(tmp_path / "good.csv", b"user_id,text\nu1,a\n")
    log = skip_log()
    assert read_tweets([good, p], log=log, **kw)["user_id"].tolist() == ["u1"]
    assert log.counts == {"truncated_file": 1} and log.examples["truncated_file"][0].startswith(str(p))
    if name == "t.gz":
        with pytest.raises(DataError, match=rf"{p.name}: truncated gzip file: compressed stream ends early"):
            detect_format(p)


@pytest.mark.parametrize("data", [b"", gzip.compress(b""), gzip.compress(b" \n\n")], ids=["zero_bytes", "gzip_of_nothing",
                                                                                       "gzip_of_blank_lines"])
@pytest.mark.parametrize("name", ["t.gz", "t.jsonl.gz", "t.csv.gz", "full_text.txt.gz"])
def test_an_empty_gzip_is_still_empty_not_truncated(tmp_path, name, data):
    p = write_bytes(tmp_path / name, data)
    with pytest.raises(DataError, match="is empty"):
        read_tweets(p, user_info=False)
    good = write_bytes(tmp_path / "good.csv", b"user_id,text\nu1,a\n")
    log = skip_log()
    assert read_tweets([good, p], log=log, user_info=False)["user_id"].tolist() == ["u1"]
    assert log.counts == {"empty_file": 1}


# --------------------------------------------------------------------------- session 15: input fuzzing


def _damaged_deflate(body: bytes, at: float = 0.75) -> bytes:
    """A gzip of ``body`` whose deflate data is invalid after ``at`` of it (a block of type 3, which
    does not exist): zlib raises "invalid block type" there; the stream does not end early."""
    co = zlib.compressobj(6, zlib.DEFLATED, 31)
    cut = int(len(body) * at)
    return co.compress(body[:cut]) + co.flush(zlib.Z_FULL_FLUSH) + b"\xff\xff\xff\xff" + co.compress(body[cut:]) + \
        co.flush()


@pytest.mark.parametrize("name, line", [
    ("user_info.train.gz", "U{i}\t40\t-74\t{t}\n"),  # the line reader (Rahimi, GeoText)
    ("t.jsonl.gz", '{{"id_str": "{i}", "user": {{"id_str": "U{i}"}}, "text": "{t}"}}\n'),
    ("t.csv.gz", "U{i},{t}\n"),  # pandas' reader, through _WholeLines
    ("t.gz", "U{i}\t40\t-74\t{t}\n"),  # format sniffed: the damage is met in the head
], ids=["rahimi", "json", "csv", "sniffed"])
def test_invalid_deflate_data_is_damaged_not_truncated(tmp_path, name, line):
    # Corrupted deflate data that zlib itself rejects ("invalid distance too far back" from one
    # flipped byte) was counted as truncated_file ("compressed stream ends early ... the lines
    # before it were kept"), and the rest of the file was lost under that one count. It is damage,
    # as a failed CRC is: the lines decompressed before it may be garbage, so the file is refused.
    rng = random.Random(0)
    body = ("user_id,text\n" if name.endswith(".csv.gz") else "") + "".join(
        line.format(i=i, t="".join(rng.choices("abcdefghijkl ", k=80))) for i in range(3000))
    p = write_bytes(tmp_path / name, _damaged_deflate(body.encode(), at=0.01 if name == "t.gz" else 0.75))
    good = write_bytes(tmp_path / "good.csv", b"user_id,text\nu1,a\n")
    for policy in ("skip", "fail"):
        log = RecordLog(policy=policy)
        with pytest.raises(DataError, match=rf"{name}: damaged gzip data \(.*invalid block type; found "
                                            rf"(after line \d+|near its start)\): the compressed data is corrupt"):
            read_tweets([good, p], log=log)
        assert not log.counts


@pytest.mark.parametrize("name, row", [
    ("user_info.train", "U{i}\t40.{i}\t-74\ttweet {i} ||| more"),
    ("full_text.txt", "U{i}\t2010-03-03T04:15:26\tloc\t40.{i}\t-74\ttweet {i}"),
    ("t.jsonl", '{{"id_str": "{i}", "user": {{"id_str": "U{i}"}}, "text": "tweet {i}"}}'),
])
@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gzip"])
def test_cr_line_ends_are_a_clear_error_for_the_line_readers(tmp_path, name, row, gz):
    # A file whose lines end in a bare CR (classic Mac OS) has no LF, and the GeoText, Rahimi and
    # JSON readers end lines at LF only: a Rahimi or GeoText file was read as ONE user whose text
    # held every other record (5 users in, 1 out, nothing counted); a JSON one as one bad line.
    rows = [row.format(i=i) for i in range(5)]
    data = ("\r".join(rows) + "\r").encode()
    p = write_bytes(tmp_path / (name + (".gz" if gz else "")), gzip.compress(data) if gz else data)
    for target in (p, write_bytes(tmp_path / ("t.gz" if gz else "t.txt"), p.read_bytes())):  # named, sniffed
        with pytest.raises(DataError, match=r"lines end in a bare carriage return.*tr '\\r' '\\n'"):
            read_tweets(target, log=skip_log(), user_info=False)
    # the same records with LF or CRLF line ends read as 5 rows; a CR inside a line stays text
    for nl in ("\n", "\r\n"):
        q = write_bytes(tmp_path / name, (nl.join(rows) + nl).encode())
        assert len(read_tweets(q, user_info=False)) == 5
    if name != "t.jsonl":  # (a JSON string holds no raw CR)
        q = write_bytes(tmp_path / name, ("\n".join(rows).replace("tweet 1", "twe\ret 1") + "\n").encode())
        assert read_tweets(q, user_info=False)["text"].str.contains("twe\ret 1", regex=False).sum() == 1
        one = write_bytes(tmp_path / name, (rows[0].replace("tweet", "t\rw") + "\r").encode())  # one record, no LF
        assert read_tweets(one, user_info=False)["text"].str.startswith("t\rw 0").tolist() == [True]


@pytest.mark.parametrize("sep", ["\t", ","])
@pytest.mark.parametrize("nl", ["\n", "\r\n", "\r"], ids=["lf", "crlf", "cr"])
def test_unbalanced_quote_swallowing_rows_is_counted_whatever_the_line_ends(tmp_path, sep, nl):
    # pandas ends lines at a bare CR too, so a CSV/TSV with CR line ends reads; but a field that
    # swallowed rows then holds CRs, not LFs, and only LFs were looked for: the 3 swallowed rows
    # were merged into one user's text without a count, and later rows got too small line numbers.
    p = tmp_path / ("t.tsv" if sep == "\t" else "t.csv")
    rows = [f"user_id{sep}text", *(r.replace("\t", sep) for r in _SWALLOW_ROWS), f"u4{sep}x"]
    p.write_bytes((nl.join(rows) + nl).encode())
    log = skip_log()
    df = read_tweets(p, log=log)
    assert log.counts == {"malformed_line": 4}
    assert "3 following line(s) 3-5" in log.examples["malformed_line"][0]
    assert df["user_id"].tolist() == ["u3", "u4"] and df["line"].tolist() == [6, 7]


def test_a_bare_cr_in_a_quoted_field_is_a_line_for_the_line_numbers(tmp_path):
    # pandas and the blank-line check end lines at a bare CR, the line numbers counted LFs only: a
    # row after "a<CR>b" was numbered one line short, and the blank-line check then looked at the
    # wrong line (here: the blank line was counted as a missing_user, the row of empty fields not).
    p = write_bytes(tmp_path / "t.csv", b'user_id,text\nu1,"a\rb"\nu2,ok\n,\n\nu3,fine\n')
    log = skip_log()
    df = read_tweets(p, log=log)
    assert df[["user_id", "line"]].values.tolist() == [["u1", 2], ["u2", 4], ["u3", 7]]
    assert log.examples == {"missing_user": [f"{p}:5: user id is empty; row dropped"]}


def test_a_quoted_newline_in_the_extra_field_of_an_overfull_row_counts_for_the_line_numbers(tmp_path):
    # The newlines of the field beyond the header's (a row with one field too many, dropped as a
    # malformed_line) were not counted: every later row was numbered a line short, and the
    # blank-line check looked at the wrong lines: the blank line was counted as a missing_user and
    # the row of empty fields after it (the real missing_user) was dropped as blank, uncounted.
    p = write_bytes(tmp_path / "t.csv", b'user_id,text\nu1,a,"x\ny"\n\n,\nu2,b\n')
    log = skip_log()
    df = read_tweets(p, log=log)
    assert df[["user_id", "line"]].values.tolist() == [["u2", 6]]
    assert log.examples == {"malformed_line": [f"{p}:2: expected 2 fields (the header's), saw 3; row dropped"],
                            "missing_user": [f"{p}:5: user id is empty; row dropped"]}


def test_a_swallowed_row_with_a_field_over_the_csv_module_limit_is_counted_not_a_traceback(tmp_path):
    # A line inside a quoted field that may be a swallowed row is parsed with Python's csv module,
    # whose fields are limited to 128 KiB: a longer one (a user document) raised _csv.Error, a
    # traceback out of geoae prepare and predict.
    import csv

    limit = csv.field_size_limit()
    p = tmp_path / "t.csv"
    p.write_text('user_id,text\nu0,ok\nu1,"hello\nu2,' + "x" * (limit + 10) + '"\nu3,fine\n')
    log = skip_log()
    df = read_tweets(p, log=log)
    assert df["user_id"].tolist() == ["u0", "u3"] and df["line"].tolist() == [2, 5]
    assert log.counts == {"malformed_line": 2} and "swallowed the 1 following line(s) 4-4" in \
        log.examples["malformed_line"][0]
    assert csv.field_size_limit() == limit  # raised for that line only


@pytest.mark.parametrize("extra", [2, 3])
@pytest.mark.parametrize("sep", [",", "\t"])
def test_a_first_row_with_several_fields_too_many_does_not_shift_the_columns(tmp_path, sep, extra):
    # One field too many in the first data row is caught by the spare column; two or more made
    # pandas read the first columns as an index: every later row's user id was its text (or
    # empty), the texts were lost, and only empty_text (or missing_user) was counted.
    p = tmp_path / ("t.csv" if sep == "," else "t.tsv")
    p.write_text(sep.join(["user_id", "text"]) + "\n" + sep.join(["u1", "hello", *"xyz"[:extra]]) + "\n"
                 + f"u2{sep}world\nu3{sep}foo bar\n")
    log = skip_log()
    df = read_tweets(p, log=log)
    assert df[["user_id", "text", "line"]].values.tolist() == [["u2", "world", 3], ["u3", "foo bar", 4]]
    assert log.counts == {"malformed_line": 1} and log.examples["malformed_line"][0].startswith(f"{p}:2: ")
