"""Cancellation of tasks inside a worker process.

To cancel task ``i`` of the batch that a worker runs, the pool sets cancel
flag ``i`` in shared memory and then sends CANCEL_SIGNAL to the worker's main
thread, where Python runs signal handlers.

* A task whose flag is set when the worker reaches it is skipped, so its
  handler never runs.
* The signal handler acts only when the flag of the task whose handler is
  running is set. It raises TaskCanceled in a sync handler, or cancels the
  asyncio task that runs an async handler. A signal that arrives after that
  task ended finds no running task, or one whose flag is not set, and does
  nothing, so it cannot fail the next task.

The worker marks a task as running before it reads the task's flag, and the
pool sets the flag before it sends the signal. So either the worker sees the
flag before it starts the handler, or the signal handler runs after the flag
was set while the task is marked as running.
"""

from __future__ import annotations

import asyncio
from types import FrameType
from typing import Any

from taskservice.functions.protocol import TASK_FINISHED, TASK_RUNNING
from taskservice.functions.spec import TASK_CANCELED_MESSAGE


class TaskCanceled(BaseException):
    """Raised inside a sync handler whose task was cancelled.

    It derives from BaseException, like KeyboardInterrupt, so that
    ``except Exception`` blocks in handler code do not catch it.
    """


class TaskInterrupts:
    """State of the running task as seen by the cancel signal handler.

    ``flags`` and ``states`` are the cancel flags and task states of the
    shared memory, one byte per task of the batch message.
    """

    def __init__(self, flags: memoryview, states: memoryview) -> None:
        self._flags = flags
        self._states = states
        # Index of the task whose handler may be interrupted, or -1.
        self._index = -1
        # Task counter that distinguishes a stale asyncio cancel callback from a current one.
        self._serial = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._async_task: asyncio.Future[Any] | None = None
        self.canceled = False
        self.skipped = False

    def enter(self, index: int) -> None:
        """Mark task ``index`` as running. Raise TaskCanceled when it was cancelled before it started.

        Call it inside a ``try`` whose ``finally`` calls ``leave``: from the
        moment the index is stored, a cancel signal may raise TaskCanceled.
        """
        self._serial += 1
        self.canceled = False
        self.skipped = False
        self._loop = None
        self._async_task = None
        if index < len(self._states):
            self._states[index] = TASK_RUNNING
        self._index = index
        if self._is_flagged(index):
            self.canceled = True
            self.skipped = True
            raise TaskCanceled(TASK_CANCELED_MESSAGE)

    def leave(self) -> None:
        """Mark the running task as finished, so later signals do nothing."""
        index = self._index
        self._index = -1
        self._loop = None
        self._async_task = None
        if 0 <= index < len(self._states):
            self._states[index] = TASK_FINISHED

    def run_in_loop(self, loop: asyncio.AbstractEventLoop, awaitable: Any) -> Any:
        """Run ``awaitable`` to completion in ``loop``, so that a cancel signal cancels it."""
        # From here on the signal handler schedules a cancel instead of raising,
        # because an exception raised inside the event loop's own code would
        # leave the loop, which later tasks reuse, in a broken state.
        self._loop = loop
        future = asyncio.ensure_future(awaitable, loop=loop)
        self._async_task = future
        return loop.run_until_complete(future)

    def handle_signal(self, signum: int, frame: FrameType | None) -> None:
        """Interrupt the running handler if its task is cancelled. Installed for CANCEL_SIGNAL."""
        index = self._index
        if index < 0 or self.canceled or not self._is_flagged(index):
            return
        self.canceled = True
        loop = self._loop
        if loop is not None:
            loop.call_soon_threadsafe(self._cancel_async_task, self._serial)
            return
        raise TaskCanceled(TASK_CANCELED_MESSAGE)

    def _cancel_async_task(self, serial: int) -> None:
        task = self._async_task
        if serial == self._serial and task is not None and not task.done():
            task.cancel(TASK_CANCELED_MESSAGE)

    def _is_flagged(self, index: int) -> bool:
        return index < len(self._flags) and self._flags[index] != 0
