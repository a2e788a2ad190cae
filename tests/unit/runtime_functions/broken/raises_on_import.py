"""Module that prints and then raises while being imported."""

print("starting import")
raise RuntimeError("configuration missing")


def handler(task, context):
    return "unreachable"
