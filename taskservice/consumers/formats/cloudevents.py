"""The `cloudevents` format: CloudEvents 1.0 in both content modes of the Kafka protocol binding.

The mode is chosen per record. A `content-type` header that starts with
`application/cloudevents` means structured mode: the value is the whole event in the JSON
event format. Otherwise a `ce_specversion` header means binary mode: the attributes are
`ce_` headers, `content-type` is the data's media type and the value is the data. A record
with neither is read in structured mode, because producers that set no headers send
structured JSON.

Both modes normalise to the JSON event format, attributes and data in one object, so
dispatchers see one shape. Events of any type are accepted; a type under `document.`
must also be a data-service document change (`DocumentChangeEvent`). The identity is the
source and the id, which the CloudEvents specification makes unique per event.
"""

from __future__ import annotations

import base64
from typing import Any

from pydantic import ValidationError

from taskservice.consumers.formats.base import Event, Headers, Rejection, parse_json, parse_json_object, summarise
from taskservice.schemas.events import CloudEvent, DocumentChangeEvent, is_json_media_type

CLOUDEVENTS_MEDIA_TYPE = "application/cloudevents"
STRUCTURED_JSON_MEDIA_TYPE = "application/cloudevents+json"
CONTENT_TYPE_HEADER = "content-type"
ATTRIBUTE_HEADER_PREFIX = "ce_"
DOCUMENT_TYPE_PREFIX = "document."

# Attributes that binary mode carries elsewhere: datacontenttype in content-type, data in the value.
_NOT_HEADER_ATTRIBUTES = ("", "data", "data_base64", "datacontenttype")
_UTF8_CHARSETS = ("utf-8", "utf8", "us-ascii", "ascii")


def decode_cloudevent(value: bytes | None, headers: Headers) -> Event | Rejection:
    """Decode a CloudEvent in structured or binary mode, chosen by the record's headers."""
    read = _read_headers(headers)
    if isinstance(read, Rejection):
        return read
    content_type, attributes = read
    if content_type is not None and content_type.lower().startswith(CLOUDEVENTS_MEDIA_TYPE):
        if _media_type(content_type) != STRUCTURED_JSON_MEDIA_TYPE:
            return Rejection(
                "unsupported_content_type",
                f"content-type {content_type!r} names a CloudEvents event format other than JSON; send "
                f"{STRUCTURED_JSON_MEDIA_TYPE} or use binary mode",
            )
        return _decode_structured(value, has_attribute_headers=False)
    if "specversion" in attributes:
        return _decode_binary(value, content_type, attributes)
    return _decode_structured(value, has_attribute_headers=bool(attributes))


def _read_headers(headers: Headers) -> tuple[str | None, dict[str, str]] | Rejection:
    """Return the content-type header and the attributes of the ce_ headers, as text.

    Header names are matched case-insensitively and attribute names are lower-cased, as
    CloudEvents attribute names are lower case. Other headers are not read.
    """
    content_type: str | None = None
    attributes: dict[str, str] = {}
    seen: set[str] = set()
    for name, raw in headers:
        lowered = name.lower()
        if lowered != CONTENT_TYPE_HEADER and not lowered.startswith(ATTRIBUTE_HEADER_PREFIX):
            continue
        if lowered in seen:
            return Rejection("invalid_header", f"header {name!r} appears more than once; send each CloudEvents "
                                               "header once")
        seen.add(lowered)
        if raw is None:
            return Rejection("invalid_header", f"header {name!r} has no value; CloudEvents headers need UTF-8 text")
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            return Rejection("invalid_header", f"header {name!r} is not UTF-8 text ({exc}); the CloudEvents Kafka "
                                               "binding requires UTF-8 header values")
        if lowered == CONTENT_TYPE_HEADER:
            content_type = text
            continue
        attribute = lowered[len(ATTRIBUTE_HEADER_PREFIX):]
        if attribute in _NOT_HEADER_ATTRIBUTES:
            return Rejection("invalid_header", f"header {name!r} does not name a CloudEvents attribute; binary mode "
                                               "carries the data's media type in content-type and the data in the "
                                               "record value")
        attributes[attribute] = text
    return content_type, attributes


