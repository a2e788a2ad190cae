"""The task status machine under races, driven through the repository on a real PostgreSQL.

Cancellation races against a worker storing its outcome, against the lease sweep and
against claims. Whatever order the statements commit in, each task must end in exactly
one terminal status with one result message per run. A cancelled task must never end
complete or get a retry, and a transition the status machine forbids must change nothing.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import pytest

from taskservice.admin import register_functions
from taskservice.config import Settings
from taskservice.functions import TaskOutcome
from taskservice.health import Health
from taskservice.ids import new_object_id
from taskservice.store.db import create_pool
from taskservice.store.repository import Repository
from taskservice.workers.outcome import finish_row
from taskservice.workers.retry import RetryPolicy
from taskservice.workers.sweeper import LeaseSweeper

SEED = 20_270_105
ROUNDS = 4
TASKS_PER_RACE = 50
FUNCTION = "sleep-retry"
TERMINAL = {"complete", "failed", "retried", "canceled"}
# The worker's view of sleep-retry's policy, with retries due at once so the drain ends fast.
# A crash (Runtime.ExitError) fails for good, so the races produce failed tasks as well.
POLICY = RetryPolicy.from_json({"enabled": True, "maxAttempts": 3, "nonRetryableErrors": ["Runtime.ExitError"],
                                "backoff": {"initialSeconds": 0.01, "multiplier": 1, "jitter": 0}})
LONG_LEASE_S = 30.0
EXPIRED_LEASE_S = 0.001


@pytest.fixture
async def repository(settings: Settings) -> AsyncIterator[Repository]:
    await register_functions(settings, settings.functions_dir)
    pool = await create_pool(settings.database_url, size=12, role="test")
    try:
        yield Repository(pool)
    finally:
        await pool.close()


def _task_row(key: str) -> dict[str, Any]:
    return {"id": new_object_id(), "function_name": FUNCTION, "data": {"key": key}, "tags": [], "priority": None,
            "start_timestamp": None, "idempotency_key": key, "source": "api", "event_id": None,
            "event_timestamp": None}


def _outcome(task_id: str, kind: str) -> TaskOutcome:
    now = datetime.now(UTC)
    if kind == "ok":
        return TaskOutcome(task_id, True, {"done": True}, None, [(now, "finished")], now, now)
    name = "ValueError" if kind == "raised" else "Runtime.ExitError"
    return TaskOutcome(task_id, False, None, {"type": "runtime", "name": name, "message": kind}, [], now, now)


def _finish_input(row: Any, kind: str) -> dict[str, Any]:
    return finish_row(_outcome(row["id"], kind), row["attempt"], POLICY, task_failed_events=True)


async def _after(delay_s: float, call: Callable[[], Awaitable[Any]]) -> Any:
    await asyncio.sleep(delay_s)
    return await call()


class Races:
    """Runs the races and keeps what each statement reported."""

    def __init__(self, repository: Repository, settings: Settings, rng: random.Random) -> None:
        self.repository = repository
        self.settings = settings
        self.rng = rng
        self.sweeper = LeaseSweeper(settings, repository, Health())
        self.cancels: dict[str, Any] = {}            # task id -> cancel_task record
        self.finished_by_worker: dict[str, str] = {}  # task id -> status finish_tasks stored
        self.claimed: dict[str, Any] = {}             # task id -> claim row of its last claim
        self.batches = 0

    def jitter(self) -> float:
        return self.rng.uniform(0, 0.004)

    async def insert(self, prefix: str, count: int) -> list[str]:
        self.batches += 1
        rows = [_task_row(f"{prefix}-{self.batches}-{number}") for number in range(count)]
        await self.repository.insert_tasks(rows)
        return [row["id"] for row in rows]

    async def claim(self, limit: int, lease_s: float, worker: str) -> list[Any]:
        rows = await self.repository.claim_tasks(limit, worker, lease_s)
        for row in rows:
            self.claimed[row["id"]] = row
        return rows

    async def claim_race_tasks(self, ids: list[str], lease_s: float, worker: str) -> list[Any]:
        """Claim every due task; return the claim rows of ids. Retries of earlier races may be due too."""
        rows = await self.claim(1000, lease_s, worker)
        mine = [row for row in rows if row["id"] in set(ids)]
        assert len(mine) == len(ids), f"{worker} claimed {len(mine)} of the {len(ids)} new tasks"
        return mine

    async def cancel(self, task_id: str) -> None:
        self.cancels[task_id] = await self.repository.cancel_task(task_id, include_running=True)

    async def finish(self, row: Any, kind: str) -> None:
        stored = await self.repository.finish_tasks([_finish_input(row, kind)], self.settings.results_topic,
                                                    self.settings.task_failed_events_topic)
        for finished in stored:
            self.finished_by_worker[finished["id"]] = finished["status"]

    async def cancel_against_finish(self) -> None:
        ids = await self.insert("finish", TASKS_PER_RACE)
        rows = await self.claim_race_tasks(ids, LONG_LEASE_S, "worker-finish")
        kinds = ["ok", "raised", "crashed"]
        await asyncio.gather(*(
            asyncio.gather(_after(self.jitter(), lambda row=row: self.cancel(row["id"])),
                           _after(self.jitter(), lambda row=row: self.finish(row, self.rng.choice(kinds))))
            for row in rows
        ))

    async def cancel_against_sweep(self) -> None:
        ids = await self.insert("sweep", TASKS_PER_RACE)
        await self.claim_race_tasks(ids, EXPIRED_LEASE_S, "worker-lost")
        await asyncio.sleep(0.01)
        sweeps = [_after(self.jitter(), self.sweeper.sweep_once) for _ in range(8)]
        cancels = [_after(self.jitter(), lambda task_id=task_id: self.cancel(task_id)) for task_id in ids]
        await asyncio.gather(*sweeps, *cancels)

    async def cancel_against_claim(self) -> None:
        ids = await self.insert("claim", TASKS_PER_RACE)
        claims = [_after(self.jitter(), lambda number=number: self.claim(5, LONG_LEASE_S, f"worker-claim-{number}"))
                  for number in range(TASKS_PER_RACE // 5)]
        cancels = [_after(self.jitter(), lambda task_id=task_id: self.cancel(task_id)) for task_id in ids]
        await asyncio.gather(*claims, *cancels)

    async def cancel_against_finish_and_sweep(self) -> None:
        ids = await self.insert("all", TASKS_PER_RACE)
        rows = await self.claim_race_tasks(ids, EXPIRED_LEASE_S, "worker-late")
        await asyncio.sleep(0.01)
        finishes = [_after(self.jitter(), lambda row=row: self.finish(row, self.rng.choice(["ok", "raised"])))
                    for row in rows]
        cancels = [_after(self.jitter(), lambda task_id=task_id: self.cancel(task_id)) for task_id in ids]
        sweeps = [_after(self.jitter(), self.sweeper.sweep_once) for _ in range(8)]
        await asyncio.gather(*finishes, *cancels, *sweeps)

    async def drain(self) -> None:
        """Run every task still new or inProgress to an end, as live workers would."""
        for _round in range(200):
            counts = await self.repository.count_tasks_by_status()
            if not counts.get("new") and not counts.get("inProgress"):
                return
            await self.sweeper.sweep_once()
            running = await self.repository.pool.fetch(
                "SELECT id, attempt FROM tasks WHERE status = 'inProgress' AND worker_id <> 'worker-lost'")
            for row in running:
                await self.finish(row, "ok")
            await self.claim(100, LONG_LEASE_S, "worker-drain")
            await asyncio.sleep(0.05)
        raise AssertionError(f"tasks still new or inProgress after the drain: {counts}")


async def _snapshot(repository: Repository, task_id: str) -> tuple[Any, ...]:
    row = await repository.pool.fetchval("SELECT to_jsonb(t)::text FROM tasks t WHERE id = $1", task_id)
    outbox = await repository.pool.fetchval("SELECT count(*) FROM outbox WHERE task_id = $1", task_id)
    return row, outbox


async def test_cancel_races_end_in_one_terminal_state(repository: Repository, settings: Settings) -> None:
    races = Races(repository, settings, random.Random(SEED))
    for _round in range(ROUNDS):
        await races.cancel_against_finish()
        await races.cancel_against_sweep()
        await races.cancel_against_claim()
        await races.cancel_against_finish_and_sweep()
    await races.drain()

    tasks = {row["id"]: row for row in await repository.pool.fetch("SELECT * FROM tasks")}
    outbox = await repository.pool.fetch(
        "SELECT topic, task_id, attempt, payload->>'status' AS status, payload->>'type' AS type FROM outbox")
    results = defaultdict(list)
    failed_events = Counter()
    for row in outbox:
        if row["topic"] == settings.results_topic:
            results[row["task_id"]].append(row)
        elif row["type"] == "task_failed":
            failed_events[row["task_id"]] += 1
    context = f"seed {SEED}"

    statuses = Counter(row["status"] for row in tasks.values())
    assert set(statuses) <= TERMINAL, f"tasks outside a terminal status: {dict(statuses)} ({context})"
    for task_id, row in tasks.items():
        messages = results[task_id]
        never_ran = row["status"] == "canceled" and row["attempt"] == 0
        expected_messages = 0 if never_ran else 1
        assert len(messages) == expected_messages, \
            f"task {task_id} ({row['status']}, attempt {row['attempt']}) has {len(messages)} result messages"
        pairs = Counter((message["task_id"], message["attempt"]) for message in messages)
        assert all(count == 1 for count in pairs.values()), f"task {task_id} has two results for one attempt"
        for message in messages:
            assert message["status"] == row["status"], \
                f"task {task_id} is {row['status']} but its result message says {message['status']}"
            assert message["attempt"] == row["attempt"], f"task {task_id}: result message of another attempt"
        expected_events = 1 if row["status"] == "failed" else 0
        assert failed_events[task_id] == expected_events, \
            f"task {task_id} ({row['status']}) has {failed_events[task_id]} task_failed events"

    canceled = {task_id for task_id, row in tasks.items() if row["status"] == "canceled"}
    retried_from = {origin for row in tasks.values() for origin in row["retry_for_task_ids"]}
    for task_id in canceled:
        assert tasks[task_id]["retried_by_task_id"] is None, f"canceled task {task_id} has a retry"
        assert task_id not in retried_from, f"canceled task {task_id} appears in a retry chain"
    flagged = [task_id for task_id, row in tasks.items() if row["cancel_requested_at"] is not None]
    for task_id in flagged:
        assert tasks[task_id]["status"] == "canceled", \
            f"task {task_id} was flagged for cancellation while running but ended {tasks[task_id]['status']}"
    for task_id, row in tasks.items():
        if row["status"] == "retried":
            retry = tasks.get(row["retried_by_task_id"])
            assert retry is not None, f"retried task {task_id} links to a missing retry"
            assert list(retry["retry_for_task_ids"])[-1] == task_id, f"the retry of {task_id} does not link back"

    outcomes: Counter[str] = Counter()
    for task_id, record in races.cancels.items():
        final = tasks[task_id]["status"]
        if record["previous_status"] == "new":
            outcomes["canceled before claim"] += 1
            assert record["status"] == "canceled", f"cancel of new task {task_id} reported {record['status']}"
            assert final == "canceled", f"task {task_id} canceled while new ended {final}"
            assert task_id not in races.claimed, f"task {task_id} was claimed after its cancellation"
        elif record["previous_status"] == "inProgress":
            outcomes["canceled while running"] += 1
            assert final == "canceled", f"task {task_id} canceled while running ended {final}"
        else:
            outcomes["cancel after the end"] += 1
            assert record["status"] is None, f"cancel of final task {task_id} changed it to {record['status']}"
            assert final == record["previous_status"], f"task {task_id} changed from {record['previous_status']}"
    # The races are meant to land both ways; with no race won by each side they proved nothing.
    assert outcomes["canceled while running"] > 0, f"no cancel reached a running task: {dict(outcomes)} ({context})"
    assert outcomes["cancel after the end"] > 0, f"no cancel came after a finish: {dict(outcomes)} ({context})"
    assert outcomes["canceled before claim"] > 0, f"no cancel came before a claim: {dict(outcomes)} ({context})"
    print(f"{context}: {dict(outcomes)}, final statuses {dict(statuses)}")


async def test_forbidden_transitions_change_nothing(repository: Repository, settings: Settings) -> None:
    races = Races(repository, settings, random.Random(SEED))
    topic, failed_topic = settings.results_topic, settings.task_failed_events_topic
    new_id, running_id, complete_id, failed_id, retried_id, canceled_id = await races.insert("forbidden", 6)

    # Bring tasks into each final status through allowed transitions.
    await repository.cancel_task(canceled_id, include_running=False)
    claimed = {row["id"]: row for row in await races.claim(10, LONG_LEASE_S, "worker-one")}
    assert set(claimed) == {new_id, running_id, complete_id, failed_id, retried_id}, "the claim took other tasks"
    await repository.finish_tasks([_finish_input(claimed[complete_id], "ok")], topic, failed_topic)
    no_retry = RetryPolicy()
    failed_input = finish_row(_outcome(failed_id, "raised"), 1, no_retry, task_failed_events=True)
    await repository.finish_tasks([failed_input], topic, failed_topic)
    await repository.finish_tasks([_finish_input(claimed[retried_id], "raised")], topic, failed_topic)
    await repository.release_tasks([new_id], "worker-one")
    final = {complete_id: "complete", failed_id: "failed", retried_id: "retried", canceled_id: "canceled"}
    for task_id, status in final.items():
        stored = await repository.pool.fetchval("SELECT status FROM tasks WHERE id = $1", task_id)
        assert stored == status, f"setting up: task {task_id} is {stored}, expected {status}"
    retry_id = await repository.pool.fetchval("SELECT retried_by_task_id FROM tasks WHERE id = $1", retried_id)
    before = {task_id: await _snapshot(repository, task_id) for task_id in (new_id, running_id, *final)}

    complete_new = {**_finish_input(claimed[new_id], "ok"), "attempt": 0}
    assert await repository.finish_tasks([complete_new], topic, failed_topic) == [], \
        "finish_tasks accepted an outcome for a new task (attempt 0)"
    assert await repository.finish_tasks([_finish_input(claimed[new_id], "ok")], topic, failed_topic) == [], \
        "finish_tasks accepted an outcome for a new task (attempt 1)"
    assert await _snapshot(repository, new_id) == before[new_id], "finishing a new task changed it"
    wrong_attempt = {**_finish_input(claimed[running_id], "ok"), "attempt": 2}
    assert await repository.finish_tasks([wrong_attempt], topic, failed_topic) == [], \
        "finish_tasks accepted an outcome for another attempt of a running task"
    for task_id, status in final.items():
        record = await repository.cancel_task(task_id, include_running=True)
        assert record["previous_status"] == status, f"cancel of {status} task reported {record['previous_status']}"
        assert record["status"] is None, f"cancel of a {status} task changed it to {record['status']}"
        late = {**_finish_input(claimed.get(task_id, {"id": task_id, "attempt": 1}), "ok")}
        assert await repository.finish_tasks([late], topic, failed_topic) == [], \
            f"finish_tasks changed a {status} task"
        assert await repository.renew_leases([task_id], "worker-one", LONG_LEASE_S) == [], \
            f"renew_leases extended the lease of a {status} task"
    not_running = await repository.cancel_task(running_id, include_running=False)
    assert not_running["status"] is None, "cancel without include_running changed a running task"
    assert await races.sweeper.sweep_once() == 0, "the sweep took a task whose lease had not expired"
    reclaimed = await races.claim(10, LONG_LEASE_S, "worker-two")
    assert {row["id"] for row in reclaimed} == {new_id, retry_id}, \
        f"a claim took {[row['id'] for row in reclaimed]}; only the released task and the retry are due"

    after = {task_id: await _snapshot(repository, task_id) for task_id in (running_id, *final)}
    for task_id, snapshot in after.items():
        assert snapshot == before[task_id], f"a forbidden transition changed task {task_id}: {snapshot[0]}"
