"""Tests of the function runtime: handlers, results, errors, isolation and process reuse.

Every test starts real worker processes with the handlers in runtime_functions/.
"""

from __future__ import annotations

import asyncio
import os
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from tests.unit.runtime_functions.support import (
    FUNCTIONS_DIR,
    make_spec,
    make_tasks,
    process_gone,
    runtime_children,
    wait_until,
)
from taskservice.functions import PoolClosedError, RuntimePool

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
async def pool():
    runtime_pool = RuntimePool()
    yield runtime_pool
    await runtime_pool.close()


async def test_sync_handler_returns_results_in_order(pool):
    tasks = make_tasks(1, {"nested": [1, 2]}, None)

    outcomes = await pool.run_batch(make_spec("handlers.echo"), tasks)

    assert [outcome.task_id for outcome in outcomes] == ["t0", "t1", "t2"]
    assert all(outcome.ok for outcome in outcomes)
    assert [outcome.result for outcome in outcomes] == [
        {"id": "t0", "data": 1},
        {"id": "t1", "data": {"nested": [1, 2]}},
        {"id": "t2", "data": None},
    ]
    assert all(outcome.error is None for outcome in outcomes)


async def test_outcome_timestamps_are_aware_utc(pool):
    before = datetime.now(timezone.utc)

    (outcome,) = await pool.run_batch(make_spec("handlers.echo"), make_tasks(1))

    after = datetime.now(timezone.utc)
    assert outcome.started_at.tzinfo is not None
    assert outcome.started_at.utcoffset() == timedelta(0)
    assert before <= outcome.started_at
    assert outcome.started_at <= outcome.finished_at
    assert outcome.finished_at <= after


async def test_empty_batch_returns_empty_list(pool):
    assert await pool.run_batch(make_spec("handlers.echo"), []) == []
    assert runtime_children() == []


async def test_async_handler_uses_one_event_loop(pool):
    spec = make_spec("handlers.async_echo")

    first = await pool.run_batch(spec, make_tasks(1, 2))
    second = await pool.run_batch(spec, make_tasks(3))

    assert all(outcome.ok for outcome in first + second)
    assert [outcome.result["id"] for outcome in first] == ["t0", "t1"]
    loops = {outcome.result["loop"] for outcome in first + second}
    assert len(loops) == 1


async def test_sync_handler_returning_coroutine_is_awaited(pool):
    (outcome,) = await pool.run_batch(make_spec("handlers.returns_coroutine"), make_tasks(1))

    assert outcome.ok
    assert outcome.result == "awaited"


async def test_entry_point_in_package(pool):
    (outcome,) = await pool.run_batch(make_spec("pkg.nested.handler"), make_tasks(1))

    assert outcome.ok
    assert outcome.result == "nested t0"


async def test_context_fields(pool):
    spec = make_spec("handlers.describe_context", name="context-function", time_limit_s=7)
    tasks = make_tasks(None)
    tasks[0]["attempt"] = 3
    before = datetime.now(timezone.utc)

    (outcome,) = await pool.run_batch(spec, tasks)

    assert outcome.ok, outcome.error
    context = outcome.result
    assert context["task_id"] == "t0"
    assert context["function_name"] == "context-function"
    assert context["attempt"] == 3
    assert context["logger"] == "context-function"
    deadline = datetime.fromisoformat(context["deadline"])
    assert before + timedelta(seconds=6) < deadline < before + timedelta(seconds=8)
    assert 6000 < context["remaining_ms"] <= 7000
    assert context["cwd"] == str(FUNCTIONS_DIR / "basic")
    assert context["sys_path_0"] == str(FUNCTIONS_DIR / "basic")


async def test_exception_becomes_runtime_error(pool):
    outcomes = await pool.run_batch(make_spec("handlers.fail_when_told"), make_tasks("ok", "fail", "ok"))

    assert [outcome.ok for outcome in outcomes] == [True, False, True]
    failed = outcomes[1]
    assert failed.result is None
    assert failed.error == {"type": "runtime", "name": "KeyError", "message": "'missing'"}
    assert outcomes[2].result == "t2"


