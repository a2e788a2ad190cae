"""Test function: sleeps longer than its time limit."""

import time


def handle(task, context):
    time.sleep(float(task["data"].get("sleepSeconds", 10)))
    return {"slept": True}
