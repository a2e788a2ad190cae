"""Test function: returns the number carried by the event, after an optional sleep."""

import os
import time


def handle(task, context):
    time.sleep(float(os.environ.get("SLEEP_SECONDS", "0")))
    event = task["data"].get("event") or {}
    return {"n": (event.get("content") or {}).get("n")}
