"""Parsing of the recovery filters, and how dead letters are rendered."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from taskservice.recovery.dead_letters import (
    DeadLetter, DeadLetterSelection, full_text, hex_dump, parse_position, render_value,
)
from taskservice.recovery.filters import InvalidFilterError, check_limit, parse_reasons, parse_time, parse_time_range

NOW = datetime(2027, 1, 31, 12, 0, tzinfo=UTC)


def _letter(**headers: str) -> DeadLetter:
    return DeadLetter("dead-letter", 0, 7, NOW, b"k", b"{}", tuple((k, v.encode()) for k, v in headers.items()))


@pytest.mark.parametrize(("text", "expected"), [
    ("2h", NOW - timedelta(hours=2)),
    ("30m", NOW - timedelta(minutes=30)),
    ("1d12h", NOW - timedelta(days=1, hours=12)),
    ("2w", NOW - timedelta(weeks=2)),
    ("2027-01-31T09:00:00Z", datetime(2027, 1, 31, 9, tzinfo=UTC)),
    ("2027-01-31T10:00:00+01:00", datetime(2027, 1, 31, 9, tzinfo=UTC)),
])
def test_parse_time_accepts(text: str, expected: datetime) -> None:
    assert parse_time(text, "--since", NOW) == expected


@pytest.mark.parametrize(("text", "message"), [
    ("yesterday", "'yesterday' is not a time"),
    ("2027-01-31T09:00:00", "has no UTC offset"),
    ("2h5", "is not a time"),
    ("-2h", "is not a time"),
])
def test_parse_time_rejects(text: str, message: str) -> None:
    with pytest.raises(InvalidFilterError, match=message) as caught:
        parse_time(text, "--since", NOW)
    assert "--since" in str(caught.value)


def test_time_range_order() -> None:
    assert parse_time_range("2h", "1h", NOW) == (NOW - timedelta(hours=2), NOW - timedelta(hours=1))
    assert parse_time_range(None, None, NOW) == (None, None)
    with pytest.raises(InvalidFilterError, match="is not before until"):
        parse_time_range("1h", "2h", NOW)
    with pytest.raises(InvalidFilterError, match="is not before until"):
        parse_time_range("2027-01-31T09:00:00Z", "2027-01-31T09:00:00Z", NOW)


def test_reasons_parsed_and_checked() -> None:
    assert parse_reasons(None) is None
    assert parse_reasons(["invalid_json,not_utf8", "too_large"]) == {"invalid_json", "not_utf8", "too_large"}
    with pytest.raises(InvalidFilterError, match="'bogus'") as caught:
        parse_reasons(["invalid_json,bogus"])
    assert "schema_mismatch" in str(caught.value)


def test_limit_checked() -> None:
    assert check_limit(None) is None
    assert check_limit(5, maximum=10) == 5
    with pytest.raises(InvalidFilterError, match=r"--limit must be at least 1 \(got 0\)"):
        check_limit(0, "--limit")
    with pytest.raises(InvalidFilterError, match=r"between 1 and 10 \(got 11\)"):
        check_limit(11, maximum=10)


def test_position_parsed() -> None:
    assert parse_position("3:42") == (3, 42)
    for text in ("3", "a:1", "1:-2", ":1", "1:"):
        with pytest.raises(InvalidFilterError, match="PARTITION:OFFSET"):
            parse_position(text)


def test_selection_matches_filters() -> None:
    letter = _letter(reason="invalid_json", source_topic="orders")
    assert DeadLetterSelection().matches(letter)
    assert DeadLetterSelection(reasons=frozenset({"invalid_json"})).matches(letter)
    assert not DeadLetterSelection(reasons=frozenset({"not_utf8"})).matches(letter)
    assert not DeadLetterSelection(source_topics=frozenset({"other"})).matches(letter)
    assert DeadLetterSelection(since=NOW, until=NOW + timedelta(seconds=1)).matches(letter)
    assert not DeadLetterSelection(until=NOW).matches(letter)
    assert not DeadLetterSelection(since=NOW + timedelta(milliseconds=1)).matches(letter)


def test_source_needs_numeric_headers() -> None:
    assert str(_letter(source_topic="t", source_partition="2", source_offset="9").source) == "t[2]@9"
    assert _letter(source_topic="t", source_partition="x", source_offset="9").source is None
    assert _letter(source_partition="2", source_offset="9").source is None


def test_original_headers_drop_ingest_headers() -> None:
    letter = _letter(reason="invalid_json", detail="d", source_topic="t", source_partition="0", source_offset="1",
                     consumer_group="g", trace_id="abc")
    assert letter.original_headers() == [("trace_id", b"abc")]


def test_values_rendered_by_kind() -> None:
    assert render_value(b'{"a":[1,2]}') == '{\n  "a": [\n    1,\n    2\n  ]\n}'
    assert render_value(b'{"id":\n') == '"{\\"id\\":\\n"'
    assert render_value(None) == ""
    dump = render_value(b"\xff\xfe\x00abc")
    assert dump == hex_dump(b"\xff\xfe\x00abc")
    assert dump.startswith("00000000  ff fe 00 61 62 63")
    assert dump.endswith("|...abc|")
    assert len(hex_dump(bytes(range(40))).splitlines()) == 3


def test_full_text_of_tombstone() -> None:
    letter = DeadLetter("dead-letter", 2, 9, NOW, None, None, (("reason", b"no_value"), ("tenant", b"\xff")))
    text = full_text(letter)
    assert "dead letter  dead-letter 2:9" in text
    assert "time         2027-01-31T12:00:00.000Z" in text
    assert "key          (none)" in text
    assert '  reason  "no_value"' in text
    assert "  tenant  hex ff" in text
    assert "value        (none: the record is a tombstone)" in text
