"""Decoding of Kafka records into normalised events, by the topic's format.

A record that cannot become an event yields a Rejection with a reason code and a detail
that names what is wrong. Ingest sends it to the dead-letter topic.
"""

from __future__ import annotations

from collections.abc import Callable

from taskservice.config import TopicFormat
from taskservice.consumers.formats.base import Event, Headers, Rejection
from taskservice.consumers.formats.cloudevents import decode_cloudevent
from taskservice.consumers.formats.exh import decode_exh

__all__ = ["Event", "Headers", "Rejection", "decode_record"]

_DECODERS: dict[str, Callable[[bytes | None, Headers], Event | Rejection]] = {
    "exh": decode_exh,
    "cloudevents": decode_cloudevent,
}


def decode_record(
    value: bytes | None, headers: Headers, topic_format: TopicFormat, max_bytes: int
) -> Event | Rejection:
    """Turn one record into an Event, or into a Rejection that gives the reason.

    headers are the record headers as aiokafka returns them: (name, value bytes) pairs.
    Only the cloudevents format reads them. Decoding never raises.
    """
    if value is not None and len(value) > max_bytes:
        return Rejection("too_large", f"value has {len(value)} bytes, more than the limit of {max_bytes}")
    return _DECODERS[topic_format](value, headers)
