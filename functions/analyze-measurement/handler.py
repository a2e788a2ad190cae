"""Classify one blood-pressure measurement with the 2017 ACC/AHA adult categories.

Categories follow the 2017 ACC/AHA/AAPA/ABC/ACPM/AGS/APhA/ASH/ASPC/NMA/PCNA
Guideline for the Prevention, Detection, Evaluation, and Management of High
Blood Pressure in Adults (Whelton et al., Hypertension 2018;71:1269-1324):

- normal: systolic < 120 and diastolic < 80 mm Hg
- elevated: systolic 120-129 and diastolic < 80
- hypertension stage 1: systolic 130-139 or diastolic 80-89
- hypertension stage 2: systolic >= 140 or diastolic >= 90
- hypertensive crisis: systolic > 180 and/or diastolic > 120

When systolic and diastolic fall into different categories, the higher one
applies. The handler runs in an isolated subprocess, so it uses only the
standard library.
"""

from __future__ import annotations

import logging
import math
from typing import Any

NORMAL = "normal"
ELEVATED = "elevated"
HYPERTENSION_STAGE_1 = "hypertension_stage_1"
HYPERTENSION_STAGE_2 = "hypertension_stage_2"
HYPERTENSIVE_CRISIS = "hypertensive_crisis"

# Plausibility limits in mm Hg and beats per minute. A value outside them is
# treated as a data-entry or device error, not a measurement to classify.
# NHANES rejects a systolic value above 300 mm Hg at capture. The other limits
# are estimates that hold every row of the demo dataset (systolic 72-216,
# diastolic 24-124, pulse 42-126).
SYSTOLIC_RANGE = (50, 300)
DIASTOLIC_RANGE = (20, 200)
PULSE_RANGE = (20, 250)

# Alert thresholds outside the ACC/AHA categories. 90/60 mm Hg is a commonly
# used threshold for low blood pressure, and 50-100 beats per minute is a
# deliberately wide resting pulse range, so that trained adults at 50-60 are
# not flagged.
LOW_SYSTOLIC = 90
LOW_DIASTOLIC = 60
LOW_PULSE = 50
HIGH_PULSE = 100
ADULT_AGE = 18


def classify(systolic: float, diastolic: float) -> str:
    """Return the 2017 ACC/AHA category of one reading in mm Hg.

    NOTE: the guideline classifies the average of two or more readings taken on
    two or more occasions. This function classifies the single reading it gets.
    """
    if systolic > 180 or diastolic > 120:
        return HYPERTENSIVE_CRISIS
    if systolic >= 140 or diastolic >= 90:
        return HYPERTENSION_STAGE_2
    if systolic >= 130 or diastolic >= 80:
        return HYPERTENSION_STAGE_1
    if systolic >= 120:
        return ELEVATED
    return NORMAL


def _require_mapping(value: Any, field: str) -> dict[str, Any]:
    if value is None:
        raise ValueError(f"{field} is missing")
    if not isinstance(value, dict):
        raise ValueError(f"{field} must be a JSON object, got {type(value).__name__}")
    return value


def _require_number(measurement: dict[str, Any], field: str, path: str) -> float:
    if field not in measurement or measurement[field] is None:
        raise ValueError(f"{path}.{field} is missing")
    value = measurement[field]
    # bool is a subclass of int, but true/false is never a measured value.
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{path}.{field} must be a number, got {value!r}")
    if not math.isfinite(value):
        raise ValueError(f"{path}.{field} must be a finite number, got {value!r}")
    return value


def _require_in_range(value: float, bounds: tuple[int, int], field: str, unit: str) -> None:
    low, high = bounds
    if not low <= value <= high:
        raise ValueError(f"{field} {value} {unit} is outside the plausible range {low}-{high} {unit}")


