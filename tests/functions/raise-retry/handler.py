"""Test function: records the call, then fails with RuntimeError."""

import json
import os
import time


def handle(task, context):
    path = os.environ.get("INVOCATION_LOG")
    if path:
        line = json.dumps({"task_id": task["id"], "attempt": task["attempt"], "started": time.time(),
                           "pid": os.getpid()})
        with open(path, "a", encoding="utf-8") as log_file:
            log_file.write(line + "\n")
    raise RuntimeError(f"task {task['id']} attempt {task['attempt']} failed on purpose")
