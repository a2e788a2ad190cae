"""Dispatcher filters: events matched per second by PatternIndex on one core.

Builds 1,000 dispatcher filters of mixed kinds (exact, prefix, numeric, anything-but,
exists, wildcard, equals-ignore-case, $or and no filter) on 200 data schemas. Then calls
PatternIndex.match once per document-change CloudEvent of about 1 KB, as the ingest
consumer does after decoding. Scenarios:

- spread: the 1,000 dispatchers over four event types, one index per type;
- one type: all 1,000 dispatchers on document.transitioned, and only such events;
- selective: 1,000 dispatchers on document.transitioned, each for one schema and one
  status, so that an event matches about one of them;
- single: one dispatcher (schema and status) on document.transitioned.

JSON decoding and database writes are not included. The process is pinned to one CPU
with os.sched_setaffinity, and each scenario runs --seconds seconds, --repeats times.

    .venv/bin/python bench/matching.py [--seconds 2] [--repeats 3] [--cpu N] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import orjson

from common import machine
from taskservice.consumers.patterns import Pattern, PatternIndex, compile_pattern

TARGET_EVENTS_PER_S = 100_000
DISPATCHERS = 1_000
EVENTS = 4_000
EVENT_TYPES = {"document.transitioned": 0.4, "document.created": 0.3, "document.updated": 0.2,
               "document.deleted": 0.1}
DOMAINS = ("bp", "weight", "glucose", "spo2", "ecg", "sleep", "steps", "temperature", "mood", "medication",
           "pain", "diet", "asthma", "insulin", "hrv", "stress", "symptoms", "vaccination", "lab", "therapy")
VARIANTS = ("home", "clinic", "trial", "kids", "senior", "study-a", "study-b", "pilot", "eu", "us")
SCHEMAS = [f"{domain}-{variant}" for domain in DOMAINS for variant in VARIANTS]
SCHEMA_IDS = {name: f"{index:024x}" for index, name in enumerate(SCHEMAS, start=0x5F1A0000)}
STATUSES = ("new", "analyzed", "reviewed", "archived", "error")
TRANSITIONS = ("Analyze", "Review", "Archive", "Reject")
USERS = [f"{index:024x}" for index in range(0x6A000000, 0x6A000000 + 2000)]


def build_event(rng: random.Random, event_type: str) -> dict[str, Any]:
    """Return a document-change CloudEvent of about 1 KB as ingest decodes it."""
    schema = rng.choice(SCHEMAS)
    from_status, to_status = rng.sample(STATUSES, 2)
    systolic = rng.randint(95, 190)
    data: dict[str, Any] = {
        "schemaId": SCHEMA_IDS[schema], "schemaName": schema, "documentId": f"{rng.getrandbits(96):024x}",
        "status": to_status, "userId": rng.choice(USERS), "creatorId": rng.choice(USERS),
        "groupIds": [f"{rng.getrandbits(96):024x}", f"{rng.getrandbits(96):024x}"],
        "creationTimestamp": "2026-11-02T08:15:30.120Z", "updateTimestamp": "2026-11-02T08:16:02.004Z",
        "data": {"systolic": systolic, "diastolic": systolic - rng.randint(30, 60), "heartRate": rng.randint(50, 120),
                 "measuredAt": "2026-11-02T08:15:00Z", "position": rng.choice(("sitting", "standing", "lying")),
                 "device": {"model": "BP-5000", "firmware": "4.2.1", "serial": f"SN{rng.getrandbits(40):010x}",
                            "ip": f"10.{rng.randint(0, 3)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}"},
                 "tags": rng.sample(["morning", "evening", "after-exercise", "manual", "synced", "irregular"], 2)},
    }
    if rng.random() < 0.3:
        data["data"]["note"] = "Measured twice; second value kept."
    if event_type == "document.transitioned":
        data |= {"fromStatus": from_status, "toStatus": to_status, "transitionName": rng.choice(TRANSITIONS)}
    return {"specversion": "1.0", "id": f"{rng.getrandbits(128):032x}", "source": f"/data/v1/{schema}/documents",
            "type": event_type, "time": "2026-11-02T08:16:02.010Z", "datacontenttype": "application/json",
            "dataschema": f"https://api.example.com/data/v1/{schema}/schema.json", "subject": data["documentId"],
            "traceparent": f"00-{rng.getrandbits(128):032x}-{rng.getrandbits(64):016x}-01", "data": data}


def _schema_field(rng: random.Random) -> dict[str, Any]:
    schema = rng.choice(SCHEMAS)
    return {"schemaId": [SCHEMA_IDS[schema]]} if rng.random() < 0.7 else {"schemaName": [schema]}


# (share of dispatchers, filter builder). Each builder returns a filter of one kind, modelled on
# filters users write, or None for a dispatcher without filter.
FILTER_KINDS: list[tuple[float, Callable[[random.Random], dict[str, Any] | None]]] = [
    (0.25, lambda rng: {"data": _schema_field(rng) | {"status": [rng.choice(STATUSES)]}}),
    (0.08, lambda rng: {"data": _schema_field(rng)}),
    (0.12, lambda rng: {"data": _schema_field(rng)
                        | {"data": {"systolic": [{"numeric": [">=", rng.choice((130, 140, 160))]}]}}}),
    (0.10, lambda rng: {"data": _schema_field(rng) | {"status": [{"anything-but": ["archived", "error"]}]}}),
    (0.08, lambda rng: {"data": _schema_field(rng) | {"userId": [{"exists": True}],
                                                      "data": {"note": [{"exists": False}]}}}),
    (0.05, lambda rng: {"source": [{"wildcard": f"/data/v1/{rng.choice(DOMAINS)}-*/documents"}],
                        "data": {"status": ["analyzed"]}}),
    (0.08, lambda rng: {"data": {"$or": [_schema_field(rng), _schema_field(rng)],
                                 "status": [{"anything-but": "error"}]}}),
    (0.10, lambda rng: {"data": {"userId": [rng.choice(USERS)], "schemaName": [{"prefix": rng.choice(DOMAINS)}]}}),
    (0.05, lambda rng: {"data": {"schemaName": [{"prefix": f"{rng.choice(DOMAINS)}-"}],
                                 "data": {"device": {"ip": [{"cidr": "10.1.0.0/16"}]}}}}),
    (0.03, lambda rng: {"data": {"status": [{"equals-ignore-case": rng.choice(STATUSES).upper()}],
                                 "data": {"tags": ["irregular"]}}}),
    (0.02, lambda rng: {"data": {"data": {"systolic": [{"numeric": [">", 180]}],
                                          "position": [{"anything-but": "lying"}]}}}),
    (0.005, lambda rng: None),
]


def build_dispatchers(rng: random.Random, count: int) -> list[tuple[str, str, Pattern | None]]:
    """Return (dispatcher id, event type, compiled filter) for count dispatchers."""
    shares, builders = zip(*FILTER_KINDS, strict=True)
    types, type_shares = list(EVENT_TYPES), list(EVENT_TYPES.values())
    dispatchers = []
    for number in range(count):
        source = rng.choices(builders, weights=shares)[0](rng)
        event_type = rng.choices(types, weights=type_shares)[0]
        dispatchers.append((f"d{number}", event_type, None if source is None else compile_pattern(source)))
    return dispatchers


def index_by_type(dispatchers: list[tuple[str, str, Pattern | None]]) -> dict[str, PatternIndex[str]]:
    grouped: dict[str, list[tuple[str, Pattern | None]]] = {}
    for dispatcher_id, event_type, pattern in dispatchers:
        grouped.setdefault(event_type, []).append((dispatcher_id, pattern))
    return {event_type: PatternIndex(entries) for event_type, entries in grouped.items()}


def events_per_second(indexes: dict[str, PatternIndex[str]], events: list[dict[str, Any]], seconds: float) -> float:
    """Match events in a loop for about seconds seconds and return the rate."""
    matched = 0
    start = time.perf_counter()
    deadline = start + seconds
    while True:
        for event in events:
            index = indexes.get(event["type"])
            if index is not None:
                index.match(event)
        matched += len(events)
        now = time.perf_counter()
        if now >= deadline:
            return matched / (now - start)


def run_scenario(name: str, indexes: dict[str, PatternIndex[str]], events: list[dict[str, Any]],
                 seconds: float, repeats: int) -> dict[str, Any]:
    candidates = [indexes[event["type"]].candidate_count(event) for event in events if event["type"] in indexes]
    matches = [len(indexes[event["type"]].match(event)) for event in events if event["type"] in indexes]
    rates = [events_per_second(indexes, events, seconds) for _ in range(repeats)]
    rate = statistics.median(rates)
    return {
        "scenario": name, "dispatchers": sum(len(index) for index in indexes.values()), "event_types": len(indexes),
        "events_per_s": round(rate), "best_events_per_s": round(max(rates)),
        "runs_events_per_s": [round(value) for value in rates],
        "microseconds_per_event": round(1e6 / rate, 2), "target_ratio": round(rate / TARGET_EVENTS_PER_S, 2),
        "mean_candidates": round(statistics.fmean(candidates), 2), "max_candidates": max(candidates),
        "checked_every_event": sum(index.candidate_count({}) for index in indexes.values()),
        "mean_matches": round(statistics.fmean(matches), 2),
    }


def print_table(summary: dict[str, Any]) -> None:
    print(f"events of {summary['event_bytes']} bytes on average, CPU {summary['cpu']}, 1-minute load average "
          f"{summary['load_average_1m_before']:.2f} before and {summary['load_average_1m_after']:.2f} after")
    print("events/s is the median of the runs, best the fastest; candidates, every event and matches are means")
    print(f"{'scenario':10} {'dispatchers':>11} {'events/s':>10} {'best':>10} {'µs/event':>9} {'× target':>9} "
          f"{'candidates':>10} {'every event':>11} {'matches':>8} {'× single':>9}")
    for scenario in summary["scenarios"]:
        print(f"{scenario['scenario']:10} {scenario['dispatchers']:>11} {scenario['events_per_s']:>10,} "
              f"{scenario['best_events_per_s']:>10,} {scenario['microseconds_per_event']:>9} "
              f"{scenario['target_ratio']:>9} {scenario['mean_candidates']:>10} {scenario['checked_every_event']:>11} "
              f"{scenario['mean_matches']:>8} {scenario.get('cost_vs_single', ''):>9}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=2.0, help="duration of one measurement, in seconds")
    parser.add_argument("--repeats", type=int, default=3, help="measurements per scenario, whose median is reported")
    parser.add_argument("--cpu", type=int, default=max(os.sched_getaffinity(0)), help="CPU to pin the process to")
    parser.add_argument("--json", action="store_true", help="print only one JSON object with every figure")
    args = parser.parse_args()
    os.sched_setaffinity(0, {args.cpu})
    load_before = os.getloadavg()[0]

    rng = random.Random(20261102)
    dispatchers = build_dispatchers(rng, DISPATCHERS)
    types, type_shares = list(EVENT_TYPES), list(EVENT_TYPES.values())
    mixed = [build_event(rng, rng.choices(types, weights=type_shares)[0]) for _ in range(EVENTS)]
    transitioned = [build_event(rng, "document.transitioned") for _ in range(EVENTS)]
    single = compile_pattern({"data": {"schemaName": ["bp-home"], "toStatus": ["analyzed"]}})
    one_type = [(dispatcher_id, "document.transitioned", pattern) for dispatcher_id, _, pattern in dispatchers]
    selective = [(f"s{number}", "document.transitioned",
                  compile_pattern({"data": {"schemaName": [SCHEMAS[number % len(SCHEMAS)]],
                                            "toStatus": [STATUSES[number // len(SCHEMAS)]]}}))
                 for number in range(DISPATCHERS)]
    scenarios = [
        run_scenario("spread", index_by_type(dispatchers), mixed, args.seconds, args.repeats),
        run_scenario("one type", index_by_type(one_type), transitioned, args.seconds, args.repeats),
        run_scenario("selective", index_by_type(selective), transitioned, args.seconds, args.repeats),
        run_scenario("single", index_by_type([("d0", "document.transitioned", single)]), transitioned,
                     args.seconds, args.repeats),
    ]
    single_rate = scenarios[-1]["events_per_s"]
    for scenario in scenarios[:-1]:
        scenario["cost_vs_single"] = round(single_rate / scenario["events_per_s"], 2)

    event_bytes = round(statistics.fmean(len(orjson.dumps(event)) for event in mixed))
    summary = {"machine": machine(), "time": datetime.now(UTC).isoformat(), "cpu": args.cpu,
               "load_average_1m_before": load_before, "load_average_1m_after": os.getloadavg()[0],
               "event_bytes": event_bytes, "target_events_per_s": TARGET_EVENTS_PER_S, "scenarios": scenarios}
    if args.json:
        print(json.dumps(summary))
    else:
        print_table(summary)


if __name__ == "__main__":
    main()
