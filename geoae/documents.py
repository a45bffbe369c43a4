"""Tweets -> one document per user: the second stage of the data flow.

The model locates *users*, so every user becomes one row (``DOC_COLUMNS``):

==========  ========  =====================================================
user_id     str       the user
text        str       the user's non-empty tweets joined by ``"\\n"``, in
                      input order
n_tweets    int64     tweets read for the user (summed over rows)
lat, lon    float64   the user's first valid coordinate in input order
                      (GeoText: the first message, as in the paper), the
                      (0, 0) placeholder only if there is no other; NaN if
                      none. Training drops such users, prediction keeps them.
split       str       the user's first non-empty split ("" if none)
==========  ========  =====================================================

Two ways to build them, for two memory regimes:

* ``build_documents`` / ``read_documents`` (training, ``geoae prepare``) group
  everything in memory, so a user's tweets may appear anywhere in the input.
  Users whose text is empty are **counted** (``empty_user``) and left out of
  the table, because they cannot be trained or evaluated on.
* ``iter_documents`` (streaming batch prediction) keeps memory flat: it only
  merges *contiguous* runs of the same user (a run crossing a chunk boundary is
  carried into the next chunk, never split). A user that reappears later is
  counted (``user_not_contiguous``) and yielded again as a separate row. Here
  empty users ARE yielded, with ``text == ""``, so prediction can write a row
  for them with an explicit reason instead of losing them.

Bad-record reasons added here (on top of the readers' ones in ``geoae.tweets``):
``empty_user``, ``too_few_tweets`` (below ``min_tweets``), ``duplicate_user``
(a user with several rows of a per-user format: merged),
``conflicting_split`` (the user's first non-empty split kept, with its tweets; the tweets of the
user's other splits dropped), ``user_not_contiguous``.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from geoae.errors import ConfigError, DataError, GeoaeError, RecordLog, plural
# SeenIds lives with the readers, which also use it (duplicate tweet ids); `from geoae.documents import SeenIds` still works.
from geoae.tweets import (GRANULARITY_ATTR, TWEET_COLUMNS, SeenIds, blank_texts, geotext_fold_split, iter_tweets,
                          text_array)

log_ = logging.getLogger(__name__)

DOC_COLUMNS = ("user_id", "text", "n_tweets", "lat", "lon", "split")
SPLIT_RULES = ("column", "geotext_folds", "random")
# Text stays a numpy object column of Python strings (see ``tweets.text_array``).
_DTYPES = {"user_id": "str", "text": object, "n_tweets": "int64", "lat": "float64", "lon": "float64", "split": "str"}


USER_ORDER_ATTR = "user_order"
"""``attrs`` key of ``build_documents``' output: every user read, numbered by first appearance."""


class UserOrder(str):
    """``order``: user_id -> 1-based order of first appearance among *all* users read, including
    those ``build_documents`` left out (empty, too few tweets), as the lines of GeoText's
    ``user_info`` number them: ``assign_splits(rule="geotext_folds")`` numbers users with it, else a
    left-out user would shift every later user into another official fold (and it removes it).
    A ``str`` (a short note) so that ``to_parquet``, which writes ``attrs`` as JSON, writes the note
    and not every user; read-only, and a copy is the object itself (pandas copies ``attrs`` on every
    operation)."""

    order: pd.Series

    def __new__(cls, order: pd.Series) -> "UserOrder":
        self = super().__new__(cls, f"first-appearance order of {len(order)} users")
        self.order = order
        return self

    def __deepcopy__(self, memo: dict) -> "UserOrder":
        return self


def empty_documents() -> pd.DataFrame:
    """A zero-row document table with the right dtypes."""
    return pd.DataFrame({c: pd.Series([], dtype=t) for c, t in _DTYPES.items()})


