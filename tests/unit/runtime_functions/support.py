"""Shared helpers of the runtime tests: spec builder and process inspection."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import psutil

from taskservice.functions import FunctionSpec

FUNCTIONS_DIR = Path(__file__).resolve().parent
BASIC_DIR = FUNCTIONS_DIR / "basic"
CHILD_MARKER = "taskservice.functions.child"


def make_spec(
    entry_point: str,
    *,
    code_dir: Path = BASIC_DIR,
    name: str = "test-function",
    environment: Mapping[str, str] | None = None,
    time_limit_s: float = 5.0,
    memory_limit_mb: int = 128,
    version: str = "v1",
) -> FunctionSpec:
    """Build a FunctionSpec with test defaults."""
    return FunctionSpec(
        name=name,
        code_dir=code_dir,
        entry_point=entry_point,
        environment=dict(environment or {}),
        time_limit_s=time_limit_s,
        memory_limit_mb=memory_limit_mb,
        version=version,
    )


def make_tasks(*data: object) -> list[dict]:
    """Build wire-form tasks with ids t0, t1, ... and the given data."""
    return [
        {"id": f"t{index}", "functionName": "test-function", "data": value, "attempt": 1, "priority": 0, "tags": []}
        for index, value in enumerate(data)
    ]


def runtime_children() -> list[psutil.Process]:
    """Return the live worker processes started by this test process (zombies included)."""
    found = []
    for child in psutil.Process().children(recursive=True):
        try:
            if any(CHILD_MARKER in part for part in child.cmdline()) or child.status() == psutil.STATUS_ZOMBIE:
                found.append(child)
        except psutil.NoSuchProcess:
            continue
    return found


def process_gone(pid: int) -> bool:
    """Return whether ``pid`` no longer exists or is a zombie."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


async def wait_until(predicate: Callable[[], bool], timeout_s: float = 3.0) -> bool:
    """Poll ``predicate`` every 20 ms until it is true or ``timeout_s`` passes."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        await asyncio.sleep(0.02)
    return predicate()
