"""Test function: fails with KeyError on every call."""


def handle(task, context):
    raise KeyError("missing")