def _as_frame(tweets: pd.DataFrame | Iterable[pd.DataFrame]) -> pd.DataFrame:
    """Concatenate tweet frames, marking rows of per-user formats in ``_per_user``."""
    frames = [tweets] if isinstance(tweets, pd.DataFrame) else list(tweets)
    parts = []
    for f in frames:
        missing = [c for c in ("user_id", "text") if c not in f.columns]
        if missing:
            raise DataError(f"tweet frame lacks column(s) {missing}; expected the geoae.tweets schema {TWEET_COLUMNS}")
        f = f.copy()
        for col, default in (("n_tweets", 1), ("lat", np.nan), ("lon", np.nan), ("split", ""), ("line", 0),
                             ("source", "")):
            if col not in f.columns:
                f[col] = default
        f["_per_user"] = f.attrs.get(GRANULARITY_ATTR) == "user"
        parts.append(f)
    if not parts:
        return pd.DataFrame(columns=[*TWEET_COLUMNS, "_per_user"])
    return pd.concat(parts, ignore_index=True)


def _aggregate(df: pd.DataFrame, key: pd.Series | np.ndarray) -> pd.DataFrame:
    """One row per ``key`` group (in first-appearance order), vectorised with groupby.

    Empty tweets are left out of the text so they do not add blank lines; they
    still count in ``n_tweets``.
    """
    text = text_array(df["text"])
    nonempty = ~blank_texts(text)
    codes, uniques = pd.factorize(np.asarray(key), sort=False)
    if len(uniques) == len(df) and df["n_tweets"].dtype.kind in "iu" and df["lat"].dtype.kind == "f" \
            and df["lon"].dtype.kind == "f":
        return _one_row_groups(df, text, nonempty)
    g = df.groupby(key, sort=False)
    out = pd.DataFrame({"user_id": g["user_id"].first()})
    # Join each group's tweets without a per-group pandas call (``agg("\n".join)`` runs a Python
    # function on a Series per user, which dominated reading time): factorize gives the same
    # first-appearance group order as ``groupby(sort=False)``, a stable sort keeps tweet order.
    c, t = codes[nonempty], text[nonempty]
    order = np.argsort(c, kind="stable")
    t = t[order].tolist()
    bounds = np.searchsorted(c[order], np.arange(len(uniques) + 1))
    out["text"] = pd.Series(["\n".join(t[a:b]) for a, b in zip(bounds[:-1].tolist(), bounds[1:].tolist())],
                            index=out.index, dtype=object)
    out["n_tweets"] = g["n_tweets"].sum()
    has = (df["lat"].notna() & df["lon"].notna()).to_numpy()
    # (0, 0) is the usual placeholder of a missing position, which labels.add_labels discards: a user's
    # first real pair wins over it, else the user would lose a point a later tweet gives. A user with
    # nothing but (0, 0) keeps it (add_labels then counts it as invalid_coordinates).
    real = has & ~((df["lat"] == 0) & (df["lon"] == 0)).to_numpy()

    def first_pair(rows: np.ndarray) -> pd.DataFrame:
        return df.loc[rows, ["lat", "lon"]].groupby(np.asarray(key)[rows], sort=False).first().reindex(out.index)

    coords = first_pair(real).combine_first(first_pair(has)) if (has & ~real).any() else first_pair(has)
    out["lat"] = coords["lat"]
    out["lon"] = coords["lon"]
    split = df["split"].fillna("").astype("str")
    sp_ok = split != ""
    out["split"] = split[sp_ok].groupby(np.asarray(key)[sp_ok.to_numpy()], sort=False).first().reindex(out.index)
    out["split"] = out["split"].fillna("")
    return out.reset_index(drop=True).astype(_DTYPES)[list(DOC_COLUMNS)]


def _one_row_groups(df: pd.DataFrame, text: np.ndarray, nonempty: np.ndarray) -> pd.DataFrame:
    """``_aggregate`` when every group is one row (a per-user format with one line per user, the
    common case): each reduction of a one-row group is the row itself, so the groupby calls,
    which cost more than reading the line, are skipped. Same values and dtypes as the general path:
    a blank text becomes "", coordinates are kept only as a pair, a missing split becomes ""."""
    has = (df["lat"].notna() & df["lon"].notna()).to_numpy()
    text = text.copy()
    text[~nonempty] = ""
    out = pd.DataFrame({
        "user_id": df["user_id"].to_numpy(),
        "text": pd.Series(text, dtype=object),
        "n_tweets": df["n_tweets"].to_numpy(),
        "lat": np.where(has, df["lat"].to_numpy(), np.nan),
        "lon": np.where(has, df["lon"].to_numpy(), np.nan),
        "split": df["split"].fillna("").astype("str").to_numpy(),
    })
    return out.astype(_DTYPES)[list(DOC_COLUMNS)]


