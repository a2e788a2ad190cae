"""Results of decoding one record, and the helpers every format decoder uses."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from pydantic import ValidationError

from taskservice.schemas.results import DeadLetterReason

# Record headers as aiokafka returns them. Kafka allows a header without a value.
Headers = Sequence[tuple[str, bytes | None]]


@dataclass(frozen=True, slots=True)
class Event:
    """An input event in the form dispatchers match, with the original body kept."""

    key: str                    # identity for exactly-once task creation
    event_id: str
    type: str
    time: datetime | None
    document: dict[str, Any]    # the normalised event: filters and paths read it, tasks get it as data.event
    original: dict[str, Any]    # the event as received, before normalisation


@dataclass(frozen=True, slots=True)
class Rejection:
    """The reason code and description of a record that could not be decoded."""

    reason: DeadLetterReason
    detail: str


@dataclass(frozen=True, slots=True)
class Skip:
    """A record that carries no event by design, such as a Debezium tombstone.

    Ingest creates no task for it, does not dead-letter it and commits past it.
    """

    detail: str


def summarise(exc: ValidationError, rename: Callable[[str], str] | None = None) -> str:
    """Describe the first three errors of a validation, each as `location: message`.

    rename maps the first part of a location to the name the producer uses, such as a header name.
    """
    parts = []
    for error in exc.errors()[:3]:
        location = [str(item) for item in error["loc"]]
        if location and rename is not None:
            location[0] = rename(location[0])
        parts.append(f"{'.'.join(location) or '(root)'}: {error['msg']}")
    more = len(exc.errors()) - 3
    if more > 0:
        parts.append(f"and {more} more")
    return "; ".join(parts)


def parse_json(value: bytes, label: str = "value") -> Any:
    """Parse JSON text of any kind; return a Rejection that names `label` when it is not UTF-8 JSON."""
    try:
        return orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        try:
            value.decode("utf-8")
        except UnicodeDecodeError as utf8_error:
            return Rejection("not_utf8", f"{label} is not UTF-8 text: {utf8_error}")
        return Rejection("invalid_json", f"{label} is not valid JSON: {exc}")


def parse_json_object(value: bytes) -> dict[str, Any] | Rejection:
    """Parse a record value that must be a JSON object."""
    body = parse_json(value)
    if isinstance(body, Rejection):
        return body
    if not isinstance(body, dict):
        return Rejection("not_an_object", f"value must be a JSON object, got {type(body).__name__}")
    return body


def epoch_ms_to_datetime(value: int | datetime | None) -> datetime | None:
    """Convert epoch milliseconds to an aware UTC datetime; None when absent or out of range."""
    if value is None or isinstance(value, datetime):
        return value
    try:
        return datetime.fromtimestamp(value / 1000, tz=UTC)
    except (OverflowError, OSError, ValueError):
        return None
