"""Python function runtime: runs user handlers in isolated, warm worker processes, in batches.

Isolation
    Each worker is a separate OS process started with a clean environment:
    PATH, LANG, LC_ALL, HOME and TMPDIR (a private temporary folder),
    PYTHONPATH for the runtime's own package, PYTHONDONTWRITEBYTECODE,
    MALLOC_ARENA_MAX=1 and then the function's own variables. Nothing of the
    pool process's environment is passed on. The function's code folder is the
    working folder and the first ``sys.path`` entry.

Memory limit
    ``FunctionSpec.memory_limit_mb`` sets RLIMIT_AS, the address-space limit,
    of the worker before the handler module is imported. The interpreter and
    runtime take about 32 MB of it (CPython 3.11 on Linux x86-64). An
    allocation past the limit raises MemoryError in the handler, and the task
    fails with ``Runtime.OutOfMemory``. Libraries that reserve large address
    ranges without using them (some BLAS builds, for example) need a larger
    limit than their resident memory suggests.

Time limit
    A task that runs longer than ``FunctionSpec.time_limit_s`` is stopped by
    killing its worker with SIGKILL. The task fails with ``Runtime.Timeout``
    and the rest of the batch runs on a new worker.

Cancellation
    ``RuntimePool.cancel`` fails a task with ``TaskCanceled``. A task that has
    not started is skipped without running its handler. A running handler is
    interrupted through SIGUSR1: a sync handler gets a ``TaskCanceled``
    exception (a BaseException) and an async handler's asyncio task is
    cancelled, and the worker goes on with the batch. A handler that still
    runs after the grace period is stopped by killing its worker, as with the
    time limit.

Text that PostgreSQL cannot store
    NUL characters and lone surrogates in results, log lines and error
    messages are replaced with U+FFFD.

Public names: FunctionSpec, TaskOutcome, RuntimePool and PoolClosedError.
"""

from taskservice.functions.pool import RuntimePool
from taskservice.functions.spec import FunctionSpec, PoolClosedError, TaskOutcome

__all__ = ["FunctionSpec", "PoolClosedError", "RuntimePool", "TaskOutcome"]