def _drop_conflicting_splits(df: pd.DataFrame, bad: Any) -> pd.DataFrame:
    """A user with more than one distinct non-empty split keeps only the rows of its first split (in
    input order) and those without a split; the rows of its other splits are dropped, else a user's
    test tweets would train the model (the document takes one split). One ``conflicting_split``
    per such user (kept: the user stays), saying how many tweets were kept and dropped from which
    split. Returns ``df`` itself when no user conflicts."""
    split = df["split"].fillna("").astype("str")
    has = (split != "").to_numpy()
    sp = pd.DataFrame({"user_id": df["user_id"].to_numpy()[has], "split": split.to_numpy()[has]}).drop_duplicates()
    conflicted = sp.loc[sp["user_id"].duplicated(), "user_id"].unique()
    if not len(conflicted):
        return df
    first = sp.drop_duplicates("user_id").set_index("user_id")["split"]
    in_conf = df["user_id"].isin(conflicted).to_numpy()
    drop = in_conf & has & (split.to_numpy() != df["user_id"].map(first).to_numpy())
    # Tweets, not rows: a row of a per-user format (Rahimi) holds n_tweets of them.
    ntw = pd.to_numeric(df["n_tweets"], errors="coerce").fillna(1).to_numpy()[in_conf]
    counts = pd.Series(ntw).groupby([df["user_id"].to_numpy()[in_conf], split.to_numpy()[in_conf]],
                                    sort=False).sum()
    order = sp.groupby("user_id", sort=False)["split"].agg(list)
    for u in conflicted:
        splits, c = order[u], counts[u]
        unsplit = int(c.get("", 0))
        kept = f"kept its {plural(int(c[splits[0]]), 'tweet')} from split {splits[0]!r}" + (
            f" (and {plural(unsplit, 'tweet')} without a split)" if unsplit else "")
        dropped = " and ".join(f"{plural(int(c[s]), 'tweet')} from split {s!r}" for s in splits[1:])
        bad("conflicting_split", [u], f"appears in splits {splits}; {kept} and dropped its {dropped}", kept=True)
    return df.loc[~drop].reset_index(drop=True)


def build_documents(
    tweets: pd.DataFrame | Iterable[pd.DataFrame],
    log: RecordLog | None = None,
    min_tweets: int = 1,
) -> pd.DataFrame:
    """Group tweets into one document per user (``DOC_COLUMNS``), in memory.

    Users come out in order of first appearance. Counted, never silently:
    ``conflicting_split`` (a user with two different non-empty splits: the user
    is kept in the first split seen, with only that split's tweets and those
    without a split; the tweets of the other splits are dropped),
    ``duplicate_user`` (several rows of a per-user format; merged),
    ``empty_user`` (nothing but whitespace; left out) and ``too_few_tweets``
    (fewer than ``min_tweets``; left out).
    """
    if min_tweets < 1:
        raise ConfigError(f"min_tweets must be >= 1, got {min_tweets}")
    log = RecordLog(policy="skip") if log is None else log
    df = _as_frame(tweets)
    if df.empty:
        return empty_documents()
    df["user_id"] = df["user_id"].astype("str")
    first_row = df.drop_duplicates("user_id")
    where = dict(zip(first_row["user_id"], zip(first_row["source"].astype(str), first_row["line"].astype(int))))

    def bad(reason: str, users: Iterable[str], detail: str, kept: bool = False) -> None:
        for u in users:
            src, ln = where.get(u, ("", None))
            log.bad(reason, f"user {u!r}: {detail}", line=ln, source=src, kept=kept)

    df = _drop_conflicting_splits(df, bad)
    # Duplicates of per-user formats: the same user in several aggregated rows (after the rows of a
    # conflicting split are gone: a Rahimi user in user_info.train and user_info.test is one row again).
    per_user = df.loc[df["_per_user"].astype(bool), "user_id"]
    dups = per_user[per_user.duplicated()].unique()
    if len(dups):
        counts = per_user.value_counts()
        for u in dups:
            bad("duplicate_user", [u], f"has {counts[u]} per-user rows; merged into one document", kept=True)

    docs = _aggregate(df, df["user_id"])
    empty = blank_texts(docs["text"])
    bad("empty_user", docs.loc[empty, "user_id"], "has no text after stripping; left out of the documents")
    few = ~empty & (docs["n_tweets"].to_numpy() < min_tweets)
    bad("too_few_tweets", docs.loc[few, "user_id"], f"has fewer than min_tweets={min_tweets} tweets; left out")
    docs = docs.loc[~empty & ~few].reset_index(drop=True)
    docs.attrs[USER_ORDER_ATTR] = UserOrder(pd.Series(np.arange(1, len(first_row) + 1, dtype="int64"),
                                                      index=first_row["user_id"].to_numpy()))
    log_.info("built %d user documents from %d rows", len(docs), len(df))
    return docs


