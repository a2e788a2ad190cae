"""Test function: returns the task's data without the event, plus the event id."""

import json
import os
import time


def record_invocation(task, started):
    """Append one line per execution to the file named by INVOCATION_LOG (no dedupe)."""
    path = os.environ.get("INVOCATION_LOG")
    if not path:
        return
    line = json.dumps({"task_id": task["id"], "attempt": task["attempt"], "started": started,
                       "finished": time.time(), "pid": os.getpid()})
    with open(path, "a", encoding="utf-8") as log_file:
        log_file.write(line + "\n")


def handle(task, context):
    started = time.time()
    data = dict(task["data"])
    event = data.pop("event", None) or {}
    context.logger.info("echo for event %s", event.get("id"))
    record_invocation(task, started)
    return {"data": data, "eventId": event.get("id"), "n": (event.get("content") or {}).get("n")}
