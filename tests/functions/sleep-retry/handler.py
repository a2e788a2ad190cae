"""Test function: records the run in INVOCATION_LOG as it starts, then sleeps.

The sleep lasts SLEEP_SECONDS, or a random time between SLEEP_SECONDS and
SLEEP_MAX_SECONDS when that is set. The line is written before the sleep, so a run
whose process is killed mid-sleep is still counted.
"""

import json
import os
import random
import time


def handle(task, context):
    started = time.time()
    path = os.environ.get("INVOCATION_LOG")
    if path:
        line = json.dumps({"task_id": task["id"], "attempt": task["attempt"], "started": started,
                           "pid": os.getpid()})
        with open(path, "a", encoding="utf-8") as log_file:
            log_file.write(line + "\n")
    low = float(os.environ.get("SLEEP_SECONDS", "0.1"))
    high = float(os.environ.get("SLEEP_MAX_SECONDS", str(low)))
    time.sleep(random.uniform(low, max(low, high)))
    return {"ok": True, "attempt": task["attempt"]}
