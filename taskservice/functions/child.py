"""Entry point of a function worker process.

The pool starts ``python -P -m taskservice.functions.child COMMAND_FD RESULT_FD
OUTBOX_FD`` with a clean environment. The ``protocol`` module describes the
messages. The ``-P`` flag keeps the working folder off ``sys.path``, and the
function's code folder is put first on ``sys.path`` only after the runtime has
imported its own modules, so a user module such as ``logging.py`` cannot
replace them.
"""

from __future__ import annotations

import faulthandler
import mmap
import os
import resource
import signal
import sys
import threading
import time
import traceback
from typing import Any, BinaryIO

import orjson

from taskservice.functions.child_interrupts import TaskInterrupts
from taskservice.functions.child_logging import LogRouter, install_capture
from taskservice.functions.child_tasks import InvocationError, TaskRunner, load_handler
from taskservice.functions.protocol import (
    CANCEL_FLAGS_OFFSET,
    CANCEL_SIGNAL,
    FRAME_HEADER,
    MAX_BATCH_TASKS,
    OUTBOX_DATA_OFFSET,
    OUTBOX_HEADER,
    OUTBOX_SIZE,
    TASK_STATES_OFFSET,
    encode_frame,
)

_PR_SET_PDEATHSIG = 1
_FLUSHER_STACK_BYTES = 256 * 1024


class Outbox:
    """Collects task items in shared memory and copies them to the result pipe.

    A background thread copies pending items at most ``flush_interval_s`` after
    the first one arrives, so fast tasks share one write. The shared memory
    lets the pool read items that were not copied yet if the process dies.
    """

    def __init__(self, pipe_fd: int, memory: mmap.mmap, flush_interval_s: float) -> None:
        self._pipe_fd = pipe_fd
        self._memory = memory
        self._view = memoryview(self._memory)
        self._size = OUTBOX_SIZE
        self._pending = 0
        self._lock = threading.Lock()
        self._has_data = threading.Event()
        self._flush_interval_s = flush_interval_s

    def start(self) -> None:
        """Start the thread that copies pending items to the pipe."""
        threading.stack_size(_FLUSHER_STACK_BYTES)
        try:
            thread = threading.Thread(target=self._run_flusher, name="taskservice-outbox", daemon=True)
            thread.start()
        finally:
            threading.stack_size(0)

    def append(self, item: bytes) -> None:
        """Queue one task item, writing it to the pipe at once if it does not fit the shared memory."""
        frame_size = FRAME_HEADER.size + len(item)
        with self._lock:
            if OUTBOX_DATA_OFFSET + self._pending + frame_size > self._size:
                self._flush_locked()
            if OUTBOX_DATA_OFFSET + frame_size > self._size:
                self._write(FRAME_HEADER.pack(len(item)) + item)
                return
            start = OUTBOX_DATA_OFFSET + self._pending
            FRAME_HEADER.pack_into(self._memory, start, len(item))
            self._view[start + FRAME_HEADER.size : start + frame_size] = item
            self._pending += frame_size
            OUTBOX_HEADER.pack_into(self._memory, 0, self._pending)
        if not self._has_data.is_set():
            self._has_data.set()

    def flush(self) -> None:
        """Write every pending item to the pipe."""
        with self._lock:
            self._flush_locked()

    def send_control(self, message: dict[str, Any]) -> None:
        """Write pending items, then a control message, to the pipe."""
        frame = encode_frame(message)
        with self._lock:
            self._flush_locked()
            self._write(frame)

    def _flush_locked(self) -> None:
        if not self._pending:
            return
        self._write(self._view[OUTBOX_DATA_OFFSET : OUTBOX_DATA_OFFSET + self._pending])
        self._pending = 0
        OUTBOX_HEADER.pack_into(self._memory, 0, 0)

    def _write(self, data: bytes | memoryview) -> None:
        view = memoryview(data)
        try:
            while view:
                written = os.write(self._pipe_fd, view)
                view = view[written:]
        except BrokenPipeError:
            # The pool closed the result pipe, so results can no longer be delivered.
            os._exit(0)

    def _run_flusher(self) -> None:
        # The cancel signal must reach the main thread, which runs the handlers.
        signal.pthread_sigmask(signal.SIG_BLOCK, {CANCEL_SIGNAL})
        while True:
            self._has_data.wait()
            time.sleep(self._flush_interval_s)
            self._has_data.clear()
            self.flush()


