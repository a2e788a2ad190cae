"""Tests for the vendored NHANES demo dataset and the events built from it."""

from __future__ import annotations

import json
import re
from datetime import datetime, timedelta, timezone
from importlib import resources

import pytest

from taskservice.demo import dataset
from taskservice.demo.dataset import (
    DATA_FILE_NAME,
    Measurement,
    build_document_events,
    build_user_deleted_events,
    document_id_for,
    format_timestamp,
    load_measurements,
    parse_measurements,
    stable_object_id,
    user_id_for_subject,
)

OBJECT_ID = re.compile(r"^[0-9a-f]{24}$")
ISO_UTC_MILLISECONDS = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")
START = datetime(2024, 3, 1, 8, 0, tzinfo=timezone.utc)
HEADER = "SEQN,RIAGENDR,RIDAGEYR,BPXPLS,BPXSY1,BPXDI1,BPXSY2,BPXDI2,BPXSY3,BPXDI3"


@pytest.fixture(scope="module")
def measurements() -> list[Measurement]:
    return load_measurements()


def test_vendored_files_are_package_data() -> None:
    data_dir = resources.files("taskservice.demo") / "data"
    csv_file = data_dir / DATA_FILE_NAME

    assert csv_file.is_file()
    assert (data_dir / "SOURCE.md").is_file()
    assert len(csv_file.read_bytes()) < 200_000


def test_load_measurements_row_count(measurements: list[Measurement]) -> None:
    assert len(measurements) == 1000
    assert [m.row_number for m in measurements] == list(range(1, 1001))


def test_load_measurements_limit() -> None:
    first_three = load_measurements(limit=3)

    assert [m.subject_id for m in first_three] == ["93706", "93709", "93711"]
    assert load_measurements(limit=0) == []


def test_first_and_last_rows_match_nhanes(measurements: list[Measurement]) -> None:
    # Values of NHANES 2017-2018 BPX_J and DEMO_J for SEQN 93706 and the last kept SEQN.
    first = measurements[0]
    assert first == Measurement(
        row_number=1,
        subject_id="93706",
        systolic=112,
        diastolic=74,
        pulse=82,
        age_years=18,
        sex="male",
        readings=((112, 74), (114, 70), (108, 76)),
    )
    assert measurements[-1].subject_id == "95640"


def test_subject_ids_are_unique(measurements: list[Measurement]) -> None:
    subject_ids = [m.subject_id for m in measurements]

    assert len(set(subject_ids)) == len(subject_ids)
    assert all(subject_id.isdigit() for subject_id in subject_ids)


def test_measurement_values_are_plausible(measurements: list[Measurement]) -> None:
    for m in measurements:
        assert 60 <= m.systolic <= 260, m
        assert 20 <= m.diastolic <= 150, m
        assert m.diastolic < m.systolic, m
        assert m.pulse is not None and 30 <= m.pulse <= 200, m
        assert m.age_years is not None and 18 <= m.age_years <= 80, m
        assert m.sex in ("male", "female"), m
        assert len(m.readings) == 3, m
        assert m.readings[0] == (m.systolic, m.diastolic), m
        for systolic, diastolic in m.readings:
            assert 0 < diastolic < systolic, m


def test_dataset_covers_several_categories(measurements: list[Measurement]) -> None:
    # The demo is more useful when the real data spans normal to stage 2 readings.
    assert any(m.systolic < 120 and m.diastolic < 80 for m in measurements)
    assert any(m.systolic >= 140 or m.diastolic >= 90 for m in measurements)
    assert {m.sex for m in measurements} == {"male", "female"}


def test_stable_object_id_is_deterministic() -> None:
    assert stable_object_id("user", "93706") == stable_object_id("user", "93706")
    assert stable_object_id("user", "93706") != stable_object_id("user", "93709")
    # The separator keeps ("ab", "c") and ("a", "bc") apart.
    assert stable_object_id("ab", "c") != stable_object_id("a", "bc")
    assert OBJECT_ID.match(stable_object_id("anything"))


def test_format_timestamp_converts_to_utc() -> None:
    eastern = timezone(timedelta(hours=-5))
    moment = datetime(2024, 3, 1, 3, 4, 5, 678999, tzinfo=eastern)

    assert format_timestamp(moment) == "2024-03-01T08:04:05.678Z"


def test_format_timestamp_rejects_naive_datetime() -> None:
    with pytest.raises(ValueError, match="naive"):
        format_timestamp(datetime(2024, 3, 1))


def test_document_events_are_well_formed(measurements: list[Measurement]) -> None:
    events = build_document_events(measurements, start=START)

    assert len(events) == len(measurements)
    for event, measurement in zip(events, measurements):
        assert set(event) == {"specversion", "id", "source", "type", "time", "datacontenttype", "subject", "data"}
        assert event["specversion"] == "1.0"
        assert event["source"] == "/data/v1/blood_pressure"
        assert event["type"] == "document.created"
        assert event["datacontenttype"] == "application/json"
        assert OBJECT_ID.match(event["id"])
        assert ISO_UTC_MILLISECONDS.match(event["time"])

        document = event["data"]
        assert event["subject"] == document["documentId"]
        assert document["schemaName"] == "blood_pressure"
        assert document["schemaId"] == dataset.SCHEMA_ID
        assert document["status"] == "active"
        assert document["creationTimestamp"] == event["time"]
        assert document["documentId"] == document_id_for(measurement)
        assert document["userId"] == user_id_for_subject(measurement.subject_id)
        for key in ("schemaId", "documentId", "userId"):
            assert OBJECT_ID.match(document[key]), key

        content = document["data"]
        assert content["systolic"] == measurement.systolic
        assert content["diastolic"] == measurement.diastolic
        assert content["pulse"] == measurement.pulse
        assert content["subjectId"] == measurement.subject_id
        assert content["age"] == measurement.age_years
        assert content["sex"] == measurement.sex
        assert len(content["readings"]) == 3


