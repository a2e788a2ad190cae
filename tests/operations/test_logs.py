"""Structured logs: the lines of a task's life carry its ids, and function secrets never appear."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

from taskservice.config import Settings
from tests.support import ServiceProcess, exh_event, fetch, prepare, publish, set_function_env, wait_for

SECRET = "s3cr3t-value-7f2c9a41"
OTHER_SECRET = "an0ther-s3cret-0b7d"

# The fields each event must carry, and its level.
REQUIRED_FIELDS = {
    "task_created": ("DEBUG", {"task_id", "function", "event_id", "topic", "partition", "offset", "group_id"}),
    "task_claimed": ("DEBUG", {"task_id", "function", "attempt", "event_id", "worker_id"}),
    "task_complete": ("DEBUG", {"task_id", "function", "attempt", "worker_id"}),
    "task_retried": ("INFO", {"task_id", "function", "attempt", "worker_id"}),
    "task_failed": ("ERROR", {"task_id", "function", "attempt", "worker_id"}),
    "outbox_published": ("DEBUG", {"task_id", "attempt", "topic"}),
    "record_dead_lettered": ("WARNING", {"topic", "partition", "offset", "reason", "group_id"}),
}
LOGGED_ONCE = ("service_started", "ingest_started", "worker_started", "relay_started",
               "ingest_stopped", "worker_stopped", "relay_stopped", "service_stopped")


def _read_log(path: Path) -> tuple[str, list[dict[str, Any]]]:
    text = path.read_text()
    records = []
    for number, line in enumerate(text.splitlines(), 1):
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as exc:
            raise AssertionError(f"line {number} of {path} is not JSON: {line[:200]}") from exc
    return text, records


async def _run_service(settings: Settings, log_path: Path) -> None:
    topic = next(topic for topic, fmt in settings.topics.items() if fmt == "exh")
    with ServiceProcess(settings, log_path=log_path) as service:
        await publish(settings, topic, [exh_event("E1", "user_deleted"), exh_event("E2", "user_deleted"),
                                        exh_event("F1", "user_failed"), exh_event("S1", "env_requested"),
                                        b"\xff not UTF-8"])

        async def settled() -> bool:
            rows = await fetch(settings, """
                SELECT count(*) FILTER (WHERE status IN ('new', 'inProgress')) AS open,
                       count(*) FILTER (WHERE status = 'failed') AS failed,
                       count(*) FILTER (WHERE status = 'complete') AS complete,
                       (SELECT count(*) FROM outbox WHERE sent_at IS NULL) AS unsent
                FROM tasks""")
            row = rows[0]
            return row["open"] == 0 and row["failed"] == 1 and row["complete"] == 3 and row["unsent"] == 0

        await wait_for(settled, timeout=60, message="every task final and every result published")
        assert service.terminate(timeout=60) == 0, f"the service did not stop cleanly; see {log_path}"


async def test_task_life_carries_ids_and_hides_secrets(settings: Settings, tmp_path: Path) -> None:
    settings = settings.model_copy(update={"log_format": "json", "log_level": "DEBUG", "topic_partitions": 1})
    await prepare(settings, [("user_deleted", "echo"), ("user_failed", "fail-retry"), ("env_requested", "env-probe")])
    await set_function_env(settings, "env-probe", "PROBE_SETTING", SECRET)
    await set_function_env(settings, "echo", "API_TOKEN", OTHER_SECRET)
    log_path = tmp_path / "service.log"
    await _run_service(settings, log_path)
    text, records = _read_log(log_path)

    probe = await fetch(settings, "SELECT result::text AS result FROM tasks WHERE function_name = 'env-probe'")
    assert json.loads(probe[0]["result"])["probe"] == SECRET, "the function did not see its environment variable"
    assert SECRET not in text, f"the env-probe secret appears in the service log {log_path}"
    assert OTHER_SECRET not in text, f"the echo secret appears in the service log {log_path}"

    for record in records:
        event = record.get("event")
        if event in REQUIRED_FIELDS:
            level, fields = REQUIRED_FIELDS[event]
            missing = fields - {key for key, value in record.items() if value is not None}
            assert not missing, f"{event} line lacks {sorted(missing)}: {record}"
            assert record["level"] == level, f"{event} logged at {record['level']}, expected {level}"

    counts = Counter(record.get("event") for record in records)
    for event in LOGGED_ONCE:
        assert counts[event] == 1, f"{event} logged {counts[event]} times, expected once"
    assert counts["record_dead_lettered"] == 1
    assert counts["task_retried"] == 2, counts
    assert counts["task_failed"] == 1, counts

    echo = await fetch(settings, "SELECT id FROM tasks WHERE event_id = 'E1'")
    life = [record for record in records if record.get("task_id") == echo[0]["id"]]
    assert [record["event"] for record in life] == ["task_created", "task_claimed", "task_complete",
                                                    "outbox_published"], life
    assert life[0]["event_id"] == "E1", life[0]
    assert life[1]["event_id"] == "E1", life[1]
    assert [record.get("attempt") for record in life[1:]] == [1, 1, 1]

    chain = await fetch(settings, "SELECT id, attempt FROM tasks WHERE event_id = 'F1' ORDER BY attempt")
    for row in chain:
        claimed = [record for record in records
                   if record.get("event") == "task_claimed" and record["task_id"] == row["id"]]
        assert [record["attempt"] for record in claimed] == [row["attempt"]], f"claims of {row['id']}: {claimed}"
        assert claimed[0]["event_id"] == "F1"
