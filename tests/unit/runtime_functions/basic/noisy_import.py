"""Module that writes output while being imported."""

import logging

print("loading noisy module")
logging.getLogger(__name__).warning("configured from defaults")


def handler(task, context):
    return task["id"]
