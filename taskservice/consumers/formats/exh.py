"""The `exh` format: ExtraHorizon events as JSON objects."""

from __future__ import annotations

from pydantic import ValidationError

from taskservice.consumers.formats.base import (
    Event, Headers, Rejection, epoch_ms_to_datetime, parse_json_object, summarise,
)
from taskservice.schemas.events import ExhEvent


def decode_exh(value: bytes | None, headers: Headers) -> Event | Rejection:
    """Decode an ExtraHorizon event; headers are not read. The document is the event as received."""
    if value is None:
        return Rejection("no_value", "record has no value (a tombstone); events need a JSON object")
    body = parse_json_object(value)
    if isinstance(body, Rejection):
        return body
    try:
        event = ExhEvent.model_validate(body)
    except ValidationError as exc:
        return Rejection("schema_mismatch", f"not a valid exh event: {summarise(exc)}")
    return Event(
        key=f"exh:{event.id}",
        event_id=event.id,
        type=event.type,
        time=epoch_ms_to_datetime(event.creation_timestamp),
        document=body,
        original=body,
    )
