"""Tests of the function runtime when tasks exceed the time or memory limit or crash the worker process."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tests.unit.runtime_functions.support import make_spec, make_tasks, process_gone, runtime_children, wait_until
from taskservice.functions import RuntimePool

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
async def pool():
    runtime_pool = RuntimePool()
    yield runtime_pool
    await runtime_pool.close()


async def test_time_limit_kills_and_rest_completes(pool):
    spec = make_spec("handlers.sleep_pid", time_limit_s=0.5)
    started = time.monotonic()

    outcomes = await pool.run_batch(spec, make_tasks(0, 10, 0, 0))

    elapsed = time.monotonic() - started
    assert elapsed < 3
    assert [outcome.ok for outcome in outcomes] == [True, False, True, True]
    assert outcomes[1].error == {
        "type": "runtime",
        "name": "Runtime.Timeout",
        "message": "Task timed out after 0.50 seconds",
    }
    assert outcomes[1].result is None
    assert any("\tt1\tERROR\tRuntime.Timeout: Task timed out after 0.50 seconds" in line for _, line in outcomes[1].logs)
    duration = outcomes[1].finished_at - outcomes[1].started_at
    assert 0.45 < duration.total_seconds() < 2
    killed_pid = outcomes[0].result
    assert outcomes[2].result == outcomes[3].result
    assert outcomes[2].result != killed_pid
    assert process_gone(killed_pid)


async def test_deadline_counts_per_task(pool):
    spec = make_spec("handlers.sleep_pid", time_limit_s=0.5)

    outcomes = await pool.run_batch(spec, make_tasks(0.3, 0.3, 0.3))

    assert all(outcome.ok for outcome in outcomes), [outcome.error for outcome in outcomes]
    assert len({outcome.result for outcome in outcomes}) == 1


async def test_timeout_of_last_task(pool):
    spec = make_spec("handlers.sleep_pid", time_limit_s=0.3)

    outcomes = await pool.run_batch(spec, make_tasks(0, 5))

    assert outcomes[0].ok
    assert outcomes[1].error["name"] == "Runtime.Timeout"
    (outcome,) = await pool.run_batch(spec, make_tasks(0))
    assert outcome.ok


async def test_timeout_kills_processes_started_by_handler(pool):
    spec = make_spec("handlers.start_sleeper_and_hang", time_limit_s=0.5)

    (outcome,) = await pool.run_batch(spec, make_tasks(None))

    assert outcome.error["name"] == "Runtime.Timeout"
    assert runtime_children() == []


async def test_close_kills_processes_started_by_handler():
    runtime_pool = RuntimePool()
    (outcome,) = await runtime_pool.run_batch(make_spec("handlers.start_sleeper"), make_tasks(None))
    sleeper_pid = outcome.result
    assert not process_gone(sleeper_pid)

    await runtime_pool.close()

    assert await wait_until(lambda: process_gone(sleeper_pid))


@pytest.mark.parametrize(
    ("entry_point", "message"),
    [
        ("handlers.kill_self", "Runtime exited with signal 9 (SIGKILL)"),
        ("handlers.exit_hard", "Runtime exited with code 3"),
        ("handlers.segfault", "Runtime exited with signal 11 (SIGSEGV)"),
    ],
)
async def test_crash_fails_only_running_task(pool, entry_point, message):
    echo = make_spec("handlers.echo")
    crashing = make_spec(entry_point)
    (before,) = await pool.run_batch(echo, make_tasks(0))

    outcomes = await pool.run_batch(crashing, make_tasks(None))

    assert outcomes[0].error == {"type": "runtime", "name": "Runtime.ExitError", "message": message}
    (after,) = await pool.run_batch(echo, make_tasks(1))
    assert before.ok
    assert after.ok


async def test_crash_mid_batch_keeps_other_results(pool, tmp_path):
    # The fast tasks finish right before a crash, so their items are still
    # buffered in the worker when it dies. They must be neither lost nor rerun.
    run_log = tmp_path / "runs.txt"
    spec = make_spec("handlers.crash_on_data", environment={"RUN_LOG": str(run_log)})

    outcomes = await pool.run_batch(spec, make_tasks("ok", "ok", "exit", "ok", "kill", "ok"))

    assert [outcome.ok for outcome in outcomes] == [True, True, False, True, False, True]
    assert [outcome.result["id"] for outcome in outcomes if outcome.ok] == ["t0", "t1", "t3", "t5"]
    assert outcomes[2].error["message"] == "Runtime exited with code 3"
    assert outcomes[4].error["message"] == "Runtime exited with signal 9 (SIGKILL)"
    pids = [outcome.result["pid"] for outcome in outcomes if outcome.ok]
    assert pids[0] == pids[1]
    assert len(set(pids)) == 3
    assert run_log.read_text().split() == ["t0", "t1", "t3", "t5"]


async def test_segfault_dump_in_task_logs(pool):
    (outcome,) = await pool.run_batch(make_spec("handlers.segfault"), make_tasks(None))

    lines = [line for _, line in outcome.logs]
    assert any("Fatal Python error: Segmentation fault" in line for line in lines)
    assert lines[-1].endswith("\tt0\tERROR\tRuntime.ExitError: Runtime exited with signal 11 (SIGSEGV)")


async def test_normal_handler_within_default_memory_limit(pool):
    outcomes = await pool.run_batch(make_spec("handlers.allocate_gradually", memory_limit_mb=128), make_tasks(48, 48))

    assert [outcome.result for outcome in outcomes] == [48, 48]


@pytest.mark.parametrize(("entry_point", "megabytes"), [("handlers.allocate_at_once", 1024), ("handlers.allocate_gradually", 1024)])
async def test_memory_limit_fails_task_only(pool, entry_point, megabytes):
    spec = make_spec(entry_point, memory_limit_mb=128)

    outcomes = await pool.run_batch(spec, make_tasks(16, megabytes, 16))

    assert [outcome.ok for outcome in outcomes] == [True, False, True]
    assert outcomes[1].error == {
        "type": "runtime",
        "name": "Runtime.OutOfMemory",
        "message": "Task exceeded the memory limit of 128 MB",
    }
    assert outcomes[0].result == 16
    assert outcomes[2].result == 16
    (again,) = await pool.run_batch(spec, make_tasks(16))
    assert again.ok


async def test_raw_fd_output_keeps_protocol(pool):
    outcomes = await pool.run_batch(make_spec("handlers.write_fd"), make_tasks(None, None))

    assert [outcome.result for outcome in outcomes] == ["ok", "ok"]


async def test_worker_dies_with_pool_process(tmp_path):
    pid_file = tmp_path / "worker.pid"
    script = textwrap.dedent(
        f"""
        import asyncio
        from tests.unit.runtime_functions.support import make_spec, make_tasks
        from taskservice.functions import RuntimePool

        spec = make_spec("handlers.write_pid_and_hang", environment={{"PID_FILE": {str(pid_file)!r}}}, time_limit_s=60)
        asyncio.run(RuntimePool().run_batch(spec, make_tasks(None)))
        """
    )
    # The killed pool process cannot remove the worker's temporary folder, so
    # it creates that folder under tmp_path.
    environment = {**os.environ, "TMPDIR": str(tmp_path)}
    repository_root = Path(__file__).resolve().parents[2]
    pool_process = subprocess.Popen([sys.executable, "-c", script], cwd=repository_root, env=environment)
    try:
        assert await wait_until(pid_file.exists, timeout_s=10)
        worker_pid = int(pid_file.read_text())
        assert not process_gone(worker_pid)
    finally:
        pool_process.kill()
        pool_process.wait(timeout=10)

    assert await wait_until(lambda: process_gone(worker_pid))