def _locate_measurement(task_data: dict[str, Any]) -> tuple[dict[str, Any], str, Any, Any]:
    """Find the measurement in the task input and return it with its path, document id and user id."""
    if "measurement" in task_data:
        measurement = _require_mapping(task_data["measurement"], "task.data.measurement")
        return measurement, "task.data.measurement", task_data.get("documentId"), task_data.get("userId")

    event = _require_mapping(task_data.get("event"), "task.data.event (or task.data.measurement)")
    document = _require_mapping(event.get("data"), "task.data.event.data")
    measurement = _require_mapping(document.get("data"), "task.data.event.data.data")
    return measurement, "task.data.event.data.data", document.get("documentId"), document.get("userId")


def _build_alerts(systolic: float, diastolic: float, category: str, measurement: dict[str, Any]) -> list[dict[str, str]]:
    alerts: list[dict[str, str]] = []
    if category == HYPERTENSIVE_CRISIS:
        alerts.append({
            "code": HYPERTENSIVE_CRISIS,
            "message": f"{systolic}/{diastolic} mm Hg is above 180/120 mm Hg: hypertensive crisis range, needs prompt clinical review",
        })
    elif category == HYPERTENSION_STAGE_2:
        alerts.append({
            "code": HYPERTENSION_STAGE_2,
            "message": f"{systolic}/{diastolic} mm Hg is at or above 140/90 mm Hg: stage 2 hypertension range",
        })
    if systolic < LOW_SYSTOLIC or diastolic < LOW_DIASTOLIC:
        alerts.append({
            "code": "low_blood_pressure",
            "message": f"{systolic}/{diastolic} mm Hg is below {LOW_SYSTOLIC}/{LOW_DIASTOLIC} mm Hg",
        })

    pulse = measurement.get("pulse")
    if pulse is not None and pulse > HIGH_PULSE:
        alerts.append({"code": "high_pulse", "message": f"pulse {pulse}/min is above {HIGH_PULSE}/min"})
    if pulse is not None and pulse < LOW_PULSE:
        alerts.append({"code": "low_pulse", "message": f"pulse {pulse}/min is below {LOW_PULSE}/min"})

    age = measurement.get("age")
    if isinstance(age, (int, float)) and not isinstance(age, bool) and age < ADULT_AGE:
        alerts.append({
            "code": "not_adult",
            "message": f"age {age} is under {ADULT_AGE}: the ACC/AHA categories apply to adults only",
        })
    return alerts


def analyze(task_data: dict[str, Any]) -> dict[str, Any]:
    """Validate and classify the measurement in ``task_data``.

    Raises ValueError naming the field when a value is missing, not a number or
    outside the plausible range.
    """
    measurement, path, document_id, user_id = _locate_measurement(task_data)

    systolic = _require_number(measurement, "systolic", path)
    diastolic = _require_number(measurement, "diastolic", path)
    _require_in_range(systolic, SYSTOLIC_RANGE, f"{path}.systolic", "mm Hg")
    _require_in_range(diastolic, DIASTOLIC_RANGE, f"{path}.diastolic", "mm Hg")
    if diastolic >= systolic:
        raise ValueError(f"{path}.diastolic {diastolic} mm Hg must be lower than {path}.systolic {systolic} mm Hg")
    if measurement.get("pulse") is not None:
        pulse = _require_number(measurement, "pulse", path)
        _require_in_range(pulse, PULSE_RANGE, f"{path}.pulse", "beats per minute")

    category = classify(systolic, diastolic)
    return {
        "documentId": document_id,
        "userId": user_id,
        "category": category,
        "systolic": systolic,
        "diastolic": diastolic,
        "alerts": _build_alerts(systolic, diastolic, category, measurement),
    }


def handle(task: dict[str, Any], context: Any) -> dict[str, Any]:
    """Classify the blood-pressure measurement of ``task`` and return the category and alerts."""
    log: logging.Logger = getattr(context, "logger", None) or logging.getLogger(__name__)
    task_data = _require_mapping(task.get("data"), "task.data")

    result = analyze(task_data)

    log.info(
        "document %s of user %s: %s/%s mm Hg classified as %s with %d alerts",
        result["documentId"],
        result["userId"],
        result["systolic"],
        result["diastolic"],
        result["category"],
        len(result["alerts"]),
    )
    return result