def _read_message(reader: BinaryIO) -> Any | None:
    """Read one frame from the command pipe, or return None at end of file."""
    header = reader.read(FRAME_HEADER.size)
    if len(header) < FRAME_HEADER.size:
        return None
    (length,) = FRAME_HEADER.unpack(header)
    payload = reader.read(length)
    if len(payload) < length:
        return None
    return orjson.loads(payload)


def _exit_with_parent(parent_pid: int) -> None:
    """Ask Linux to kill this process when the pool process ends.

    Linux sends the signal when the thread that started the worker ends, so the
    pool's event loop must run in a thread that lives as long as the pool.
    """
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent_pid:
        os._exit(1)


def _limit_memory(memory_limit_mb: int) -> None:
    """Set RLIMIT_AS (soft and hard) to the function's memory limit."""
    limit = memory_limit_mb * 1024 * 1024
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    if hard != resource.RLIM_INFINITY and hard < limit:
        limit = hard
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def _put_code_dir_first(code_dir: str) -> None:
    sys.path[:] = [code_dir] + [entry for entry in sys.path if entry != code_dir]


def _run_batches(reader: BinaryIO, outbox: Outbox, runner: TaskRunner) -> None:
    while True:
        message = _read_message(reader)
        if message is None:
            return
        if message.get("kind") != "batch":
            continue
        for index, task in enumerate(message["tasks"]):
            outbox.append(runner.run_task(index, task))
        outbox.flush()


def main(argv: list[str] | None = None) -> int:
    """Run the worker process: load the handler, then run batches until the command pipe closes."""
    command_fd, result_fd, outbox_fd = (int(value) for value in (argv or sys.argv[1:])[:3])
    for fd in (command_fd, result_fd, outbox_fd):
        os.set_inheritable(fd, False)
    faulthandler.enable()

    reader = os.fdopen(command_fd, "rb", buffering=64 * 1024)
    init = _read_message(reader)
    if init is None:
        return 0

    shared_memory = mmap.mmap(outbox_fd, 0)
    os.close(outbox_fd)
    outbox = Outbox(result_fd, shared_memory, init["flush_interval_s"])
    outbox.start()
    router = LogRouter(init["max_log_bytes"])
    install_capture(router)
    shared_view = memoryview(shared_memory)
    interrupts = TaskInterrupts(
        shared_view[CANCEL_FLAGS_OFFSET : CANCEL_FLAGS_OFFSET + MAX_BATCH_TASKS],
        shared_view[TASK_STATES_OFFSET : TASK_STATES_OFFSET + MAX_BATCH_TASKS],
    )
    # NOTE: a handler module that installs its own handler for CANCEL_SIGNAL
    # (SIGUSR1) disables the interrupt of running tasks. Cancelled tasks that
    # have not started are still skipped, and the pool still kills the worker
    # when a cancelled handler runs past the grace period.
    signal.signal(CANCEL_SIGNAL, interrupts.handle_signal)
    # The runner allocates its memory reserve, so it is created before the limit.
    runner = TaskRunner(init, router, interrupts)
    _exit_with_parent(init["parent_pid"])
    _limit_memory(init["memory_limit_mb"])
    _put_code_dir_first(init["code_dir"])

    try:
        runner.set_handler(load_handler(init["entry_point"], router))
    except InvocationError as exc:
        logs = router.take().raw_entries(time.time())
        outbox.send_control({"kind": "init_error", "error": exc.to_error(), "logs": logs})
        return 0
    outbox.send_control({"kind": "ready"})

    _run_batches(reader, outbox, runner)
    return 0


def _report_fatal_error(exc: BaseException) -> None:
    """Write a runtime failure to file descriptor 2, which the pool logs and adds to the failed task."""
    try:
        text = "".join(traceback.format_exception(exc))
    except MemoryError:
        text = f"{type(exc).__name__}: {exc}\n"
    os.write(2, f"Function runtime failed: {text}".encode("utf-8", "backslashreplace"))


if __name__ == "__main__":
    try:
        status = main()
    except Exception as error:  # noqa: BLE001 - sys.stderr is captured, so report on fd 2 before exiting
        _report_fatal_error(error)
        status = 1
    sys.exit(status)
