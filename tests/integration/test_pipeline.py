"""The whole flow: events on Kafka become tasks, run, and publish results."""

from __future__ import annotations

import asyncio
from pathlib import Path

import orjson

from taskservice.config import Settings
from tests.support import (
    TopicReader, document_event, exh_event, fetch, prepare, publish, running_service, wait_for,
)


TEST_FUNCTIONS = Path(__file__).resolve().parents[1] / "functions"


def _topic(settings: Settings, topic_format: str) -> str:
    return next(topic for topic, fmt in settings.topics.items() if fmt == topic_format)


async def test_events_become_tasks_and_results(settings: Settings) -> None:
    await prepare(settings, [("user_deleted", "echo"), ("document.created", "echo"), ("document.created", "fail")])
    exh = [exh_event(f"user-{i}", n=i) for i in range(20)]
    documents = [document_event(f"doc-{i}", systolic=120 + i) for i in range(10)]

    async with TopicReader(settings, settings.results_topic) as results, running_service(settings):
        await publish(settings, _topic(settings, "exh"), exh)
        await publish(settings, _topic(settings, "cloudevents"), documents)
        await wait_for(lambda: _count(results, 40), timeout=60, message="40 results")

    rows = await fetch(settings, "SELECT function_name, status, data, event_id, attempt FROM tasks")
    assert len(rows) == 40
    by_status = sorted((row["function_name"], row["status"]) for row in rows)
    assert by_status.count(("echo", "complete")) == 30
    assert by_status.count(("fail", "failed")) == 10
    for row in rows:
        data = orjson.loads(row["data"]) if isinstance(row["data"], str) else row["data"]
        assert data["event"]["id"] == row["event_id"]
        assert row["attempt"] == 1

    messages = results.json_values()
    assert len({message["taskId"] for message in messages}) == 40
    echo_results = [m for m in messages if m["functionName"] == "echo" and m["eventId"].startswith("user-")]
    assert sorted(m["result"]["n"] for m in echo_results) == list(range(20))
    failures = [m for m in messages if m["status"] == "failed"]
    assert len(failures) == 10
    assert all(m["error"]["name"] == "RuntimeError" for m in failures)
    assert all(record.key.decode() == orjson.loads(record.value)["taskId"] for record in results.records)


async def test_failed_task_keeps_logs(settings: Settings) -> None:
    await prepare(settings, [("user_deleted", "fail")])
    async with TopicReader(settings, settings.results_topic) as results, running_service(settings):
        await publish(settings, _topic(settings, "exh"), [exh_event("only")])
        await wait_for(lambda: _count(results, 1), timeout=60, message="1 result")
    logs = await fetch(settings, "SELECT message FROM task_logs ORDER BY line_number")
    messages = [row["message"] for row in logs]
    assert any("about to fail" in message for message in messages)
    assert any("RuntimeError" in message for message in messages)


async def test_redelivered_records_create_no_second_task(settings: Settings) -> None:
    await prepare(settings, [("user_deleted", "echo")])
    events = [exh_event(f"e{i}") for i in range(10)]
    async with TopicReader(settings, settings.results_topic) as results:
        async with running_service(settings):
            await publish(settings, _topic(settings, "exh"), events)
            await wait_for(lambda: _count(results, 10), timeout=60, message="10 results")
        # A new consumer group reads every record again from the start.
        second = settings.model_copy(update={"consumer_group": settings.consumer_group + "-again"})
        async with running_service(second, ("ingest",)):
            await wait_for(lambda: _group_done(second, 10), timeout=60, message="second group consumed")
    rows = await fetch(settings, "SELECT count(*) AS n FROM tasks")
    assert rows[0]["n"] == 10
    assert len(results.records) == 10


async def _group_done(settings: Settings, expected: int) -> bool:
    from tests.support import committed_offsets

    offsets = await committed_offsets(settings, _topic(settings, "exh"))
    return sum(offset or 0 for offset in offsets.values()) >= expected


async def _count(reader: TopicReader, expected: int) -> bool:
    return len(reader.records) >= expected


async def test_function_registered_while_running_runs(settings: Settings, tmp_path) -> None:
    import shutil

    from taskservice.admin import create_dispatcher, register_functions

    await prepare(settings, [("user_deleted", "echo")])
    async with TopicReader(settings, settings.results_topic) as results, running_service(settings):
        await publish(settings, _topic(settings, "exh"), [exh_event("before")])
        await wait_for(lambda: _count(results, 1), timeout=60, message="the first result")
        # A function and a dispatcher added while ingest and the worker run, as `functions sync` does.
        folder = tmp_path / "late-echo"
        shutil.copytree(TEST_FUNCTIONS / "echo", folder)
        (folder / "function.toml").write_text(
            (folder / "function.toml").read_text().replace('name = "echo"', 'name = "late-echo"'))
        await register_functions(settings, tmp_path)
        await create_dispatcher(settings, "user_created", "late-echo")
        await asyncio.sleep(settings.dispatcher_refresh_interval_s + 0.5)
        await publish(settings, _topic(settings, "exh"), [exh_event("after", "user_created")])
        await wait_for(lambda: _count(results, 2), timeout=60, message="the late function's result")
    late = next(message for message in results.json_values() if message["functionName"] == "late-echo")
    assert late["status"] == "complete", late
