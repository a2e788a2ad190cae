"""Lost workers and crashing functions: lease recovery, retry limits and backoff.

A worker killed with SIGKILL stops renewing the leases of its running tasks. The sweep of
the next instance must move each such task out of inProgress within the lease plus one
sweep interval, as a `zombieTaskCleaned` failure that follows the function's retry policy.
A function that crashes its own runtime process, or raises, must be retried only as its
retry policy allows, with the configured backoff between attempts.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from prometheus_client import REGISTRY

from taskservice.config import Settings
from taskservice.embedded.services import free_loopback_port
from tests.faults.common import (
    exh_topic, http_get, metric_total, nothing_pending, records_by_task, wait_for_log,
)
from tests.support import (
    ServiceProcess, TopicReader, exh_event, fetch, prepare, publish, read_json_lines, running_service,
    set_function_env, wait_for,
)

LEASE_S = 5.0
HEARTBEAT_S = 1.0
SWEEP_S = 1.0
# Process start-up, poll intervals and clock reads between the test and PostgreSQL.
SLACK_S = 2.0
LONG_TASK_S = 20
RUNNING_BEFORE_KILL_S = 3.0
# Ingest joins its consumer group (about 2 s on Tansu) before the fast task is stored.
FAST_TASK_DEADLINE_S = LEASE_S + SWEEP_S + 10
ALL_ROLES = "ingest,worker,relay,sweeper"


def _fast_lease(settings: Settings, **updates: Any) -> Settings:
    return settings.model_copy(update={"lease_s": LEASE_S, "heartbeat_interval_s": HEARTBEAT_S,
                                       "sweep_interval_s": SWEEP_S, "topic_partitions": 1, **updates})


# A worker killed in the middle of a long task -------------------------------------------------


@dataclass
class KilledRun:
    """What the test saw around the kill of the only instance."""

    kill_at: float = 0.0
    replacement_ready_at: float = 0.0
    status_at_restart: str = ""
    fast_published_at: float = 0.0
    rows: dict[str, Any] = field(default_factory=dict)
    results: list[Any] = field(default_factory=list)
    invocations: list[dict[str, Any]] = field(default_factory=list)
    tasks_running_gauge: float | None = None
    metrics_text: str = ""


async def _kill_during_long_task(settings: Settings, tmp_path: Path, function: str, down_s: float) -> KilledRun:
    """Kill the only instance 3 s into a 20 s task, restart it after down_s, then publish a fast task.

    Concurrency is one task at a time across the service (max_running_tasks=1), so the
    fast task can only run once the killed run stops holding the slot.
    """
    settings = _fast_lease(settings, max_running_tasks=1)
    invocations = tmp_path / "invocations.jsonl"
    await prepare(settings, [("user_deleted", function), ("user_created", "echo")])
    await set_function_env(settings, function, "SLEEP_SECONDS", str(LONG_TASK_S))
    for name in (function, "echo"):
        await set_function_env(settings, name, "INVOCATION_LOG", str(invocations))
    http_port = free_loopback_port()
    replacement_settings = settings.model_copy(update={"http_port": http_port})
    topic = exh_topic(settings)
    run = KilledRun()

    async def long_task_status() -> str:
        rows = await fetch(settings, "SELECT status FROM tasks WHERE event_id = 'long-1' AND source = 'event'")
        return rows[0]["status"] if rows else ""

    async with TopicReader(settings, settings.results_topic) as results:
        with ServiceProcess(settings, roles=ALL_ROLES, log_path=tmp_path / "killed.log") as killed:
            await publish(settings, topic, [exh_event("long-1", "user_deleted")])

            async def long_task_running() -> bool:
                return await long_task_status() == "inProgress"

            await wait_for(long_task_running, timeout=30, message="the long task inProgress")
            await asyncio.sleep(RUNNING_BEFORE_KILL_S)
            killed.kill()
            run.kill_at = time.time()
        await asyncio.sleep(down_s)
        run.status_at_restart = await long_task_status()

        replacement_log = tmp_path / "replacement.log"
        with ServiceProcess(replacement_settings, roles=ALL_ROLES + ",http", log_path=replacement_log) as replacement:
            run.replacement_ready_at = await wait_for_log(replacement_log, "service running roles", timeout=30)
            run.fast_published_at = time.time()
            await publish(settings, topic, [exh_event("fast-1", "user_created")])

            async def settled() -> bool:
                fast = await fetch(settings, "SELECT 1 FROM tasks WHERE event_id = 'fast-1'")
                return bool(fast) and await nothing_pending(settings)

            await wait_for(settled, timeout=LONG_TASK_S + 40, message="every task final and every result published")
            rows = await fetch(settings, "SELECT * FROM tasks")

            async def results_read() -> bool:
                return len(results.records) >= len(rows) and await results.caught_up()

            await wait_for(results_read, timeout=30, message=f"{len(rows)} result messages read")
            _status, run.metrics_text = await http_get(http_port, "/metrics")
            run.tasks_running_gauge = metric_total(run.metrics_text, "taskservice_tasks_running")
            assert replacement.terminate(timeout=60) == 0, f"the replacement did not stop cleanly; see {replacement_log}"

    run.rows = {row["id"]: row for row in await fetch(settings, "SELECT * FROM tasks")}
    run.results = list(results.records)
    run.invocations = read_json_lines(invocations)
    return run


def _long_chain(run: KilledRun) -> list[Any]:
    return sorted((row for row in run.rows.values() if row["event_id"] == "long-1"), key=lambda row: row["attempt"])


def _fast_row(run: KilledRun) -> Any:
    [row] = [row for row in run.rows.values() if row["event_id"] == "fast-1"]
    return row


def _error_name(row: Any) -> str | None:
    error = row["error"]
    if isinstance(error, str):
        error = orjson.loads(error)
    return error["name"] if error else None


def _check_recovery(run: KilledRun) -> None:
    """Checks shared by every variant: recovery time, the fast task, result messages, the gauge."""
    first = _long_chain(run)[0]
    left_at = first["status_changed_timestamp"].timestamp()
    # The killed worker renewed the lease last before the kill, so the lease ran out by
    # kill + lease. A sweep runs once the replacement is up, then every sweep interval.
    deadline = max(run.kill_at + LEASE_S, run.replacement_ready_at) + SWEEP_S + SLACK_S
    assert first["status"] != "inProgress", "the killed run's task is still inProgress"
    assert left_at <= deadline, (
        f"the killed run left inProgress {left_at - run.kill_at:.1f} s after the kill, later than "
        f"{deadline - run.kill_at:.1f} s (lease {LEASE_S} s, sweep {SWEEP_S} s, replacement up after "
        f"{run.replacement_ready_at - run.kill_at:.1f} s)"
    )

    fast = _fast_row(run)
    fast_started_at = fast["started_timestamp"].timestamp()
    waited_for_slot = fast_started_at - max(fast["creation_timestamp"].timestamp(), left_at)
    assert fast["status"] == "complete", f"the fast task ended {fast['status']}"
    assert waited_for_slot <= SLACK_S, (
        f"the fast task started {waited_for_slot:.1f} s after it was stored and the killed run freed its "
        "slot; the stale run held the slot after it left inProgress"
    )
    assert fast["status_changed_timestamp"].timestamp() - run.fast_published_at <= FAST_TASK_DEADLINE_S, \
        f"the fast task took more than {FAST_TASK_DEADLINE_S} s from publish to complete"

    per_task = Counter(orjson.loads(record.value)["taskId"] for record in run.results)
    assert set(per_task) == set(run.rows), \
        f"result messages cover tasks {sorted(per_task)}, the task rows are {sorted(run.rows)}"
    assert set(per_task.values()) == {1}, f"a task has more than one result message: {dict(per_task)}"
    for record in run.results:
        message = orjson.loads(record.value)
        row = run.rows[message["taskId"]]
        assert message["status"] == row["status"], \
            f"result message of {row['id']} says {message['status']}, the task row {row['status']}"
        assert message["attempt"] == row["attempt"], f"result message of {row['id']} names another attempt"

    in_progress = [row["id"] for row in run.rows.values() if row["status"] == "inProgress"]
    assert not in_progress, f"tasks left inProgress: {in_progress}"
    assert run.tasks_running_gauge == 0, \
        f"taskservice_tasks_running of the replacement is {run.tasks_running_gauge}, expected 0"


async def test_killed_worker_task_fails_as_zombie(settings: Settings, tmp_path: Path) -> None:
    run = await _kill_during_long_task(settings, tmp_path, "sleep", down_s=0.5)
    _check_recovery(run)

    chain = _long_chain(run)
    assert len(chain) == 1, f"retries are disabled, yet the long task has {len(chain)} rows"
    assert chain[0]["status"] == "failed", f"the killed task ended {chain[0]['status']}, expected failed"
    assert _error_name(chain[0]) == "zombieTaskCleaned", f"the killed task failed with {_error_name(chain[0])}"
    assert chain[0]["attempt"] == 1, f"the killed task has attempt {chain[0]['attempt']}"
    long_runs = [line for line in run.invocations if line["task_id"] == chain[0]["id"]]
    assert long_runs == [], f"the killed run finished after all, or ran again: {long_runs}"


async def test_killed_worker_task_retried_once(settings: Settings, tmp_path: Path) -> None:
    run = await _kill_during_long_task(settings, tmp_path, "sleep-retry", down_s=0.5)
    _check_recovery(run)

    chain = _long_chain(run)
    assert [row["status"] for row in chain] == ["retried", "complete"], \
        f"the chain ended {[row['status'] for row in chain]}, expected a retried run and a complete retry"
    assert [row["attempt"] for row in chain] == [1, 2], f"the chain's attempts are {[row['attempt'] for row in chain]}"
    assert _error_name(chain[0]) == "zombieTaskCleaned", f"the killed run failed with {_error_name(chain[0])}"
    assert chain[0]["retried_by_task_id"] == chain[1]["id"], "the killed task does not link to its retry"
    assert list(chain[1]["retry_for_task_ids"]) == [chain[0]["id"]], "the retry does not link to the killed task"
    attempts = sorted(line["attempt"] for line in run.invocations if line["task_id"] in {row["id"] for row in chain})
    assert attempts == [1, 2], f"the invocation log shows attempts {attempts}, expected the killed 1 and the retry 2"


async def test_worker_down_past_lease_task_fails(settings: Settings, tmp_path: Path) -> None:
    run = await _kill_during_long_task(settings, tmp_path, "sleep", down_s=LEASE_S + 3)
    _check_recovery(run)

    chain = _long_chain(run)
    assert run.status_at_restart == "inProgress", \
        f"with no instance running the task should still be inProgress, it was {run.status_at_restart}"
    assert [row["status"] for row in chain] == ["failed"], f"the chain ended {[row['status'] for row in chain]}"
    assert _error_name(chain[0]) == "zombieTaskCleaned", f"the killed task failed with {_error_name(chain[0])}"


# Functions that crash their runtime or raise on every call ------------------------------------

CHAIN_ATTEMPTS = 3
BACKOFF_S = (1.0, 2.0)
QUIET_AFTER_S = 10.0


def _chains(rows: list[Any], function: str) -> list[list[Any]]:
    """Group a function's task rows into retry chains, each ordered by attempt."""
    chains: dict[str, list[Any]] = {}
    for row in rows:
        if row["function_name"] != function:
            continue
        root = row["retry_for_task_ids"][0] if row["retry_for_task_ids"] else row["id"]
        chains.setdefault(root, []).append(row)
    return [sorted(chain, key=lambda row: row["attempt"]) for chain in chains.values()]


