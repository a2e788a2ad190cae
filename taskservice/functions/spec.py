"""Public value types of the function runtime: function specs, task outcomes and error names."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

# Error types. A "runtime" error belongs to one task. An "invocation" error means
# that the function could not be loaded, so every task of the batch fails with it.
RUNTIME = "runtime"
INVOCATION = "invocation"

# Error names produced by the runtime itself. Exceptions raised by a handler use
# the exception class name instead.
IMPORT_MODULE_ERROR = "Runtime.ImportModuleError"
HANDLER_NOT_FOUND = "Runtime.HandlerNotFound"
INVALID_ENTRYPOINT = "Runtime.InvalidEntrypoint"
INVALID_ENVIRONMENT = "Runtime.InvalidEnvironment"
INVALID_RESULT = "Runtime.InvalidResult"
RESULT_TOO_LARGE = "Runtime.ResultTooLarge"
OUT_OF_MEMORY = "Runtime.OutOfMemory"
TIMEOUT = "Runtime.Timeout"
EXIT_ERROR = "Runtime.ExitError"
PROTOCOL_ERROR = "Runtime.ProtocolError"

# Error of a task stopped by RuntimePool.cancel, with its fixed message.
TASK_CANCELED = "TaskCanceled"
TASK_CANCELED_MESSAGE = "Task was cancelled"


class PoolClosedError(RuntimeError):
    """Raised by RuntimePool.run_batch when the pool is closed before or during the batch."""


@dataclass(frozen=True)
class FunctionSpec:
    """Code and settings of one function version.

    ``memory_limit_mb`` limits the address space (RLIMIT_AS) of the worker
    process. The limit includes the about 32 MB that the interpreter and the
    runtime map before the handler runs (measured with CPython 3.11 on Linux
    x86-64), so handlers get less than the full amount.
    """

    name: str
    code_dir: Path
    entry_point: str
    environment: Mapping[str, str] = field(hash=False)
    time_limit_s: float
    memory_limit_mb: int
    version: str

    def __post_init__(self) -> None:
        if not isinstance(self.code_dir, Path):
            object.__setattr__(self, "code_dir", Path(self.code_dir))
        if not self.name:
            raise ValueError("FunctionSpec.name must not be empty")
        if not (isinstance(self.time_limit_s, (int, float)) and math.isfinite(self.time_limit_s)):
            raise ValueError(f"FunctionSpec.time_limit_s must be a finite number, got {self.time_limit_s!r}")
        if self.time_limit_s <= 0:
            raise ValueError(f"FunctionSpec.time_limit_s must be positive, got {self.time_limit_s!r}")
        if not isinstance(self.memory_limit_mb, int) or self.memory_limit_mb <= 0:
            raise ValueError(f"FunctionSpec.memory_limit_mb must be a positive integer, got {self.memory_limit_mb!r}")


@dataclass(slots=True)
class TaskOutcome:
    """Result of running one task.

    ``error`` is ``{"type": "runtime" | "invocation", "name": str, "message": str}``
    when ``ok`` is false. Each log entry is ``(UTC timestamp, line)`` with the line
    in the layout ``"<ISO time>\\t<task id>\\t<LEVEL>\\t<text>"``.
    """

    task_id: str
    ok: bool
    result: Any
    error: dict[str, str] | None
    logs: list[tuple[datetime, str]]
    started_at: datetime
    finished_at: datetime


def make_error(error_type: str, name: str, message: str) -> dict[str, str]:
    """Build the error dict stored in TaskOutcome.error."""
    return {"type": error_type, "name": name, "message": message}
