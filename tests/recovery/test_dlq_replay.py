"""`taskservice dlq replay` into the source topic, with ingest running, and straight into tasks."""

from __future__ import annotations

import json

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from taskservice.config import Settings
from tests.recovery.common import dead_letter_through_ingest, exh_topic, large_event, run_cli
from tests.support import TopicReader, committed_offsets, fetch, next_offsets, prepare, running_service, wait_for

LARGE_IDS = ("e1", "e2", "e3")
ORIGINAL_HEADERS = [("trace_id", b"trace-1"), ("tenant", b"\xff\x00")]


@pytest.fixture
async def replayable(settings: Settings) -> Settings:
    """Dead-letter three events as too large for a 1,024-byte task-data limit, and two records of invalid JSON.

    Returns settings whose limit is the default again, under which the three events fit.
    """
    small = settings.model_copy(update={"max_task_data_bytes": 1_024})
    await prepare(small, [("user_deleted", "echo")])
    exh = exh_topic(small)
    batch = [(exh, large_event(event_id)) for event_id in LARGE_IDS]
    batch += [(exh, b'{"id": "broken-1",'), (exh, b'{"id": "broken-2",')]
    await dead_letter_through_ingest(small, [batch], headers=ORIGINAL_HEADERS)
    return settings


async def _task_keys(settings: Settings) -> list[str]:
    rows = await fetch(settings, "SELECT idempotency_key FROM tasks ORDER BY idempotency_key")
    return [row["idempotency_key"] for row in rows]


def _outcomes(lines: list[dict]) -> list[str]:
    return sorted(line["outcome"] for line in lines)


async def _read_topic(settings: Settings, topic: str) -> list:
    async with TopicReader(settings, topic) as reader:
        await wait_for(reader.caught_up, timeout=30, message=f"{topic} read to its end")
        return list(reader.records)


async def _ingest_caught_up(settings: Settings) -> None:
    topic = exh_topic(settings)
    expected = next_offsets(await _read_topic(settings, topic))

    async def committed() -> bool:
        offsets = await committed_offsets(settings, topic)
        return all(offsets.get(partition) == offset for partition, offset in expected.items())

    await wait_for(committed, timeout=60, message=f"ingest committed {expected} on {topic}")


async def test_replay_to_source_once(replayable: Settings) -> None:
    settings = replayable
    exh = exh_topic(settings)
    async with running_service(settings, ("ingest",)):
        dry = await run_cli(settings, "dlq", "replay", "--to", "source", "--reason", "too_large", "--dry-run")
        assert dry.returncode == 0, dry.stderr
        assert dry.stdout.count("  would_publish  ") == 3
        assert "replay to source (dry run): 3 would_publish" in dry.stdout
        assert len(await _read_topic(settings, exh)) == 5

        first = await run_cli(settings, "dlq", "replay", "--to", "source", "--reason", "too_large", "--json")
        assert first.returncode == 0, first.stderr
        assert _outcomes(first.json_lines()) == ["published"] * 3
        await wait_for(lambda: _has_tasks(settings, 3), timeout=60, message="3 tasks from the replayed records")

        second = await run_cli(settings, "dlq", "replay", "--to", "source", "--reason", "too_large", "--json")
        assert second.returncode == 0, second.stderr
        skipped = second.json_lines()
        assert _outcomes(skipped) == ["skipped"] * 3
        assert all("--force" in line["detail"] for line in skipped)
        assert len(await _read_topic(settings, exh)) == 8

        forced = await run_cli(settings, "dlq", "replay", "--to", "source", "--reason", "too_large", "--force")
        assert forced.returncode == 0, forced.stderr
        assert forced.stdout.count("  published  ") == 3
        await _ingest_caught_up(settings)

    keys = await _task_keys(settings)
    assert len(keys) == 3
    assert len(set(keys)) == 3
    assert all(key.startswith("event:exh:e") for key in keys)
    replays = await fetch(settings, "SELECT source_offset, replay_count FROM dead_letter_replays")
    assert sorted(row["replay_count"] for row in replays) == [2, 2, 2]

    records = await _read_topic(settings, exh)
    assert len(records) == 11
    copies = [record for record in records if "replayed_from" in dict(record.headers)]
    assert len(copies) == 6
    assert sorted({record.key for record in copies}) == [b"e1", b"e2", b"e3"]
    assert all(dict(record.headers)["replayed_from"].startswith(settings.dead_letter_topic.encode() + b":")
               for record in copies)
    for record in copies:
        assert [name for name, _ in record.headers] == ["trace_id", "tenant", "replayed_from"]
        assert list(record.headers)[:2] == ORIGINAL_HEADERS
    assert {orjson.loads(record.value)["id"] for record in copies} == set(LARGE_IDS)


