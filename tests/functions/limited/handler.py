"""Test function: sleeps, then records the execution when INVOCATION_LOG is set."""

import json
import os
import time


def handle(task, context):
    started = time.time()
    seconds = float(task["data"].get("sleepSeconds", os.environ.get("SLEEP_SECONDS", "0.3")))
    time.sleep(seconds)
    path = os.environ.get("INVOCATION_LOG")
    if path:
        line = json.dumps({"task_id": task["id"], "attempt": task["attempt"], "started": started,
                           "finished": time.time(), "pid": os.getpid()})
        with open(path, "a", encoding="utf-8") as log_file:
            log_file.write(line + "\n")
    return {"ok": True}
