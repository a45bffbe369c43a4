"""Errors and bad-record accounting shared by every stage.

Every problem a user can cause (a malformed line, a bad config key, a tampered
model file) surfaces as a ``GeoaeError`` subclass whose message says *where*
(file, line, key), *what* is wrong and *what to do*. The CLI prints that
message and exits with status 2 instead of showing a traceback.

Records that are bad but skippable go through ``RecordLog``: under the
``skip`` policy they are counted by reason (with a few examples kept for the
manifest); under ``fail`` the first one raises ``DataError``. Nothing is ever
dropped without being counted.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field

POLICIES = ("skip", "fail")


class GeoaeError(Exception):
    """Base class for errors caused by user input; the CLI prints them cleanly."""


class ConfigError(GeoaeError):
    """A config file or option is invalid (unknown key, wrong type, impossible value)."""


class DataError(GeoaeError):
    """Input data cannot be read or violates the expected format."""


class ArtifactError(GeoaeError):
    """A model directory is missing, truncated, tampered with or of another version."""


@dataclass
class RecordLog:
    """Counts skipped records by reason, or raises on the first one under ``fail``.

    ``source`` names what is being read (usually a file path) and is used in
    messages; ``max_examples`` bounds how many examples per reason are kept so
    the manifest stays small however dirty the input is.
    """

    policy: str = "skip"
    source: str = ""
    max_examples: int = 5
    counts: Counter = field(default_factory=Counter)
    examples: dict = field(default_factory=dict)
    # The part of ``counts`` whose records were kept (repaired, e.g. a coordinate set to unknown,
    # or only flagged, e.g. a user who reappears) rather than dropped: a summary must not call
    # a record "skipped" when it is in the output.
    kept: Counter = field(default_factory=Counter)

    def __post_init__(self) -> None:
        if self.policy not in POLICIES:
            raise ConfigError(f"on_bad_record must be one of {POLICIES}, got {self.policy!r}")

    def bad(self, reason: str, detail: str = "", *, line: int | None = None, source: str | None = None,
            kept: bool = False) -> None:
        """Record one bad record (``kept``: it stays in the data, repaired or flagged; otherwise it is
        dropped); raise ``DataError`` under the ``fail`` policy."""
        where = source or self.source
        loc = where if line is None else f"{where}:{line}" if where else f"line {line}"
        # Stages working on a documents table (labels, splits) may know no file: then no ": " prefix.
        at = f"{loc}: " if loc else ""
        if self.policy == "fail":
            # The detail says what the skip policy does with the record ("row dropped", "row kept
            # with ..."); under fail nothing of that happens, the run stops, so say so.
            hint = ("stopped, as on_bad_record is fail: fix the record, or rerun with --on-bad-record skip, "
                    "which counts such records and " + ("keeps them as described" if kept else "drops them"))
            raise DataError(f"{at}{reason}{': ' + detail if detail else ''} ({hint})")
        self.counts[reason] += 1
        if kept:
            self.kept[reason] += 1
        ex = self.examples.setdefault(reason, [])
        if len(ex) < self.max_examples:
            ex.append(f"{at}{detail[:200]}" if detail else loc)

    def merge(self, other: "RecordLog") -> "RecordLog":
        self.counts.update(other.counts)
        self.kept.update(other.kept)
        for k, v in other.examples.items():
            mine = self.examples.setdefault(k, [])
            mine.extend(v[: max(0, self.max_examples - len(mine))])
        return self

    @property
    def total(self) -> int:
        return int(sum(self.counts.values()))

    @property
    def kept_total(self) -> int:
        return int(sum(self.kept.values()))

    @property
    def dropped(self) -> Counter:
        """Bad records by reason that left the data (the counted ones that were not kept)."""
        return self.counts - self.kept

    def summary(self) -> str:
        """``N bad records (D dropped, K kept: repaired or flagged) {reason: count}``."""
        return f"{plural(self.total, 'bad record')} {breakdown(self.to_dict())}"

    def to_dict(self) -> dict:
        return {
            "policy": self.policy,
            # "skipped_*" are every bad record (the historical names); "dropped_total" / "kept_*" split them.
            "skipped_total": self.total,
            "skipped_by_reason": dict(sorted(self.counts.items())),
            "dropped_total": self.total - self.kept_total,
            "kept_total": self.kept_total,
            "kept_by_reason": dict(sorted(self.kept.items())),
            "examples": {k: list(v) for k, v in sorted(self.examples.items())},
        }


def plural(n: int, noun: str) -> str:
    """``1 user``, ``2 users``: a count for a message (the nouns used take a plain -s)."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def breakdown(record_log: dict) -> str:
    """``(D dropped, K kept: repaired or flagged) {reason: count}`` of a ``RecordLog.to_dict()``: the
    line the CLI prints after the total."""
    d = record_log
    return (f"({d['dropped_total']} dropped, {d['kept_total']} kept: repaired or flagged) "
            f"{json.dumps(d['skipped_by_reason'])}")
