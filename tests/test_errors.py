"""Bad-record accounting: where a record is named when no file is known."""

from __future__ import annotations

import pytest

from geoae.errors import DataError, RecordLog


def test_a_bad_record_without_a_known_file_is_named_without_an_empty_location():
    # Stages that work on a documents table (labels, split assignment) know no file and often no
    # line: the example and the error read "user 'u': ...", not ": user 'u': ..." or ":3: ...".
    log = RecordLog()
    log.bad("invalid_coordinates", "user 'u': lat=999", kept=True)
    log.bad("invalid_coordinates", "user 'v': lat=998", line=3, kept=True)
    log.bad("unknown_user", "user 'w'", source="a.txt", line=7)
    log.bad("unknown_user", "user 'x'", source="a.txt")
    assert log.examples == {"invalid_coordinates": ["user 'u': lat=999", "line 3: user 'v': lat=998"],
                            "unknown_user": ["a.txt:7: user 'w'", "a.txt: user 'x'"]}
    with pytest.raises(DataError, match=r"^invalid_coordinates: user 'u': lat=999 \(stopped"):
        RecordLog(policy="fail").bad("invalid_coordinates", "user 'u': lat=999", kept=True)
    with pytest.raises(DataError, match=r"^b.txt:2: malformed_line \(stopped"):
        RecordLog(policy="fail", source="b.txt").bad("malformed_line", line=2)


def test_counts_in_messages_agree_with_their_noun():
    from geoae.errors import plural

    assert plural(1, "bad record") == "1 bad record" and plural(0, "user") == "0 users" and plural(2, "row") == "2 rows"
    one = RecordLog(policy="skip")
    one.bad("malformed_line", "x")
    assert one.summary().startswith("1 bad record (") and "records" not in one.summary().split("{")[0]
    one.bad("malformed_line", "y")
    assert one.summary().startswith("2 bad records (")
