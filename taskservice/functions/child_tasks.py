"""Handler loading and task execution inside a worker process."""

from __future__ import annotations

import asyncio
import importlib
import inspect
import logging
import os
import time
import traceback
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

import orjson

from taskservice.functions.child_interrupts import TaskCanceled, TaskInterrupts
from taskservice.functions.child_logging import LogRouter
from taskservice.functions.protocol import task_id_of
from taskservice.functions.spec import (
    HANDLER_NOT_FOUND,
    IMPORT_MODULE_ERROR,
    INVALID_ENTRYPOINT,
    INVALID_RESULT,
    INVOCATION,
    OUT_OF_MEMORY,
    RESULT_TOO_LARGE,
    RUNTIME,
    TASK_CANCELED,
    TASK_CANCELED_MESSAGE,
    make_error,
)
from taskservice.functions.storable_text import dumps_storable, make_storable

# Frames from these folders are left out of the tracebacks shown to users.
_HIDDEN_TRACEBACK_FOLDERS = (
    os.path.dirname(os.path.abspath(__file__)) + os.sep,
    os.path.dirname(os.path.abspath(asyncio.__file__)) + os.sep,
)

_MISSING = object()

# Error messages are stored with each task, so very long exception texts are cut.
MAX_ERROR_MESSAGE_CHARS = 64 * 1024

# Memory released on MemoryError so that the error can still be reported.
_RESERVE_BYTES = 1024 * 1024


class InvocationError(Exception):
    """Raised when the handler cannot be loaded. The error fails every task of a batch."""

    def __init__(self, name: str, message: str) -> None:
        super().__init__(message)
        self.name = name
        self.message = message

    def to_error(self) -> dict[str, str]:
        """Return the error dict for TaskOutcome.error."""
        return make_error(INVOCATION, self.name, self.message)


class _ResultError(Exception):
    def __init__(self, name: str, message: str) -> None:
        super().__init__(message)
        self.name = name
        self.message = message


class Context:
    """Second argument of every handler call: task metadata and the remaining time."""

    __slots__ = (
        "task_id",
        "function_name",
        "function_version",
        "memory_limit_in_mb",
        "attempt",
        "deadline_unix",
        "logger",
    )

    def __init__(
        self,
        task_id: str,
        function_name: str,
        function_version: str,
        memory_limit_in_mb: int,
        attempt: Any,
        deadline_unix: float,
        logger: logging.Logger,
    ) -> None:
        self.task_id = task_id
        self.function_name = function_name
        self.function_version = function_version
        self.memory_limit_in_mb = memory_limit_in_mb
        self.attempt = attempt
        self.deadline_unix = deadline_unix
        self.logger = logger

    @property
    def deadline(self) -> datetime:
        """UTC time at which the pool stops the task."""
        return datetime.fromtimestamp(self.deadline_unix, timezone.utc)

    @property
    def aws_request_id(self) -> str:
        """Task id under the name that AWS Lambda handlers use."""
        return self.task_id

    def get_remaining_time_in_millis(self) -> int:
        """Return the milliseconds left before the time limit, never below 0."""
        return max(0, int((self.deadline_unix - time.time()) * 1000))


def is_valid_entry_point(entry_point: str) -> bool:
    """Return whether ``entry_point`` has the form ``module.attribute`` with dotted identifiers."""
    parts = entry_point.split(".")
    return len(parts) >= 2 and all(part.isidentifier() for part in parts)


def load_handler(entry_point: str, router: LogRouter) -> Callable[..., Any]:
    """Import the module named by ``entry_point`` and return its handler.

    Raises InvocationError with the name Runtime.InvalidEntrypoint,
    Runtime.ImportModuleError, Runtime.HandlerNotFound or Runtime.OutOfMemory.
    The import traceback is added to the router's current buffer.
    """
    if not is_valid_entry_point(entry_point):
        raise InvocationError(
            INVALID_ENTRYPOINT,
            f"Entry point {entry_point!r} is invalid: expected 'module.handler' or 'package.module.handler'",
        )
    module_name, _, attribute = entry_point.rpartition(".")
    try:
        module = importlib.import_module(module_name)
    except MemoryError as exc:
        traceback.clear_frames(exc.__traceback__)
        raise InvocationError(OUT_OF_MEMORY, f"Importing module {module_name!r} exceeded the memory limit") from None
    except BaseException as exc:  # noqa: BLE001 - module code may raise anything, including SystemExit
        router.add(time.time(), "ERROR", format_exception(exc))
        message = f"Unable to import module {module_name!r}: {type(exc).__name__}: {safe_str(exc)}"
        raise InvocationError(IMPORT_MODULE_ERROR, message) from None

    handler = getattr(module, attribute, _MISSING)
    if handler is _MISSING:
        raise InvocationError(HANDLER_NOT_FOUND, f"Handler {attribute!r} is missing on module {module_name!r}")
    if not callable(handler):
        message = f"Handler {attribute!r} in module {module_name!r} is not callable (it is a {type(handler).__name__})"
        raise InvocationError(HANDLER_NOT_FOUND, message)
    return handler


