"""Readers of raw tweet corpora: the first stage of the data flow.

Every supported format is read into pandas frames with one schema
(``TWEET_COLUMNS``) so that later stages never care where the text came from:

==========  ========  =====================================================
column      dtype     meaning
==========  ========  =====================================================
user_id     str       the author (GeoText/Rahimi ``USER_xxxx``, Twitter id)
text        str       one tweet, or for per-user formats all of the user's
                      tweets joined by ``"\\n"`` (Rahimi's `` ||| `` is
                      converted so every format gives the same documents)
n_tweets    int64     1 for a tweet row, N for an already aggregated row
lat, lon    float64   WGS84 degrees; NaN when unknown or invalid
split       str       "train" / "dev" / "test", "" when the format says not
source      str       the file the row came from
line        int64     1-based physical line of the record in ``source``
==========  ========  =====================================================

Formats (``detect_format``): ``geotext`` (Eisenstein 2010 ``full_text.txt``),
``rahimi`` (``user_info.{train,dev,test}[.gz]``), ``twitter_json`` (API v1.1
and v2 JSON lines, including v2 response envelopes), ``csv`` / ``tsv`` /
``parquet`` with named columns. Gzip is detected from the magic bytes, not the
suffix, so a mis-named file still reads.

Why the defences below exist: research corpora are old, hand-edited and often
truncated by downloads, and the GeoText text is documented as latin-1 while
Rahimi's copy is in fact UTF-8 cut mid-character. So text is decoded as UTF-8
with a per-byte latin-1 fallback (``encoding="auto"``): valid UTF-8 stays
exact, stray latin-1 bytes become the latin-1 character, nothing ever crashes
and nothing is replaced by ``?``. Every record that is dropped or altered goes
through ``RecordLog`` (counted under ``skip``, raising under ``fail``):

``malformed_line``       too few fields / not parseable; the row is dropped. Also a
                         CSV/TSV row whose unbalanced quote swallowed the
                         following rows into one field: it and each swallowed
                         line are counted and dropped (``_swallowed_rows``)
``malformed_json``       a JSON line that does not parse or is not an object
``not_a_tweet``          a JSON object without tweet fields (delete notices...)
``duplicate_tweet``      a JSON tweet whose id (``id_str``, else ``id``) was already
                         read in this run, in any input file (overlapping crawls);
                         the copy is dropped. Tweets without an id are never checked
``missing_user``         no user id; the row is dropped
``empty_text``           empty text; the row is KEPT with ``text=""`` so that
                         prediction can still report the user
``invalid_coordinates``  NaN / non-numeric / out of range, a malformed JSON point
                         or a place box across the antimeridian; coords set to
                         NaN, the text is kept (it is still useful to predict)
``swapped_coordinates``  |lat|>90 but a lat/lon swap is valid; fixed only with
                         ``fix_swapped=True``, otherwise coords set to NaN
``invalid_n_tweets``     a non-positive / non-integer ``n_tweets``; set to 1
``invalid_split``        a ``split`` value other than train/dev/test; set ""
``unknown_user``         a GeoText user absent from ``user_info``; kept with
                         split "" and the message's own coordinates
``truncated_file``       a gzip stream that ends early; rows read so far kept
``empty_file``           an empty or header-only file, only counted when other
                         inputs have records; a single one raises ``DataError``

Files that cannot be read at all (missing, binary, not the requested format,
pretty-printed JSON, a CSV quote that never closes, GeoText/Rahimi/JSON lines ended
by a bare CR, damaged gzip data: a failed checksum or invalid deflate data) raise
``DataError`` whatever the policy, since skipping them would silently train on
nothing, or on garbage.

User ids are kept exactly as given (no stripping: ``"a"`` and ``"a "`` are two users),
except GeoText/Rahimi ids, which are fields of tab-separated lines.
"""

from __future__ import annotations

import codecs
import csv
import gzip
import io
import json
import logging
import os
import re
import warnings
import zlib
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd

from geoae.errors import DataError, GeoaeError, RecordLog

log_ = logging.getLogger(__name__)

TWEET_COLUMNS = ("user_id", "text", "n_tweets", "lat", "lon", "split", "source", "line")
FORMATS = ("geotext", "rahimi", "twitter_json", "csv", "tsv", "parquet")
SPLITS = ("train", "dev", "test")
RAHIMI_SEP = " ||| "


def is_missing(v: Any) -> bool:
    """None, a NaN of any float type, pandas' NA or NaT: a missing value (never the text "nan" or "<NA>")."""
    return v is None or v is pd.NA or v is pd.NaT or (isinstance(v, (float, np.floating)) and v != v)


def text_array(values: Any) -> np.ndarray:
    """Texts as a numpy object array of ``str``: missing values become ``""``, others ``str(v)``.

    Why object and not pandas' ``str`` dtype: that dtype stores text in Arrow buffers, and
    every list -> Arrow -> list round trip copies each ~3 KB user document (measured ~11 us
    per user per conversion, several conversions between a file and the featurizer, which
    wants Python strings). Object arrays only copy pointers.
    """
    arr = (values.to_numpy(dtype=object) if isinstance(values, pd.Series)
           else np.asarray(values, dtype=object)).reshape(-1)
    bad = [i for i, v in enumerate(arr.tolist()) if type(v) is not str]
    if bad:  # copy before mending, so the caller's array is never changed
        arr = arr.copy()
        for i in bad:
            v = arr[i]
            arr[i] = "" if is_missing(v) else str(v)
    return arr


def text_list(values: Any) -> list[str]:
    """``text_array`` as a plain list (what featurizers take)."""
    return text_array(values).tolist()


def blank_texts(texts: Any) -> np.ndarray:
    """Boolean per text: empty or whitespace only (no stripped copy of each text is made).

    A list is taken to hold strings already (``text_list``'s output); anything else goes
    through ``text_array`` first.
    """
    seq = texts if isinstance(texts, list) else text_array(texts).tolist()
    return np.fromiter((not t or t.isspace() for t in seq), dtype=bool, count=len(seq))

# Frames from per-user formats carry attrs["granularity"] == "user" so that
# documents.build_documents can tell a duplicated user from a user's many tweets.
GRANULARITY_ATTR = "granularity"

_GZIP_MAGIC = b"\x1f\x8b"
# A UTF-8 byte order mark (Windows editors, Excel exports) at the very start of a file's
# (decompressed) data: skipped by every reader, never counted as a line's content. The same
# bytes later in a file are data and are kept.
_BOM = b"\xef\xbb\xbf"
_PARQUET_MAGIC = b"PAR1"
_SNIFF_BYTES = 64 * 1024
# A file whose first this-many records are all bad (and none good) is declared
# to be of the wrong format without reading the rest; any file that ends with
# no good record at all is declared so too.
_WRONG_FORMAT_EARLY = 100
# How a message names the format option: the CLI's flag, the config key and the Python keyword.
_FORMAT_OPTION = "--format (data.format in a config, fmt= in Python)"


def _latin1_fallback(err: UnicodeDecodeError) -> tuple[str, int]:
    """Decode the offending bytes as latin-1: never fails, never loses a byte."""
    return err.object[err.start : err.end].decode("latin-1"), err.end


_ERRORS = "geoae_latin1_fallback"
codecs.register_error(_ERRORS, _latin1_fallback)


def _decode(b: bytes, encoding: str) -> str:
    if encoding == "auto":
        return b.decode("utf-8", _ERRORS)
    return b.decode(encoding, "replace")


# --------------------------------------------------------------------------- files


def _as_paths(paths: str | Path | Iterable[str | Path]) -> list[Path]:
    if isinstance(paths, (str, Path)):
        paths = [paths]
    given = [str(p) for p in paths]
    out = [Path(p) for p in given]
    if not out:
        raise DataError("no input files given; pass at least one path to a tweet file")
    for g, p in zip(given, out):
        if g.strip() == "":  # Path("") is ".", which would be reported as "a directory"
            raise DataError("an input path is empty (''); pass the path of a tweet file")
        if g == "-":
            raise DataError("input '-' (standard input) is not supported: geoae reads an input more than once "
                            "(format detection, then the records); write it to a file first")
        if not p.exists():
            raise DataError(f"{p}: file not found; check the path (relative paths are taken from {Path.cwd()})")
        try:
            g.encode("utf-8")
        except UnicodeEncodeError:  # bytes that are not UTF-8 arrive as surrogates, which no UTF-8 output can hold
            shown = g.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
            raise DataError(f"{shown}: the file name is not valid UTF-8, and geoae writes the names of its inputs "
                            "into its outputs (the source of each row, manifests); rename the file") from None
        if p.is_dir():
            raise DataError(f"{p}: is a directory; pass the tweet files inside it, not the directory")
        if not p.is_file():  # a pipe (-i /dev/stdin, <(...)) or a device: it can be read only once
            raise DataError(f"{p}: is not a regular file (a pipe or device); geoae reads an input more than once "
                            "(format detection, then the records): write it to a file first")
    check_distinct_inputs(out)
    return out


def check_distinct_inputs(inputs: Iterable[str | Path]) -> None:
    """Refuse a file given twice (``-i a.csv ./a.csv``, overlapping globs), whatever its spelling
    (same device and inode): its users would be read twice, and for a table each user's tweets
    would be doubled without a word (JSON drops them as duplicate tweets, Rahimi files count
    duplicate users; a CSV has no tweet id to tell a copy by)."""
    seen: dict[tuple[int, int], str] = {}
    for p in inputs:
        try:
            st = os.stat(p)
        except OSError:  # an input that does not exist is reported by the reader
            continue
        if (key := (st.st_dev, st.st_ino)) in seen:
            raise DataError(f"input {p} is given twice (also as {seen[key]}): every user in it would be read "
                            "twice; give each file once")
        seen[key] = str(p)


