"""Bookkeeping of prometheus_client's multiprocess mode (PROMETHEUS_MULTIPROC_DIR)."""

from __future__ import annotations

import os

from prometheus_client import multiprocess


def release_process_metrics() -> None:
    """Drop this process's live gauges from the shared folder, so /metrics stops reporting them.

    Counters and histograms of the process stay, so that totals never go down. Does
    nothing outside multiprocess mode.
    """
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        multiprocess.mark_process_dead(os.getpid())