async def _has_tasks(settings: Settings, count: int) -> bool:
    return len(await _task_keys(settings)) >= count


async def _copy_dead_letter(settings: Settings, event_id: str) -> None:
    """Write a second dead letter of the same source record, as ingest does after a crash before its commit."""
    original = next(record for record in await _read_topic(settings, settings.dead_letter_topic)
                    if record.key == event_id.encode())
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers, enable_idempotence=False)
    await producer.start()
    try:
        await producer.send_and_wait(settings.dead_letter_topic, value=original.value, key=original.key,
                                     headers=list(original.headers))
    finally:
        await producer.stop()


async def test_replay_to_matching_once(replayable: Settings) -> None:
    settings = replayable
    await _copy_dead_letter(settings, "e1")

    dry = await run_cli(settings, "dlq", "replay", "--to", "matching", "--dry-run", "--json")
    assert dry.returncode == 3, dry.stderr
    assert _outcomes(dry.json_lines()) == ["failed", "failed", "skipped", "would_match", "would_match", "would_match"]
    assert await _task_keys(settings) == []

    first = await run_cli(settings, "dlq", "replay", "--to", "matching", "--json")
    assert first.returncode == 3, first.stderr
    lines = first.json_lines()
    assert _outcomes(lines) == ["failed", "failed", "matched", "matched", "matched", "skipped"]
    matched = [line for line in lines if line["outcome"] == "matched"]
    assert [len(line["task_ids"]) for line in matched] == [1, 1, 1]
    assert all(line["existing_tasks"] == 0 for line in matched)
    failed = [line for line in lines if line["outcome"] == "failed"]
    assert [line["reason"] for line in failed] == ["invalid_json", "invalid_json"]
    assert all("not valid JSON" in line["detail"] for line in failed)
    assert "replay to matching: 2 failed, 3 matched, 1 skipped" in first.stderr

    rows = await fetch(settings, "SELECT id, function_name, source, idempotency_key, data FROM tasks ORDER BY id")
    assert len(rows) == 3
    assert sorted(row["id"] for row in rows) == sorted(line["task_ids"][0] for line in matched)
    assert {row["function_name"] for row in rows} == {"echo"}
    assert {row["source"] for row in rows} == {"event"}
    assert sorted(json.loads(row["data"])["event"]["id"] for row in rows) == list(LARGE_IDS)
    keys = await _task_keys(settings)

    second = await run_cli(settings, "dlq", "replay", "--to", "matching")
    assert second.returncode == 3, second.stderr
    assert second.stdout.count("created 0 task(s); 1 existed already") == 3
    assert await _task_keys(settings) == keys

    # Nothing went back to the dead-letter topic: five dead letters and the copy.
    assert len(await _read_topic(settings, settings.dead_letter_topic)) == 6

    forced = await run_cli(settings, "dlq", "replay", "--to", "matching", "--force")
    assert forced.returncode == 1
    assert "--force applies to --to source only" in forced.stderr

    # The source replay of the same events creates nothing either: same idempotency keys.
    async with running_service(settings, ("ingest",)):
        again = await run_cli(settings, "dlq", "replay", "--to", "source", "--reason", "too_large")
        assert again.returncode == 0, again.stderr
        await _ingest_caught_up(settings)
    assert await _task_keys(settings) == keys


async def test_replay_reports_unmatched(replayable: Settings) -> None:
    settings = replayable
    await fetch(settings, "DELETE FROM dispatchers")
    result = await run_cli(settings, "dlq", "replay", "--to", "matching", "--reason", "too_large", "--json")
    assert result.returncode == 0, result.stderr
    lines = result.json_lines()
    assert _outcomes(lines) == ["unmatched"] * 3
    assert all("matches no dispatcher" in line["detail"] for line in lines)
    assert await _task_keys(settings) == []
