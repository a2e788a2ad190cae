"""Tests of RuntimePool.cancel: interrupting, skipping and killing cancelled tasks.

The handlers in runtime_functions/basic/cancel_handlers.py create a marker file
per task when they start, so a test can cancel a task while it runs, and can
check that a skipped task's handler never ran.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from tests.unit.runtime_functions.support import make_spec, make_tasks, process_gone, wait_until
from taskservice.functions import RuntimePool
from taskservice.functions.child_interrupts import TaskCanceled, TaskInterrupts
from taskservice.functions.protocol import TASK_FINISHED, TASK_RUNNING

pytestmark = pytest.mark.timeout(60)

CANCELED_ERROR = {"type": "runtime", "name": "TaskCanceled", "message": "Task was cancelled"}


@pytest.fixture
async def pool():
    runtime_pool = RuntimePool()
    yield runtime_pool
    await runtime_pool.close()


@pytest.fixture
def mark_dir(tmp_path) -> Path:
    folder = tmp_path / "marks"
    folder.mkdir()
    return folder


def cancel_spec(entry_point: str, mark_dir: Path, **options):
    return make_spec(f"cancel_handlers.{entry_point}", environment={"MARK_DIR": str(mark_dir)}, **options)


async def wait_started(mark_dir: Path, task_id: str) -> None:
    assert await wait_until(lambda: (mark_dir / task_id).exists(), timeout_s=10), f"task {task_id} did not start"


def log_texts(outcome) -> list[str]:
    return [line.split("\t", 3)[3] for _, line in outcome.logs]


async def test_cancel_sleeping_sync_handler(pool, mark_dir):
    spec = cancel_spec("sleep_pid", mark_dir)
    batch = asyncio.ensure_future(pool.run_batch(spec, make_tasks(0, 20, 0)))
    await wait_started(mark_dir, "t1")

    started = time.monotonic()
    assert pool.cancel("t1") is True
    outcomes = await batch
    elapsed = time.monotonic() - started

    assert elapsed < 2
    assert [outcome.ok for outcome in outcomes] == [True, False, True]
    assert outcomes[1].error == CANCELED_ERROR
    assert outcomes[1].result is None
    texts = log_texts(outcomes[1])
    assert len(texts) == 1
    assert "Traceback (most recent call last):" in texts[0]
    assert "time.sleep" in texts[0]
    assert texts[0].endswith('in sleep_pid\n    time.sleep(task["data"])\nTaskCanceled: Task was cancelled')
    assert outcomes[2].result == outcomes[0].result


async def test_cancel_async_handler(pool, mark_dir):
    spec = cancel_spec("async_sleep_pid", mark_dir)
    batch = asyncio.ensure_future(pool.run_batch(spec, make_tasks(0, 20, 0)))
    await wait_started(mark_dir, "t1")

    started = time.monotonic()
    assert pool.cancel("t1") is True
    outcomes = await batch
    elapsed = time.monotonic() - started

    assert elapsed < 2
    assert [outcome.ok for outcome in outcomes] == [True, False, True]
    assert outcomes[1].error == CANCELED_ERROR
    texts = log_texts(outcomes[1])
    assert len(texts) == 1
    expected_end = 'in async_sleep_pid\n    await asyncio.sleep(task["data"])\nTaskCanceled: Task was cancelled'
    assert texts[0].endswith(expected_end)
    assert outcomes[2].result == outcomes[0].result


async def test_async_loop_usable_after_cancel(pool, mark_dir):
    spec = cancel_spec("async_sleep_pid", mark_dir)
    batch = asyncio.ensure_future(pool.run_batch(spec, make_tasks(20)))
    await wait_started(mark_dir, "t0")
    pool.cancel("t0")
    (canceled,) = await batch

    outcomes = await pool.run_batch(spec, make_tasks(0, 0.01))

    assert canceled.error == CANCELED_ERROR
    assert [outcome.ok for outcome in outcomes] == [True, True]


async def test_handler_ignoring_cancel_is_killed(pool, mark_dir):
    spec = cancel_spec("ignore_cancel", mark_dir)
    batch = asyncio.ensure_future(pool.run_batch(spec, make_tasks(0, 20, 0, 0)))
    await wait_started(mark_dir, "t1")

    started = time.monotonic()
    assert pool.cancel("t1", grace_s=0.5) is True
    outcomes = await batch
    elapsed = time.monotonic() - started

    assert 0.5 <= elapsed < 3
    assert [outcome.ok for outcome in outcomes] == [True, False, True, True]
    assert outcomes[1].error == CANCELED_ERROR
    assert log_texts(outcomes[1])[-1] == (
        "TaskCanceled: Task was cancelled, and the handler did not stop within 0.50 seconds, "
        "so its worker process was killed"
    )
    killed_pid = outcomes[0].result
    assert outcomes[2].result != killed_pid
    assert outcomes[3].result == outcomes[2].result
    assert process_gone(killed_pid)


async def test_async_handler_ignoring_cancel_is_killed(pool, mark_dir):
    spec = cancel_spec("async_ignore_cancel", mark_dir)
    batch = asyncio.ensure_future(pool.run_batch(spec, make_tasks(0, 20, 0)))
    await wait_started(mark_dir, "t1")

    started = time.monotonic()
    assert pool.cancel("t1", grace_s=0.3) is True
    outcomes = await batch
    elapsed = time.monotonic() - started

    assert 0.3 <= elapsed < 3
    assert outcomes[1].error == CANCELED_ERROR
    assert outcomes[2].ok
    assert outcomes[2].result != outcomes[0].result


async def test_handler_ending_after_caught_cancel_is_canceled(pool, mark_dir):
    # The handler catches the interrupt and returns within the grace period,
    # so the worker is not killed, but the task still counts as cancelled.
    spec = cancel_spec("ignore_cancel", mark_dir)
    batch = asyncio.ensure_future(pool.run_batch(spec, make_tasks(0, 0.5, 0)))
    await wait_started(mark_dir, "t1")

    assert pool.cancel("t1", grace_s=10) is True
    outcomes = await batch

    assert [outcome.ok for outcome in outcomes] == [True, False, True]
    assert outcomes[1].error == CANCELED_ERROR
    assert log_texts(outcomes[1]) == ["ignored TaskCanceled", "TaskCanceled: Task was cancelled"]
    assert outcomes[2].result == outcomes[0].result


async def test_cancel_past_time_limit_is_canceled(pool, mark_dir):
    spec = cancel_spec("ignore_cancel", mark_dir, time_limit_s=0.5)
    batch = asyncio.ensure_future(pool.run_batch(spec, make_tasks(20, 0)))
    await wait_started(mark_dir, "t0")

    assert pool.cancel("t0", grace_s=30) is True
    outcomes = await batch

    assert outcomes[0].error == CANCELED_ERROR
    assert log_texts(outcomes[0])[-1] == (
        "TaskCanceled: Task was cancelled (Runtime.Timeout: Task timed out after 0.50 seconds)"
    )
    assert outcomes[1].ok


async def test_cancel_task_not_started(pool, mark_dir):
    spec = cancel_spec("sleep_pid", mark_dir)
    batch = asyncio.ensure_future(pool.run_batch(spec, make_tasks(0.5, 0, 0)))
    await wait_started(mark_dir, "t0")

    assert pool.cancel("t1") is True
    outcomes = await batch

    assert [outcome.ok for outcome in outcomes] == [True, False, True]
    assert outcomes[1].error == CANCELED_ERROR
    assert log_texts(outcomes[1]) == ["TaskCanceled: Task was cancelled before it started"]
    assert not (mark_dir / "t1").exists()
    assert (mark_dir / "t2").exists()
    assert outcomes[2].result == outcomes[0].result


async def test_cancel_in_batch_waiting_for_worker(mark_dir):
    runtime_pool = RuntimePool(max_processes_per_function=1)
    spec = cancel_spec("sleep_pid", mark_dir)
    waiting_tasks = make_tasks(0, 0)
    for task in waiting_tasks:
        task["id"] = "waiting-" + task["id"]
    try:
        first = asyncio.ensure_future(runtime_pool.run_batch(spec, make_tasks(0.5)))
        await wait_started(mark_dir, "t0")
        second = asyncio.ensure_future(runtime_pool.run_batch(spec, waiting_tasks))
        await asyncio.sleep(0.05)

        assert runtime_pool.cancel("waiting-t0") is True
        (running,) = await first
        outcomes = await second
    finally:
        await runtime_pool.close()

    assert running.ok
    assert outcomes[0].error == CANCELED_ERROR
    assert not (mark_dir / "waiting-t0").exists()
    assert outcomes[1].ok
    assert outcomes[1].result == running.result


async def test_cancel_in_later_batch_message(pool, mark_dir, monkeypatch):
    # With three tasks per batch message, t4 is sent in the second message,
    # after the cancel request.
    monkeypatch.setattr("taskservice.functions.batch.MAX_BATCH_TASKS", 3)
    spec = cancel_spec("sleep_pid", mark_dir)
    batch = asyncio.ensure_future(pool.run_batch(spec, make_tasks(0.5, 0, 0, 0, 0, 0, 0)))
    await wait_started(mark_dir, "t0")

    assert pool.cancel("t4") is True
    outcomes = await batch

    assert [outcome.ok for outcome in outcomes] == [True, True, True, True, False, True, True]
    assert outcomes[4].error == CANCELED_ERROR
    assert not (mark_dir / "t4").exists()
    assert len({outcome.result for outcome in outcomes if outcome.ok}) == 1


async def test_cancel_unknown_or_finished_returns_false(pool, mark_dir):
    spec = cancel_spec("sleep_pid", mark_dir)
    assert pool.cancel("unknown") is False

    (outcome,) = await pool.run_batch(spec, make_tasks(0))

    assert outcome.ok
    assert pool.cancel("t0") is False


async def test_cancel_twice_returns_true(pool, mark_dir):
    spec = cancel_spec("sleep_pid", mark_dir)
    batch = asyncio.ensure_future(pool.run_batch(spec, make_tasks(20)))
    await wait_started(mark_dir, "t0")

    assert pool.cancel("t0") is True
    assert pool.cancel("t0") is True
    (outcome,) = await batch

    assert outcome.error == CANCELED_ERROR


@pytest.mark.parametrize("grace_s", [-1, float("nan"), float("inf")])
async def test_cancel_rejects_invalid_grace(pool, grace_s):
    with pytest.raises(ValueError, match="grace_s"):
        pool.cancel("t0", grace_s=grace_s)


async def test_cancel_leaves_other_function_alone(pool, mark_dir):
    target = cancel_spec("sleep_pid", mark_dir, name="target")
    other = cancel_spec("sleep_pid", mark_dir, name="other")
    other_tasks = make_tasks(0.5, 0)
    for task in other_tasks:
        task["id"] = "other-" + task["id"]
    target_batch = asyncio.ensure_future(pool.run_batch(target, make_tasks(20)))
    other_batch = asyncio.ensure_future(pool.run_batch(other, other_tasks))
    await wait_started(mark_dir, "t0")
    await wait_started(mark_dir, "other-t0")

    assert pool.cancel("t0") is True
    (canceled,) = await target_batch
    other_outcomes = await other_batch

    assert canceled.error == CANCELED_ERROR
    assert [outcome.ok for outcome in other_outcomes] == [True, True]
    assert other_outcomes[0].result == other_outcomes[1].result


async def test_late_signal_does_not_fail_next_task(pool, mark_dir):
    # Each round cancels a task right after its handler ended, while the next
    # task runs. The task's item may still be in the worker, so the pool sends
    # the interrupt, which must not fail the running task.
    spec = cancel_spec("sleep_pid", mark_dir)
    task_count = 8
    signalled_rounds = 0
    for round_number in range(50):
        tasks = make_tasks(*([0.003] * task_count))
        for task in tasks:
            task["id"] = f"r{round_number}-{task['id']}"
        target = round_number % (task_count - 1)
        batch = asyncio.ensure_future(pool.run_batch(spec, tasks))
        next_mark = mark_dir / tasks[target + 1]["id"]
        for _ in range(10_000):
            if next_mark.exists():
                break
            await asyncio.sleep(0.001)

        if pool.cancel(tasks[target]["id"], grace_s=5):
            signalled_rounds += 1
        outcomes = await batch

        failed = {outcome.task_id: outcome.error for outcome in outcomes if not outcome.ok}
        assert failed == {}, f"round {round_number}"
        assert len({outcome.result for outcome in outcomes}) == 1
    # cancel returns True, and interrupts the worker, only while the finished
    # task's item is still in the worker, so some rounds must have hit that window.
    assert signalled_rounds > 0


async def test_cancel_running_task_fails_only_that_task(pool, mark_dir):
    # Cancels race with the end of the running task: the cancelled task may
    # finish or fail with TaskCanceled, and every other task must succeed.
    spec = cancel_spec("sleep_pid", mark_dir)
    task_count = 6
    for round_number in range(50):
        tasks = make_tasks(*([0.002] * task_count))
        for task in tasks:
            task["id"] = f"r{round_number}-{task['id']}"
        target = tasks[round_number % task_count]["id"]
        batch = asyncio.ensure_future(pool.run_batch(spec, tasks))
        await wait_started(mark_dir, target)

        pool.cancel(target, grace_s=5)
        outcomes = await batch

        for outcome in outcomes:
            if outcome.task_id == target:
                assert outcome.ok or outcome.error == CANCELED_ERROR, f"round {round_number}"
            else:
                assert outcome.ok, f"round {round_number}: {outcome.task_id} failed with {outcome.error}"
        assert len({outcome.result for outcome in outcomes if outcome.ok}) == 1


def make_interrupts(task_count: int) -> tuple[TaskInterrupts, bytearray, bytearray]:
    flags = bytearray(task_count)
    states = bytearray(task_count)
    return TaskInterrupts(memoryview(flags), memoryview(states)), flags, states


def test_interrupts_signal_for_other_task_ignored():
    interrupts, flags, states = make_interrupts(3)
    flags[0] = 1

    interrupts.enter(1)
    interrupts.handle_signal(0, None)
    interrupts.leave()

    assert not interrupts.canceled
    assert states[1] == TASK_FINISHED


def test_interrupts_signal_between_tasks_ignored():
    interrupts, flags, _ = make_interrupts(2)
    interrupts.enter(0)
    interrupts.leave()
    flags[0] = 1

    interrupts.handle_signal(0, None)

    assert not interrupts.canceled


def test_interrupts_signal_raises_in_running_task():
    interrupts, flags, states = make_interrupts(2)
    interrupts.enter(1)
    assert states[1] == TASK_RUNNING
    flags[1] = 1

    with pytest.raises(TaskCanceled, match="Task was cancelled"):
        interrupts.handle_signal(0, None)
    interrupts.handle_signal(0, None)
    interrupts.leave()

    assert interrupts.canceled
    assert not interrupts.skipped
    assert states[1] == TASK_FINISHED


def test_interrupts_flagged_task_skipped():
    interrupts, flags, states = make_interrupts(2)
    flags[1] = 1

    with pytest.raises(TaskCanceled):
        interrupts.enter(1)
    interrupts.leave()

    assert interrupts.canceled
    assert interrupts.skipped
    assert states[1] == TASK_FINISHED
