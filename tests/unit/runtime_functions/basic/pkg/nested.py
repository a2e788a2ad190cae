"""Handler in a package, for entry points with more than one dot."""


def handler(task, context):
    return f"nested {task['id']}"