def test_document_events_are_json_serialisable(measurements: list[Measurement]) -> None:
    events = build_document_events(measurements[:50], start=START)

    assert json.loads(json.dumps(events)) == events


def test_document_event_times_follow_interval(measurements: list[Measurement]) -> None:
    events = build_document_events(measurements[:3], start=START, interval=timedelta(seconds=90))

    assert [event["time"] for event in events] == [
        "2024-03-01T08:00:00.000Z",
        "2024-03-01T08:01:30.000Z",
        "2024-03-01T08:03:00.000Z",
    ]


def test_document_event_ids_are_deterministic(measurements: list[Measurement]) -> None:
    first = build_document_events(measurements, start=START)
    again = build_document_events(load_measurements(), start=START)
    later = build_document_events(measurements, start=START + timedelta(days=3))

    assert first == again
    assert [e["id"] for e in first] == [e["id"] for e in later]
    assert [e["data"]["documentId"] for e in first] == [e["data"]["documentId"] for e in later]


def test_document_and_event_ids_are_unique(measurements: list[Measurement]) -> None:
    events = build_document_events(measurements, start=START)
    event_ids = {event["id"] for event in events}
    document_ids = {event["data"]["documentId"] for event in events}

    assert len(event_ids) == len(events)
    assert len(document_ids) == len(events)
    assert not event_ids & document_ids


def test_document_events_reject_negative_interval(measurements: list[Measurement]) -> None:
    with pytest.raises(ValueError, match="interval"):
        build_document_events(measurements[:2], start=START, interval=timedelta(seconds=-1))


def test_document_event_omits_absent_optional_values() -> None:
    measurement = Measurement(row_number=1, subject_id="1", systolic=118, diastolic=76)

    content = build_document_events([measurement], start=START)[0]["data"]["data"]

    assert content == {"systolic": 118, "diastolic": 76, "subjectId": "1", "source": "NHANES 2017-2018"}


def test_user_deleted_events_are_well_formed(measurements: list[Measurement]) -> None:
    events = build_user_deleted_events(measurements, count=5, start=START)
    document_user_ids = {e["data"]["userId"] for e in build_document_events(measurements, start=START)}

    assert len(events) == 5
    start_ms = int(START.timestamp()) * 1000
    for index, event in enumerate(events):
        assert set(event) == {"id", "type", "content", "creation_timestamp"}
        assert event["type"] == "user_deleted"
        assert OBJECT_ID.match(event["id"])
        assert OBJECT_ID.match(event["content"]["id"])
        assert event["content"]["id"] in document_user_ids
        assert isinstance(event["creation_timestamp"], int)
        assert event["creation_timestamp"] == start_ms + index * 1000


def test_user_deleted_events_use_distinct_subjects() -> None:
    repeated = [
        Measurement(row_number=1, subject_id="a", systolic=120, diastolic=80),
        Measurement(row_number=2, subject_id="a", systolic=122, diastolic=81),
        Measurement(row_number=3, subject_id="b", systolic=130, diastolic=85),
    ]

    events = build_user_deleted_events(repeated, count=2, start=START)

    assert [e["content"]["id"] for e in events] == [user_id_for_subject("a"), user_id_for_subject("b")]
    with pytest.raises(ValueError, match="2 distinct subjects"):
        build_user_deleted_events(repeated, count=3, start=START)


def test_user_deleted_events_are_deterministic(measurements: list[Measurement]) -> None:
    first = build_user_deleted_events(measurements, count=10, start=START)
    later = build_user_deleted_events(measurements, count=10, start=START + timedelta(hours=1))

    assert [e["id"] for e in first] == [e["id"] for e in later]
    assert len({e["id"] for e in first}) == 10


def test_user_deleted_events_reject_bad_arguments(measurements: list[Measurement]) -> None:
    assert build_user_deleted_events(measurements, count=0, start=START) == []
    with pytest.raises(ValueError, match="count must be 0 or more"):
        build_user_deleted_events(measurements, count=-1, start=START)
    with pytest.raises(ValueError, match="naive"):
        build_user_deleted_events(measurements, count=1, start=datetime(2024, 3, 1))


def test_parse_measurements_rejects_missing_header_column() -> None:
    with pytest.raises(ValueError, match="BPXPLS"):
        parse_measurements("SEQN,RIAGENDR,RIDAGEYR,BPXSY1,BPXDI1,BPXSY2,BPXDI2,BPXSY3,BPXDI3\n")


def test_parse_measurements_names_invalid_cell() -> None:
    text = f"{HEADER}\n1,1,40,70,120,80,118,78,119,79\n2,2,50,70,abc,80,118,78,119,79\n"

    with pytest.raises(ValueError, match=r"row 2: column BPXSY1 is not an integer: 'abc'"):
        parse_measurements(text)


def test_parse_measurements_requires_first_reading() -> None:
    text = f"{HEADER}\n1,1,40,70,120,,118,78,119,79\n"

    with pytest.raises(ValueError, match="row 1: column BPXDI1 is missing"):
        parse_measurements(text)


def test_parse_measurements_allows_missing_optional_values() -> None:
    text = f"{HEADER}\n7,,,,120,80,,,,\n"

    (measurement,) = parse_measurements(text)

    assert measurement == Measurement(row_number=1, subject_id="7", systolic=120, diastolic=80, readings=((120, 80),))


def test_parse_measurements_rejects_unknown_sex_code() -> None:
    text = f"{HEADER}\n1,3,40,70,120,80,118,78,119,79\n"

    with pytest.raises(ValueError, match="RIAGENDR has unknown code '3'"):
        parse_measurements(text)
