"""Demo dataset: real NHANES 2017-2018 blood-pressure measurements and the events built from them.

The measurements come from the public-domain NHANES 2017-2018 survey of the
U.S. National Center for Health Statistics. ``data/SOURCE.md`` names the
source files, the licence and how the 1,000 rows were selected.

Every id in the generated events is derived from the subject id and the row
number with SHA-256, so the same measurements always produce the same events.
Replaying them twice therefore sends duplicates with equal ids, which is what
an idempotent consumer must tolerate.
"""

from __future__ import annotations

import csv
import hashlib
import io
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from importlib import resources
from typing import Any, Iterable, Sequence

DATA_FILE_NAME = "nhanes_2017_2018_blood_pressure.csv"
SCHEMA_NAME = "blood_pressure"
DOCUMENT_EVENT_SOURCE = "/data/v1/blood_pressure"
DOCUMENT_CREATED_TYPE = "document.created"
USER_DELETED_TYPE = "user_deleted"
MEASUREMENT_SOURCE = "NHANES 2017-2018"

_CSV_COLUMNS = (
    "SEQN",
    "RIAGENDR",
    "RIDAGEYR",
    "BPXPLS",
    "BPXSY1",
    "BPXDI1",
    "BPXSY2",
    "BPXDI2",
    "BPXSY3",
    "BPXDI3",
)
# NHANES codebook for RIAGENDR.
_SEX_BY_CODE = {"1": "male", "2": "female"}
_UNIX_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


@dataclass(frozen=True, slots=True)
class Measurement:
    """One subject's blood-pressure examination from the vendored NHANES rows.

    ``systolic`` and ``diastolic`` are the first reading in mm Hg. ``readings``
    contains every recorded (systolic, diastolic) pair in order, the first one
    included. ``age_years`` is top-coded at 80 by NHANES, so 80 means 80 or older.
    """

    row_number: int
    subject_id: str
    systolic: int
    diastolic: int
    pulse: int | None = None
    age_years: int | None = None
    sex: str | None = None
    readings: tuple[tuple[int, int], ...] = ()


def stable_object_id(*parts: object) -> str:
    """Derive a 24-character lowercase hex id, the shape of a MongoDB ObjectId, from ``parts``."""
    text = "\x1f".join(str(part) for part in parts)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:24]


SCHEMA_ID = stable_object_id("schema", SCHEMA_NAME)


def user_id_for_subject(subject_id: str) -> str:
    """Return the demo user id that owns every document of one NHANES subject."""
    return stable_object_id("user", subject_id)


def document_id_for(measurement: Measurement) -> str:
    """Return the data-service document id of ``measurement``."""
    return stable_object_id("document", measurement.subject_id, measurement.row_number)


def format_timestamp(moment: datetime) -> str:
    """Format an aware datetime as ISO-8601 UTC with milliseconds and a ``Z`` suffix.

    Raises ValueError for a naive datetime, because its offset from UTC is unknown.
    """
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"timestamp {moment!r} is naive: pass a timezone-aware datetime, for example with tzinfo=UTC")
    utc = moment.astimezone(timezone.utc)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


def _epoch_milliseconds(moment: datetime) -> int:
    format_timestamp(moment)  # rejects naive datetimes with the same message
    # Integer timedelta division avoids the float rounding of datetime.timestamp().
    return (moment - _UNIX_EPOCH) // timedelta(milliseconds=1)


def _parse_optional_int(row: dict[str, str], column: str, row_number: int) -> int | None:
    text = (row.get(column) or "").strip()
    if not text:
        return None
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"{DATA_FILE_NAME} row {row_number}: column {column} is not an integer: {text!r}") from None


def _parse_required_int(row: dict[str, str], column: str, row_number: int) -> int:
    value = _parse_optional_int(row, column, row_number)
    if value is None:
        raise ValueError(f"{DATA_FILE_NAME} row {row_number}: column {column} is missing")
    return value


def _measurement_from_row(row: dict[str, str], row_number: int) -> Measurement:
    subject_id = (row.get("SEQN") or "").strip()
    if not subject_id:
        raise ValueError(f"{DATA_FILE_NAME} row {row_number}: column SEQN is missing")

    systolic = _parse_required_int(row, "BPXSY1", row_number)
    diastolic = _parse_required_int(row, "BPXDI1", row_number)

    readings: list[tuple[int, int]] = []
    for index in (1, 2, 3):
        reading_systolic = _parse_optional_int(row, f"BPXSY{index}", row_number)
        reading_diastolic = _parse_optional_int(row, f"BPXDI{index}", row_number)
        if reading_systolic is not None and reading_diastolic is not None:
            readings.append((reading_systolic, reading_diastolic))

    sex_code = (row.get("RIAGENDR") or "").strip()
    if sex_code and sex_code not in _SEX_BY_CODE:
        raise ValueError(f"{DATA_FILE_NAME} row {row_number}: column RIAGENDR has unknown code {sex_code!r}")

    return Measurement(
        row_number=row_number,
        subject_id=subject_id,
        systolic=systolic,
        diastolic=diastolic,
        pulse=_parse_optional_int(row, "BPXPLS", row_number),
        age_years=_parse_optional_int(row, "RIDAGEYR", row_number),
        sex=_SEX_BY_CODE.get(sex_code),
        readings=tuple(readings),
    )