def safe_str(exc: BaseException) -> str:
    """Return ``str(exc)`` cut to MAX_ERROR_MESSAGE_CHARS, or a placeholder when ``__str__`` fails."""
    try:
        text = str(exc)
    except Exception:  # noqa: BLE001 - user-defined __str__ may raise anything
        return f"<unprintable {type(exc).__name__} object>"
    if len(text) > MAX_ERROR_MESSAGE_CHARS:
        text = f"{text[:MAX_ERROR_MESSAGE_CHARS]}... (cut from {len(text)} characters)"
    return make_storable(text)


def format_exception(exc: BaseException) -> str:
    """Format ``exc`` like Python does, leaving out frames of the runtime and of asyncio."""
    details = traceback.TracebackException.from_exception(exc)
    _hide_runtime_frames(details)
    return "".join(details.format()).rstrip("\n")


def _format_interrupt(exc: BaseException) -> str:
    """Format the handler frames where a cancel interrupted it, followed by ``TaskCanceled: <message>``.

    ``exc`` is the TaskCanceled or asyncio.CancelledError that the interrupt
    raised. format_exception would show its class under its module path, and
    the exception that the handler was handling, if any, which is not the cause.
    """
    stack = traceback.StackSummary.extract(traceback.walk_tb(exc.__traceback__))
    frames = [frame for frame in stack if not frame.filename.startswith(_HIDDEN_TRACEBACK_FOLDERS)]
    last_line = f"{TASK_CANCELED}: {TASK_CANCELED_MESSAGE}"
    if not frames:
        return last_line
    return "Traceback (most recent call last):\n" + "".join(traceback.format_list(frames)) + last_line


def _hide_runtime_frames(details: traceback.TracebackException) -> None:
    seen: set[int] = set()
    current: traceback.TracebackException | None = details
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        frames = [frame for frame in current.stack if not frame.filename.startswith(_HIDDEN_TRACEBACK_FOLDERS)]
        current.stack = traceback.StackSummary.from_list(frames)
        current = current.__cause__ or current.__context__