def _retries_metric(function: str) -> float:
    return REGISTRY.get_sample_value("taskservice_task_retries_total", {"function": function}) or 0.0


async def test_crashing_and_raising_functions_stop_at_max_attempts(settings: Settings, tmp_path: Path) -> None:
    settings = _fast_lease(settings)
    logs = {name: tmp_path / f"{name}.jsonl" for name in ("crash-retry", "raise-retry", "echo")}
    await prepare(settings, [("crash_requested", "crash-retry"), ("raise_requested", "raise-retry"),
                             ("user_deleted", "echo")])
    for name, path in logs.items():
        await set_function_env(settings, name, "INVOCATION_LOG", str(path))
    retries_before = {name: _retries_metric(name) for name in ("crash-retry", "raise-retry")}
    topic = exh_topic(settings)
    events = [exh_event("crash-1", "crash_requested"), exh_event("raise-1", "raise_requested"),
              *(exh_event(f"fast-{number}", "user_deleted") for number in range(2, 11))]

    async with TopicReader(settings, settings.results_topic) as results, \
            TopicReader(settings, settings.task_failed_events_topic) as failed_events, \
            running_service(settings):
        await publish(settings, topic, events)

        async def chains_final() -> bool:
            rows = await fetch(settings, "SELECT count(*) AS n FROM tasks WHERE status = 'failed'")
            return rows[0]["n"] == 2 and await nothing_pending(settings)

        await wait_for(chains_final, timeout=60, message="both retry chains failed for good")
        counts_at_final = {name: len(read_json_lines(path)) for name, path in logs.items()}
        # A crash recovered by redelivery would run again here, at once and without limit.
        await asyncio.sleep(QUIET_AFTER_S)
        rows = await fetch(settings, "SELECT * FROM tasks")

        async def results_read() -> bool:
            return len(results.records) >= len(rows) and await results.caught_up()

        await wait_for(results_read, timeout=30, message=f"{len(rows)} result messages read")
        await wait_for(failed_events.caught_up, timeout=30, message="the task_failed topic read")

    runs = {name: read_json_lines(path) for name, path in logs.items()}
    by_task = records_by_task(results.records)
    task_failed = [event for event in failed_events.json_values() if event.get("type") == "task_failed"]
    for function, error_name in (("crash-retry", "Runtime.ExitError"), ("raise-retry", "RuntimeError")):
        chains = _chains(rows, function)
        assert len(chains) == 1, f"{function}: expected one retry chain, got {len(chains)}"
        chain = chains[0]
        statuses = [row["status"] for row in chain]
        assert statuses == ["retried", "retried", "failed"], f"{function}: the chain ended {statuses}"
        assert [row["attempt"] for row in chain] == [1, 2, 3], f"{function}: attempts {[r['attempt'] for r in chain]}"
        names = [_error_name(row) for row in chain]
        assert names == [error_name] * CHAIN_ATTEMPTS, f"{function}: error names {names}, expected {error_name}"

        calls = sorted(runs[function], key=lambda line: line["started"])
        assert len(calls) == CHAIN_ATTEMPTS, f"{function} ran {len(calls)} times, expected {CHAIN_ATTEMPTS}"
        assert [call["attempt"] for call in calls] == [1, 2, 3], f"{function}: invocation attempts {calls}"
        assert len(runs[function]) == counts_at_final[function], \
            f"{function} ran again in the {QUIET_AFTER_S:.0f} s after its chain failed for good"
        for number, delay in enumerate(BACKOFF_S):
            gap = calls[number + 1]["started"] - calls[number]["started"]
            assert gap >= delay, f"{function}: attempt {number + 2} started {gap:.2f} s after attempt " \
                                 f"{number + 1}, before the {delay} s backoff"

        last = chain[-1]
        failed_messages = [orjson.loads(record.value) for record in by_task[last["id"]]]
        assert [message["status"] for message in failed_messages] == ["failed"], \
            f"{function}: the last task's result messages are {failed_messages}"
        assert failed_messages[0]["error"]["name"] == error_name, f"{function}: failed message {failed_messages[0]}"
        for row in chain[:-1]:
            statuses_sent = [orjson.loads(record.value)["status"] for record in by_task[row["id"]]]
            assert statuses_sent == ["retried"], f"{function}: attempt {row['attempt']} messages {statuses_sent}"
        events_for_chain = [event for event in task_failed if event["content"]["functionName"] == function]
        assert len(events_for_chain) == 1, f"{function}: {len(events_for_chain)} task_failed events, expected 1"
        assert events_for_chain[0]["content"]["id"] == last["id"], \
            f"{function}: the task_failed event names {events_for_chain[0]['content']['id']}, not the last task"

        retried_rows = sum(1 for row in chain if row["status"] == "retried")
        retries_counted = _retries_metric(function) - retries_before[function]
        assert retried_rows == CHAIN_ATTEMPTS - 1, f"{function}: {retried_rows} retried tasks"
        assert retries_counted == CHAIN_ATTEMPTS - 1, \
            f"{function}: taskservice_task_retries_total rose by {retries_counted}, expected {CHAIN_ATTEMPTS - 1}"

    fast = [row for row in rows if row["function_name"] == "echo"]
    assert len(fast) == 9, f"expected 9 echo tasks, got {len(fast)}"
    assert {row["status"] for row in fast} == {"complete"}, "an echo task did not complete"
    fast_finished = max(row["finished_timestamp"] for row in fast)
    last_crash_started = _chains(rows, "crash-retry")[0][-1]["started_timestamp"]
    assert fast_finished < last_crash_started, \
        f"the echo tasks finished at {fast_finished}, after the crashing chain's last attempt started"
    assert len(runs["echo"]) == 9, f"echo ran {len(runs['echo'])} times, expected 9"