def parse_measurements(text: str, *, limit: int | None = None) -> list[Measurement]:
    """Parse measurements from CSV text in the column layout of the vendored file.

    ``row_number`` counts data rows from 1, not counting the header. Raises
    ValueError naming the row and column of the first invalid value.
    """
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be 0 or more, got {limit}")

    reader = csv.DictReader(io.StringIO(text))
    missing_columns = [column for column in _CSV_COLUMNS if column not in (reader.fieldnames or [])]
    if missing_columns:
        raise ValueError(f"{DATA_FILE_NAME}: header is missing columns {missing_columns}")

    measurements: list[Measurement] = []
    for row_number, row in enumerate(reader, start=1):
        if limit is not None and len(measurements) >= limit:
            break
        measurements.append(_measurement_from_row(row, row_number))
    return measurements


def load_measurements(*, limit: int | None = None) -> list[Measurement]:
    """Load the vendored NHANES measurements, at most ``limit`` of them, in file order.

    The CSV is package data under ``taskservice/demo/data``, read through
    importlib.resources so that it is found in an installed package too.
    """
    data_file = resources.files("taskservice.demo") / "data" / DATA_FILE_NAME
    return parse_measurements(data_file.read_text(encoding="utf-8"), limit=limit)


def measurement_document_data(measurement: Measurement) -> dict[str, Any]:
    """Build the ``data`` object of a blood-pressure document, leaving out absent optional values."""
    data: dict[str, Any] = {
        "systolic": measurement.systolic,
        "diastolic": measurement.diastolic,
    }
    if measurement.pulse is not None:
        data["pulse"] = measurement.pulse
    data["subjectId"] = measurement.subject_id
    if measurement.age_years is not None:
        data["age"] = measurement.age_years
    if measurement.sex is not None:
        data["sex"] = measurement.sex
    if measurement.readings:
        data["readings"] = [
            {"systolic": systolic, "diastolic": diastolic} for systolic, diastolic in measurement.readings
        ]
    data["source"] = MEASUREMENT_SOURCE
    return data


def build_document_event(measurement: Measurement, *, time: datetime) -> dict[str, Any]:
    """Build one CloudEvents 1.0 structured-mode ``document.created`` event for ``measurement``."""
    timestamp = format_timestamp(time)
    document_id = document_id_for(measurement)
    return {
        "specversion": "1.0",
        "id": stable_object_id("document-created-event", measurement.subject_id, measurement.row_number),
        "source": DOCUMENT_EVENT_SOURCE,
        "type": DOCUMENT_CREATED_TYPE,
        "time": timestamp,
        "datacontenttype": "application/json",
        "subject": document_id,
        "data": {
            "schemaId": SCHEMA_ID,
            "schemaName": SCHEMA_NAME,
            "documentId": document_id,
            "status": "active",
            "userId": user_id_for_subject(measurement.subject_id),
            "data": measurement_document_data(measurement),
            "creationTimestamp": timestamp,
        },
    }


def build_document_events(
    measurements: Sequence[Measurement],
    *,
    start: datetime,
    interval: timedelta = timedelta(minutes=1),
) -> list[dict[str, Any]]:
    """Build one ``document.created`` CloudEvent per measurement, in order.

    Event ``i`` gets the time ``start + i * interval``. Ids do not depend on
    the times, so the same measurements yield the same ids for any ``start``.
    """
    if interval < timedelta(0):
        raise ValueError(f"interval must not be negative, got {interval}")
    return [
        build_document_event(measurement, time=start + index * interval)
        for index, measurement in enumerate(measurements)
    ]


def distinct_subject_ids(measurements: Iterable[Measurement]) -> list[str]:
    """Return the subject ids of ``measurements`` without repeats, in order of first appearance."""
    return list(dict.fromkeys(measurement.subject_id for measurement in measurements))


def build_user_deleted_events(
    measurements: Sequence[Measurement],
    *,
    count: int,
    start: datetime,
    interval: timedelta = timedelta(seconds=1),
) -> list[dict[str, Any]]:
    """Build ExtraHorizon ``user_deleted`` events for the first ``count`` distinct subjects.

    ``content.id`` is the same user id that the subject's documents carry, and
    event ``i`` gets ``creation_timestamp`` = ``start + i * interval`` in epoch
    milliseconds. Raises ValueError when ``count`` is negative or larger than
    the number of distinct subjects.
    """
    if count < 0:
        raise ValueError(f"count must be 0 or more, got {count}")
    if interval < timedelta(0):
        raise ValueError(f"interval must not be negative, got {interval}")
    subject_ids = distinct_subject_ids(measurements)
    if count > len(subject_ids):
        raise ValueError(f"count {count} is larger than the {len(subject_ids)} distinct subjects in the measurements")

    events: list[dict[str, Any]] = []
    for index, subject_id in enumerate(subject_ids[:count]):
        events.append(
            {
                "id": stable_object_id("user-deleted-event", subject_id),
                "type": USER_DELETED_TYPE,
                "content": {"id": user_id_for_subject(subject_id)},
                "creation_timestamp": _epoch_milliseconds(start + index * interval),
            }
        )
    return events
