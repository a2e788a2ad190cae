"""Module whose import never finishes within the test's init timeout."""

import time

time.sleep(30)


def handler(task, context):
    return "unreachable"
