"""Test function: records the call, then kills the process running it, as an OOM kill would."""

import json
import os
import signal
import time


def handle(task, context):
    path = os.environ.get("INVOCATION_LOG")
    if path:
        line = json.dumps({"task_id": task["id"], "attempt": task["attempt"], "started": time.time(),
                           "pid": os.getpid()})
        with open(path, "a", encoding="utf-8") as log_file:
            log_file.write(line + "\n")
    os.kill(os.getpid(), signal.SIGKILL)
