"""Aggregate one day's blood-pressure measurements into a report.

Input: ``task["data"] = {"date": "YYYY-MM-DD", "measurements": [{"systolic",
"diastolic", "category"?}, ...]}``. A measurement without a category is
classified with the 2017 ACC/AHA adult categories, using the same thresholds as
the analyze-measurement function. The handler runs in an isolated subprocess,
so it uses only the standard library.
"""

from __future__ import annotations

import datetime
import logging
import math
from typing import Any

CATEGORIES = (
    "normal",
    "elevated",
    "hypertension_stage_1",
    "hypertension_stage_2",
    "hypertensive_crisis",
)


def classify(systolic: float, diastolic: float) -> str:
    """Return the 2017 ACC/AHA category of one reading in mm Hg.

    The thresholds are the ones of the analyze-measurement function. Each
    function deploys alone, so they cannot share a module, and a unit test
    checks that both agree on the whole demo dataset.
    """
    if systolic > 180 or diastolic > 120:
        return "hypertensive_crisis"
    if systolic >= 140 or diastolic >= 90:
        return "hypertension_stage_2"
    if systolic >= 130 or diastolic >= 80:
        return "hypertension_stage_1"
    if systolic >= 120:
        return "elevated"
    return "normal"


def _require_number(item: dict[str, Any], field: str, path: str) -> float:
    if field not in item or item[field] is None:
        raise ValueError(f"{path}.{field} is missing")
    value = item[field]
    # bool is a subclass of int, but true/false is never a measured value.
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{path}.{field} must be a finite number, got {value!r}")
    return value


def _parse_date(value: Any) -> str:
    if value is None:
        raise ValueError("task.data.date is missing")
    if not isinstance(value, str):
        raise ValueError(f"task.data.date must be a YYYY-MM-DD string, got {value!r}")
    try:
        return datetime.date.fromisoformat(value).isoformat()
    except ValueError:
        raise ValueError(f"task.data.date must be a YYYY-MM-DD date, got {value!r}") from None


def _summarize(values: list[float]) -> dict[str, float | None]:
    """Return mean (rounded to 0.1), minimum and maximum, or None for each when ``values`` is empty."""
    if not values:
        return {"mean": None, "min": None, "max": None}
    return {"mean": round(sum(values) / len(values), 1), "min": min(values), "max": max(values)}


def build_report(task_data: dict[str, Any]) -> dict[str, Any]:
    """Build the daily report from ``task_data``.

    Raises ValueError naming the field, for example ``task.data.measurements[3].systolic``,
    when a value is missing or invalid.
    """
    report_date = _parse_date(task_data.get("date"))
    measurements = task_data.get("measurements")
    if measurements is None:
        raise ValueError("task.data.measurements is missing: pass a list, which may be empty")
    if not isinstance(measurements, list):
        raise ValueError(f"task.data.measurements must be a list, got {type(measurements).__name__}")

    counts = dict.fromkeys(CATEGORIES, 0)
    systolic_values: list[float] = []
    diastolic_values: list[float] = []
    for index, item in enumerate(measurements):
        path = f"task.data.measurements[{index}]"
        if not isinstance(item, dict):
            raise ValueError(f"{path} must be a JSON object, got {type(item).__name__}")
        systolic = _require_number(item, "systolic", path)
        diastolic = _require_number(item, "diastolic", path)

        category = item.get("category")
        if category is None:
            category = classify(systolic, diastolic)
        elif category not in counts:
            raise ValueError(f"{path}.category must be one of {', '.join(CATEGORIES)}, got {category!r}")

        counts[category] += 1
        systolic_values.append(systolic)
        diastolic_values.append(diastolic)

    return {
        "date": report_date,
        "count": len(measurements),
        "categories": counts,
        "systolic": _summarize(systolic_values),
        "diastolic": _summarize(diastolic_values),
    }


def handle(task: dict[str, Any], context: Any) -> dict[str, Any]:
    """Aggregate the measurements of ``task["data"]`` into a daily report."""
    log: logging.Logger = getattr(context, "logger", None) or logging.getLogger(__name__)
    task_data = task.get("data")
    if not isinstance(task_data, dict):
        raise ValueError(f"task.data must be a JSON object, got {type(task_data).__name__}")

    report = build_report(task_data)

    log.info("daily report for %s: %d measurements, categories %s", report["date"], report["count"], report["categories"])
    return report
