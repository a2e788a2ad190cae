"""Decoding of Kafka records into normalised events, by the topic's format.

A record that cannot become an event yields a Rejection with a reason code and a detail
that names what is wrong. Ingest sends it to the dead-letter topic. A record that carries
no event by design, such as a Debezium tombstone, yields a Skip. The formats are described
in docs/formats.md.
"""

from __future__ import annotations

from collections.abc import Callable

from taskservice.config import TopicFormat
from taskservice.consumers.formats.base import Event, Headers, Rejection, Skip
from taskservice.consumers.formats.cloudevents import decode_cloudevent
from taskservice.consumers.formats.debezium import decode_debezium
from taskservice.consumers.formats.exh import decode_exh

__all__ = ["Event", "Headers", "Rejection", "Skip", "decode_record"]

_DECODERS: dict[str, Callable[[bytes | None, Headers], Event | Rejection | Skip]] = {
    "exh": decode_exh,
    "cloudevents": decode_cloudevent,
    "debezium": decode_debezium,
}


def decode_record(
    value: bytes | None, headers: Headers, topic_format: TopicFormat, max_bytes: int
) -> Event | Rejection | Skip:
    """Turn one record into an Event, a Rejection that gives the reason, or a Skip.

    headers are the record headers as aiokafka returns them: (name, value bytes) pairs.
    Only the cloudevents format reads them. Decoding never raises.
    """
    if value is not None and len(value) > max_bytes:
        return Rejection("too_large", f"value has {len(value)} bytes, more than the limit of {max_bytes}")
    return _DECODERS[topic_format](value, headers)