class TaskRunner:
    """Runs the tasks of a batch one after another and encodes their task items."""

    def __init__(self, init: dict[str, Any], router: LogRouter, interrupts: TaskInterrupts) -> None:
        self._handler: Callable[..., Any] = _handler_not_loaded
        self._is_coroutine_function = False
        self._router = router
        self._interrupts = interrupts
        self._function_name: str = init["function_name"]
        self._version: str = init["version"]
        self._time_limit_s: float = init["time_limit_s"]
        self._memory_limit_mb: int = init["memory_limit_mb"]
        self._max_result_bytes: int = init["max_result_bytes"]
        self._logger = logging.getLogger(self._function_name)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._reserve: bytearray | None = bytearray(_RESERVE_BYTES)

    def set_handler(self, handler: Callable[..., Any]) -> None:
        """Set the handler that ``run_task`` calls."""
        self._handler = handler
        self._is_coroutine_function = inspect.iscoroutinefunction(handler)

    def run_task(self, index: int, task: dict[str, Any]) -> bytes:
        """Run task ``index`` of the batch message and return its task item as JSON bytes.

        A task cancelled before it starts is skipped. A cancelled task fails
        with TaskCanceled however its handler ended.
        """
        task_id = task_id_of(task)
        self._router.current.set_task_id(task_id)

        started = time.time()
        context = Context(
            task_id,
            self._function_name,
            self._version,
            self._memory_limit_mb,
            task.get("attempt") if isinstance(task, dict) else None,
            started + self._time_limit_s,
            self._logger,
        )

        interrupts = self._interrupts
        ok = False
        result: bytes | None = None
        error: dict[str, str] | None = None
        try:
            try:
                interrupts.enter(index)
                value = self._call(task, context)
            finally:
                interrupts.leave()
            result = self._encode_result(value)
            ok = True
        except TaskCanceled as exc:
            error = self._canceled_error(exc)
        except _ResultError as exc:
            error = make_error(RUNTIME, exc.name, exc.message)
            self._router.add(time.time(), "ERROR", f"{exc.name}: {exc.message}")
        except MemoryError as exc:
            error = self._out_of_memory_error(exc)
        except BaseException as exc:  # noqa: BLE001 - every handler failure becomes a task error
            if interrupts.canceled and isinstance(exc, asyncio.CancelledError):
                error = self._canceled_error(exc)
            else:
                error = make_error(RUNTIME, make_storable(type(exc).__name__), safe_str(exc))
                self._router.add(time.time(), "ERROR", format_exception(exc))
        # A cancel signal can raise inside the first leave call, before it
        # stored the task's end. No second exception can follow, because the
        # signal handler raises at most once per task.
        interrupts.leave()

        if interrupts.canceled and (error is None or error["name"] != TASK_CANCELED):
            # The handler caught the interrupt and ended in another way. The
            # task still counts as cancelled.
            ok = False
            result = None
            error = make_error(RUNTIME, TASK_CANCELED, TASK_CANCELED_MESSAGE)
            self._router.add(time.time(), "ERROR", f"{TASK_CANCELED}: {TASK_CANCELED_MESSAGE}")

        logs = self._router.take()
        finished = time.time()
        try:
            return self._encode_item(index, ok, result, error, logs.render(task_id, finished), started, finished)
        except MemoryError:
            self._reserve = None
            error = make_error(RUNTIME, OUT_OF_MEMORY, f"Task exceeded the memory limit of {self._memory_limit_mb} MB")
            return self._encode_item(index, False, None, error, [], started, finished)

    def _canceled_error(self, exc: BaseException) -> dict[str, str]:
        """Log where the handler was interrupted, or that it never started, and return the TaskCanceled error."""
        if self._interrupts.skipped:
            text = f"{TASK_CANCELED}: {TASK_CANCELED_MESSAGE} before it started"
        else:
            text = _format_interrupt(exc)
        self._router.add(time.time(), "ERROR", text)
        return make_error(RUNTIME, TASK_CANCELED, TASK_CANCELED_MESSAGE)

    def _call(self, task: dict[str, Any], context: Context) -> Any:
        if self._is_coroutine_function:
            return self._interrupts.run_in_loop(self._event_loop(), self._handler(task, context))
        value = self._handler(task, context)
        if inspect.isawaitable(value):
            return self._interrupts.run_in_loop(self._event_loop(), value)
        return value

    def _event_loop(self) -> asyncio.AbstractEventLoop:
        # One loop serves every async handler call, so state bound to the loop
        # (clients, connection pools) survives between tasks.
        if self._loop is None:
            self._loop = asyncio.new_event_loop()
            asyncio.set_event_loop(self._loop)
        return self._loop

    def _encode_result(self, value: Any) -> bytes:
        try:
            encoded = dumps_storable(value)
        except orjson.JSONEncodeError as exc:
            raise _ResultError(INVALID_RESULT, f"Handler result is not JSON-serializable: {exc}") from None
        if len(encoded) > self._max_result_bytes:
            message = (
                f"Handler result is {len(encoded)} bytes of JSON, "
                f"which exceeds the limit of {self._max_result_bytes} bytes"
            )
            raise _ResultError(RESULT_TOO_LARGE, message)
        return encoded

    def _out_of_memory_error(self, exc: MemoryError) -> dict[str, str]:
        # Clearing the frames frees the handler's locals, which usually reference
        # the memory that ran out. The released reserve leaves room to report the error.
        self._reserve = None
        traceback.clear_frames(exc.__traceback__)
        message = f"Task exceeded the memory limit of {self._memory_limit_mb} MB"
        try:
            self._router.add(time.time(), "ERROR", f"{OUT_OF_MEMORY}: {message}\n{format_exception(exc)}")
            self._reserve = bytearray(_RESERVE_BYTES)
        except MemoryError:
            pass
        return make_error(RUNTIME, OUT_OF_MEMORY, message)

    @staticmethod
    def _encode_item(
        index: int,
        ok: bool,
        result: bytes | None,
        error: dict[str, str] | None,
        logs: list[list[Any]],
        started: float,
        finished: float,
    ) -> bytes:
        encoded_result = orjson.Fragment(result) if ok and result is not None else None
        return orjson.dumps([index, ok, encoded_result, error, logs, started, finished])


def _handler_not_loaded(task: Any, context: Context) -> Any:
    raise RuntimeError("TaskRunner.set_handler was not called")
