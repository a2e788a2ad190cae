"""Test function: allocates data.megabytes of memory."""


def handle(task, context):
    size = int(task["data"].get("megabytes", 400)) * 1024 * 1024
    block = bytearray(size)
    return {"allocated": len(block)}