def _decode_structured(value: bytes | None, *, has_attribute_headers: bool) -> Event | Rejection:
    hint = ""
    if has_attribute_headers:
        hint = "; the record has ce_ headers but no ce_specversion header, which binary mode needs"
    if value is None:
        return Rejection("no_value", "record has no value and no ce_specversion header; a structured-mode "
                                     f"CloudEvent needs a JSON object as its value{hint}")
    body = parse_json_object(value)
    if isinstance(body, Rejection):
        return body
    return _event(body, body, binary=False, hint=hint)


def _decode_binary(value: bytes | None, content_type: str | None, attributes: dict[str, str]) -> Event | Rejection:
    document: dict[str, Any] = dict(attributes)
    if content_type is not None:
        document["datacontenttype"] = content_type
    if value is not None:
        data = _decode_data(value, content_type)
        if isinstance(data, Rejection):
            return data
        document.update(data)
    headers = {ATTRIBUTE_HEADER_PREFIX + name: text for name, text in attributes.items()}
    if content_type is not None:
        headers[CONTENT_TYPE_HEADER] = content_type
    original = {"headers": headers, **{name: document[name] for name in ("data", "data_base64") if name in document}}
    return _event(document, original, binary=True)


def _decode_data(value: bytes, content_type: str | None) -> dict[str, Any] | Rejection:
    """Return the data as the JSON event format represents it: `data` for JSON and text, else `data_base64`.

    A record without content-type contains JSON data, as the JSON event format implies
    application/json when datacontenttype is absent.
    """
    if content_type is None or is_json_media_type(content_type):
        declared = content_type or "application/json (implied when there is no content-type)"
        data = parse_json(value, label=f"data (the record value, of content-type {declared})")
        if isinstance(data, Rejection):
            return data
        return {"data": data}
    charset = _charset(content_type)
    if not _is_text(_media_type(content_type), charset):
        return {"data_base64": base64.b64encode(value).decode("ascii")}
    if charset is not None and charset not in _UTF8_CHARSETS:
        return Rejection("unsupported_content_type", f"content-type {content_type!r} declares charset {charset}; "
                                                     "send text data as UTF-8")
    try:
        return {"data": value.decode("utf-8")}
    except UnicodeDecodeError as exc:
        return Rejection("not_utf8", f"data (the record value, of content-type {content_type!r}) is not UTF-8 "
                                     f"text: {exc}")


def _event(document: dict[str, Any], original: dict[str, Any], *, binary: bool, hint: str = "") -> Event | Rejection:
    """Validate the normalised event and build the Event, or a schema_mismatch Rejection."""
    try:
        event: CloudEvent | DocumentChangeEvent = CloudEvent.model_validate(document)
        if event.type.startswith(DOCUMENT_TYPE_PREFIX):
            event = DocumentChangeEvent.model_validate(document)
    except ValidationError as exc:
        is_document = str(document.get("type", "")).startswith(DOCUMENT_TYPE_PREFIX)
        kind = "document-change CloudEvent" if is_document else "CloudEvent"
        mode = " in binary mode" if binary else ""
        summary = summarise(exc, _header_name if binary else None)
        return Rejection("schema_mismatch", f"not a valid {kind}{mode}: {summary}{hint}")
    return Event(
        key=f"ce:{event.source}:{event.id}",
        event_id=event.id,
        type=event.type,
        time=event.time,
        document=document,
        original=original,
    )


def _header_name(attribute: str) -> str:
    """Name the header or record part that carries an attribute in binary mode."""
    if attribute == "datacontenttype":
        return CONTENT_TYPE_HEADER
    if attribute in ("data", "data_base64"):
        return "data (the record value)"
    return ATTRIBUTE_HEADER_PREFIX + attribute


def _media_type(content_type: str) -> str:
    return content_type.split(";", 1)[0].strip().lower()


def _charset(content_type: str) -> str | None:
    for parameter in content_type.split(";")[1:]:
        name, _, parameter_value = parameter.partition("=")
        if name.strip().lower() == "charset":
            return parameter_value.strip().strip('"').lower()
    return None


def _is_text(media_type: str, charset: str | None) -> bool:
    """Return whether data of this media type is text: text/*, XML, or any type with a charset parameter."""
    subtype = media_type.partition("/")[2]
    return media_type.startswith("text/") or subtype == "xml" or subtype.endswith("+xml") or charset is not None