def _is_gzip(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(2) == _GZIP_MAGIC


def _open_binary(path: Path):
    return gzip.open(path, "rb") if _is_gzip(path) else open(path, "rb")


def _open_data(path: Path):
    """``_open_binary`` positioned after a UTF-8 BOM at the start of the data (if there is one)."""
    f = _open_binary(path)
    try:
        if f.read(len(_BOM)) != _BOM:
            f.seek(0)
    except BaseException:
        f.close()
        raise
    return f


def _strip_bom(head: bytes) -> bytes:
    return head[len(_BOM):] if head.startswith(_BOM) else head


def _head(path: Path, n: int = _SNIFF_BYTES) -> bytes:
    """The first ``n`` decompressed bytes (without a leading BOM); a broken gzip header is a clear error."""
    return _head_and_cut(path, n)[0]


def _head_and_cut(path: Path, n: int = _SNIFF_BYTES) -> tuple[bytes, BaseException | None]:
    """``_head``, and the error that cut the gzip stream short within those bytes (None if it did not)."""
    try:
        with _open_binary(path) as f:
            return _strip_bom(f.read(n)), None
    except (EOFError, zlib.error):
        # Truncated within the first block: the streaming reader reports it properly.
        with gzip.open(path, "rb") as f:
            data, cut = b"", None
            try:
                while len(data) < n:
                    piece = f.read1(n - len(data)) if hasattr(f, "read1") else f.read(n - len(data))
                    if not piece:
                        break
                    data += piece
            except (EOFError, zlib.error) as e:
                _refuse_damaged(path, e, None)  # the lines read before it are not known here
                cut = e
            return _strip_bom(data), cut
    except (gzip.BadGzipFile, OSError) as e:
        raise DataError(f"{path}: cannot be read as gzip ({e}); re-download the file or decompress it first") from e


class _TruncatedHead(DataError):
    """A gzip stream cut short before its first complete line (only its 10-byte header, say): there is
    nothing to tell the format by. Not an empty file: ``iter_tweets`` counts it as ``truncated_file``,
    as the readers count a stream cut later. ``detail`` is the message without the path."""

    def __init__(self, path: Path, detail: str):
        super().__init__(f"{path}: truncated gzip file: {detail}")
        self.detail = detail


def _base_name(path: Path) -> str:
    name = path.name.lower()
    return name[:-3] if name.endswith(".gz") else name


def _looks_binary(head: bytes) -> bool:
    return b"\x00" in head[:8192]


def _utf16_hint(head: bytes) -> str:
    """What to say about a "binary" file that is UTF-16 or UTF-32 text (Windows tools write it): its
    NUL bytes make it look binary, and no reader here takes it (lines are split on the byte 0x0A)."""
    sample = head[:64]
    wide = head.startswith((b"\xff\xfe", b"\xfe\xff")) or (
        len(sample) >= 8 and (not sample[1::2].strip(b"\x00") or not sample[0::2].strip(b"\x00")))
    return ("it looks like UTF-16 or UTF-32 text, which is not read: convert it to UTF-8 first "
            "(e.g. iconv -f UTF-16 -t UTF-8 in > out); " if wide else "")


def _cr_line_ends(head: bytes, fmt: str) -> bool:
    """Whether ``head`` is of a file whose lines end in a bare CR (classic Mac OS, some spreadsheet
    exports), not LF or CRLF: no LF in it (but at its end), and what follows its first CR is a
    record of ``fmt``. The line readers (GeoText, Rahimi, Twitter JSON) split lines at LF only,
    so such a file is one line: every later record became text of the first one, silently. (A CR
    inside a line of an LF file is text, as it always was; pandas reads CSV/TSV with CR ends.)"""
    body = head.rstrip(b"\r\n")
    if b"\n" in body or b"\r" not in body:
        return False
    nxt = next((s for s in _decode(body, "auto").split("\r")[1:] if s.strip()), "")
    if fmt == "twitter_json":
        return nxt.lstrip().startswith(("{", "["))
    fields = nxt.split("\t")
    at = (3, 4) if fmt == "geotext" else (1, 2)
    return len(fields) > at[1] + 1 and all(_is_number(fields[i]) for i in at)


def _split_from_name(path: Path) -> str:
    """Rahimi's files say their split in the name: user_info.train(.gz)."""
    name = _base_name(path)
    m = re.search(r"(?:^|[._-])(train|dev|test)(?:$|[._-])", name)
    return m.group(1) if m else ""


def detect_format(path: str | Path) -> str:
    """Guess the format from the name, then from the content.

    Names decide first because they are unambiguous (``.parquet``, ``.csv``,
    ``user_info.dev.gz``, ``full_text.txt``); content sniffing handles renamed
    files. A file that is binary or matches nothing raises ``DataError`` telling
    the caller to choose the format explicitly (``--format`` / ``fmt=``).
    """
    path = _as_paths(path)[0]
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic == _PARQUET_MAGIC:
        return "parquet"
    name = _base_name(path)
    if name.endswith((".parquet", ".pq")):
        return "parquet"
    if name.endswith((".jsonl", ".ndjson", ".json")):
        return "twitter_json"
    if name.endswith(".csv"):
        return "csv"
    if name.endswith(".tsv"):
        return "tsv"
    if re.fullmatch(r"user_info\.(train|dev|test)", name):
        return "rahimi"
    if name.startswith("full_text"):
        return "geotext"
    head, cut = _head_and_cut(path)
    if cut is not None and not head.strip():
        raise _TruncatedHead(path, f"compressed stream ends early before any data ({cut}); nothing could be read "
                                   "from it; re-download or re-compress the file")
    if cut is not None and b"\n" not in head:
        raise _TruncatedHead(path, f"compressed stream ends early inside its first line ({cut}), too early to tell "
                                   "the format by; re-download or re-compress the file")
    if not head.strip():
        raise DataError(f"{path}: is empty; remove it from the inputs or check that it was copied completely")
    if _looks_binary(head):
        raise DataError(f"{path}: looks like a binary file, not tweets; {_utf16_hint(head)}pass a text, gzip or "
                        "parquet tweet file")
    lines = [ln for ln in _decode(head, "auto").splitlines() if ln.strip()]
    if len(lines) > 1:
        lines = lines[:-1] or lines  # the last line of the sniff may be cut
    first = lines[0]
    if first.lstrip().startswith(("{", "[")):
        return "twitter_json"
    fields = first.split("\t")
    if len(fields) >= 6 and _is_number(fields[3]) and _is_number(fields[4]):
        return "geotext"
    if len(fields) >= 4 and _is_number(fields[1]) and _is_number(fields[2]):
        return "rahimi"
    low = first.lower()
    if "user_id" in low or "text" in low:
        return "tsv" if first.count("\t") > first.count(",") else "csv"
    raise DataError(
        f"{path}: cannot tell the format from its name or first line {first[:80]!r}; "
        f"choose it with {_FORMAT_OPTION}: one of {', '.join(FORMATS)} (or name columns with a header: user_id,text,...)"
    )


def _is_number(s: str) -> bool:
    try:
        float(s)
        return True
    except ValueError:
        return False


_GZIP_DAMAGE = ("CRC check failed", "Incorrect length of data produced")  # gzip.BadGzipFile's words


def _refuse_damaged(path: Path, e: BaseException, line: int | None) -> None:
    """Raise ``DataError`` if ``e`` says the gzip data is damaged: a member's CRC-32 or length does not
    match what was decompressed, or the deflate data itself is invalid (``zlib.error``: "invalid
    distance too far back", "invalid block type"...).

    That is damage, not a cut: corrupted deflate data can decode to plausible garbage (100 flipped
    bytes in a 1 MB Rahimi file gave 19,000 lines of one user id) until the decompressor or the
    member's end finds it, so no line read from it can be trusted and it is not a ``truncated_file``
    whose earlier lines are kept. (A file too small to stream is refused for it when its head is
    read.) A stream that ends early (``EOFError``: gzip raises nothing else for a cut) is left to the
    caller."""
    if isinstance(e, zlib.error):
        where = "found near its start" if line is None else f"found after line {line}"
        raise DataError(f"{path}: damaged gzip data ({e}; {where}): the compressed data is corrupt, "
                        "so the lines decompressed before it may be garbage too; re-download or re-compress the "
                        "file") from e
    if isinstance(e, gzip.BadGzipFile) and str(e).startswith(_GZIP_DAMAGE):
        raise DataError(f"{path}: damaged gzip data ({e}; found after line {line}): the decompressed lines do not "
                        "match the file's checksum, so any of them may be garbage; re-download or re-compress "
                        "the file") from e


class _LineReader:
    """Streams ``(line_number, bytes)`` from a plain or gzip file in chunks.

    A gzip stream that ends early (interrupted download) raises ``EOFError`` deep
    inside the iteration; it is turned into one
    ``truncated_file`` record naming the last good line, so under ``skip`` the
    lines read so far are kept and under ``fail`` the message says where it broke.
    """

    def __init__(self, path: Path, log: RecordLog, chunksize: int):
        self.path, self.log, self.chunksize = path, log, chunksize
        self.last_line = 0

    def chunks(self) -> Iterator[list[tuple[int, bytes]]]:
        buf: list[tuple[int, bytes]] = []
        n = 0
        try:
            with _open_data(self.path) as f:
                for raw in f:
                    n += 1
                    if raw.strip():
                        buf.append((n, raw))
                    self.last_line = n
                    if len(buf) >= self.chunksize:
                        yield buf
                        buf = []
        except (EOFError, zlib.error, gzip.BadGzipFile) as e:
            _refuse_damaged(self.path, e, self.last_line)
            if buf:
                yield buf
                buf = []
            self.log.bad(
                "truncated_file",
                f"compressed stream ends early after line {self.last_line} ({e}); "
                "the lines before it were kept; re-download or re-compress the file",
                line=self.last_line,
                source=str(self.path),
                kept=True,
            )
        if buf:
            yield buf

    def blocks(self) -> Iterator[list[_Lines]]:
        """The lines of ``chunks`` (same numbers, same chunk boundaries) as byte blocks with offsets.

        A chunk is a list of ``_Lines`` (one per block of the file it spans), so the readers can
        work on whole blocks with numpy / pyarrow instead of on one ``bytes`` per line. Plain files
        are read in ``_READ_BYTES`` pieces; gzip files go through ``chunks`` so that a truncated
        stream keeps exactly the lines (and reports exactly the line) it always did.
        """
        if _is_gzip(self.path):
            for chunk in self.chunks():
                yield [_lines_of_chunk(chunk)]
            return
        out: list[_Lines] = []
        need = self.chunksize
        for block in self._plain_blocks():
            i, n = 0, len(block.nums)
            while i < n:
                take = min(need, n - i)
                out.append(block if (i == 0 and take == n) else _Lines(
                    block.data, block.starts[i:i + take], block.ends[i:i + take], block.nums[i:i + take]))
                i += take
                need -= take
                if need == 0:
                    yield out
                    out, need = [], self.chunksize
        if out:
            yield out

    def _plain_blocks(self) -> Iterator[_Lines]:
        """The non-blank complete lines of each ``_READ_BYTES`` read (plus the carried partial line)."""
        carry = np.empty(0, dtype=np.uint8)  # the start of a line cut by the previous read
        first = 1  # physical number of the first line in the next block
        with _open_data(self.path) as f:  # a plain file here (gzip goes through ``chunks``)
            while True:
                # readinto a fresh array: no copy of the read besides the carried partial line
                # (which doubles the read when one line is longer than a read).
                buf = np.empty(len(carry) + max(_READ_BYTES, len(carry)), dtype=np.uint8)
                buf[:len(carry)] = carry
                got = f.readinto(memoryview(buf)[len(carry):])
                size = len(carry) + got
                if got == 0:  # end of file: the carried bytes are the last line, without "\n"
                    if size:
                        block = _scan_lines(buf[:size], first, final=True)
                        if len(block.nums):
                            yield block
                    return
                data = buf[:size]
                nls = np.flatnonzero(data == 10)
                if not len(nls):  # a line longer than the read: keep reading it
                    carry = data
                    continue
                cut = int(nls[-1]) + 1
                block = _scan_lines(data[:cut], first, final=False, newlines=nls)
                first += len(nls)
                carry = data[cut:].copy()
                if len(block.nums):
                    yield block


class _Lines(NamedTuple):
    """Non-blank lines of a byte block: ``data[starts[i]:ends[i]]`` is line ``nums[i]`` without its "\n"."""

    data: np.ndarray  # uint8
    starts: np.ndarray  # int64
    ends: np.ndarray  # int64
    nums: np.ndarray  # int64, 1-based physical line numbers


# Bytes per read of a plain file by ``_LineReader.blocks`` (tests make it tiny to cut lines).
_READ_BYTES = 4 << 20
# What ``bytes.strip`` strips: a line of only these is blank and skipped (counted in line numbers).
_BLANK = np.zeros(256, dtype=bool)
_BLANK[list(b" \t\n\r\x0b\x0c")] = True


def _scan_lines(data: np.ndarray, first: int, *, final: bool, newlines: np.ndarray | None = None) -> _Lines:
    """Lines of ``data`` (complete lines, and with ``final`` a last one without "\n"), blank ones dropped."""
    nls = np.flatnonzero(data == 10) if newlines is None else newlines
    ends = nls.astype(np.int64)
    if final and (not len(nls) or nls[-1] != len(data) - 1):
        ends = np.append(ends, len(data))
    starts = np.empty(len(ends), dtype=np.int64)
    starts[:1] = 0
    starts[1:] = ends[:-1] + 1
    nums = np.arange(first, first + len(ends), dtype=np.int64)
    # A line is blank only if it starts with whitespace (rare): check just those in Python.
    maybe = np.flatnonzero(_BLANK[data[np.minimum(starts, len(data) - 1)]])
    if len(maybe):
        blank = [i for i in maybe.tolist() if not data[starts[i]:ends[i]].tobytes().strip()]
        if blank:
            keep = np.ones(len(ends), dtype=bool)
            keep[blank] = False
            starts, ends, nums = starts[keep], ends[keep], nums[keep]
    return _Lines(data, starts, ends, nums)


def _lines_of_chunk(chunk: list[tuple[int, bytes]]) -> _Lines:
    """A ``chunks`` chunk (``(number, raw line)`` pairs) as one ``_Lines`` block."""
    raws = [raw for _, raw in chunk]
    lens = np.fromiter((len(r) for r in raws), dtype=np.int64, count=len(raws))
    starts = np.zeros(len(raws), dtype=np.int64)
    np.cumsum(lens[:-1], out=starts[1:])
    has_nl = np.fromiter((r.endswith(b"\n") for r in raws), dtype=bool, count=len(raws))
    data = np.frombuffer(b"".join(raws), dtype=np.uint8)
    nums = np.fromiter((n for n, _ in chunk), dtype=np.int64, count=len(chunk))
    return _Lines(data, starts, starts + lens - has_nl, nums)


def _decode_chunk(chunk: list[tuple[int, bytes]], encoding: str) -> list[str]:
    """Decode a chunk of raw lines in one call (much faster than line by line).

    ``"\n"`` is never part of a multi-byte UTF-8 sequence and the fallback
    maps byte for byte, so splitting the decoded text on it restores the lines.
    """
    blob = b"".join(raw if raw.endswith(b"\n") else raw + b"\n" for _, raw in chunk)
    lines = _decode(blob, encoding).split("\n")[:-1]
    if len(lines) != len(chunk):  # a codec that does not map "\n" 1:1 (e.g. utf-16): fall back
        lines = [_decode(raw, encoding).rstrip("\n") for _, raw in chunk]
    return lines


def _split_fields(chunk: list[tuple[int, bytes]], encoding: str, n: int, what: str, path: Path,
                  log: RecordLog) -> tuple[pd.DataFrame, np.ndarray]:
    """Split tab-separated lines into ``n`` string columns, vectorised.

    The last column keeps any further tabs (a tab inside a tweet is data, not
    a column shift). Lines with fewer than ``n`` fields are counted as
    ``malformed_line`` and dropped. Returns the fields and their line numbers.
    """
    nums = np.fromiter((k for k, _ in chunk), dtype="int64", count=len(chunk))
    s = pd.Series(_decode_chunk(chunk, encoding), dtype=object).str.rstrip("\r")
    parts = s.str.split("\t", n=n - 1, expand=True) if len(s) else pd.DataFrame()
    parts = parts.reindex(columns=range(n))
    ok = parts[n - 1].notna().to_numpy()
    if not ok.all():
        got = parts.notna().sum(axis=1).to_numpy()
        for i in np.flatnonzero(~ok):
            _too_few_fields(log, n, what, int(got[i]), int(nums[i]), path)
    return parts.loc[ok].reset_index(drop=True), nums[ok]


def _too_few_fields(log: RecordLog, n: int, what: str, got: int, line: int, path: Path) -> None:
    """The ``malformed_line`` record of a line with fewer than ``n`` tab-separated fields (one
    wording for the per-line and the block readers)."""
    log.bad("malformed_line", f"expected {n} tab-separated fields ({what}), got {got}; line dropped",
            line=line, source=str(path))


# --------------------------------------------------------------------------- coordinates


def _clean_coords(
    df: pd.DataFrame,
    raw_lat: pd.Series | None,
    raw_lon: pd.Series | None,
    log: RecordLog,
    *,
    required: bool,
    fix_swapped: bool,
) -> None:
    """Parse ``lat``/``lon`` in place, vectorised, counting every invalid value.

    ``required`` says whether the format always carries coordinates (GeoText,
    Rahimi): there a missing value is invalid; in JSON/CSV it just means unknown.
    Invalid coordinates become NaN but the row stays: its text still helps.
    """
    n = len(df)
    if raw_lat is None or raw_lon is None:
        df["lat"] = np.full(n, np.nan)
        df["lon"] = np.full(n, np.nan)
        return
    lat = _degrees(raw_lat, df.index)
    lon = _degrees(raw_lon, df.index)
    given_lat = _given(raw_lat)
    given_lon = _given(raw_lon)
    any_given = given_lat | given_lon
    finite = np.isfinite(lat) & np.isfinite(lon)
    in_range = finite & (np.abs(lat) <= 90) & (np.abs(lon) <= 180)
    swappable = finite & ~in_range & (np.abs(lon) <= 90) & (np.abs(lat) <= 180)
    # A row without a user id is dropped (and counted) by ``_finish``: its coordinates are not
    # reported too, as "text kept", for a row that is not kept.
    check = any_given | required
    if (check & ~in_range).any():  # only then look at the ids (a per-row loop, usually skipped)
        check &= _has_user(df["user_id"])
    bad_swap = check & swappable
    bad_other = check & ~in_range & ~swappable
    src = df["source"].to_numpy()
    lines = df["line"].to_numpy()
    for i in np.flatnonzero(bad_swap):
        action = "swapped back" if fix_swapped else "set to NaN (set data.fix_swapped: true, or fix_swapped=True, to swap them back)"
        log.bad(
            "swapped_coordinates",
            f"lat={_show(raw_lat, i)} lon={_show(raw_lon, i)} look swapped; {action}",
            line=int(lines[i]),
            source=str(src[i]),
            kept=True,
        )
    for i in np.flatnonzero(bad_other):
        log.bad(
            "invalid_coordinates",
            f"lat={_show(raw_lat, i)} lon={_show(raw_lon, i)} are not valid degrees (|lat|<=90, |lon|<=180); "
            "coordinates set to NaN, text kept",
            line=int(lines[i]),
            source=str(src[i]),
            kept=True,
        )
    if fix_swapped and bad_swap.any():
        lat[bad_swap], lon[bad_swap] = lon[bad_swap].copy(), lat[bad_swap].copy()
        in_range = in_range | bad_swap
    lat[~in_range] = np.nan
    lon[~in_range] = np.nan
    df["lat"] = lat
    df["lon"] = lon


def _has_user(user_id: Any) -> np.ndarray:
    """Rows ``_finish`` keeps: a user id that is neither missing nor blank."""
    return ~blank_texts(text_array(user_id))  # missing ids become "", which is blank


def _degrees(raw: Any, index: pd.Index) -> np.ndarray:
    """Coordinates (or counts) as float64, NaN where not a number. A boolean (JSON ``true``, a Parquet bool column)
    is no number of degrees, though pandas reads it as 1 or 0: NaN, so it is counted as invalid."""
    s = pd.Series(raw, index=index)
    try:
        num = pd.to_numeric(s, errors="coerce")
    except OverflowError:  # a JSON integer beyond float range (1e400 written out): infinite, so out of range
        num = pd.to_numeric(s.map(_big_int_as_inf), errors="coerce")
    out = num.astype("float64").to_numpy(copy=True)
    if s.dtype == bool:
        out[:] = np.nan
    elif s.dtype == object and pd.api.types.infer_dtype(s, skipna=True) in ("boolean", "mixed", "mixed-integer"):
        out[np.fromiter((isinstance(v, (bool, np.bool_)) for v in s.tolist()), dtype=bool, count=len(s))] = np.nan
    return out


def _big_int_as_inf(v: Any) -> Any:
    if type(v) is int and abs(v) > 2**1023:  # float(v) would raise OverflowError
        return float("inf") if v > 0 else float("-inf")
    return v


def _given(raw: Any) -> np.ndarray:
    s = pd.Series(raw)
    if s.dtype.kind in "fc":
        return s.notna().to_numpy()
    st = s.astype("object")
    return (st.notna() & (st.astype(str).str.strip() != "") & (st.astype(str).str.lower() != "nan")).to_numpy()


def _show(raw: Any, i: int) -> str:
    v = pd.Series(raw).iloc[i]
    return repr(v) if isinstance(v, str) else str(v)


# --------------------------------------------------------------------------- frames


def _id_array(values: Any) -> np.ndarray:
    """User ids as an object array of exact text: a missing value (None, NaN, NA, NaT) stays ``None``
    so ``_finish`` can count it; everything else is ``str(v)``. No string is ever taken for a
    missing value: "nan", "NA", "null" and "None" are ids like any other."""
    arr = np.asarray(values, dtype=object).reshape(-1)
    if pd.api.types.infer_dtype(arr, skipna=False) in ("string", "empty"):  # all text already: the usual case
        return arr.copy()
    out = np.empty(len(arr), dtype=object)
    for i, v in enumerate(arr.tolist()):
        if type(v) is str:
            out[i] = v
        elif is_missing(v):  # NaT too: a null of a date/time column, not the user "NaT"
            out[i] = None
        else:
            out[i] = str(v)
    return out


def _frame(
    user_id: list | pd.Series,
    text: list | pd.Series,
    n_tweets: Any,
    split: Any,
    source: str,
    line: list | np.ndarray,
) -> pd.DataFrame:
    n = len(user_id)
    df = pd.DataFrame(
        {
            "user_id": _id_array(user_id),
            "text": pd.Series(text_array(text), dtype=object),
            "n_tweets": np.broadcast_to(np.asarray(n_tweets, dtype="int64"), (n,)).copy(),
            "lat": np.full(n, np.nan),
            "lon": np.full(n, np.nan),
            "split": pd.Series(split if not isinstance(split, str) else [split] * n, dtype="str").to_numpy(),
            "source": [source] * n,
            "line": np.asarray(line, dtype="int64"),
        }
    )
    return df


def _finish(df: pd.DataFrame, log: RecordLog, granularity: str) -> pd.DataFrame:
    """Drop rows without a user, count empty texts, fix dtypes and column order."""
    if len(df):
        null = df["user_id"].isna().to_numpy()
        # Ids are kept exactly as given: stripping would merge ids "a", " a" and "a " into one
        # user without a word. Only an id with nothing but whitespace is no id.
        uid = text_array(df["user_id"])
        missing = null | blank_texts(uid)
        for i in np.flatnonzero(missing):
            what = "missing (null)" if null[i] else "empty" if uid[i] == "" else "blank (whitespace only)"
            log.bad("missing_user", f"user id is {what}; row dropped", line=int(df["line"].iat[i]),
                    source=str(df["source"].iat[i]))
        df = df.loc[~missing].copy()
        df["user_id"] = uid[~missing]
        # In a per-user format the row *is* the user's document: an empty one is counted once, as
        # empty_user, where the documents are built (dropped for training, yielded for predict).
        empty = blank_texts(df["text"]) if granularity != "user" else np.zeros(len(df), dtype=bool)
        for i in np.flatnonzero(empty):
            log.bad(
                "empty_text",
                f"user {df['user_id'].iat[i]!r} has empty text; row kept with text=''",
                line=int(df["line"].iat[i]),
                source=str(df["source"].iat[i]),
                kept=True,
            )
    df = df.reset_index(drop=True)[list(TWEET_COLUMNS)]
    df = df.astype(
        {"user_id": "str", "text": object, "n_tweets": "int64", "lat": "float64", "lon": "float64",
         "split": "str", "source": "str", "line": "int64"}
    )
    df.attrs[GRANULARITY_ATTR] = granularity
    return df


def empty_tweets_frame() -> pd.DataFrame:
    """A zero-row frame with the tweet schema and dtypes."""
    return _finish(_frame([], [], [], "", "", []), RecordLog(), "tweet")


def _strip_ids(df: pd.DataFrame) -> pd.Series:
    """GeoText and Rahimi ids without surrounding whitespace (in place; also returned).

    Their ids are fields of hand-edited tab-separated lines, where spaces around a field are
    layout, and GeoText's ``user_info`` lists them bare; the table and JSON formats keep ids
    exactly (``_finish``). A whitespace-only id is left as it is, to be counted as blank.
    """
    uid = df["user_id"]
    bare = uid.str.strip()
    df["user_id"] = bare.where(bare != "", uid)
    return df["user_id"]


# --------------------------------------------------------------------------- GeoText


def _load_user_info(path: Path) -> pd.DataFrame:
    """GeoText ``processed_data/user_info``: user ID = 1-based line number."""
    try:
        with _open_data(path) as f:
            # The spare column: pandas would read a first line of four fields as index + three columns.
            # Blank lines are kept as rows: skipping them would renumber every later user (ids are lines).
            ui = pd.read_csv(f, sep="\t", header=None, names=["user_id", "lat", "lon", _SPARE_COLUMN], dtype=str,
                             keep_default_na=False, quoting=3, encoding="latin-1", skip_blank_lines=False)
    except pd.errors.ParserError as e:
        raise DataError(f"{path}: not a GeoText user_info file (expected 'user<TAB>lat<TAB>lon' lines): {e}") from e
    except (EOFError, zlib.error, gzip.BadGzipFile) as e:
        # Refused, not kept as far as it goes: its line numbers are the user ids and its coordinates
        # replace the messages' own, so a cut copy would silently leave users without either.
        raise DataError(f"{path}: truncated or damaged gzip file ({e}); a GeoText user_info is used whole (user ids "
                        "are its line numbers): re-download or re-compress it") from e
    blank = (ui["user_id"].str.strip() == "") & (ui["lat"] == "") & (ui["lon"] == "") & (ui[_SPARE_COLUMN] == "")
    tail = len(ui) - int(np.argmin(blank.to_numpy()[::-1])) if len(ui) and not blank.all() else 0
    ui = ui.iloc[:tail]  # blank lines at the end are layout
    if ui.empty:
        raise DataError(f"{path}: user_info is empty; pass the GeoText processed_data/user_info file")
    what = "not a GeoText user_info file (expected 'user<TAB>lat<TAB>lon' lines)"
    over = np.flatnonzero(ui.pop(_SPARE_COLUMN).to_numpy() != "")
    if len(over):
        raise DataError(f"{path}:{over[0] + 1}: more than three tab-separated fields; {what}")
    no_id = np.flatnonzero((ui["user_id"].str.strip() == "").to_numpy())
    if len(no_id):
        raise DataError(f"{path}:{no_id[0] + 1}: no user id (a blank line or field); {what}: user ids are line "
                        "numbers, so every line must name one user")
    lat = pd.to_numeric(ui["lat"], errors="coerce").to_numpy(dtype="float64")
    lon = pd.to_numeric(ui["lon"], errors="coerce").to_numpy(dtype="float64")
    bad = np.flatnonzero(~(np.isfinite(lat) & np.isfinite(lon) & (np.abs(lat) <= 90) & (np.abs(lon) <= 180)))
    if len(bad):
        i = int(bad[0])
        raise DataError(f"{path}:{i + 1}: lat={ui['lat'].iat[i]!r} lon={ui['lon'].iat[i]!r} are not valid degrees "
                        f"(|lat|<=90, |lon|<=180); {len(bad)} such line(s) in this GeoText user_info, whose coordinates "
                        "replace the messages' own: fix the file (or move it away, or in Python pass user_info=False, "
                        "to number users by first appearance)")
    ui["lat"] = lat
    ui["lon"] = lon
    ui["uid_num"] = np.arange(1, len(ui) + 1)
    if ui["user_id"].duplicated().any():
        dup = ui.loc[ui["user_id"].duplicated(), "user_id"].iat[0]
        raise DataError(f"{path}: user {dup!r} appears twice; user IDs are line numbers so each user must be listed once")
    return ui.set_index("user_id")


def _find_user_info(path: Path) -> Path | None:
    d = path.resolve().parent
    for cand in (d / "processed_data" / "user_info", d / "user_info", d.parent / "processed_data" / "user_info",
                 d.parent / "user_info"):
        if cand.is_file():
            return cand
    return None


def geotext_fold_split(user_num: np.ndarray) -> np.ndarray:
    """The official GeoText rule: fold = id % 5 (0 -> 5); 1-3 train, 4 dev, 5 test."""
    fold = np.asarray(user_num, dtype="int64") % 5
    fold[fold == 0] = 5
    return np.where(fold <= 3, "train", np.where(fold == 4, "dev", "test"))


def _read_geotext(path: Path, log: RecordLog, chunksize: int, encoding: str, fix_swapped: bool,
                  user_info: Any, progress: bool, fold_splits: bool = True) -> Iterator[pd.DataFrame]:
    ui = None
    if user_info is None:
        found = _find_user_info(path)
        if found is not None:
            log_.info("%s: using GeoText user_info %s for the official split and user coordinates", path, found)
            ui = _load_user_info(found)
    elif user_info is not False:
        ui = user_info if isinstance(user_info, pd.DataFrame) else _load_user_info(Path(user_info))
    # Without user_info, user IDs are the order of first appearance, as in the original preprocessing.
    first_seen: dict[str, int] = {}
    reader = _LineReader(path, log, chunksize)
    for chunk in _progress(reader.chunks(), progress, path):
        f, lines = _split_fields(chunk, encoding, 6, "user, time, location, lat, lon, text", path, log)
        df = _frame(f[0].to_numpy(), f[5].to_numpy(), 1, "", str(path), lines)
        _clean_coords(df, f[3].to_numpy(), f[4].to_numpy(), log, required=True, fix_swapped=fix_swapped)
        uid = _strip_ids(df)
        if ui is not None:
            known = uid.isin(ui.index).to_numpy()
            for i in np.flatnonzero(~known):
                log.bad("unknown_user", f"user {uid.iat[i]!r} is not in user_info; kept with split '' and the "
                        "message's coordinates", line=int(df["line"].iat[i]), source=str(path), kept=True)
            if known.any():
                sub = ui.loc[uid[known]]
                df.loc[known, "split"] = geotext_fold_split(sub["uid_num"].to_numpy())
                df.loc[known, "lat"] = sub["lat"].to_numpy()
                df.loc[known, "lon"] = sub["lon"].to_numpy()
        elif fold_splits:  # numbering the users costs ~100 bytes each: a stream that needs no split skips it
            for u in pd.unique(uid.to_numpy()):
                first_seen.setdefault(u, len(first_seen) + 1)
            nums = uid.map(first_seen).to_numpy(dtype="int64")
            df["split"] = geotext_fold_split(nums) if len(nums) else []
        yield _finish(df, log, "tweet")


# --------------------------------------------------------------------------- Rahimi


_RAHIMI_FIELDS = "user, lat, lon, text"
_SEP_TAIL = RAHIMI_SEP[1:].encode()  # "||| ": found fast (rare first byte), see _user_records


class _UserRecords(NamedTuple):
    """The well-formed lines of a block of ``user<TAB>lat<TAB>lon<TAB>text`` lines, fields decoded."""

    nums: np.ndarray  # line numbers
    users: list[str]
    lats: list[str]
    lons: list[str]
    texts: list[str]  # RAHIMI_SEP already replaced by "\n"
    n_tweets: np.ndarray
    malformed: list[tuple[int, int]]  # (line number, fields found) of the lines with fewer than 4 fields


def _user_records(block: _Lines) -> _UserRecords:
    """Split, decode and convert the user lines of ``block`` with a few whole-block operations.

    Same result as the per-line rule (``_split_fields``, then ``count``/``replace`` of
    ``RAHIMI_SEP`` per text), which spent most of its ~34 us per user (GeoText test users x10)
    decoding whole chunks to one (often UCS-2) string and in ``count``/``replace``: CPython's
    substring search is slow for a needle that ends in a space, which text is full of. Here:

    * tabs and trailing "\r"s are found with numpy over the block;
    * ``RAHIMI_SEP`` is found and cut by pyarrow's ``split_pattern`` on its tail ``"||| "``
      (its search is fast on a rare first byte). Occurrences of "||| " never overlap, so the
      pieces show every one of them; each with a space before it (not the previous one's) inside
      the text is a separator, and writing "\n" over that space in the pieces' buffer gives the
      replaced text without another copy. A line with any other "||| " (no space before it,
      "||| |||" sharing a space, inside the user or coordinates) is redone by the per-line rule;
    * texts are decoded one per line, and user/lat/lon of all lines in one call. With
      ``encoding="auto"`` that equals decoding whole lines: an ASCII byte (tab, space, "|",
      "\r", "\n") is never inside a UTF-8 sequence or a latin-1 fallback range, so cutting or
      joining there changes no character.
    """
    data, starts, ends, nums = block
    # Content end: without "\n" and trailing "\r"s (``rstrip("\r")`` of the per-line rule).
    e = ends.copy()
    while True:
        cr = (e > starts) & (data[np.maximum(e - 1, 0)] == 13)
        if not cr.any():
            break
        e -= cr
    lo, hi = int(starts[0]), int(ends[-1])
    tabs = np.flatnonzero(data[lo:hi] == 9) + lo
    first_tab = np.searchsorted(tabs, starts)
    n_tabs = np.searchsorted(tabs, e) - first_tab
    ok = n_tabs >= 3
    malformed = list(zip(nums[~ok].tolist(), (np.minimum(n_tabs[~ok], 3) + 1).tolist()))
    starts, e, nums, first_tab = starts[ok], e[ok], nums[ok], first_tab[ok]
    if not len(nums):
        return _UserRecords(nums, [], [], [], [], np.zeros(0, dtype=np.int64), malformed)
    t3 = tabs[first_tab + 2]  # the text starts after the third tab; later tabs are text
    text_start = t3 + 1

    import pyarrow as pa
    import pyarrow.compute as pc

    region = pa.LargeBinaryArray.from_buffers(
        pa.large_binary(), 1, [None, pa.py_buffer(np.array([0, hi - lo], dtype=np.int64)), pa.py_buffer(data[lo:hi])])
    pieces = pc.split_pattern(region, _SEP_TAIL).values
    vbuf = pieces.buffers()
    off = np.frombuffer(vbuf[1], dtype=np.int64)[pieces.offset:pieces.offset + len(pieces) + 1]
    out = np.frombuffer(vbuf[2], dtype=np.uint8) if vbuf[2] is not None else np.zeros(0, dtype=np.uint8)
    if not out.flags.writeable:  # a fresh arrow buffer is writable; copy if a version says otherwise
        out = out.copy()
    new_at = off[1:-1]  # where the piece after each "||| " starts in ``out``
    sep_at = new_at + 4 * np.arange(len(new_at), dtype=np.int64) + lo  # where that "||| " was in ``data``
    line = np.searchsorted(starts, sep_at, side="right") - 1
    lc = np.maximum(line, 0)
    in_line = (line >= 0) & (sep_at < e[lc])  # else it is in a malformed line, which is dropped
    spaced = (new_at > off[:-2]) & (out[np.maximum(new_at - 1, 0)] == 32)
    good = spaced & (sep_at - 1 >= text_start[lc])
    slow = np.zeros(len(nums), dtype=bool)
    slow[line[in_line & ~good]] = True
    out[new_at[in_line & good] - 1] = 10
    n_tweets = np.bincount(line[in_line], minlength=len(nums)).astype(np.int64) + 1
    # Text span in ``out``: every "||| " before a position shifts it by 4.
    a = (text_start - lo - 4 * np.searchsorted(sep_at, text_start)).tolist()
    b = (e - lo - 4 * np.searchsorted(sep_at, e)).tolist()
    mv = memoryview(out)
    texts = [str(mv[x:y], "utf-8", _ERRORS) for x, y in zip(a, b)]
    dmv = memoryview(data)
    for i in np.flatnonzero(slow).tolist():
        t = str(dmv[text_start[i]:e[i]], "utf-8", _ERRORS)
        n_tweets[i] = t.count(RAHIMI_SEP) + 1
        texts[i] = t.replace(RAHIMI_SEP, "\n")
    # user, lat, lon of every line in one decode: gather each line's head up to its third tab
    # (the only tabs in it), turn the tabs into "\n" and split once.
    size = t3 - starts + 1
    at = np.zeros(len(size), dtype=np.int64)
    np.cumsum(size[:-1], out=at[1:])
    heads = data[np.arange(int(size.sum()), dtype=np.int64) + np.repeat(starts - at, size)]
    heads[heads == 9] = 10
    fields = heads.tobytes().decode("utf-8", _ERRORS).split("\n")
    return _UserRecords(nums, fields[0:-1:3], fields[1:-1:3], fields[2:-1:3], texts, n_tweets, malformed)


def _read_rahimi(path: Path, log: RecordLog, chunksize: int, encoding: str, fix_swapped: bool,
                 progress: bool) -> Iterator[pd.DataFrame]:
    split = _split_from_name(path)
    reader = _LineReader(path, log, chunksize)
    if encoding == "auto":  # the fast block reader (it relies on the UTF-8/latin-1 rule, see _user_records)
        for chunk in _progress(reader.blocks(), progress, path):
            recs = [_user_records(block) for block in chunk]
            for r in recs:
                for num, got in r.malformed:
                    _too_few_fields(log, 4, _RAHIMI_FIELDS, got, num, path)
            lines = np.concatenate([r.nums for r in recs])
            users, lats, lons, texts = ([x for r in recs for x in getattr(r, k)]
                                        for k in ("users", "lats", "lons", "texts"))
            n_tweets = np.concatenate([r.n_tweets for r in recs])
            df = _frame(np.array(users, dtype=object), texts, n_tweets, split, str(path), lines)
            _clean_coords(df, np.array(lats, dtype=object), np.array(lons, dtype=object), log, required=True,
                          fix_swapped=fix_swapped)
            _strip_ids(df)
            yield _finish(df, log, "user")
        return
    for chunk in _progress(reader.chunks(), progress, path):
        f, lines = _split_fields(chunk, encoding, 4, _RAHIMI_FIELDS, path, log)
        # Plain str methods on a list: ~2.5x faster here than the pandas string accessors.
        texts = f[3].tolist()
        n_tweets = np.fromiter((t.count(RAHIMI_SEP) + 1 for t in texts), dtype="int64", count=len(texts))
        text = [t.replace(RAHIMI_SEP, "\n") for t in texts]
        df = _frame(f[0].to_numpy(), text, n_tweets, split, str(path), lines)
        _clean_coords(df, f[1].to_numpy(), f[2].to_numpy(), log, required=True, fix_swapped=fix_swapped)
        _strip_ids(df)
        yield _finish(df, log, "user")


# --------------------------------------------------------------------------- Twitter JSON


def _centroid_ring(coords: Any, problems: list[str] | None = None) -> tuple[float, float] | None:
    """Centroid (bbox midpoint) of a GeoJSON polygon's [lon, lat] points. A box spanning more than
    180 degrees of longitude crosses the antimeridian (Twitter's Alaska: -179.2 to 179.9): its
    midpoint would be on the other side of the Earth, so it gives no point and says why in ``problems``."""
    if coords is None:  # no box given (null): no point, nothing wrong
        return None
    try:
        pts = np.asarray(coords, dtype="float64")
        if pts.ndim >= 2 and pts.shape[-1] > 2:  # GeoJSON positions may carry an altitude: [lon, lat, alt]
            pts = pts[..., :2]
        pts = pts.reshape(-1, 2)
        ok = bool(np.isfinite(pts).all())
    except (TypeError, ValueError, OverflowError):  # text, null corners, ragged or odd-sized lists, 1e400 as an int
        ok = False
    if not ok:
        if problems is not None:
            problems.append(f"the place box has corners {json.dumps(coords)[:80]}, not [lon, lat] numbers")
        return None
    if not len(pts):
        return None
    west, east = pts[:, 0].min(), pts[:, 0].max()
    if east - west > 180:
        if problems is not None:
            problems.append(f"the place box spans more than 180 degrees of longitude ({west:g} to {east:g}): it "
                            "crosses the antimeridian and its centre is unknown")
        return None
    lon = (west + east) / 2
    lat = (pts[:, 1].min() + pts[:, 1].max()) / 2
    return lat, lon


def _degree_value(v: Any) -> bool:
    """A JSON number, or text holding one (read as such before; the range is checked later)."""
    if isinstance(v, bool):
        return False
    if isinstance(v, float):
        return v == v  # NaN is no number of degrees (nor a missing one: it is given)
    return isinstance(v, int) or (isinstance(v, str) and _is_number(v) and float(v) == float(v))


def _point(v: Any, what: str, order: str, problems: list[str]) -> tuple[Any, Any] | None:
    """The two numbers of a GeoJSON-like point object ``{"type": "Point", "coordinates": [a, b]}``;
    None when it is absent (null) or, said in ``problems``, malformed."""
    if v is None:
        return None
    shape = f'a point object {{"type": "Point", "coordinates": {order}}}'
    if not isinstance(v, dict):
        problems.append(f"{what} is {json.dumps(v)[:60]}, not {shape}")
        return None
    c = v.get("coordinates")
    if not isinstance(c, (list, tuple)):
        problems.append(f"{what} has {'no coordinates' if c is None else 'coordinates ' + json.dumps(c)[:60]}, "
                        f"not {shape}")
        return None
    if len(c) < 2 or not (_degree_value(c[0]) and _degree_value(c[1])):
        problems.append(f"{what} has coordinates {json.dumps(c)[:60]}, not two numbers {order}")
        return None
    return c[0], c[1]


def _tweet_fields(obj: dict, places: Mapping[str, dict], problems: list[str] | None = None
                  ) -> tuple[Any, Any, Any, Any] | None:
    """(user_id, text, lat, lon) of a v1.1 or v2 tweet object, None if it is not a tweet.

    A location that is given but unusable (a malformed point, a place box across the
    antimeridian) and not replaced by a usable one is said in ``problems``; lat/lon are then None."""
    said: list[str] = []
    lat = lon = None
    if "author_id" in obj or ("text" in obj and "user" not in obj and "id" in obj):  # API v2
        uid = obj.get("author_id")
        text = _object(obj.get("note_tweet")).get("text") or obj.get("text")
        geo = obj.get("geo") or {}
        if not isinstance(geo, dict):
            said.append(f"geo is {json.dumps(geo)[:60]}, not an object with coordinates or a place_id")
            geo = {}
        pt = _point(geo.get("coordinates"), "geo.coordinates", "[lon, lat]", said)
        if pt:
            lon, lat = pt  # GeoJSON order
        elif isinstance(geo.get("place_id"), (str, int)) and geo["place_id"] in places:  # a list: unhashable
            place_geo = places[geo["place_id"]].get("geo")
            if place_geo is not None and not isinstance(place_geo, dict):
                said.append(f"the place geo is {json.dumps(place_geo)[:80]}, not an object with a bbox")
            bbox = place_geo.get("bbox") if isinstance(place_geo, dict) else None
            if bbox is not None and _bbox_points(bbox) is None:
                said.append(f"the place bbox is {json.dumps(bbox)[:80]}, not [west, south, east, north]")
            c = _centroid_ring(_bbox_points(bbox), said)
            if c:
                lat, lon = c
    else:
        user = obj.get("user")
        if not (isinstance(user, dict) or "text" in obj or "full_text" in obj):
            return None
        # API v1.1
        user = user if isinstance(user, dict) else {}
        # The first usable id; an id given but empty ("id_str": "") stays "" so that the record
        # is reported as an empty id, not as a missing one.
        cands = (user.get("id_str"), user.get("id"), user.get("screen_name"))  # the reader makes it text
        uid = next((c for c in cands if c is not None and c != ""), "" if "" in cands else None)
        text = _object(obj.get("extended_tweet")).get("full_text") or obj.get("full_text") or obj.get("text")
        pt = _point(obj.get("coordinates"), "coordinates", "[lon, lat]", said)
        if pt:
            lon, lat = pt  # GeoJSON order [lon, lat]
        else:
            pt = _point(obj.get("geo"), "geo", "[lat, lon]", said)
            if pt:
                lat, lon = pt  # the deprecated geo field is [lat, lon]
            else:
                place = obj.get("place")
                bb = place.get("bounding_box") if isinstance(place, dict) else None
                if bb is not None and not isinstance(bb, dict):
                    said.append(f"the place bounding_box is {json.dumps(bb)[:80]}, not an object with coordinates")
                c = _centroid_ring(bb.get("coordinates"), said) if isinstance(bb, dict) else None
                if c:
                    lat, lon = c
    if said and lat is None and problems is not None:  # a usable point found after a bad one is all right
        problems.extend(said)
    return uid, text, lat, lon


def _object(v: Any) -> dict:
    """``v`` if it is a JSON object, else an empty one: a wrapper of the wrong type ("extended_tweet":
    "..." or an array) holds none of the fields looked up in it, and ``.get`` on it was a traceback."""
    return v if isinstance(v, dict) else {}


def _bbox_points(bbox: Any) -> Any:
    if isinstance(bbox, (list, tuple)) and len(bbox) == 4:  # v2: [west, south, east, north]
        return [[bbox[0], bbox[1]], [bbox[2], bbox[3]]]
    return None


def _utf8_safe(s: str, what: str, log: RecordLog, line: int, path: Path) -> str:
    """JSON may escape half of a UTF-16 pair (``"\\ud83d"``: text cut inside an emoji); such a lone
    surrogate cannot be written as UTF-8 by any output. Replace it with U+FFFD and count it."""
    if s.isascii():
        return s
    try:
        s.encode("utf-8")
        return s
    except UnicodeEncodeError:
        log.bad("invalid_unicode", f"{what} has a lone UTF-16 surrogate (a \\uXXXX escape of half a character); "
                "replaced by U+FFFD, tweet kept", line=line, source=str(path), kept=True)
        return s.encode("utf-8", "surrogatepass").decode("utf-8", "replace")


def _json_kind(v: Any) -> str:
    return "boolean" if isinstance(v, bool) else "object" if isinstance(v, dict) else "array"


def _tweet_id(obj: dict) -> str | None:
    """The tweet's own id as text (v1.1 ``id_str``, else ``id``; v2 ``id``), None when it has none.
    A number and its text (``123``, ``"123"``) are the same id; anything else (a float, an
    object, an empty string) is no id, so the tweet is never taken for a duplicate."""
    for key in ("id_str", "id"):
        v = obj.get(key)
        if type(v) is str:
            if v:
                return v
        elif type(v) is int:
            return str(v)
    return None


class _TweetLog:
    """The bad records of one chunk's tweets, held until the chunk's duplicates are known: a tweet
    dropped as a ``duplicate_tweet`` is counted under that reason only (not also as, say, an
    ``invalid_coordinates`` kept in the data). ``tids``: the chunk's tweet ids so far, the last
    one the tweet being read (its index tells which tweet a record belongs to)."""

    def __init__(self, tids: list) -> None:
        self.tids = tids
        self.pending: list[tuple[int, str, str, int | None, str | None, bool]] = []

    def bad(self, reason: str, detail: str = "", *, line: int | None = None, source: str | None = None,
            kept: bool = False) -> None:
        self.pending.append((len(self.tids) - 1, reason, detail, line, source, kept))


def _read_json(path: Path, log: RecordLog, chunksize: int, encoding: str, fix_swapped: bool,
               progress: bool, seen: SeenIds | None = None) -> Iterator[pd.DataFrame]:
    """Twitter JSON lines. ``seen``: the tweet ids read so far in this run (every input file);
    a tweet whose id is in it is a ``duplicate_tweet``, dropped and counted under that reason only."""
    reader = _LineReader(path, log, chunksize)
    n_good = 0  # tweets read so far from this file
    for chunk in _progress(reader.chunks(), progress, path):
        users, texts, lats, lons, lines = [], [], [], [], []
        # Per tweet of the chunk (index k): its id (a plain list of strings: holding the parsed
        # tweets instead cost 40 % in garbage collection); the few tweets that give no row.
        tids: list[str | None] = []
        no_row: dict[int, int] = {}  # k -> line
        tlog = _TweetLog(tids)
        for (n, _), decoded in zip(chunk, _decode_chunk(chunk, encoding)):
            line = decoded.strip()
            # A JSON array written one object per line ("[", "{...},", ..., "]") is common
            # output of scripts: its bracket lines are layout, not records, and each object
            # line loses the comma that separates it from the next.
            if line in ("[", "]"):
                continue
            if line.endswith(","):
                line = line[:-1]
            if line in ("{", "[{") and not n_good:
                # No tweet fits on such a line: the file is pretty-printed (one object over many
                # lines), and every line of it would be a malformed_json record.
                raise DataError(
                    f"{path}:{n}: multi-line (pretty-printed) JSON is not supported; write one tweet object per "
                    "line (JSON lines), e.g. jq -c '.[]' in.json > in.jsonl (an array of tweets) or "
                    "jq -c . in.json > in.jsonl (one object or a stream of objects)")
            try:
                obj = json.loads(line)
            # ValueError, not only JSONDecodeError: json.loads raises a plain one for an integer of
            # more than 4300 digits (Python's int-to-str limit).
            except (ValueError, RecursionError) as e:
                log.bad("malformed_json", f"not valid JSON ({e.__class__.__name__}: {str(e)[:80]}); expected one "
                        "tweet object or API response per line; line dropped", line=n, source=str(path))
                continue
            if isinstance(obj, dict) and "data" in obj and isinstance(obj["data"], (list, dict)):
                # A place id that is not text or a number (an array) cannot be looked up: no such place.
                listed = _object(obj.get("includes")).get("places")
                places = {p["id"]: p for p in (listed if isinstance(listed, list) else [])
                          if isinstance(p, dict) and isinstance(p.get("id"), (str, int))}
                items = obj["data"] if isinstance(obj["data"], list) else [obj["data"]]
            elif isinstance(obj, list):
                places, items = {}, obj
            else:
                places, items = {}, [obj]
            others = [type(item).__name__ for item in items if not isinstance(item, dict)]
            if others:  # one record per line, not per element: "[1,2,3]" is one bad line, not 3 bad tweets
                scalar = len(items) == 1 and items[0] is obj  # a line like 5 or "text"
                got = others[0] if scalar else \
                    f"an array holding {len(others)} non-object(s) ({', '.join(sorted(set(others)))})"
                log.bad("malformed_json", f"expected a JSON object (or an array of objects), got {got}; skipped",
                        line=n, source=str(path))
            for item in items:
                if not isinstance(item, dict):
                    continue
                problems: list[str] = []
                fields = _tweet_fields(item, places, problems)
                if fields is None:
                    log.bad("not_a_tweet", f"JSON object without tweet fields (keys {sorted(item)[:6]}); "
                            "skipped", line=n, source=str(path))
                    continue
                n_good += 1
                tids.append(_tweet_id(item))
                uid, text, lat, lon = fields
                # Python's str() of an object, array or boolean ("{'id': 1}", "True") is no id and no
                # tweet text: such a record is counted and dropped, not read as that repr.
                if isinstance(uid, (dict, list, bool)):
                    tlog.bad("missing_user", f"user id is a JSON {_json_kind(uid)}, not a string or number; "
                             "row dropped", line=n, source=str(path))
                    no_row[len(tids) - 1] = n
                    continue
                if isinstance(text, (dict, list, bool)):
                    tlog.bad("not_a_tweet", f"text is a JSON {_json_kind(text)}, not a string; skipped",
                             line=n, source=str(path))
                    no_row[len(tids) - 1] = n
                    continue
                if problems and uid is not None and str(uid).strip():  # no user: counted as missing_user instead
                    tlog.bad("invalid_coordinates", "; ".join(problems) + "; coordinates set to NaN, text kept",
                             line=n, source=str(path), kept=True)
                users.append(None if uid is None else _utf8_safe(str(uid), "user id", tlog, n, path))
                texts.append(_utf8_safe("" if text is None else str(text), "text", tlog, n, path))
                lats.append(lat)
                lons.append(lon)
                lines.append(n)
        dup = _duplicates(tids, seen)
        if dup is not None:
            row_k = np.delete(np.arange(len(tids)), list(no_row))  # the tweet of each row
            where = {**dict(zip(row_k.tolist(), lines)), **no_row}
            for k in np.flatnonzero(dup).tolist():
                log.bad("duplicate_tweet", f"tweet id {tids[k][:40]!r} was already read earlier in the inputs (the "
                        "same tweet twice, e.g. from overlapping crawls); this copy dropped", line=where[k],
                        source=str(path))
        for k, reason, detail, ln, src, kept in tlog.pending:
            if dup is None or not dup[k]:
                log.bad(reason, detail, line=ln, source=src, kept=kept)
        if dup is not None:
            keep = ~dup[row_k]
            if not keep.all():
                users, texts, lats, lons, lines = ([v for v, ok in zip(vs, keep.tolist()) if ok]
                                                   for vs in (users, texts, lats, lons, lines))
        df = _frame(users, texts, 1, "", str(path), lines)
        _clean_coords(df, pd.Series(lats, dtype="object"), pd.Series(lons, dtype="object"), log,
                      required=False, fix_swapped=fix_swapped)
        yield _finish(df, log, "tweet")


def _duplicates(tids: list[str | None], seen: SeenIds | None) -> np.ndarray | None:
    """Per tweet id (None: the tweet has none), whether ``seen`` had it already, then adds them;
    None when no tweet can be a duplicate."""
    if seen is None:
        return None
    given = [t for t in tids if t is not None]
    if not given:
        return None
    before = seen.add(given)
    if not before.any():
        return None
    if len(given) == len(tids):
        return before
    dup = np.zeros(len(tids), dtype=bool)
    dup[[k for k, t in enumerate(tids) if t is not None]] = before
    return dup


# --------------------------------------------------------------------------- CSV / TSV / Parquet


TABLE_COLUMNS = ("user_id", "text", "lat", "lon", "split", "n_tweets")


def parse_columns(spec: str | None) -> dict[str, str] | None:
    """``--columns author_id=user_id,tweet=text`` as the readers' ``columns`` mapping."""
    if spec is None:
        return None
    out: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        name, sep, target = (x.strip() for x in part.partition("="))
        if not sep or not name or target not in TABLE_COLUMNS:
            raise GeoaeError(f"--columns {spec!r}: each item is FILE_COLUMN=TARGET with TARGET one of "
                              f"{', '.join(TABLE_COLUMNS)}; got {part!r}")
        if name in out:
            raise GeoaeError(f"--columns {spec!r}: {name!r} is given twice")
        out[name] = target
    if not out:
        raise GeoaeError(f"--columns {spec!r}: nothing to map; e.g. --columns author_id=user_id,tweet=text")
    return out


_MAX_N_TWEETS = 2**53


# Common long names of the coordinate columns, read as lat/lon when no column is named so.
_COORD_ALIASES = {"lat": ("latitude",), "lon": ("longitude", "lng", "long")}


def _table_names(names: list, columns: Mapping[str, str] | None, path: Path | None = None,
                 announce: bool = False) -> dict:
    """How to rename a table's columns to the schema: the caller's ``columns``, then any column
    whose name is a schema name up to case and surrounding spaces (``User_ID``, `` text`` after
    "user_id, text"), since spreadsheets and hand-written headers rarely match exactly. When no
    column reads as ``lat`` (``lon``), one named ``latitude`` (``longitude``, ``lng``, ``long``),
    up to case and spaces, does; ``announce`` logs that (once per file, by the caller's choice)."""
    ren = {k: v for k, v in (columns or {}).items() if k in names}
    after = [ren.get(c, c) for c in names]
    for want in TABLE_COLUMNS:
        # Every column that would be read as ``want``: named so (or renamed so by the caller), or
        # named so up to case and spaces. More than one (a header with "text" twice, "text" and
        # "Text", columns={'tweet': 'text'} beside a "text" column) is ambiguous: reading one would
        # drop the other without a word, and two columns of one name broke the frame.
        named = [c for c, a in zip(names, after) if a == want]
        hits = named + [c for c, a in zip(names, after) if a == c and c != want and str(c).strip().lower() == want]
        _refuse_ambiguous(hits, want, path)
        if hits and not named:
            ren[hits[0]] = want
    for want, aliases in _COORD_ALIASES.items():
        now = [ren.get(c, c) for c in names]
        if want in now:  # "lat" beside "latitude": lat is read, latitude left alone
            continue
        hits = [c for c, a in zip(names, now) if a == c and str(c).strip().lower() in aliases]
        _refuse_ambiguous(hits, want, path)
        if hits:
            ren[hits[0]] = want
            if announce:
                log_.info("%s: reading column %r as %s", path, hits[0], want)
    return ren


def _show_names(names: Iterable, most: int = 20, width: int = 40) -> str:
    """Column names for a message: at most ``most``, each cut to ``width`` characters (a file read
    with the wrong separator has its whole first line as one 'name')."""
    names = [str(c) for c in names]
    shown = [repr(c if len(c) <= width else c[:width] + "...") for c in names[:most]]
    return "[" + ", ".join(shown) + (f", ... {len(names)} in all" if len(names) > most else "") + "]"


def _refuse_ambiguous(hits: list, want: str, path: Path | None) -> None:
    if len(hits) > 1:
        raise DataError(f"{str(path) + ': ' if path else ''}columns {hits} all read as {want!r}; rename all but "
                        "one in the header (in Python: columns={'your_name': '" + want + "', ...})")


def _normalise_table(df: pd.DataFrame, path: Path, columns: Mapping[str, str] | None, log: RecordLog,
                     fix_swapped: bool, lines: np.ndarray) -> pd.DataFrame:
    ren = _table_names(list(df.columns), columns, path)
    if ren:
        df = df.rename(columns=ren)
    missing = [c for c in ("user_id", "text") if c not in df.columns]
    if missing:
        absent = [k for k, v in (columns or {}).items() if v in missing and k not in df.columns]
        semi = any(";" in str(c) for c in df.columns)
        tabs = any("\t" in str(c) for c in df.columns)
        raise DataError(
            f"{path}: required column(s) {missing} not found (columns: {_show_names(df.columns)}); "
            + (f"--columns names {absent}, not a column of this file; " if absent else "")
            + ("the header holds tabs: a tab-separated file? read it with --format tsv (or name it .tsv); " if tabs else "")
            + ("the header holds ';': a semicolon-separated file? geoae reads commas (csv) or tabs (tsv): "
               "convert the separators; " if semi else "")
            + "rename them in the file's header, or map them with --columns, e.g. --columns your_name=user_id "
              "(in Python: columns={'your_name': 'user_id', ...})"
        )
    half = [c for c in ("lat", "lon") if c in df.columns]
    if len(half) == 1:  # the other half is missing: its values would all be dropped without a word
        other = "lon" if half == ["lat"] else "lat"
        raise DataError(f"{path}: column {half[0]!r} found but no {other!r} column (columns: {_show_names(df.columns)}); "
                        f"coordinates need both: add or rename the {other} column (in Python: "
                        f"columns={{'your_name': '{other}', ...}}), or drop {half[0]!r}")
    n = len(df)
    raw_n = df["n_tweets"] if "n_tweets" in df.columns else None
    n_tweets = np.ones(n, dtype="int64")
    if raw_n is not None:
        # The coordinates' rule for numbers: a Parquet boolean (with nulls: an object column) is no
        # count of tweets, though pandas reads True as 1.
        num = _degrees(raw_n, raw_n.index)
        # Above 2**53 a float no longer holds every integer (and 1e20 wrapped to a negative int64).
        ok = np.isfinite(num) & (num >= 1) & (num == np.floor(num)) & (num <= _MAX_N_TWEETS)
        for i in np.flatnonzero(~ok):
            log.bad("invalid_n_tweets", f"n_tweets={raw_n.iloc[i]!r} is not a positive integer (up to 2**53); set to 1",
                    line=int(lines[i]), source=str(path), kept=True)
        n_tweets = np.where(ok, np.nan_to_num(num, nan=1.0), 1).astype("int64")
    split = np.full(n, "", dtype=object)
    if "split" in df.columns:
        s = df["split"].astype("str").fillna("").str.strip().str.lower()
        aliased = s.isin(("validation", "val", "valid"))
        if aliased.any():  # documented synonyms, not bad records; said once per chunk so nobody is surprised
            log_.info("%s: %d rows with split validation/val/valid read as dev", path, int(aliased.sum()))
        s = s.replace({"validation": "dev", "val": "dev", "valid": "dev", "nan": ""})
        ok = s.isin(SPLITS + ("",)).to_numpy()
        for i in np.flatnonzero(~ok):
            log.bad("invalid_split", f"split={df['split'].iloc[i]!r} is not one of {SPLITS}; set to ''",
                    line=int(lines[i]), source=str(path), kept=True)
        split = np.where(ok, s.to_numpy(dtype=object), "")
    out = _frame(df["user_id"].to_numpy(dtype=object), text_array(df["text"]), n_tweets, split, str(path), lines)
    _clean_coords(out, df["lat"].to_numpy() if "lat" in df.columns else None,
                  df["lon"].to_numpy() if "lon" in df.columns else None, log, required=False,
                  fix_swapped=fix_swapped)
    return _finish(out, log, "user" if raw_n is not None else "tweet")


# The name of the column read after the header's (see _read_delimited); no header can hold a NUL.
_SPARE_COLUMN = "\x00spare"


class _WholeLines(io.RawIOBase):
    """A gzip stream that ends early read as ending at its last complete line, the error kept in
    ``truncated``.

    pandas reads its input in large blocks and loses the rows of the chunk it was parsing when a
    read raises: a truncated CSV kept none of the rows before the cut (with the default chunksize,
    none at all). Here the reader sees a clean end instead, without the cut last line (which would
    be read as a shorter tweet), and ``_read_delimited`` counts the ``truncated_file``.
    """

    def __init__(self, f):
        self.f = f
        self.truncated: BaseException | None = None
        self._ready = memoryview(b"")  # complete lines not yet handed out
        self._tail: list[bytes] = []  # the start of a line not yet complete (pieces: no quadratic joins)
        self._done = False

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        while not len(self._ready) and not self._done:
            try:
                # read1: one decompression step; read(n) drops what it decompressed when it hits the cut
                data = self.f.read1(max(len(b), 1 << 16))
            except (EOFError, zlib.error, gzip.BadGzipFile) as e:
                self.truncated, self._done, self._tail = e, True, []  # the cut line is dropped
                break
            if not data:
                self._ready, self._done, self._tail = memoryview(b"".join(self._tail)), True, []
                break
            cut = max(data.rfind(b"\n"), data.rfind(b"\r")) + 1  # pandas ends lines at \n, \r\n or \r
            if not cut:
                self._tail.append(data)
                continue
            self._ready = memoryview(b"".join([*self._tail, data[:cut]]))
            self._tail = [data[cut:]]
        k = min(len(b), len(self._ready))
        b[:k] = self._ready[:k]
        self._ready = self._ready[k:]
        return k

    def close(self) -> None:
        if not self.closed:
            self.f.close()
        super().close()


def _text_stream(path: Path, encoding: str) -> io.TextIOWrapper:
    # _open_data skips a BOM whatever the encoding (pandas drops one only from a UTF-8 header).
    f = _open_data(path)
    if isinstance(f, gzip.GzipFile):
        f = io.BufferedReader(_WholeLines(f))
    return io.TextIOWrapper(f, encoding="utf-8" if encoding == "auto" else encoding,
                            errors=_ERRORS if encoding == "auto" else "replace", newline="")


def _truncation(text: io.TextIOWrapper) -> BaseException | None:
    """The error that cut a ``_text_stream``'s gzip stream short, None if it ended properly."""
    raw = getattr(text.buffer, "raw", None)
    return raw.truncated if isinstance(raw, _WholeLines) else None


def _header_names(path: Path, sep: str, encoding: str, columns: Mapping[str, str] | None = None) -> list[str]:
    """The header's column names as pandas makes them (a repeated name gets a ``.1`` suffix).

    A name that the header repeats is checked first on the names as written: pandas' ``text.1``
    for a second ``text`` column would otherwise be ignored as an unknown column, silently.
    """
    with _text_stream(path, encoding) as text:
        try:
            written = pd.read_csv(text, sep=sep, dtype=str, header=None, nrows=1, keep_default_na=False, engine="c")
        except (pd.errors.EmptyDataError, pd.errors.ParserError):
            if (cut := _truncation(text)) is not None:  # cut inside the header: say so, not "empty"
                raise cut from None
            raise
    if len(written):
        # raises on a name read twice; logs a coordinate column read under its long name
        _table_names([str(v) for v in written.iloc[0].tolist()], columns, path, announce=True)
    with _text_stream(path, encoding) as text:
        return list(pd.read_csv(text, sep=sep, dtype=str, nrows=0, engine="c").columns)


def _read_delimited(path: Path, sep: str, log: RecordLog, chunksize: int, encoding: str, fix_swapped: bool,
                    columns: Mapping[str, str] | None, progress: bool) -> Iterator[pd.DataFrame]:
    """CSV/TSV with a header, via pandas' C parser; bad rows are counted with their line numbers.

    ``line`` is the physical line (the header is line 1): pandas numbers records, so the
    newlines inside quoted fields before a row are added (those of rows pandas skipped as
    malformed are not known and not added). A field that swallowed whole rows through an
    unbalanced quote is counted with its lines, see ``_swallowed_rows``.
    """
    next_line = 2  # pandas' record number of the next row (the header's plus one)
    extra = 0  # newlines inside quoted fields read so far
    text = None
    try:
        # A first data row with one field more than the header makes pandas take the first column
        # as the index and shift every column of the whole file by one (ids read as text, text as
        # latitude), silently. Naming one spare column after the header's keeps each column where
        # the header puts it, and a row that fills the spare one is a malformed line like any other.
        # A first row with two or more fields too many still made pandas take them as an index (every
        # user id read from the text column): ``index_col=False`` stops that; pandas then cuts that
        # row's fields to the names, so it fills the spare column and is that malformed line.
        names = _header_names(path, sep, encoding, columns)
        text = _text_stream(path, encoding)
        with text, _BlankLines(path, sep, encoding) as blank_lines:
            # pandas skips blank lines before the header, but ``skiprows`` counts them: a file that
            # starts with a blank line had its header read as a data row (a user "user_id").
            lead = blank_lines.leading()
            next_line += lead
            reader = pd.read_csv(text, sep=sep, dtype=str, keep_default_na=False, chunksize=max(chunksize, 2),
                                 on_bad_lines="warn", engine="c", header=None, skiprows=lead + 1,
                                 names=[*names, _SPARE_COLUMN], skip_blank_lines=False, index_col=False)
            # Blank lines are read as rows (all fields empty) and dropped below: skipped by pandas, they
            # went unnumbered and every later row got too small a line number.
            it = iter(reader)
            while True:
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always")
                    try:
                        chunk = next(it)
                    except StopIteration:
                        chunk = None
                skipped = []
                for w in caught:
                    for m in re.finditer(r"Skipping line (\d+): (.*)", str(w.message)):
                        # pandas counts the spare column in the fields it expected
                        why = re.sub(r"expected \d+ fields", f"expected {len(names)} fields (the header's)",
                                     m.group(2).strip())
                        skipped.append((int(m.group(1)), why))
                if chunk is None:
                    for ln, why in skipped:
                        log.bad("malformed_line", f"{why}; row dropped", line=ln + extra, source=str(path))
                    if (cut := _truncation(text)) is not None:
                        last = next_line + extra - 1  # the last complete line read
                        _refuse_damaged(path, cut, last)
                        log.bad("truncated_file", f"compressed stream ends early after line {last} ({cut}); the "
                                "rows before it were kept; re-download or re-compress the file", line=last,
                                source=str(path), kept=True)
                    break
                spare = chunk.pop(_SPARE_COLUMN)
                # An empty spare field is a delimiter at the end of the line (a common export quirk): harmless.
                overfull = (spare.notna() & (spare != "")).to_numpy()
                skipped_set = {ln for ln, _ in skipped}
                cand = [ln for ln in range(next_line, next_line + len(chunk) + len(skipped)) if ln not in skipped_set]
                rec = np.asarray(cand[: len(chunk)], dtype="int64")
                next_line = (int(rec[-1]) + 1) if len(rec) else next_line + len(skipped)
                newlines, swallowed = _swallowed_rows(chunk, sep, columns)
                if overfull.any():  # its extra field may be quoted over lines too: later rows come after them
                    import pyarrow as pa

                    newlines += _newlines_per_value(pa.array(spare.where(overfull, "").tolist(),
                                                             type=pa.large_string()))[0]
                before = extra + np.concatenate(([0], np.cumsum(newlines)[:-1])) if len(rec) else rec
                lines = rec + before
                extra += int(newlines.sum())
                if skipped:  # a skipped row lies after the kept rows of lower record number
                    at = np.searchsorted(rec, [ln for ln, _ in skipped])
                    shift = np.concatenate(([before[0] if len(rec) else extra], before + newlines))
                    for (ln, why), k in zip(skipped, at.tolist()):
                        log.bad("malformed_line", f"{why}; row dropped", line=ln + int(shift[k]), source=str(path))
                for i, col in swallowed:
                    first, k = int(lines[i]), int(newlines[i])
                    log.bad("malformed_line", f"an unbalanced quote (\") in column {col!r} swallowed the {k} "
                            f"following line(s) {first + 1}-{first + k} into one field; this row and those lines "
                            "dropped: fix or remove the stray quote", line=first, source=str(path))
                    for j in range(first + 1, first + k + 1):
                        log.bad("malformed_line", f"swallowed by the unbalanced quote of line {first}; dropped",
                                line=j, source=str(path))
                for i in np.flatnonzero(overfull):
                    log.bad("malformed_line", f"expected {len(names)} fields (the header's), saw {len(names) + 1}; row dropped",
                            line=int(lines[i]), source=str(path))
                blank = blank_lines.rows(chunk, lines)
                if swallowed or overfull.any() or blank is not None:
                    keep = ~overfull
                    keep[[i for i, _ in swallowed]] = False
                    if blank is not None:
                        keep &= ~blank
                    chunk, lines = chunk.loc[keep].reset_index(drop=True), lines[keep]
                yield _normalise_table(chunk, path, columns, log, fix_swapped, lines)
    except pd.errors.EmptyDataError as e:
        raise DataError(f"{path}: is empty (no header line); remove it from the inputs") from e
    except (EOFError, zlib.error, gzip.BadGzipFile) as e:
        _refuse_damaged(path, e, next_line + extra - 1)
        log.bad("truncated_file", f"compressed stream ends early near line {next_line + extra} ({e}); rows before "
                "it were kept; re-download or re-compress the file", line=next_line + extra - 1, source=str(path),
                kept=True)
    except (pd.errors.ParserError, UnicodeDecodeError) as e:
        cut = _truncation(text) if text is not None else None
        if cut is not None:
            _refuse_damaged(path, cut, next_line + extra - 1)
        if cut is not None and "EOF inside string" in str(e):
            # The cut fell inside a quoted field: not a stray quote. pandas drops the rows of the
            # chunk it was parsing, so only those of earlier chunks were kept: say which.
            last = next_line + extra - 1
            log.bad("truncated_file", f"compressed stream ends early inside a quoted field after line {last} ({cut}); "
                    f"the rows up to line {last} were kept, the rest is lost; re-download or re-compress the file",
                    line=last, source=str(path), kept=True)
            return
        hint = ("a quote (\") opens a field that never closes: fix or remove the stray quote; "
                if "EOF inside string" in str(e) else "")
        raise DataError(f"{path}: cannot be parsed as {'TSV' if sep == chr(9) else 'CSV'} ({str(e)[:200]}); "
                        f"{hint}check the delimiter and quoting, or choose the format with {_FORMAT_OPTION}") from e


class _BlankLines:
    """Tells the rows that pandas read from blank lines (``skip_blank_lines=False``) from the rows
    whose fields are merely empty (``,`` or ``""``: a record, e.g. a ``missing_user``).

    Both have only empty fields (a blank line's first field may hold spaces), so only such
    candidates, found with one comparison per column, are looked up in the file itself:
    a line of nothing but spaces (and tabs, unless they separate) is blank, as pandas
    decides when it skips them. Past the header (``leading`` counts the blank lines before it),
    the file is read for that only when a candidate turns up.
    """

    def __init__(self, path: Path, sep: str, encoding: str):
        self.path, self.encoding = path, encoding
        self.strip = " \r\n" if sep == "\t" else " \t\r\n"
        self.file: io.TextIOWrapper | None = None
        self.at = 0  # physical lines of ``file`` read so far
        self.last = ""

    def __enter__(self) -> "_BlankLines":
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.file is not None:
            self.file.close()

    def leading(self) -> int:
        """How many blank lines come before the first line that is not (the header)."""
        n = 0
        while self._is_blank(n + 1):
            n += 1
        return n

    def rows(self, chunk: pd.DataFrame, lines: np.ndarray) -> np.ndarray | None:
        """Per row, whether it is a blank line; None when none is."""
        cols = list(chunk.columns)
        cand = np.ones(len(chunk), dtype=bool)
        for col in cols[1:]:  # the text column rules out nearly every row at once
            cand &= chunk[col].to_numpy(dtype=object) == ""
            if not cand.any():
                return None
        idx = np.flatnonzero(cand)
        if not len(idx):
            return None
        first = chunk[cols[0]].to_numpy(dtype=object)[idx].tolist()
        blank = np.zeros(len(chunk), dtype=bool)
        for i, v in zip(idx.tolist(), first):
            if isinstance(v, str) and not v.strip(" \t\r"):
                blank[i] = self._is_blank(int(lines[i]))
        return blank if blank.any() else None

    def _is_blank(self, n: int) -> bool:
        """Whether physical line ``n`` (1-based) is blank; lines are asked for in increasing order."""
        if self.file is None:
            self.file = _text_stream(self.path, self.encoding)  # newlines as pandas: \n, \r\n or \r
        while self.at < n:
            self.last = self.file.readline()
            self.at += 1
            if not self.last:
                return False
        return self.at == n and not self.last.strip(self.strip)


def _swallowed_rows(chunk: pd.DataFrame, sep: str, columns: Mapping[str, str] | None
                    ) -> tuple[np.ndarray, list[tuple[int, str]]]:
    """Newlines in each row's fields, and the rows (index, column) with a field that swallowed rows.

    A field that opens with a quote meant as text (``"lakers tonight``: TSV written without
    quoting) runs over the following lines, other users' rows included, up to the next quote.
    Tell it from a legitimate multi-line field by its lines: one after a newline that is a row
    by itself. In TSV that is any line with ncols - 1 tabs (tweets essentially never hold a
    tab); in CSV, where tweets hold commas, a line that parses to exactly ncols fields with an
    id (no spaces) in the user_id position and numbers (or nothing) in the numeric ones.
    Only fields holding a newline are looked at: a plain membership test per value otherwise.
    A newline is what pandas ends a line at: LF, CRLF or a bare CR (a file with CR line ends
    holds no LF at all, and its swallowed rows went unseen and uncounted).
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    n, ncols = len(chunk), chunk.shape[1]
    newlines = np.zeros(n, dtype=np.int64)
    found: dict[int, str] = {}
    if not n or ncols < 2:
        return newlines, []
    names = list(chunk.columns)
    ren = _table_names(names, columns)
    schema = [ren.get(c, c) for c in names]
    uid_pos = schema.index("user_id") if "user_id" in schema else None
    num_pos = [j for j, c in enumerate(schema) if c in ("lat", "lon", "n_tweets")]
    # A line after a newline with ncols - 1 separators, written without backtracking; in CSV
    # with user_id first, that line must start with an id (no spaces) and a comma. After an LF
    # (and CRLF), and, in values that hold one, after a bare CR: a search that starts at either
    # took three times as long as one that starts at an LF.
    esc = re.escape(sep)
    row_re, row_re_cr = ((f"{nl}[^\\s,]+,(?:[^{nl}\n,]*,){{{ncols - 2}}}" if sep == "," and uid_pos == 0
                          else f"{nl}(?:[^{nl}\n{esc}]*{esc}){{{ncols - 1}}}") for nl in ("\n", "\r"))
    for name in names:
        col = chunk[name]
        # Most values hold no newline: found by a fast scan, the rest is done on their Arrow
        # buffers. Python-level tests per value, or pandas' str.count, made a CSV of multi-line
        # user documents read 60 % slower.
        has = np.flatnonzero(col.str.contains("[\r\n]", regex=True, na=False).to_numpy(dtype=bool))
        if not len(has):
            continue
        arr = pa.array(col.iloc[has], type=pa.large_string())
        if isinstance(arr, pa.ChunkedArray):
            arr = arr.combine_chunks()
        breaks, bare_cr = _newlines_per_value(arr)
        newlines[has] += breaks
        hit = pc.match_substring_regex(arr, row_re)
        if bare_cr:
            hit = pc.or_(hit, pc.match_substring_regex(arr, row_re_cr))
        hit = np.flatnonzero(hit.to_numpy(zero_copy_only=False))
        for j, v in zip(hit.tolist(), arr.take(pa.array(hit)).to_pylist()):
            i = int(has[j])
            if i not in found and (sep == "\t" or any(
                    _row_like(ln, ncols, uid_pos, num_pos) for ln in _LINE_BREAK.split(v)[1:])):
                found[i] = str(name)
    return newlines, sorted(found.items())


_LINE_BREAK = re.compile(r"\r\n?|\n")  # where pandas (and _BlankLines) end a line


def _newlines_per_value(arr) -> tuple[np.ndarray, bool]:
    """How many line breaks (LF, CRLF or a bare CR: ``_LINE_BREAK``) each value of a pyarrow
    large_string array holds (0 for a null), with numpy; and whether any of them is a bare CR."""
    off = np.frombuffer(arr.buffers()[1], dtype=np.int64)[arr.offset:arr.offset + len(arr) + 1]
    buf = arr.buffers()[2]
    if buf is None or not len(arr):
        return np.zeros(len(arr), dtype=np.int64), False
    data = np.frombuffer(buf, dtype=np.uint8)[off[0]:off[-1]]
    brk = data == 10
    bare = False
    cr = np.flatnonzero(data == 13)
    if len(cr):  # a CR followed by an LF of the same value is one break with it: the LF is counted
        ends = np.zeros(len(data) + 1, dtype=bool)
        ends[off[1:] - off[0]] = True  # where a value ends: the next byte is no part of it
        lone = cr[ends[cr + 1] | (data[np.minimum(cr + 1, len(data) - 1)] != 10)]
        brk[lone] = True
        bare = bool(len(lone))
    nl = np.flatnonzero(brk) + off[0]
    return np.diff(np.searchsorted(nl, off)).astype(np.int64), bare


def _row_like(line: str, ncols: int, uid_pos: int | None, num_pos: list[int]) -> bool:
    """Whether a line inside a CSV field looks like a whole row of the table (see ``_swallowed_rows``)."""
    if line.count(",") < ncols - 1:
        return False
    try:
        fields = next(csv.reader([line]), [])
    except csv.Error:  # a field over csv's size limit (128 KiB; a long user document): parse it with room for it
        limit = csv.field_size_limit()
        csv.field_size_limit(max(limit, len(line) + 1))
        try:
            fields = next(csv.reader([line]), [])
        finally:
            csv.field_size_limit(limit)
    if len(fields) != ncols:
        return False
    if uid_pos is not None and (not fields[uid_pos] or any(ch.isspace() for ch in fields[uid_pos])):
        return False
    return all(_is_number(fields[j]) or not fields[j].strip() for j in num_pos)


_WARNED_FLOAT_IDS: set = set()


def _ids_as_text(batch, columns: Mapping[str, str] | None, path: Path | None = None):
    """The user id column as exact text before pandas sees it: an int64 column with a null
    would become float64 in pandas, and 1234567890123456789 and ...790 the same float (two users
    merged); integral floats (ids written as 1.0, 2.0) become "1", "2"."""
    import pyarrow as pa
    import pyarrow.compute as pc

    name = next((src for src, dst in _table_names(batch.schema.names, columns).items() if dst == "user_id"),
                "user_id")
    if name not in batch.schema.names:
        return batch
    i = batch.schema.get_field_index(name)
    col = batch.column(i)
    if pa.types.is_floating(col.type):
        # Value by value, never by batch: whether a batch happened to hold a non-whole id must not
        # change how the others are written ("783214" in one chunk, "783214.0" in the next would
        # split one user in two). Whole numbers as integers, others as Python writes the float.
        vals = col.to_numpy(zero_copy_only=False).astype(np.float64)
        ok = np.isfinite(vals)  # NaN/inf: no id
        whole = ok & (vals == np.floor(np.where(ok, vals, 0.0)))
        text = [None if not k else str(int(v)) if w else repr(float(v)) for v, k, w in zip(vals.tolist(), ok, whole)]
        if (np.abs(vals[whole]) >= 2**53).any() and path not in _WARNED_FLOAT_IDS:
            _WARNED_FLOAT_IDS.add(path)  # once per file, not per batch
            log_.warning("%s: user ids stored as floating-point numbers of 2**53 or more are not exact (neighbouring ids "
                         "share one float, so their users are merged); store ids as integers or text", path or "parquet")
        col = pa.array(text, type=pa.string())
    elif pa.types.is_integer(col.type):
        col = pc.cast(col, pa.string())
    else:
        return batch
    return batch.set_column(i, name, col)


def _binary_as_text(batch):
    """Binary columns as text: writers without a string annotation store text as BINARY, which
    pandas would give as ``bytes`` and ``str()`` as "b'a'". Decoded like every text reader does:
    UTF-8, and where a value is not valid UTF-8, UTF-8 with the per-byte latin-1 fallback."""
    import pyarrow as pa
    import pyarrow.compute as pc

    for i, field in enumerate(batch.schema):
        if not (pa.types.is_binary(field.type) or pa.types.is_large_binary(field.type)
                or pa.types.is_fixed_size_binary(field.type) or pa.types.is_binary_view(field.type)):
            continue
        col = batch.column(i)
        try:
            col = pc.cast(col, pa.large_string())  # validates UTF-8 at C speed: the usual case
        except pa.ArrowInvalid:
            col = pa.array([None if b is None else b.decode("utf-8", _ERRORS) for b in col.to_pylist()],
                           pa.large_string())
        batch = batch.set_column(i, field.name, col)
    return batch


def _check_parquet_schema(schema, path: Path, columns: Mapping[str, str] | None) -> None:
    """A column read as a schema column must be named once and hold plain values: a struct or list
    column would be read as its Python repr ("{'t': 'x'}" as the text, "[1, 2]" as an id) without a
    word, and a name repeated in the file broke the frame."""
    import pyarrow as pa

    ren = _table_names(schema.names, columns, path, announce=True)
    for field in schema:
        want = ren.get(field.name, field.name)
        if want not in TABLE_COLUMNS:
            continue
        t = field.type.value_type if pa.types.is_dictionary(field.type) else field.type
        if pa.types.is_nested(t):
            raise DataError(f"{path}: column {field.name!r} (read as {want!r}) has the nested type {field.type}, "
                            "not plain values (text, numbers); flatten it before reading, e.g. select the "
                            "struct's field or join the list in the writer")
        if want == "user_id" and pa.types.is_boolean(t):  # every row would be user "True" or "False"
            raise DataError(f"{path}: column {field.name!r} holds booleans (true/false), not user ids; map the "
                            "column of ids with --columns your_name=user_id (in Python: columns={'your_name': "
                            "'user_id', ...})")


def _read_parquet(path: Path, log: RecordLog, chunksize: int, fix_swapped: bool,
                  columns: Mapping[str, str] | None, progress: bool) -> Iterator[pd.DataFrame]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
    except (pa.ArrowInvalid, OSError) as e:
        raise DataError(f"{path}: not a readable parquet file ({e}); check the file or choose the right format "
                        f"with {_FORMAT_OPTION}") from e
    _check_parquet_schema(pf.schema_arrow, path, columns)
    start = 1
    try:
        for batch in _progress(pf.iter_batches(batch_size=chunksize), progress, path):
            df = _ids_as_text(_binary_as_text(batch), columns, path).to_pandas()
            lines = np.arange(start, start + len(df), dtype="int64")
            start += len(df)
            yield _normalise_table(df, path, columns, log, fix_swapped, lines)
    except (pa.ArrowInvalid, OSError) as e:
        raise DataError(f"{path}: parquet data is corrupt after row {start - 1} ({e}); re-create the file") from e


# --------------------------------------------------------------------------- public


class SeenIds:
    """The ids (users, or tweets) met so far in a stream, at 8 bytes per id.

    ``iter_documents`` must notice a user who reappears after other users. A Python set of
    the id strings costs ~150 bytes per user, which is what made predict memory grow with
    the number of users; this keeps 64-bit hashes (``hash`` of the id, stable within a
    process) in sorted numpy arrays of doubling sizes, so adding a chunk is a few
    ``searchsorted`` calls and an occasional merge. Two different ids share a hash with
    probability ~n^2 / 2^64 (about 3e-6 for ten million users); such a pair would be
    reported as one reappearing user, never lost. ``iter_tweets`` keeps one for the tweet ids
    of a run (``duplicate_tweet``): there such a pair would drop the second tweet, counted.
    """

    def __init__(self) -> None:
        self._levels: list[np.ndarray] = []

    def __len__(self) -> int:
        return int(sum(len(a) for a in self._levels))

    def add(self, ids: Sequence[str]) -> np.ndarray:
        """Add ``ids`` in order; returns, per id, whether it was seen before (earlier in ``ids`` too)."""
        h = np.fromiter(map(hash, ids), dtype=np.int64, count=len(ids))
        # A stable sort puts each hash's first occurrence first, and searching the levels for sorted
        # hashes is cache-friendly (np.unique, union1d and unsorted searches took 3x as long).
        order = np.argsort(h, kind="stable")
        sh = h[order]
        known = np.zeros(len(h), dtype=bool)  # per sorted hash: in a level
        for level in self._levels:
            pos = np.minimum(np.searchsorted(level, sh), len(level) - 1)
            known |= level[pos] == sh
        first = np.ones(len(h), dtype=bool)
        first[1:] = sh[1:] != sh[:-1]
        seen = known | ~first  # per sorted hash: seen before (in a level, or earlier in ``ids``)
        before = np.empty(len(h), dtype=bool)
        before[order] = seen
        new = sh[~seen]  # sorted, unique, and in no level
        # Each level more than twice the next: at most log2(n) sorted arrays to search. Levels are
        # disjoint, so merging two is sorting two sorted runs (timsort: linear).
        while self._levels and len(self._levels[-1]) <= 2 * len(new):
            new = np.sort(np.concatenate((self._levels.pop(), new)), kind="stable")
        if len(new):
            self._levels.append(new)
        return before


def _progress(it: Iterable, enabled: bool, path: Path) -> Iterable:
    if not enabled:
        return it
    from tqdm.auto import tqdm

    return tqdm(it, desc=Path(path).name, unit="chunk", leave=False)


class _LineOrderedLog:
    """Holds a file's bad records until the chunk being read is done, then passes them to ``log``
    in line order.

    A reader finds bad records in passes (unparseable lines, then coordinates, then user ids...),
    so the ``fail`` policy would otherwise stop on the first pass's record even when another
    pass's is on an earlier line; the error must name the file's first bad line.
    """

    def __init__(self, log: RecordLog):
        self.log = log
        self.pending: list[tuple[int | None, str, str, str | None, bool]] = []

    def bad(self, reason: str, detail: str = "", *, line: int | None = None, source: str | None = None,
            kept: bool = False) -> None:
        self.pending.append((line, reason, detail, source, kept))

    def flush(self) -> None:
        pending, self.pending = self.pending, []
        pending.sort(key=lambda p: (p[0] is None, p[0] or 0))  # stable: same-line records keep their order
        for line, reason, detail, source, kept in pending:
            self.log.bad(reason, detail, line=line, source=source, kept=kept)


def iter_tweets(
    paths: str | Path | Iterable[str | Path],
    fmt: str = "auto",
    *,
    chunksize: int = 50_000,
    log: RecordLog | None = None,
    user_info: str | Path | pd.DataFrame | bool | None = None,
    columns: Mapping[str, str] | None = None,
    encoding: str = "auto",
    fix_swapped: bool = False,
    progress: bool = False,
    drop_duplicate_tweets: bool = True,
    fold_splits: bool = True,
) -> Iterator[pd.DataFrame]:
    """Stream tweet frames (schema ``TWEET_COLUMNS``) from one or more files.

    Memory is bounded by ``chunksize`` rows (lines for text formats, rows for
    tables); frames never span two files. ``fmt="auto"`` detects each file
    separately. ``user_info`` (GeoText only): a path to ``user_info``, a frame
    from ``_load_user_info``, ``None`` to look for it beside the text, or
    ``False`` to use the order of first appearance. ``columns`` renames table
    columns to the schema names. ``encoding="auto"`` is UTF-8 with per-byte
    latin-1 fallback; name a codec (e.g. ``"latin-1"``) to force one.
    ``fix_swapped`` swaps back coordinates that are valid only when swapped.
    A Twitter JSON tweet whose id was already read by this call (from any of ``paths``) is
    counted as ``duplicate_tweet`` and dropped, unless ``drop_duplicate_tweets`` is false: the
    ids cost 8 bytes per tweet, which a stream of any length (``predict``) does not spend.
    ``fold_splits=False`` leaves a GeoText file without ``user_info`` unsplit (split ``""``) instead
    of numbering its users by first appearance for the official folds, which keeps every user id
    seen (~100 bytes each): a stream that ignores splits (``predict``) stays flat.

    With ``log=None`` a ``skip`` log is used and its counts are logged as a
    warning; pass a ``RecordLog`` to collect them (or to fail on the first).
    Raises ``DataError`` for missing, empty, binary or wrong-format files and
    when no record at all could be read.
    """
    if fmt != "auto" and fmt not in FORMATS:
        raise DataError(f"unknown tweet format {fmt!r}; use auto or one of {', '.join(FORMATS)}")
    if chunksize < 1:
        raise DataError(f"chunksize must be >= 1, got {chunksize}")
    own_log = log is None
    log = RecordLog(policy="skip") if log is None else log
    files = _as_paths(paths)
    if isinstance(user_info, (str, Path)):
        if not Path(user_info).is_file():
            raise DataError(f"{user_info}: user_info file not found; pass GeoText's processed_data/user_info")
        user_info = _load_user_info(Path(user_info))
    total = 0
    empty_files = []
    header_only = []
    # tweet ids of every JSON file of this run: a tweet read twice is a duplicate_tweet
    seen_tweets = SeenIds() if drop_duplicate_tweets else None
    for path in files:
        if _is_empty(path):
            empty_files.append(path)
            continue
        try:
            f = detect_format(path) if fmt == "auto" else fmt
        except _TruncatedHead as e:  # as a reader counts a stream that ends early (under fail: raises)
            log.bad("truncated_file", e.detail, source=str(path))
            continue
        if f != "parquet" and _looks_binary(head := _head(path)):
            raise DataError(f"{path}: looks like a binary file, not {f} text; {_utf16_hint(head)}pass the right file "
                            f"or choose the format with {_FORMAT_OPTION}")
        if f in ("geotext", "rahimi", "twitter_json") and _cr_line_ends(head, f):
            raise DataError(f"{path}: its lines end in a bare carriage return (CR, as classic Mac OS wrote them), not "
                            f"LF or CRLF; the {f} reader ends lines at LF only, so the whole file would be read as one "
                            "line: convert the line ends first, e.g. tr '\\r' '\\n' < in > out (gzip: gunzip -c in.gz | "
                            "tr '\\r' '\\n' | gzip > out.gz)")
        log_.info("reading %s as %s", path, f)
        before = Counter(log.counts)
        n_good = 0
        flog = _LineOrderedLog(log)
        if columns and f not in ("csv", "tsv", "parquet"):
            log_.warning("%s: read as %s, which has fixed fields: the column mapping (--columns) applies to CSV, "
                         "TSV and Parquet only and is not used for this file", path, f)
        if f == "geotext":
            gen = _read_geotext(path, flog, chunksize, encoding, fix_swapped, user_info, progress, fold_splits)
        elif f == "rahimi":
            gen = _read_rahimi(path, flog, chunksize, encoding, fix_swapped, progress)
        elif f == "twitter_json":
            gen = _read_json(path, flog, chunksize, encoding, fix_swapped, progress, seen_tweets)
        elif f in ("csv", "tsv"):
            gen = _read_delimited(path, "," if f == "csv" else "\t", flog, chunksize, encoding, fix_swapped, columns,
                                  progress)
        else:
            gen = _read_parquet(path, flog, chunksize, fix_swapped, columns, progress)
        try:
            for frame in gen:
                flog.flush()  # before the frame is used: under ``fail`` a bad record stops the run first
                if len(frame) == 0:
                    # Many bad lines and nothing good yet: stop early, this is not the format.
                    new = log.counts - before
                    if n_good == 0 and not new["duplicate_tweet"] and \
                            sum(new.values()) - new["truncated_file"] >= _WRONG_FORMAT_EARLY:
                        _wrong_format(path, f, new, log)
                    continue
                n_good += len(frame)
                total += len(frame)
                yield frame
        except DataError:
            flog.flush()  # an earlier bad record of the chunk is the error under ``fail``; counted under ``skip``
            raise
        flog.flush()
        new = log.counts - before
        # A file whose tweets were all read before (the same file twice) is the right format.
        if n_good == 0 and not new["duplicate_tweet"] and sum(new.values()) - new["truncated_file"] > 0:
            _wrong_format(path, f, new, log)
        if n_good == 0 and not new:  # a header (or "[" "]") and nothing else: as good as empty
            header_only.append(path)
    for path in empty_files:
        if len(empty_files) == len(files):
            raise DataError(f"{path}: is empty; remove it from the inputs or check that it was copied completely")
        log.bad("empty_file", "file has no records; skipped", source=str(path))
    if total:  # else the error below says so (a single header-only input: "a header, but no records")
        for path in header_only:
            log.bad("empty_file", "file has a header but no records; skipped", source=str(path))
    if total == 0:
        why = f"bad records: {dict(log.counts)}" if log.counts else "a header, but no records"
        if log.examples.get("truncated_file"):  # "check the format" alone would hide that a file is cut short
            why += f"; e.g. {log.examples['truncated_file'][0]}"
        raise DataError(f"no usable records in {', '.join(map(str, files))} ({why}); "
                        f"check the files and the format ({_FORMAT_OPTION})")
    if own_log and log.total:
        log_.warning("skipped or repaired %d bad records: %s", log.total, dict(log.counts))


def _is_empty(path: Path) -> bool:
    """No bytes, or (after gunzip) nothing but whitespace (after a BOM)."""
    if path.stat().st_size == 0:
        return True
    with open(path, "rb") as f:
        if f.read(4) == _PARQUET_MAGIC:
            return False
    try:
        with _open_data(path) as f:
            while True:
                block = f.read(1 << 16)
                if not block:
                    return True
                if block.strip():
                    return False
    except (EOFError, zlib.error):
        return False  # truncated: the reader reports it
    except OSError as e:  # includes gzip.BadGzipFile
        raise DataError(f"{path}: cannot be read as gzip ({e}); re-download the file or decompress it first") from e


def _wrong_format(path: Path, fmt: str, new: Counter, log: RecordLog) -> None:
    # A bad record of this file says why (a JSON file of Python reprs, 'single quotes': "Expecting
    # property name enclosed in double quotes"), which the counts alone do not: the run stops here, so
    # the examples are in no manifest or summary either.
    first = next((e for reason, _ in new.most_common() for e in log.examples.get(reason, [])
                  if e.startswith(f"{path}:")), None)
    raise DataError(
        f"{path}: no line could be read as {fmt} (bad records: {dict(new)}"
        + (f"; e.g. {first}" if first else "") + "); "
        f"is this the right file? choose the format explicitly with {_FORMAT_OPTION}"
    )


def read_tweets(paths: str | Path | Iterable[str | Path], fmt: str = "auto", **kwargs: Any) -> pd.DataFrame:
    """All of ``iter_tweets`` in one frame (small inputs and tests)."""
    frames = list(iter_tweets(paths, fmt, **kwargs))
    gran = {f.attrs.get(GRANULARITY_ATTR, "tweet") for f in frames}
    out = pd.concat(frames, ignore_index=True) if frames else empty_tweets_frame()
    out.attrs[GRANULARITY_ATTR] = gran.pop() if len(gran) == 1 else "mixed"
    return out
