"""Pool-side handle of one worker process: start, talk to, kill and clean up."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import ctypes
import functools
import logging
import mmap
import os
import shutil
import signal
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import taskservice
from taskservice.functions.protocol import (
    CANCEL_FLAGS_OFFSET,
    CANCEL_SIGNAL,
    CHILD_MODULE,
    MAX_BATCH_TASKS,
    MAX_CONTROL_FRAME_BYTES,
    OUTBOX_DATA_OFFSET,
    OUTBOX_HEADER,
    OUTBOX_SIZE,
    SHARED_MEMORY_SIZE,
    TASK_RUNNING,
    TASK_STATES_OFFSET,
    FrameDecoder,
    ProtocolError,
    encode_frame,
)
from taskservice.functions.spec import EXIT_ERROR, INVOCATION, PROTOCOL_ERROR, TIMEOUT, FunctionSpec, make_error

logger = logging.getLogger("taskservice.functions")

_TASKSERVICE_ROOT = str(Path(taskservice.__file__).resolve().parent.parent)
_MINIMAL_PATH = "/usr/local/bin:/usr/bin:/bin"
_OUTPUT_TAIL_LINES = 20
_EOF_WAIT_S = 1.0

# Raw output (fd 1 and 2 of the worker, such as output of subprocesses or a
# faulthandler dump) is logged by the pool at most this many lines per window.
_RAW_OUTPUT_LINES_PER_WINDOW = 100
_RAW_OUTPUT_WINDOW_S = 10.0


@dataclass(frozen=True)
class WorkerSettings:
    """Pool-wide settings passed to every worker process."""

    python: str
    max_result_bytes: int
    max_log_bytes: int
    flush_interval_s: float = 0.02


@dataclass(frozen=True)
class InitFailure:
    """Reason why a worker could not load the handler, with ``[unix_time, level, text]`` log entries."""

    error: dict[str, str]
    logs: list[list[Any]]


class WorkerExited(Exception):
    """Raised by WorkerProcess.receive when the result pipe is closed."""


def build_environment(spec: FunctionSpec, home: str) -> dict[str, str]:
    """Build the clean environment of a worker: minimal defaults plus the function's own variables.

    Nothing is inherited from the pool process. ``PYTHONPATH`` makes the
    ``taskservice`` package importable, and a ``PYTHONPATH`` set by the
    function is appended after it.
    """
    environment = {
        "PATH": _MINIMAL_PATH,
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "HOME": home,
        "TMPDIR": home,
        "PYTHONDONTWRITEBYTECODE": "1",
        # One malloc arena keeps the address space small under RLIMIT_AS.
        "MALLOC_ARENA_MAX": "1",
    }
    environment.update(spec.environment)
    user_path = spec.environment.get("PYTHONPATH")
    environment["PYTHONPATH"] = _TASKSERVICE_ROOT + (os.pathsep + user_path if user_path else "")
    return environment


def validate_environment(environment: Mapping[str, str]) -> str | None:
    """Return a message describing the first invalid variable, or None when all are valid."""
    for key, value in environment.items():
        if not isinstance(key, str) or not key or "=" in key or "\0" in key:
            return f"Environment variable name {key!r} is invalid: it must be a non-empty string without '=' or NUL"
        if not isinstance(value, str) or "\0" in value:
            return f"Environment variable {key!r} has an invalid value: it must be a string without NUL"
    return None


class _ResultProtocol(asyncio.Protocol):
    """Decodes frames from the result pipe and hands them to one waiting reader."""

    def __init__(self, max_frame_bytes: int) -> None:
        self._decoder = FrameDecoder(max_frame_bytes)
        self._messages: collections.deque[Any] = collections.deque()
        self._waiter: asyncio.Future[None] | None = None
        self._transport: asyncio.BaseTransport | None = None
        self.error: ProtocolError | None = None
        self.closed = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport

    def data_received(self, data: bytes) -> None:
        if self.error is not None:
            return
        try:
            self._messages.extend(self._decoder.feed(data))
        except ProtocolError as exc:
            self.error = exc
        self._wake()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def receive(self) -> list[Any]:
        while not self._messages:
            if self.error is not None:
                raise self.error
            if self.closed.done():
                raise WorkerExited()
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        messages = list(self._messages)
        self._messages.clear()
        return messages

    def take_received(self) -> list[Any]:
        messages = list(self._messages)
        self._messages.clear()
        return messages

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()


class WorkerProcess:
    """One worker process of a function version."""

    def __init__(self, spec: FunctionSpec, settings: WorkerSettings) -> None:
        self.spec = spec
        self.version = spec.version
        self.last_used = time.monotonic()
        self._settings = settings
        self._process: asyncio.subprocess.Process | None = None
        self._home = ""
        self._shared_memory: mmap.mmap | None = None
        self._killed = False
        self._results: _ResultProtocol | None = None
        self._commands: asyncio.WriteTransport | None = None
        self._output_tasks: list[asyncio.Task[None]] = []
        self._output_tail: collections.deque[tuple[float, str, str]] = collections.deque(maxlen=_OUTPUT_TAIL_LINES)
        self._raw_lines_logged = 0
        self._raw_window_start = 0.0
        self._stopping: asyncio.Task[None] | None = None

    @property
    def pid(self) -> int:
        """Process id of the worker."""
        assert self._process is not None
        return self._process.pid

    @property
    def returncode(self) -> int | None:
        """Exit status as reported by asyncio: negative for a signal, None while running."""
        return None if self._process is None else self._process.returncode

    @property
    def alive(self) -> bool:
        """Whether the process runs and its result pipe is open."""
        return (
            self._process is not None
            and self._process.returncode is None
            and self._results is not None
            and not self._results.closed.done()
            and self._results.error is None
            and self._stopping is None
        )

    @property
    def stopped_by_pool(self) -> bool:
        """Whether ``stop`` was called, as opposed to the process dying on its own or by ``kill``."""
        return self._stopping is not None

    async def start(self) -> None:
        """Start the process and send it the init message."""
        loop = asyncio.get_running_loop()
        # NOTE: stop() removes this folder, so a pool process that is killed
        # leaves the folders of its workers behind.
        self._home = tempfile.mkdtemp(prefix="taskservice-function-")
        command_read, command_write = os.pipe()
        result_read, result_write = os.pipe()
        shared_fd = _create_shared_memory()
        child_fds = (command_read, result_write, shared_fd)
        try:
            self._shared_memory = mmap.mmap(shared_fd, SHARED_MEMORY_SIZE)
            self._process = await asyncio.create_subprocess_exec(
                self._settings.python,
                "-P",
                "-m",
                CHILD_MODULE,
                *(str(fd) for fd in child_fds),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env=build_environment(self.spec, self._home),
                cwd=str(self.spec.code_dir.resolve()),
                pass_fds=child_fds,
                start_new_session=True,
            )
        except BaseException:
            for fd in (command_write, result_read):
                os.close(fd)
            self._release_resources()
            raise
        finally:
            for fd in child_fds:
                os.close(fd)

        max_frame = self._settings.max_result_bytes + 8 * self._settings.max_log_bytes + MAX_CONTROL_FRAME_BYTES
        _, self._results = await loop.connect_read_pipe(
            lambda: _ResultProtocol(max_frame), open(result_read, "rb", buffering=0)
        )
        self._commands, _ = await loop.connect_write_pipe(asyncio.Protocol, open(command_write, "wb", buffering=0))
        assert self._process.stdout is not None and self._process.stderr is not None
        self._output_tasks = [
            asyncio.create_task(self._read_output(self._process.stdout, "stdout")),
            asyncio.create_task(self._read_output(self._process.stderr, "stderr")),
        ]
        self._send(
            {
                "kind": "init",
                "function_name": self.spec.name,
                "version": self.spec.version,
                "entry_point": self.spec.entry_point,
                "code_dir": str(self.spec.code_dir.resolve()),
                "time_limit_s": float(self.spec.time_limit_s),
                "memory_limit_mb": self.spec.memory_limit_mb,
                "max_result_bytes": self._settings.max_result_bytes,
                "max_log_bytes": self._settings.max_log_bytes,
                "flush_interval_s": min(self._settings.flush_interval_s, self.spec.time_limit_s / 20),
                "parent_pid": os.getpid(),
            }
        )
        logger.debug("Started worker process %d for function %s version %s", self.pid, self.spec.name, self.version)

    def _send(self, message: Any) -> None:
        assert self._commands is not None
        self._commands.write(encode_frame(message))

    def send_batch(self, tasks: Sequence[dict[str, Any]], canceled: Iterable[int] = ()) -> None:
        """Send a batch of at most MAX_BATCH_TASKS tasks to the worker in one write.

        The tasks at the indexes in ``canceled`` are skipped by the worker.
        Call it only while the worker runs no batch, because it resets the
        cancel flags and task states of the shared memory.
        """
        if len(tasks) > MAX_BATCH_TASKS:
            raise ValueError(
                f"Batch of {len(tasks)} tasks exceeds the maximum of {MAX_BATCH_TASKS} tasks per batch message"
            )
        assert self._shared_memory is not None
        cleared = bytes(len(tasks))
        self._shared_memory[CANCEL_FLAGS_OFFSET : CANCEL_FLAGS_OFFSET + len(tasks)] = cleared
        self._shared_memory[TASK_STATES_OFFSET : TASK_STATES_OFFSET + len(tasks)] = cleared
        for index in canceled:
            self._shared_memory[CANCEL_FLAGS_OFFSET + index] = 1
        self._send({"kind": "batch", "tasks": tasks})

    def interrupt(self, index: int) -> None:
        """Cancel task ``index`` of the batch message that the worker runs.

        Sets the task's cancel flag, then sends CANCEL_SIGNAL to the worker's
        main thread. The worker skips the task if it has not started it yet,
        interrupts its handler if it runs, and ignores the signal otherwise.
        Does nothing once the worker was killed or has exited.
        """
        process = self._process
        if self._shared_memory is None or process is None or process.returncode is not None or self._killed:
            return
        self._shared_memory[CANCEL_FLAGS_OFFSET + index] = 1
        _signal_main_thread(process.pid, CANCEL_SIGNAL)

    def is_running(self, index: int) -> bool:
        """Return whether the worker reports that the handler of task ``index`` of its batch message runs."""
        if self._shared_memory is None:
            return False
        return self._shared_memory[TASK_STATES_OFFSET + index] == TASK_RUNNING

    async def receive(self) -> list[Any]:
        """Wait for the next decoded messages. Raise WorkerExited or ProtocolError when none can arrive."""
        assert self._results is not None
        return await self._results.receive()

    def take_received(self) -> list[Any]:
        """Return decoded messages that arrived but were not received yet, without waiting."""
        return [] if self._results is None else self._results.take_received()

    async def initialize(self, timeout_s: float) -> InitFailure | None:
        """Wait for the worker to load the handler. Return None when it is ready, else the reason for the failure.

        On failure the worker is stopped before this method returns.
        """
        started = time.time()
        try:
            async with asyncio.timeout(timeout_s):
                messages = await self.receive()
        except TimeoutError:
            message = f"Function initialization timed out after {timeout_s:.2f} seconds"
            failure = InitFailure(make_error(INVOCATION, TIMEOUT, message), self._tail_entries(started))
        except (WorkerExited, ProtocolError):
            self.kill()
            await self.wait_exited()
            message = f"Runtime exited with {self.describe_exit()} during initialization"
            failure = InitFailure(make_error(INVOCATION, EXIT_ERROR, message), self._tail_entries(started))
        else:
            first = messages[0]
            if isinstance(first, dict) and first.get("kind") == "ready":
                return None
            if isinstance(first, dict) and first.get("kind") == "init_error":
                failure = InitFailure(first["error"], first.get("logs") or [])
            else:
                message = f"Runtime sent {str(first)[:200]} instead of a ready message"
                failure = InitFailure(make_error(INVOCATION, PROTOCOL_ERROR, message), [])
        logger.warning(
            "Worker %d of function %s version %s failed to initialize: %s: %s",
            self.pid,
            self.spec.name,
            self.version,
            failure.error.get("name"),
            failure.error.get("message"),
        )
        await self.stop(0)
        return failure

    def _tail_entries(self, since: float) -> list[list[Any]]:
        return [[at, level, text] for at, level, text in self.output_tail(since)]

    def kill(self) -> None:
        """Send SIGKILL to the worker's process group without waiting.

        The worker leads its own session, so it cannot leave the group. The
        asyncio Process.kill method is not used: it polls the process first,
        which can reap it before the asyncio child watcher does, and asyncio
        then reports exit code 255 in place of the real status.
        """
        if self._process is None or self._process.returncode is not None:
            return
        self._killed = True
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self._process.pid, signal.SIGKILL)

    async def wait_exited(self) -> int:
        """Wait until the process is reaped and the result pipe and output pipes are read to the end."""
        assert self._process is not None
        returncode = await self._process.wait()
        # Processes started by user code may keep the pipes open. They belong to
        # the worker's process group, so killing the group ends them. Linux does
        # not reuse the id while the group has members, and with no members left
        # the call fails with ProcessLookupError.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self._process.pid, signal.SIGKILL)
        pending: list[asyncio.Future[Any]] = list(self._output_tasks)
        if self._results is not None:
            pending.append(self._results.closed)
        if pending:
            _, not_done = await asyncio.wait(pending, timeout=_EOF_WAIT_S)
            for task in not_done:
                if task in self._output_tasks:
                    task.cancel()
        return returncode

    def recover_items(self) -> list[Any]:
        """Return task items left in the outbox by a dead worker. Call it after wait_exited."""
        if self._shared_memory is None:
            return []
        (pending,) = OUTBOX_HEADER.unpack_from(self._shared_memory, 0)
        pending = min(pending, OUTBOX_SIZE - OUTBOX_DATA_OFFSET)
        decoder = FrameDecoder(OUTBOX_SIZE)
        try:
            return decoder.feed(self._shared_memory[OUTBOX_DATA_OFFSET : OUTBOX_DATA_OFFSET + pending])
        except ProtocolError:
            logger.warning("Ignored unreadable outbox of dead worker %d of function %s", self.pid, self.spec.name)
            return []

    def output_tail(self, since: float) -> list[tuple[float, str, str]]:
        """Return ``(unix_time, level, text)`` for the last raw output lines received after ``since``."""
        return [entry for entry in self._output_tail if entry[0] >= since]

    def describe_exit(self) -> str:
        """Describe how the process ended, e.g. ``code 3`` or ``signal 9 (SIGKILL)``."""
        returncode = self.returncode
        if returncode is None:
            return "an unknown status"
        if returncode < 0:
            try:
                name = signal.Signals(-returncode).name
            except ValueError:
                return f"signal {-returncode}"
            return f"signal {-returncode} ({name})"
        return f"code {returncode}"

    async def stop(self, grace_s: float) -> None:
        """Stop the worker and release its resources: close its command pipe, wait up to ``grace_s``, then kill it.

        Safe to call more than once and concurrently.
        """
        if self._stopping is None:
            self._stopping = asyncio.ensure_future(self._stop(grace_s))
        await asyncio.shield(self._stopping)

    async def _stop(self, grace_s: float) -> None:
        try:
            if self._process is not None:
                if self._commands is not None:
                    self._commands.close()
                if self._process.returncode is None and grace_s > 0:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(asyncio.shield(self._process.wait()), grace_s)
                self.kill()
                await self.wait_exited()
                logger.debug(
                    "Stopped worker process %d of function %s (exited with %s)",
                    self.pid,
                    self.spec.name,
                    self.describe_exit(),
                )
        finally:
            self._release_resources()

    def _release_resources(self) -> None:
        if self._commands is not None:
            self._commands.close()
        if self._results is not None:
            self._results.close()
        if self._shared_memory is not None:
            self._shared_memory.close()
            self._shared_memory = None
        if self._home:
            shutil.rmtree(self._home, ignore_errors=True)

    async def _read_output(self, stream: asyncio.StreamReader, name: str) -> None:
        level = "INFO" if name == "stdout" else "ERROR"
        partial = b""
        while True:
            chunk = await stream.read(64 * 1024)
            if not chunk:
                break
            *lines, partial = (partial + chunk).split(b"\n")
            if len(partial) > 64 * 1024:
                lines.append(partial)
                partial = b""
            for line in lines:
                self._record_output(level, name, line)
        if partial:
            self._record_output(level, name, partial)

    def _record_output(self, level: str, stream_name: str, raw_line: bytes) -> None:
        # Invalid UTF-8 and NUL become U+FFFD, as in the lines that the worker captures.
        text = raw_line.decode("utf-8", "replace").rstrip("\r").replace("\x00", "\ufffd")
        now = time.time()
        self._output_tail.append((now, level, text))
        if now - self._raw_window_start > _RAW_OUTPUT_WINDOW_S:
            self._raw_window_start = now
            self._raw_lines_logged = 0
        self._raw_lines_logged += 1
        if self._raw_lines_logged <= _RAW_OUTPUT_LINES_PER_WINDOW:
            logger.info("Function %s worker %d %s: %s", self.spec.name, self.pid, stream_name, text)
        elif self._raw_lines_logged == _RAW_OUTPUT_LINES_PER_WINDOW + 1:
            logger.warning(
                "Function %s worker %d wrote more than %d lines to its %s in %.0f s; dropping the rest of this window",
                self.spec.name,
                self.pid,
                _RAW_OUTPUT_LINES_PER_WINDOW,
                stream_name,
                _RAW_OUTPUT_WINDOW_S,
            )


def _create_shared_memory() -> int:
    """Create the shared memory file of a worker (outbox, cancel flags, task states) and return its descriptor."""
    if hasattr(os, "memfd_create"):
        fd = os.memfd_create("taskservice-outbox")
    else:
        with tempfile.TemporaryFile() as handle:
            fd = os.dup(handle.fileno())
    os.ftruncate(fd, SHARED_MEMORY_SIZE)
    return fd


@functools.cache
def _load_tgkill() -> Callable[[int, int, int], int] | None:
    """Return libc's tgkill function, or None where libc has none (glibc before 2.30, macOS)."""
    try:
        tgkill = ctypes.CDLL(None, use_errno=True).tgkill
    except (OSError, AttributeError):
        return None
    tgkill.argtypes = (ctypes.c_int, ctypes.c_int, ctypes.c_int)
    tgkill.restype = ctypes.c_int
    return tgkill


def _signal_main_thread(pid: int, signum: int) -> None:
    """Send ``signum`` to the main thread of process ``pid``, ignoring a process that has exited.

    On Linux the id of a process's main thread equals the process id. kill()
    may deliver the signal to any thread that does not block it, and one that
    reaches another thread does not wake a main thread blocked in a system
    call, so tgkill is used where libc provides it.
    """
    tgkill = _load_tgkill()
    if tgkill is not None:
        # A failure (ESRCH for a process that has exited) needs no handling.
        tgkill(pid, pid, signum)
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, signum)
