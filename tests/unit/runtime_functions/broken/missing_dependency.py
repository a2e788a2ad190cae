"""Module whose import fails because a dependency is missing."""

import module_that_does_not_exist  # noqa: F401


def handler(task, context):
    return "unreachable"