def iter_documents(
    paths: str | Path | Iterable[str | Path],
    fmt: str = "auto",
    *,
    chunksize: int = 50_000,
    log: RecordLog | None = None,
    **reader_kwargs: Any,
) -> Iterator[pd.DataFrame]:
    """Stream documents (``DOC_COLUMNS``) with memory flat in the number of tweets.

    Contiguous runs of one user become one row; the last run of each chunk is
    carried over so a run crossing a chunk (or file) boundary is not split. A
    user seen before in an earlier run is counted as ``user_not_contiguous`` and
    yielded again as a new row (only a set of seen ids is kept). Unlike
    ``build_documents``, empty users are yielded with ``text == ""`` (and still
    counted as ``empty_user``) so the caller can report them. A GeoText tweet file without
    ``user_info`` is not split into the official folds here (split ``""``): numbering its users
    would keep every id seen.
    """
    log = RecordLog(policy="skip") if log is None else log
    seen = SeenIds()
    carry: pd.DataFrame | None = None

    def emit(part: pd.DataFrame) -> pd.DataFrame:
        runs = (part["user_id"] != part["user_id"].shift()).cumsum().to_numpy()
        docs = _aggregate(part, runs)
        # Plain lists and a set: per-user pandas indexing here cost more than reading the file.
        users = docs["user_id"].tolist()
        empty = blank_texts(docs["text"])
        repeated = np.flatnonzero(seen.add(users)).tolist()
        flagged = sorted(set(repeated) | set(np.flatnonzero(empty).tolist()))
        if flagged:
            first = part.groupby(runs, sort=False)[["source", "line"]].first().reset_index(drop=True)
            where = first.iloc[flagged]
            lines, sources = where["line"].astype(int).tolist(), where["source"].astype(str).tolist()
            rep = set(repeated)
            for i, ln, src in zip(flagged, lines, sources):
                u = users[i]
                if i in rep:
                    log.bad("user_not_contiguous", f"user {u!r} reappears after other users; yielded as a separate "
                            "document (sort the input by user to merge them)", line=ln, source=src, kept=True)
                if empty[i]:
                    log.bad("empty_user", f"user {u!r} has no text; yielded with text=''", line=ln, source=src, kept=True)
        return docs

    # Neither duplicate tweet ids (8 bytes per tweet to remember) nor a GeoText split (every user id
    # to remember) is looked for here: this stream's memory must stay flat however much passes (predict).
    reader_kwargs.setdefault("fold_splits", False)
    for frame in iter_tweets(paths, fmt, chunksize=chunksize, log=log, drop_duplicate_tweets=False, **reader_kwargs):
        frame = frame.astype({"user_id": "str"})
        if carry is not None:
            frame = pd.concat([carry, frame], ignore_index=True)
        last = frame["user_id"].iat[-1]
        # The trailing run may continue in the next chunk: hold it back.
        is_last_run = (frame["user_id"] != last)[::-1].cumsum()[::-1] == 0
        carry = frame.loc[is_last_run].reset_index(drop=True)
        done = frame.loc[~is_last_run].reset_index(drop=True)
        if len(done):
            yield emit(done)
    if carry is not None and len(carry):
        yield emit(carry)


def _peak_rss_mb() -> float | None:
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return round(int(line.split()[1]) / 1024, 1)
    except OSError:  # not Linux
        pass
    return None


def die_with_parent() -> None:
    """In a child process: have Linux send it SIGTERM when its parent dies, however the parent dies
    (even SIGKILL), so a reader or worker never lingers blocked on a queue nobody reads. A no-op
    where ``prctl`` is unavailable."""
    import ctypes
    import signal
    import sys

    if not sys.platform.startswith("linux"):
        return
    parent = os.getppid()
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, int(signal.SIGTERM), 0, 0, 0)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # the parent died before the call: nobody will send the signal
        os._exit(1)


