"""Tests of log capture in the function runtime: print, logging, layout and the per-task cap."""

from __future__ import annotations

import re
from datetime import datetime, timedelta

import pytest

from tests.unit.runtime_functions.support import make_spec, make_tasks
from taskservice.functions import RuntimePool

pytestmark = pytest.mark.timeout(30)

LINE_LAYOUT = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z)\t([^\t]*)\t([A-Z]+)\t(.*)$", re.DOTALL)


@pytest.fixture
async def pool():
    runtime_pool = RuntimePool()
    yield runtime_pool
    await runtime_pool.close()


def texts(outcome) -> list[tuple[str, str]]:
    """Return (level, text) of each log line, checking the line layout on the way."""
    entries = []
    for timestamp, line in outcome.logs:
        match = LINE_LAYOUT.match(line)
        assert match, line
        assert match.group(2) == outcome.task_id
        line_time = datetime.fromisoformat(match.group(1).replace("Z", "+00:00"))
        assert abs(line_time - timestamp) < timedelta(milliseconds=1)
        entries.append((match.group(3), match.group(4)))
    return entries


async def test_print_and_logging_captured(pool):
    outcomes = await pool.run_batch(make_spec("handlers.print_and_log", name="logger-test"), make_tasks(1, 2))

    for outcome in outcomes:
        task_id = outcome.task_id
        entries = texts(outcome)
        assert ("INFO", f"out {task_id}") in entries
        assert ("INFO", "first") in entries
        assert ("INFO", "second") in entries
        assert ("INFO", "no newline") in entries
        assert ("ERROR", f"err {task_id}") in entries
        assert ("WARNING", f"warned {task_id}") in entries
        assert ("INFO", f"context logger {task_id}") in entries
        tracebacks = [text for level, text in entries if text.startswith("with traceback")]
        assert len(tracebacks) == 1
        assert "Traceback (most recent call last):" in tracebacks[0]
        assert tracebacks[0].endswith("RuntimeError: caught")
        assert [level for level, text in entries if text.startswith("with traceback")] == ["ERROR"]


async def test_logs_belong_to_their_task(pool):
    outcomes = await pool.run_batch(make_spec("handlers.print_and_log"), make_tasks(1, 2, 3))

    for outcome in outcomes:
        other_ids = {"t0", "t1", "t2"} - {outcome.task_id}
        for _, text in texts(outcome):
            assert not any(text.endswith(f" {other}") for other in other_ids), text


async def test_log_timestamps_within_task(pool):
    (outcome,) = await pool.run_batch(make_spec("handlers.print_and_log"), make_tasks(1))

    for timestamp, _ in outcome.logs:
        assert outcome.started_at <= timestamp <= outcome.finished_at


async def test_log_cap_drops_excess():
    runtime_pool = RuntimePool(max_log_bytes=2000)
    try:
        outcomes = await runtime_pool.run_batch(make_spec("handlers.log_flood"), make_tasks(1000, 3))
    finally:
        await runtime_pool.close()

    flooded, small = outcomes
    assert flooded.ok
    kept = flooded.logs[:-1]
    assert 0 < len(kept) < 1000
    assert sum(len(line.encode()) for _, line in kept) <= 2000
    last_level, last_text = texts(flooded)[-1]
    assert last_level == "WARNING"
    match = re.fullmatch(r"Dropped (\d+) bytes of log output because the task exceeded the log limit of 2000 bytes", last_text)
    assert match
    line_bytes = len(kept[0][1].encode())
    assert int(match.group(1)) == (1000 - len(kept)) * line_bytes
    assert len(small.logs) == 3
    assert not any("Dropped" in line for _, line in small.logs)


async def test_large_log_under_cap_kept(pool):
    (outcome,) = await pool.run_batch(make_spec("handlers.log_flood"), make_tasks(2000))

    assert len(outcome.logs) == 2000
    assert texts(outcome)[-1] == ("INFO", "line 001999 " + "x" * 40)


async def test_import_output_goes_to_first_task(pool):
    spec = make_spec("noisy_import.handler")

    first = await pool.run_batch(spec, make_tasks(1, 2))
    second = await pool.run_batch(spec, make_tasks(3))

    assert texts(first[0]) == [("INFO", "loading noisy module"), ("WARNING", "configured from defaults")]
    assert texts(first[1]) == []
    assert texts(second[0]) == []
