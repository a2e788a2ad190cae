"""Handler next to a user module named ``logging.py``."""

import logging


def handler(task, context):
    logging.getLogger("shadowing").info("logged through the standard library")
    print("printed next to a shadowed module")
    return logging.__name__
