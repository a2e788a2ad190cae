"""The `debezium` format: Debezium change events, with or without Kafka Connect's schema wrapper.

With the JsonConverter's `schemas.enable=true` the value is `{"schema": …, "payload": …}`;
without it the value is the payload alone. A record without a value (the tombstone that
Debezium writes after each delete, for log compaction) and a wrapper whose payload is null
are skipped.

The normalised document:

    {"id", "type": "<table>.<created|updated|deleted|read|truncated>", "time", "op",
     "db", "schema", "table", "before", "after", "data", "source", "transaction", "ts_ms"}

`data` is `after`, `before` for deletes and null for truncates. `time` is when the change
was made in the database (`source.ts_ms`, else the connector's `ts_ms`) as RFC 3339 UTC.
`schema` is null for connectors without schemas, such as MySQL's.
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Any

import orjson
from pydantic import ValidationError

from taskservice.consumers.formats.base import (
    Event, Headers, Rejection, Skip, epoch_ms_to_datetime, parse_json_object, summarise,
)
from taskservice.schemas.events import DEBEZIUM_OPERATIONS, DebeziumChange, DebeziumChangeWithSchema

# Times at which the connector processed the change. A connector that restarts emits the
# same change again with new values here, so they stay out of the identity.
_PROCESSING_TIMES = ("ts_ms", "ts_us", "ts_ns")


def decode_debezium(value: bytes | None, headers: Headers) -> Event | Rejection | Skip:
    """Decode a Debezium change event; headers are not read."""
    if value is None:
        return Skip("tombstone: a record without a value, as Debezium writes after each delete")
    body = parse_json_object(value)
    if isinstance(body, Rejection):
        return body
    wrapped = "payload" in body and "op" not in body
    if wrapped and body["payload"] is None:
        return Skip("tombstone: the schema wrapper's payload is null")
    try:
        if wrapped:
            change = DebeziumChangeWithSchema.model_validate(body).payload
            payload = body["payload"]
        else:
            change = DebeziumChange.model_validate(body)
            payload = body
    except ValidationError as exc:
        return Rejection("schema_mismatch", f"not a valid Debezium change event: {summarise(exc)}")

    identity = change_identity(payload)
    source = change.source
    time = epoch_ms_to_datetime(source.ts_ms if source.ts_ms is not None else change.ts_ms)
    operation = DEBEZIUM_OPERATIONS[change.op]
    event_type = f"{source.table}.{operation}"
    document = {
        "id": identity,
        "type": event_type,
        "time": _rfc3339(time),
        "op": change.op,
        "db": source.db,
        "schema": source.schema_,
        "table": source.table,
        "before": payload.get("before"),
        "after": payload.get("after"),
        "data": _row(change.op, payload),
        "source": payload["source"],
        "transaction": payload.get("transaction"),
        "ts_ms": payload.get("ts_ms"),
    }
    return Event(key=f"debezium:{identity}", event_id=identity, type=event_type, time=time,
                 document=document, original=body)


def change_identity(payload: dict[str, Any]) -> str:
    """Return the SHA-256 hex digest of the payload as JSON with sorted keys, processing times left out.

    Redeliveries of a record, and one change written with and without the schema wrapper,
    get the same identity. Distinct changes differ in their source position (such as
    `lsn`, or `file` and `pos`), so they get distinct identities.
    """
    identifying = {name: item for name, item in payload.items() if name not in _PROCESSING_TIMES}
    return hashlib.sha256(orjson.dumps(identifying, option=orjson.OPT_SORT_KEYS)).hexdigest()


def _row(op: str, payload: dict[str, Any]) -> Any:
    if op == "d":
        return payload.get("before")
    if op == "t":
        return None
    return payload.get("after")


def _rfc3339(time: datetime | None) -> str | None:
    if time is None:
        return None
    return time.isoformat(timespec="milliseconds").replace("+00:00", "Z")
