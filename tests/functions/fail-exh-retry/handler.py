"""Test function: fails with ValueError on every call."""


def handle(task, context):
    raise ValueError("always")