def read_documents_into(q, paths: list[str], fmt: str, chunksize: int, policy: str,
                        columns: dict[str, str] | None = None) -> None:
    """Body of a reader *process*: ``iter_documents`` chunks into the queue ``q``, then its log.

    Messages: ``("chunk", frame)``, then ``("done", (RecordLog, peak RSS MB))`` or
    ``("error", (exc, RecordLog))``. The peak is this process's own (``VmHWM``): a parent's
    ``RUSAGE_CHILDREN`` cannot tell it, since Linux counts a forked child's pages before ``exec``.
    Lives here, not in ``predict``, so a spawned child imports pandas but not torch.
    """
    die_with_parent()
    log = RecordLog(policy=policy)
    try:
        for docs in iter_documents(paths, fmt=fmt, chunksize=chunksize, log=log, columns=columns):
            q.put(("chunk", docs))
        q.put(("done", (log, _peak_rss_mb())))
    except BaseException as e:  # every failure is handed to the parent, which raises it
        if not isinstance(e, GeoaeError):  # our errors carry one message and cross the queue intact
            e = DataError(f"reading failed: {type(e).__name__}: {e}")
        q.put(("error", (e, log)))


def read_documents(
    paths: str | Path | Iterable[str | Path],
    fmt: str = "auto",
    *,
    log: RecordLog | None = None,
    min_tweets: int = 1,
    **reader_kwargs: Any,
) -> pd.DataFrame:
    """``build_documents`` over every record of ``paths`` (what ``geoae prepare`` uses)."""
    log = RecordLog(policy="skip") if log is None else log
    return build_documents(iter_tweets(paths, fmt, log=log, **reader_kwargs), log=log, min_tweets=min_tweets)


# --------------------------------------------------------------------------- splits


def _hash_rank(users: pd.Series, seed: int) -> np.ndarray:
    """A seeded pseudo-random order of users that depends only on (seed, user_id).

    Hashing instead of shuffling makes the draw independent of row order, so
    the same user lands in the same split however the input was sorted.
    """
    keys = np.array(
        [int.from_bytes(hashlib.blake2b(f"{seed}\x00{u}".encode(), digest_size=8).digest(), "big") for u in users],
        dtype="uint64",
    )
    return np.argsort(keys, kind="stable")


def _user_numbers(docs: pd.DataFrame, users: pd.Series) -> np.ndarray:
    """The GeoText number of each user: ``build_documents``' first-appearance order when ``docs``
    carries it for every user, else the users' order in ``docs`` (1-based)."""
    order = docs.attrs.get(USER_ORDER_ATTR)
    if isinstance(order, UserOrder):
        nums = users.astype(str).map(order.order)
        if nums.notna().all():
            return nums.to_numpy(dtype="int64")
    return np.arange(1, len(users) + 1)


def _check_fraction(name: str, v: float) -> None:
    if not (0.0 <= v < 1.0):
        raise ConfigError(f"data.{name} must be in [0, 1), got {v}")


