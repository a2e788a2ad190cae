"""Figures of a benchmark run: percentiles, the headline figures with their targets, the table, the JSON file.

Only pure functions live here, so that tests/unit/test_bench_report.py can check them
without servers.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Growth of a role's peak RSS from the first to the last quarter of the memory run that
# still counts as flat (the larger of the two), so that allocator noise and caches that
# fill once do not count as growth.
FLAT_GROWTH = 0.10
FLAT_GROWTH_KB = 5 * 1024


def percentile(values: list[float], fraction: float) -> float:
    """Return the nearest-rank percentile: the smallest value with at least fraction of values at or below it."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    rank = math.ceil(fraction * len(ordered) - 1e-9)   # the tolerance keeps 0.99 * 100 at rank 99
    return ordered[min(len(ordered), max(rank, 1)) - 1]


def summarise_ms(values: list[float]) -> dict[str, float]:
    """Return count, p50, p99 and max of millisecond values, rounded to 0.01 ms."""
    if not values:
        return {"n": 0, "p50": float("nan"), "p99": float("nan"), "max": float("nan")}
    return {"n": len(values), "p50": round(percentile(values, 0.5), 2), "p99": round(percentile(values, 0.99), 2),
            "max": round(max(values), 2)}


def rss_trend(samples: list[tuple[float, dict[str, int]]]) -> dict[str, dict[str, Any]]:
    """Return, per label, the peak RSS in MB and whether it stays flat.

    samples are (seconds since start, label -> RSS in kB). Flat means the peak of the last
    quarter of the run exceeds the peak of the first quarter by at most FLAT_GROWTH of it
    or FLAT_GROWTH_KB, whichever is larger.
    """
    if not samples:
        return {}
    end = samples[-1][0]
    labels = sorted({label for _, by_label in samples for label in by_label})
    trend = {}
    for label in labels:
        values = [(at, by_label[label]) for at, by_label in samples if label in by_label]
        first = max((kb for at, kb in values if at <= end / 4), default=0)
        last = max((kb for at, kb in values if at >= end * 3 / 4), default=0)
        trend[label] = {
            "peak_mb": round(max(kb for _, kb in values) / 1024, 1),
            "first_quarter_peak_mb": round(first / 1024, 1),
            "last_quarter_peak_mb": round(last / 1024, 1),
            "flat": bool(first) and last - first <= max(first * FLAT_GROWTH, FLAT_GROWTH_KB),
        }
    return trend


@dataclass(frozen=True, slots=True)
class Target:
    """A headline figure with its bound and unit. at_least is False for upper bounds (latency, memory)."""

    key: str
    label: str
    bound: float | None
    at_least: bool = True
    unit: str = "/s"


TARGETS = (
    Target("raw_consume_per_s", "floor: raw aiokafka consume, 1 KB events", None),
    Target("copy_rows_per_s", "floor: asyncpg COPY of the task rows", None),
    Target("ingest_events_per_s", "ingest: events to committed tasks", 30_000),
    Target("ingest_to_raw_consume", "ingest / raw consume", 0.25, unit="x"),
    Target("exec_tasks_per_s", "execution, 1 worker process", 20_000),
    Target("exec_tasks_per_s_2_workers", "execution, 2 worker processes", 20_000),
    Target("pgqueuer_jobs_per_s", "pgqueuer, 2 processes, batch 500", None),
    Target("procrastinate_jobs_per_s", "procrastinate, 2 processes", None),
    Target("exec_to_pgqueuer", "execution (2 workers) / pgqueuer", 1.0, unit="x"),
    Target("exec_to_procrastinate", "execution (2 workers) / procrastinate", 10.0, unit="x"),
    Target("latency_p50_ms", "event to start p50 at 500 events/s", 10.0, at_least=False, unit="ms"),
    Target("latency_p99_ms", "event to start p99 at 500 events/s", 30.0, at_least=False, unit="ms"),
    Target("latency_max_ms", "event to start max at 500 events/s", None, at_least=False, unit="ms"),
    Target("execute_overhead_p50_ms", "direct execution overhead p50", 3.0, at_least=False, unit="ms"),
    Target("execute_overhead_p99_ms", "direct execution overhead p99", 10.0, at_least=False, unit="ms"),
    Target("peak_rss_mb", "peak RSS of any role process", 300.0, at_least=False, unit="MB"),
    Target("rss_flat", "RSS of every role flat over the run", None, unit="flag"),
)


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    """Return numerator / denominator rounded to 0.001, or None when either is missing or zero."""
    if not numerator or not denominator:
        return None
    return round(numerator / denominator, 3)


