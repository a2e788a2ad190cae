"""Test function: fails on every call."""


def handle(task, context):
    raise RuntimeError(f"attempt {task['attempt']} failed")