def assign_splits(
    docs: pd.DataFrame,
    rule: str,
    *,
    seed: int = 0,
    dev_fraction: float = 0.0,
    test_fraction: float = 0.0,
    carve_from: Sequence[str] = ("train",),
    dev_label: str = "dev",
    user_info: str | Path | pd.DataFrame | None = None,
    log: RecordLog | None = None,
) -> pd.DataFrame:
    """Return a copy of ``docs`` with ``split`` set by ``rule``.

    * ``"column"``: keep the split the reader gave (Rahimi's file names, a
      ``split`` column, GeoText's fold rule). Then, if ``test_fraction`` /
      ``dev_fraction`` > 0, move that fraction of the users whose split is in
      ``carve_from`` to ``"test"`` / ``dev_label`` (rounded to the nearest
      user; test first, then dev, each a fraction of the ``carve_from`` users).
      E.g. the in-house GeoText protocol, which trains on the official dev users,
      uses ``carve_from=("dev",), dev_label="val"``.
    * ``"random"``: ignore the existing split; ``round(n*test_fraction)``
      users become test, ``round(n*dev_fraction)`` dev, the rest train.
      At least one fraction must be > 0.
    * ``"geotext_folds"``: the official GeoText rule (id % 5; 1-3 train, 4
      dev, 5 test) with id = 1-based line in ``user_info`` if given (users not
      in it get "" and are counted ``unknown_user``), else the 1-based order of
      first appearance among all users ``build_documents`` read (the users it
      left out keep their numbers), or of the users in ``docs`` for a table
      not built by it. ``dev_fraction``/``test_fraction`` then carve as for
      ``"column"``.

    Every draw ranks users by a hash of ``(seed, user_id)``: deterministic for
    a seed and independent of row order.
    """
    if rule not in SPLIT_RULES:
        raise ConfigError(f"data.split must be one of {SPLIT_RULES}, got {rule!r}")
    _check_fraction("dev_fraction", dev_fraction)
    _check_fraction("test_fraction", test_fraction)
    if dev_fraction + test_fraction >= 1.0:
        raise ConfigError(f"data.dev_fraction + data.test_fraction must be < 1, got {dev_fraction + test_fraction}")
    log = RecordLog(policy="skip") if log is None else log
    out = docs.copy()
    out.attrs.pop(USER_ORDER_ATTR, None)  # read from docs below if needed; not carried into the written table
    out["split"] = out["split"].fillna("").astype("str") if "split" in out.columns else ""
    n = len(out)
    if rule == "random":
        if dev_fraction == 0 and test_fraction == 0:
            raise ConfigError("data.split 'random' needs data.dev_fraction or data.test_fraction > 0")
        order = _hash_rank(out["user_id"].astype(str), seed)
        n_test, n_dev = round(n * test_fraction), round(n * dev_fraction)
        split = np.full(n, "train", dtype=object)
        split[order[:n_test]] = "test"
        split[order[n_test : n_test + n_dev]] = "dev"
        out["split"] = split
        return out.astype({"split": "str"})
    if rule == "geotext_folds":
        if user_info is not None:
            from geoae.tweets import _load_user_info

            ui = user_info if isinstance(user_info, pd.DataFrame) else _load_user_info(Path(user_info))
            nums = out["user_id"].map(ui["uid_num"])
            known = nums.notna().to_numpy()
            for u in out.loc[~known, "user_id"]:
                log.bad("unknown_user", f"user {u!r} is not in user_info; split set to ''", kept=True)
            split = np.full(n, "", dtype=object)
            if known.any():
                split[known] = geotext_fold_split(nums[known].astype("int64").to_numpy())
        else:
            split = geotext_fold_split(_user_numbers(docs, out["user_id"])) if n else np.array([], dtype=object)
        out["split"] = split
    if dev_fraction > 0 or test_fraction > 0:
        pool = np.flatnonzero(out["split"].isin(list(carve_from)).to_numpy())
        if len(pool) == 0:
            present = sorted(out["split"].unique())
            hint = ("; the inputs give no user a split (no split column, or an empty one): use data.split: random"
                    if rule == "column" and present in ([], [""]) else
                    "; set data.carve_from to the split(s) to carve from")
            raise ConfigError(f"cannot carve dev/test users (data.dev_fraction {dev_fraction}, data.test_fraction "
                              f"{test_fraction}): no user has a split in data.carve_from {list(carve_from)} (splits "
                              f"present: {present}){hint}")
        order = pool[_hash_rank(out["user_id"].iloc[pool].astype(str), seed)]
        n_test, n_dev = round(len(pool) * test_fraction), round(len(pool) * dev_fraction)
        split = out["split"].to_numpy(dtype=object).copy()
        split[order[:n_test]] = "test"
        split[order[n_test : n_test + n_dev]] = dev_label
        out["split"] = split
        log_.info("carved %d test and %d %s users out of %d %s users", n_test, n_dev, dev_label, len(pool),
                  "/".join(carve_from))
    if rule == "column" and n and (out["split"] == "").all():
        # Not an error here (the documents are still valid), but `geoae train` would stop on them.
        log_.warning("data.split is 'column' but none of the %d users has a split: the inputs have no split column "
                     "(or it is empty), so there are no training users; use data.split: random, or give each user "
                     "a split (train/dev/test) in the input", n)
    return out.astype({"split": "str"})
