"""Handlers used by the cancellation tests.

Each handler first creates a file named after the task id in the folder
MARK_DIR, so a test can tell whether and when a handler started.
"""

import asyncio
import os
import time
from pathlib import Path


def _mark_started(task):
    Path(os.environ["MARK_DIR"], task["id"]).touch()


def sleep_pid(task, context):
    _mark_started(task)
    time.sleep(task["data"])
    return os.getpid()


async def async_sleep_pid(task, context):
    _mark_started(task)
    await asyncio.sleep(task["data"])
    return os.getpid()


def ignore_cancel(task, context):
    """Sleep for task["data"] seconds, catching every exception, TaskCanceled included."""
    _mark_started(task)
    deadline = time.monotonic() + task["data"]
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return os.getpid()
        try:
            time.sleep(remaining)
        except BaseException as exc:  # noqa: BLE001 - the handler ignores the interrupt on purpose
            print(f"ignored {type(exc).__name__}")


async def async_ignore_cancel(task, context):
    """Sleep for task["data"] seconds, catching the CancelledError of a cancel."""
    _mark_started(task)
    deadline = time.monotonic() + task["data"]
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return os.getpid()
        try:
            await asyncio.sleep(remaining)
        except asyncio.CancelledError:
            print("ignored CancelledError")
