"""Every module imports, and the command line starts, on a clean installation."""

import importlib
import pkgutil
import subprocess
import sys

import pytest

import taskservice


def _module_names() -> list[str]:
    return sorted(info.name for info in pkgutil.walk_packages(taskservice.__path__, prefix="taskservice."))


@pytest.mark.parametrize("name", _module_names())
def test_module_imports(name: str) -> None:
    importlib.import_module(name)


def test_command_line_help() -> None:
    completed = subprocess.run([sys.executable, "-m", "taskservice.cli", "--help"],
                               capture_output=True, text=True, timeout=60)
    assert completed.returncode == 0, completed.stderr
    assert "demo" in completed.stdout
