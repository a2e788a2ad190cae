"""Benchmark function: does nothing."""


def handle(task, context):
    return None