async def test_exception_traceback_logged_as_error(pool):
    (outcome,) = await pool.run_batch(make_spec("handlers.raise_value_error"), make_tasks(None))

    assert outcome.error == {"type": "runtime", "name": "ValueError", "message": "bad input t0"}
    error_lines = [line for _, line in outcome.logs if "\tERROR\t" in line]
    assert len(error_lines) == 1
    assert "Traceback (most recent call last):" in error_lines[0]
    assert 'handlers.py", line' in error_lines[0]
    assert error_lines[0].endswith("ValueError: bad input t0")
    assert "taskservice/functions" not in error_lines[0]


async def test_import_error_fails_whole_batch(pool):
    spec = make_spec("missing_dependency.handler", code_dir=FUNCTIONS_DIR / "broken")

    outcomes = await pool.run_batch(spec, make_tasks(1, 2))

    assert len(outcomes) == 2
    for outcome in outcomes:
        assert not outcome.ok
        assert outcome.error["type"] == "invocation"
        assert outcome.error["name"] == "Runtime.ImportModuleError"
        assert "module_that_does_not_exist" in outcome.error["message"]
        assert any("Traceback" in line for _, line in outcome.logs)
    assert [outcome.task_id for outcome in outcomes] == ["t0", "t1"]


async def test_module_raising_on_import(pool):
    spec = make_spec("raises_on_import.handler", code_dir=FUNCTIONS_DIR / "broken")

    (outcome,) = await pool.run_batch(spec, make_tasks(1))

    assert outcome.error["name"] == "Runtime.ImportModuleError"
    assert "RuntimeError: configuration missing" in outcome.error["message"]
    assert any(line.endswith("\tt0\tINFO\tstarting import") for _, line in outcome.logs)


async def test_pool_works_after_import_error(pool):
    broken = make_spec("missing_dependency.handler", code_dir=FUNCTIONS_DIR / "broken")
    await pool.run_batch(broken, make_tasks(1))

    (outcome,) = await pool.run_batch(make_spec("handlers.echo", name="other"), make_tasks(5))

    assert outcome.ok
    assert outcome.result == {"id": "t0", "data": 5}


async def test_exit_during_import(pool):
    spec = make_spec("exits.handler", code_dir=FUNCTIONS_DIR / "exit_on_import")

    (outcome,) = await pool.run_batch(spec, make_tasks(1))

    assert outcome.error["type"] == "invocation"
    assert outcome.error["name"] == "Runtime.ExitError"
    assert outcome.error["message"] == "Runtime exited with code 7 during initialization"


async def test_import_time_limit():
    runtime_pool = RuntimePool(init_timeout_s=0.5)
    spec = make_spec("slow.handler", code_dir=FUNCTIONS_DIR / "slow_import")
    try:
        started = time.monotonic()
        (outcome,) = await runtime_pool.run_batch(spec, make_tasks(1))
        elapsed = time.monotonic() - started
    finally:
        await runtime_pool.close()

    assert outcome.error["type"] == "invocation"
    assert outcome.error["name"] == "Runtime.Timeout"
    assert elapsed < 3
    assert runtime_children() == []


@pytest.mark.parametrize("entry_point", ["handlers.missing_function", "handlers.NOT_CALLABLE"])
async def test_handler_not_found(pool, entry_point):
    (outcome,) = await pool.run_batch(make_spec(entry_point), make_tasks(1))

    assert outcome.error["type"] == "invocation"
    assert outcome.error["name"] == "Runtime.HandlerNotFound"
    assert entry_point.rpartition(".")[2] in outcome.error["message"]


@pytest.mark.parametrize("entry_point", ["handler", "handlers.", ".handler", "handlers..echo", "1st.handler", ""])
async def test_invalid_entry_point(pool, entry_point):
    outcomes = await pool.run_batch(make_spec(entry_point), make_tasks(1, 2))

    for outcome in outcomes:
        assert outcome.error["type"] == "invocation"
        assert outcome.error["name"] == "Runtime.InvalidEntrypoint"
    assert runtime_children() == []


async def test_missing_code_folder(pool, tmp_path):
    spec = make_spec("handlers.echo", code_dir=tmp_path / "does-not-exist")

    (outcome,) = await pool.run_batch(spec, make_tasks(1))

    assert outcome.error["name"] == "Runtime.ImportModuleError"
    assert "does-not-exist" in outcome.error["message"]


async def test_invalid_environment_name(pool):
    spec = make_spec("handlers.echo", environment={"BAD=NAME": "x"})

    (outcome,) = await pool.run_batch(spec, make_tasks(1))

    assert outcome.error["type"] == "invocation"
    assert outcome.error["name"] == "Runtime.InvalidEnvironment"


