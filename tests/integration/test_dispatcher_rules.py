"""Dispatcher rules end to end: filters, transitions, input mapping, keys, delay and priority."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest

from taskservice.admin import create_dispatcher
from taskservice.config import Settings
from tests.support import (
    REPOSITORY_ROOT, TopicReader, committed_offsets, document_event, exh_event, fetch, next_offsets, prepare, publish,
    running_service, settings_environment, wait_for,
)

EVENT_TIME = datetime(2027, 1, 1, tzinfo=UTC)


def _topic(settings: Settings, topic_format: str) -> str:
    return next(topic for topic, fmt in settings.topics.items() if fmt == topic_format)


def _transition(event_id: str, document_id: str, name: str, to_status: str) -> dict[str, Any]:
    event = document_event(event_id, "document.transitioned")
    event["data"].update(documentId=document_id, fromStatus="new", toStatus=to_status, transitionName=name)
    return event


async def _tasks(settings: Settings) -> list[dict[str, Any]]:
    rows = await fetch(settings, "SELECT function_name, data, priority, start_timestamp, concurrency_key, "
                                 "idempotency_key, event_id FROM tasks ORDER BY event_id, function_name")
    return [dict(row) | {"data": orjson.loads(row["data"]) if isinstance(row["data"], str) else row["data"]}
            for row in rows]


async def _task_count(settings: Settings, expected: int) -> bool:
    return (await fetch(settings, "SELECT count(*) AS n FROM tasks"))[0]["n"] >= expected


async def test_rules_shape_created_tasks(settings: Settings) -> None:
    await prepare(settings)
    await create_dispatcher(settings, "document.created", "echo", "high-readings", rules={
        "filter": {"data": {"data": {"systolic": [{"numeric": [">=", 140]}]}}},
        "input": {"documentId.$": "$.data.documentId", "systolic.$": "$.data.data.systolic"},
        "includeEvent": False,
        "deduplicationKey": "$.data.documentId",
        "priority": 7,
    })
    await create_dispatcher(settings, "document.created", "number", "every-reading", rules={
        "concurrencyKey": "patient-{$.data.data.patient}",
        "delaySeconds": 90,
    })
    await create_dispatcher(settings, "document.transitioned", "sleep", "analyzed", {"seconds": 0}, rules={
        "transition": {"name": "analyze", "toStatus": "analyzed"},
    })
    events = [
        document_event("e1", systolic=150, patient="p1"),
        document_event("e2", systolic=120, patient="p1"),
        # Same document as e1: the deduplication key allows one high-reading task per document.
        {**document_event("e3", systolic=160, patient="p2"),
         "data": {**document_event("e1", systolic=160, patient="p2")["data"]}},
        _transition("t1", "doc-a", "analyze", "analyzed"),
        _transition("t2", "doc-b", "analyze", "rejected"),
        _transition("t3", "doc-c", "review", "analyzed"),
    ]
    topic = _topic(settings, "cloudevents")
    async with running_service(settings, ("ingest",)):
        # One partition keeps the order, so the first event of a document wins the deduplication.
        published = next_offsets(await publish(settings, topic, events, partition=0))
        await wait_for(lambda: _committed(settings, topic, published), timeout=60, message="every record committed")

    tasks = await _tasks(settings)
    by_function: dict[str, list[dict[str, Any]]] = {}
    for task in tasks:
        by_function.setdefault(task["function_name"], []).append(task)

    [high] = by_function["echo"]
    assert high["event_id"] == "e1"
    assert high["data"] == {"documentId": "doc-e1", "systolic": 150}
    assert high["priority"] == 7
    assert high["idempotency_key"].endswith(":doc-e1")

    every = by_function["number"]
    assert [task["event_id"] for task in every] == ["e1", "e2", "e3"]
    assert [task["concurrency_key"] for task in every] == ["patient-p1", "patient-p1", "patient-p2"]
    assert all(task["start_timestamp"] == EVENT_TIME + timedelta(seconds=90) for task in every)
    assert all(task["data"]["event"]["id"] == task["event_id"] for task in every)
    assert all(task["priority"] == 0 for task in every)

    [analyzed] = by_function["sleep"]
    assert analyzed["event_id"] == "t1"
    assert analyzed["data"] == {"seconds": 0, "schemaId": "5f0000000000000000000001", "documentId": "doc-a"}


async def _committed(settings: Settings, topic: str, expected: dict[int, int]) -> bool:
    committed = await committed_offsets(settings, topic)
    return all((committed.get(partition) or 0) >= offset for partition, offset in expected.items())


async def test_missing_mapped_path_dead_letters(settings: Settings) -> None:
    await prepare(settings)
    await create_dispatcher(settings, "user_deleted", "echo", "needs-user", rules={
        "input": {"userId.$": "$.content.userId"},
    })
    await create_dispatcher(settings, "user_deleted", "number", "any-user")
    topic = _topic(settings, "exh")
    async with TopicReader(settings, settings.dead_letter_topic) as dead_letters, \
            running_service(settings, ("ingest",)):
        await publish(settings, topic, [exh_event("bad", other="x"), exh_event("good", userId="u7")])
        await wait_for(lambda: _task_count(settings, 2), timeout=60, message="tasks of the good event")
        await wait_for(lambda: _has(dead_letters, 1), timeout=30, message="one dead letter")

    tasks = await _tasks(settings)
    # All or nothing per event: the bad event created no task for either action.
    assert sorted((task["event_id"], task["function_name"]) for task in tasks) == [("good", "echo"), ("good", "number")]
    assert next(task for task in tasks if task["function_name"] == "echo")["data"]["userId"] == "u7"
    [record] = dead_letters.records
    headers = {name: value.decode() for name, value in record.headers}
    assert headers["reason"] == "mapping_failed"
    assert "input.userId.$: path $.content.userId found nothing" in headers["detail"]
    assert orjson.loads(record.value)["id"] == "bad"


async def _has(reader: TopicReader, expected: int) -> bool:
    return len(reader.records) >= expected


def _cli(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "taskservice.cli", "dispatchers", "create", *args],
                          env=settings_environment(settings), cwd=REPOSITORY_ROOT, capture_output=True, text=True,
                          timeout=60)


async def test_cli_creates_dispatcher_with_rules(settings: Settings) -> None:
    completed = _cli(settings, "--event-type", "document.created", "--function", "echo", "--name", "cli-rules",
                     "--filter", '{"data": {"status": ["analyzed"]}}', "--input", '{"id.$": "$.data.documentId"}',
                     "--no-event", "--deduplication-key", "$.data.documentId", "--concurrency-key", "{$.subject}",
                     "--delay", "30", "--priority", "4")
    assert completed.returncode == 0, completed.stderr
    dispatcher_id = completed.stdout.strip()
    [dispatcher] = await fetch(settings, "SELECT filter::text AS filter FROM dispatchers WHERE id = $1", dispatcher_id)
    assert orjson.loads(dispatcher["filter"]) == {"data": {"status": ["analyzed"]}}
    [action] = await fetch(settings, "SELECT input::text AS input, include_event, deduplication_key, concurrency_key, "
                                     "delay_s, priority FROM dispatcher_actions WHERE dispatcher_id = $1",
                           dispatcher_id)
    assert orjson.loads(action["input"]) == {"id.$": "$.data.documentId"}
    assert action["include_event"] is False
    assert action["deduplication_key"] == "$.data.documentId"
    assert action["concurrency_key"] == "{$.subject}"
    assert action["delay_s"] == 30
    assert action["priority"] == 4


@pytest.mark.parametrize(("args", "message"), [
    (["--filter", "{bad"], "--filter '{bad' is not valid JSON"),
    (["--filter", "[1]"], "--filter must be a JSON object"),
    (["--filter", '{"data": {"status": "x"}}'], "data.status"),
    (["--input", '{"a.$": "a"}'], "must start with $"),
    (["--transition", '{"toStatus": "done"}'], "transition applies to eventType 'document.transitioned'"),
    (["--delay", "-5"], "delaySeconds"),
])
async def test_cli_rejects_malformed_rules(settings: Settings, args: list[str], message: str) -> None:
    completed = _cli(settings, "--event-type", "document.created", "--function", "echo", *args)
    assert completed.returncode != 0
    assert message in completed.stderr
    assert (await fetch(settings, "SELECT count(*) AS n FROM dispatchers"))[0]["n"] == 0
