"""Test function: fails on every call."""


def handle(task, context):
    print("about to fail")
    raise RuntimeError(f"task {task['id']} failed on purpose")