async def test_user_module_shadowing_stdlib_name(pool):
    spec = make_spec("handler.handler", code_dir=FUNCTIONS_DIR / "shadowing")

    (outcome,) = await pool.run_batch(spec, make_tasks(1))

    assert outcome.ok, outcome.error
    assert outcome.result == "logging"
    assert outcome.logs[0][1].endswith("\tINFO\tlogged through the standard library")
    assert outcome.logs[1][1].endswith("\tINFO\tprinted next to a shadowed module")


async def test_parent_secrets_invisible(pool, monkeypatch):
    monkeypatch.setenv("DATABASE_URL", "postgresql://user:secret@127.0.0.1/db")
    monkeypatch.setenv("TASKSERVICE_KAFKA_PASSWORD", "secret")
    spec = make_spec("handlers.environment", environment={"API_MODE": "test", "GREETING": "hello world"})

    (outcome,) = await pool.run_batch(spec, make_tasks(None))

    environment = outcome.result
    assert "DATABASE_URL" not in environment
    assert "TASKSERVICE_KAFKA_PASSWORD" not in environment
    assert not any("secret" in value for value in environment.values())
    assert environment["API_MODE"] == "test"
    assert environment["GREETING"] == "hello world"


async def test_environment_defaults(pool):
    (outcome,) = await pool.run_batch(make_spec("handlers.environment"), make_tasks(None))

    environment = outcome.result
    assert environment["PATH"] == "/usr/local/bin:/usr/bin:/bin"
    assert environment["LANG"] == "C.UTF-8"
    assert environment["LC_ALL"] == "C.UTF-8"
    assert environment["HOME"] == environment["TMPDIR"]
    assert Path(environment["HOME"]) != Path.home()
    assert environment["MALLOC_ARENA_MAX"] == "1"
    assert set(environment) == {
        "PATH",
        "LANG",
        "LC_ALL",
        "HOME",
        "TMPDIR",
        "PYTHONPATH",
        "PYTHONDONTWRITEBYTECODE",
        "MALLOC_ARENA_MAX",
    }


async def test_private_home_removed_after_close():
    runtime_pool = RuntimePool()
    (outcome,) = await runtime_pool.run_batch(make_spec("handlers.environment"), make_tasks(None))
    home = Path(outcome.result["HOME"])
    assert home.is_dir()

    await runtime_pool.close()

    assert not home.exists()


@pytest.mark.parametrize(
    ("entry_point", "expected_text"),
    [("handlers.return_set", "set"), ("handlers.return_int_keys", "str")],
)
async def test_non_json_result(pool, entry_point, expected_text):
    outcomes = await pool.run_batch(make_spec(entry_point), make_tasks(1, 2))

    for outcome in outcomes:
        assert not outcome.ok
        assert outcome.result is None
        assert outcome.error["type"] == "runtime"
        assert outcome.error["name"] == "Runtime.InvalidResult"
        assert "not JSON-serializable" in outcome.error["message"]
        assert expected_text in outcome.error["message"]


async def test_result_too_large():
    runtime_pool = RuntimePool(max_result_bytes=1000)
    try:
        outcomes = await runtime_pool.run_batch(make_spec("handlers.return_bytes"), make_tasks(2000, 10))
    finally:
        await runtime_pool.close()

    assert outcomes[0].error["name"] == "Runtime.ResultTooLarge"
    assert "2002 bytes" in outcomes[0].error["message"]
    assert "1000 bytes" in outcomes[0].error["message"]
    assert outcomes[1].ok
    assert outcomes[1].result == "x" * 10


async def test_warm_process_reused(pool):
    spec = make_spec("handlers.pid")

    first = await pool.run_batch(spec, make_tasks(1, 2))
    second = await pool.run_batch(spec, make_tasks(3))

    pids = {outcome.result for outcome in first + second}
    assert len(pids) == 1
    assert pids != {os.getpid()}


async def test_new_version_gets_new_process(pool):
    (old,) = await pool.run_batch(make_spec("handlers.pid", version="v1"), make_tasks(1))

    (new,) = await pool.run_batch(make_spec("handlers.pid", version="v2"), make_tasks(1))

    assert new.result != old.result
    assert await wait_until(lambda: process_gone(old.result))


