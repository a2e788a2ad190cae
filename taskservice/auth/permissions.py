"""ExtraHorizon permission names of the Tasks and Dispatchers services.

Permissions are global. `EXECUTE_TASK_FUNCTION` and `EXECUTE_API_FUNCTION` may also be
granted for one function as `EXECUTE_TASK_FUNCTION:<function name>`.
"""

from __future__ import annotations

import re

TASK_PERMISSIONS = (
    "VIEW_TASKS", "CREATE_TASKS", "CANCEL_TASKS", "VIEW_TASK_LOGS",
    "VIEW_TASK_FUNCTIONS", "VIEW_TASK_FUNCTION_DETAILS", "CREATE_TASK_FUNCTION", "UPDATE_TASK_FUNCTION",
    "DELETE_TASK_FUNCTION", "EXECUTE_TASK_FUNCTION", "VIEW_TASK_FUNCTION_LOGS",
    "VIEW_TASK_SCHEDULES", "CREATE_TASK_SCHEDULE", "DELETE_TASK_SCHEDULE",
    "EXECUTE_API_FUNCTION", "VIEW_API_FUNCTION_REQUESTS", "VIEW_API_FUNCTION_REQUEST_LOGS",
)
DISPATCHER_PERMISSIONS = ("VIEW_DISPATCHERS", "CREATE_DISPATCHERS", "UPDATE_DISPATCHERS", "DELETE_DISPATCHERS")
ALL_PERMISSIONS = TASK_PERMISSIONS + DISPATCHER_PERMISSIONS
PER_FUNCTION_PERMISSIONS = ("EXECUTE_TASK_FUNCTION", "EXECUTE_API_FUNCTION")

_FUNCTION_NAME = re.compile(r"^[A-Za-z0-9-]{1,64}$")


def check_permission_name(name: str) -> str:
    """Return name when it is a known permission, else raise ValueError naming the fix."""
    base, separator, function_name = name.partition(":")
    if base not in ALL_PERMISSIONS:
        raise ValueError(f"unknown permission {name!r}; known: {', '.join(ALL_PERMISSIONS)}")
    if separator:
        if base not in PER_FUNCTION_PERMISSIONS:
            raise ValueError(f"only {' and '.join(PER_FUNCTION_PERMISSIONS)} can name a function (got {name!r})")
        if not _FUNCTION_NAME.match(function_name):
            raise ValueError(f"{name!r} must end with a function name of 1 to 64 letters, digits or '-'")
    return name
