"""Test function: reports its environment."""

import os


def handle(task, context):
    return {"names": sorted(os.environ), "probe": os.environ.get("PROBE_SETTING")}