async def test_concurrent_batches_use_separate_processes(pool):
    spec = make_spec("handlers.sleep_pid")

    first, second = await asyncio.gather(
        pool.run_batch(spec, make_tasks(0.3)),
        pool.run_batch(spec, make_tasks(0.3)),
    )

    assert first[0].result != second[0].result


async def test_batches_wait_for_free_process():
    runtime_pool = RuntimePool(max_processes_per_function=1)
    spec = make_spec("handlers.sleep_pid")
    try:
        started = time.monotonic()
        first, second = await asyncio.gather(
            runtime_pool.run_batch(spec, make_tasks(0.3)),
            runtime_pool.run_batch(spec, make_tasks(0.3)),
        )
        elapsed = time.monotonic() - started
        assert len(runtime_children()) == 1
    finally:
        await runtime_pool.close()

    assert first[0].result == second[0].result
    assert elapsed >= 0.6


async def test_close_leaves_no_processes():
    runtime_pool = RuntimePool()
    spec = make_spec("handlers.sleep_pid")
    outcomes = await asyncio.gather(
        runtime_pool.run_batch(spec, make_tasks(0)),
        runtime_pool.run_batch(spec, make_tasks(0)),
        runtime_pool.run_batch(make_spec("handlers.pid", name="other"), make_tasks(0)),
    )
    pids = [batch[0].result for batch in outcomes]
    assert len(set(pids)) == 3

    await runtime_pool.close()

    assert runtime_children() == []
    assert all(process_gone(pid) for pid in pids)


async def test_close_stops_running_batch():
    runtime_pool = RuntimePool()
    batch = asyncio.ensure_future(runtime_pool.run_batch(make_spec("handlers.sleep_pid"), make_tasks(20)))
    assert await wait_until(lambda: len(runtime_children()) == 1)
    await asyncio.sleep(0.3)

    started = time.monotonic()
    await runtime_pool.close()

    assert time.monotonic() - started < 3
    with pytest.raises(PoolClosedError):
        await batch
    assert runtime_children() == []


async def test_run_batch_after_close_raises():
    runtime_pool = RuntimePool()
    await runtime_pool.close()

    with pytest.raises(PoolClosedError):
        await runtime_pool.run_batch(make_spec("handlers.echo"), make_tasks(1))


async def test_cancelled_batch_kills_process(pool):
    spec = make_spec("handlers.sleep_pid")
    batch = asyncio.ensure_future(pool.run_batch(spec, make_tasks(20)))
    assert await wait_until(lambda: len(runtime_children()) == 1)
    (worker,) = runtime_children()

    batch.cancel()
    with pytest.raises(asyncio.CancelledError):
        await batch

    assert await wait_until(lambda: process_gone(worker.pid))
    (outcome,) = await pool.run_batch(spec, make_tasks(0))
    assert outcome.ok
    assert outcome.result != worker.pid


async def test_idle_process_retired():
    runtime_pool = RuntimePool(idle_timeout_s=0.2)
    try:
        (outcome,) = await runtime_pool.run_batch(make_spec("handlers.pid"), make_tasks(1))

        assert await wait_until(lambda: process_gone(outcome.result), timeout_s=3)
        assert runtime_children() == []
    finally:
        await runtime_pool.close()


async def test_large_result_and_large_batch(pool):
    spec = make_spec("handlers.return_bytes")
    sizes = [3 * 1024 * 1024] + [100] * 3000

    outcomes = await pool.run_batch(spec, make_tasks(*sizes))

    assert len(outcomes) == 3001
    assert all(outcome.ok for outcome in outcomes)
    assert len(outcomes[0].result) == 3 * 1024 * 1024
    assert [len(outcome.result) for outcome in outcomes[1:]] == [100] * 3000
    assert [outcome.task_id for outcome in outcomes] == [f"t{index}" for index in range(3001)]


async def test_prestart_warms_one_process(pool):
    spec = make_spec("handlers.pid")

    assert await pool.prestart(spec) is True
    children = [child.pid for child in runtime_children()]
    assert await pool.prestart(spec) is False
    (outcome,) = await pool.run_batch(spec, make_tasks(1))

    assert children == [outcome.result]
    assert [child.pid for child in runtime_children()] == children


async def test_prestart_skips_bad_handler(pool):
    assert await pool.prestart(make_spec("handlers.missing_handler")) is False
