"""`taskservice dlq list` and `dlq show` over dead letters that the real ingest wrote."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from taskservice.config import Settings
from taskservice.kafka import ensure_topics
from tests.recovery.common import dead_letter_through_ingest, document_topic, exh_topic, large_event, run_cli
from tests.support import document_event, prepare


@pytest.fixture
async def dead_lettered(settings: Settings) -> tuple[Settings, datetime]:
    """Six dead letters of five reasons from two topics; returns the settings and the time between the batches."""
    settings = settings.model_copy(update={"max_task_data_bytes": 1_024})
    await prepare(settings, [("user_deleted", "echo")])
    exh, documents = exh_topic(settings), document_topic(settings)
    bad_document = document_event("d1")
    del bad_document["source"]
    first = [(exh, b'{"id": "truncated",'), (exh, b"\xff\xfe\x00binary")]
    second = [(exh, b"[1, 2, 3]"), (exh, {"id": "e4", "type": "user_deleted", "content": "not an object"}),
              (exh, large_event("e5")), (documents, bad_document)]
    records = await dead_letter_through_ingest(settings, [first, second], pause_s=1.0)
    # The dead-letter time is the record timestamp; take the middle of the gap between the batches.
    stamps = sorted(record.timestamp for record in records)
    middle_ms = (stamps[len(first) - 1] + stamps[len(first)]) / 2
    assert stamps[len(first)] - stamps[len(first) - 1] > 500
    return settings, datetime.fromtimestamp(middle_ms / 1000, tz=UTC)


def _reasons(lines: list[dict]) -> list[str]:
    return sorted(line["reason"] for line in lines)


async def test_list_prints_every_dead_letter(dead_lettered: tuple[Settings, datetime]) -> None:
    settings, _ = dead_lettered
    result = await run_cli(settings, "dlq", "list")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 6
    for reason in ("invalid_json", "not_utf8", "not_an_object", "schema_mismatch", "too_large"):
        assert any(f"  {reason}" in line for line in lines), reason
    assert all(f"{exh_topic(settings)}[" in line or f"{document_topic(settings)}[" in line for line in lines)


async def test_list_json_fields(dead_lettered: tuple[Settings, datetime]) -> None:
    settings, _ = dead_lettered
    result = await run_cli(settings, "dlq", "list", "--json", "--reason", "too_large")
    assert result.returncode == 0, result.stderr
    [line] = result.json_lines()
    assert line["reason"] == "too_large"
    assert line["source_topic"] == exh_topic(settings)
    assert isinstance(line["source_partition"], int)
    assert isinstance(line["source_offset"], int)
    assert line["consumer_group"] == settings.consumer_group
    assert line["key"] == "e5"
    assert line["value_bytes"] > 3_000
    assert "more than the limit" in line["detail"]
    assert line["timestamp"].endswith("Z")


async def test_list_filters(dead_lettered: tuple[Settings, datetime]) -> None:
    settings, middle = dead_lettered
    middle_text = middle.isoformat()
    cases = [
        (["--reason", "invalid_json,not_utf8"], ["invalid_json", "not_utf8"]),
        (["--reason", "schema_mismatch"], ["schema_mismatch", "schema_mismatch"]),
        (["--source-topic", document_topic(settings)], ["schema_mismatch"]),
        (["--until", middle_text], ["invalid_json", "not_utf8"]),
        (["--since", middle_text], ["not_an_object", "schema_mismatch", "schema_mismatch", "too_large"]),
        (["--since", middle_text, "--reason", "too_large,not_utf8"], ["too_large"]),
        (["--since", "1h"], ["invalid_json", "not_an_object", "not_utf8", "schema_mismatch", "schema_mismatch",
                             "too_large"]),
        (["--until", "1h"], []),
    ]
    for arguments, expected in cases:
        result = await run_cli(settings, "dlq", "list", "--json", *arguments)
        assert result.returncode == 0, (arguments, result.stderr)
        assert _reasons(result.json_lines()) == expected, arguments
    limited = await run_cli(settings, "dlq", "list", "--limit", "2")
    assert len(limited.stdout.splitlines()) == 2
    empty = await run_cli(settings, "dlq", "list", "--until", "1h")
    assert empty.stdout == ""
    assert "no dead letters" in empty.stderr


async def test_list_rejects_bad_filters(dead_lettered: tuple[Settings, datetime]) -> None:
    settings, _ = dead_lettered
    cases = [
        (["--reason", "bogus"], ["'bogus'", "invalid_json"]),
        (["--since", "yesterday"], ["'yesterday'", "ISO-8601"]),
        (["--until", "2027-01-01T00:00:00"], ["no UTC offset", "Z"]),
        (["--since", "1m", "--until", "2h"], ["is not before until"]),
        (["--limit", "0"], ["--limit must be at least 1 (got 0)"]),
        (["--timeout", "0"], ["--timeout must be a positive number"]),
    ]
    for arguments, fragments in cases:
        result = await run_cli(settings, "dlq", "list", *arguments)
        assert result.returncode == 1, arguments
        assert result.stdout == ""
        for fragment in fragments:
            assert fragment in result.stderr, (arguments, result.stderr)


async def test_show_renders_each_kind(dead_lettered: tuple[Settings, datetime]) -> None:
    settings, _ = dead_lettered
    positions = {line["reason"]: f"{line['partition']}:{line['offset']}"
                 for line in (await run_cli(settings, "dlq", "list", "--json")).json_lines()}

    binary = await run_cli(settings, "dlq", "show", positions["not_utf8"])
    assert binary.returncode == 0, binary.stderr
    assert "not UTF-8, shown as hex" in binary.stdout
    assert "00000000  ff fe 00 62 69 6e 61 72 79" in binary.stdout
    assert f'source_topic      "{exh_topic(settings)}"' in binary.stdout
    assert f'consumer_group    "{settings.consumer_group}"' in binary.stdout

    text = await run_cli(settings, "dlq", "show", positions["invalid_json"])
    assert "UTF-8 text that is not JSON, shown escaped" in text.stdout
    assert '"{\\"id\\": \\"truncated\\","' in text.stdout
    assert 'reason            "invalid_json"' in text.stdout

    large = await run_cli(settings, "dlq", "show", positions["too_large"])
    assert "JSON" in large.stdout
    assert '\n  "id": "e5",\n' in large.stdout
    assert 'key          "e5"' in large.stdout


async def test_show_rejects_bad_positions(dead_lettered: tuple[Settings, datetime]) -> None:
    settings, _ = dead_lettered
    missing_partition = await run_cli(settings, "dlq", "show", "99:0")
    assert missing_partition.returncode == 1
    assert "partition 99 does not exist" in missing_partition.stderr
    past_end = await run_cli(settings, "dlq", "show", "0:100000")
    assert past_end.returncode == 1
    assert "no record at 0:100000" in past_end.stderr
    malformed = await run_cli(settings, "dlq", "show", "first")
    assert malformed.returncode == 1
    assert "PARTITION:OFFSET" in malformed.stderr


async def test_list_missing_or_empty_topic(settings: Settings) -> None:
    missing = await run_cli(settings, "dlq", "list")
    assert missing.returncode == 0, missing.stderr
    assert missing.stdout == ""
    assert "does not exist" in missing.stderr
    assert settings.dead_letter_topic in missing.stderr
    show = await run_cli(settings, "dlq", "show", "0:0")
    assert show.returncode == 1
    assert "does not exist" in show.stderr

    await ensure_topics(settings, [settings.dead_letter_topic])
    empty = await run_cli(settings, "dlq", "list", "--json")
    assert empty.returncode == 0, empty.stderr
    assert empty.stdout == ""
    assert "no dead letters" in empty.stderr


async def test_reader_lists_partitions_of_other_topics(settings: Settings) -> None:
    from taskservice.recovery.dead_letters import DeadLetterReader

    await ensure_topics(settings, [exh_topic(settings), settings.dead_letter_topic])
    async with DeadLetterReader(settings) as reader:
        # Replays into the source topic publish to these partitions, so they must be known.
        assert await reader.partitions(exh_topic(settings)) == list(range(settings.topic_partitions))
        assert await reader.partitions("no-such-topic-here") is None