def _format_value(value: float | None, unit: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if unit == "flag":
        return "yes" if value else "no"
    if unit == "/s":
        return f"{value:,.0f}/s"
    if unit == "x":
        return f"{value:.2f}x"
    return f"{value:,.2f} {unit}" if unit == "ms" else f"{value:,.1f} {unit}"


def table_rows(figures: dict[str, Any]) -> list[dict[str, Any]]:
    """Return one row per target: figure, value, target, value / target and whether it is met."""
    rows = []
    for target in TARGETS:
        value = figures.get(target.key)
        met = None
        if target.unit == "flag" and value is not None:
            met = bool(value)
        elif value is not None and target.bound is not None:
            met = value >= target.bound if target.at_least else value <= target.bound
        bound = None
        if target.bound is not None:
            bound = ("≥ " if target.at_least else "≤ ") + _format_value(target.bound, target.unit)
        rows.append({"key": target.key, "figure": target.label, "value": value, "target": bound,
                     "ratio": None if target.unit == "flag" else ratio(value, target.bound), "met": met,
                     "unit": target.unit})
    return rows


def format_table(rows: list[dict[str, Any]]) -> str:
    """Render rows as a Markdown table whose ratio column is value / target."""
    lines = ["| figure | value | target | value / target | met |", "|---|---:|---|---:|---|"]
    for row in rows:
        met = {True: "yes", False: "no", None: ""}[row["met"]]
        shown_ratio = "" if row["ratio"] is None else f"{row['ratio']:.2f}"
        lines.append(f"| {row['figure']} | {_format_value(row['value'], row['unit'])} | {row['target'] or ''} "
                     f"| {shown_ratio} | {met} |")
    return "\n".join(lines)


def write_json(path: Path, results: dict[str, Any]) -> None:
    """Write results as indented JSON with NaN as null, creating the folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(_without_nan(results), indent=2, ensure_ascii=False) + "\n")


def _without_nan(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {key: _without_nan(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_without_nan(item) for item in value]
    return value


def _dig(details: dict[str, Any], *path: Any) -> Any:
    value: Any = details
    for step in path:
        if not isinstance(value, dict | list):
            return None
        try:
            value = value[step]
        except (KeyError, IndexError, TypeError):
            return None
    return value


def headline(details: dict[str, Any]) -> dict[str, Any]:
    """Pick the headline figures out of the per-scenario details, with None for a part not run."""
    floors = details.get("ingest") or details.get("floors") or {}
    executions = {_dig(run, "workers"): run for run in details.get("execution") or [] if isinstance(run, dict)}
    at_500 = _dig(details, "latency", "500_per_s", "event_to_start_ms") or {}
    overhead = _dig(details, "overhead", "direct_execution", "overhead") or {}
    figures = {
        "raw_consume_per_s": _dig(floors, "raw_consume", "records_per_s"),
        "copy_rows_per_s": _dig(floors, "copy", "rows_per_s"),
        "ingest_events_per_s": _dig(floors, "ingest", "events_per_s"),
        "exec_tasks_per_s": _dig(executions, 1, "tasks_per_s"),
        "exec_tasks_per_s_2_workers": _dig(executions, 2, "tasks_per_s"),
        "pgqueuer_jobs_per_s": _dig(details, "peers", "pgqueuer", "jobs_per_s"),
        "procrastinate_jobs_per_s": _dig(details, "peers", "procrastinate", "jobs_per_s"),
        "latency_p50_ms": at_500.get("p50"),
        "latency_p99_ms": at_500.get("p99"),
        "latency_max_ms": at_500.get("max"),
        "execute_overhead_p50_ms": overhead.get("p50_ms"),
        "execute_overhead_p99_ms": overhead.get("p99_ms"),
        "peak_rss_mb": _dig(details, "memory", "peak_rss_mb"),
        "rss_flat": _dig(details, "memory", "all_flat"),
    }
    figures["ingest_to_raw_consume"] = ratio(figures["ingest_events_per_s"], figures["raw_consume_per_s"])
    figures["exec_to_pgqueuer"] = ratio(figures["exec_tasks_per_s_2_workers"], figures["pgqueuer_jobs_per_s"])
    figures["exec_to_procrastinate"] = ratio(figures["exec_tasks_per_s_2_workers"],
                                             figures["procrastinate_jobs_per_s"])
    return figures
