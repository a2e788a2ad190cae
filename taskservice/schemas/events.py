"""Input event contracts: ExtraHorizon events, CloudEvents and Debezium change events."""

from __future__ import annotations

import base64
import binascii
import re
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StrictInt, field_validator, model_validator

DOCUMENT_EVENT_TYPES = ("document.created", "document.updated", "document.deleted", "document.transitioned")

_NAME = Field(min_length=1, max_length=256)

# RFC 3339 date-time: a full date, a full time and an offset (Z or ±hh:mm).
_RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})")

# A media type that declares JSON content: */json or */*+json, parameters aside.
_JSON_MEDIA_TYPE = re.compile(r"[^/\s;]+/([^/\s;]+\+)?json", re.IGNORECASE)


def _require_rfc3339(value: Any) -> Any:
    if isinstance(value, str) and _RFC3339.fullmatch(value):
        return value
    raise ValueError(f"must be an RFC 3339 timestamp such as 2027-01-01T12:00:00Z (got {value!r})")


def is_json_media_type(content_type: str) -> bool:
    """Return whether a media type declares JSON content (`*/json` or `*/*+json`), as CloudEvents defines it."""
    return _JSON_MEDIA_TYPE.fullmatch(content_type.split(";", 1)[0].strip()) is not None


Rfc3339Timestamp = Annotated[datetime, BeforeValidator(_require_rfc3339)]


class ExhEvent(BaseModel):
    """An ExtraHorizon event, e.g. `{"id", "type": "user_deleted", "content": {"id"}, "creation_timestamp"}`."""

    model_config = ConfigDict(extra="allow", title="ExtraHorizon event")

    id: str = Field(min_length=1, max_length=256, description="Event id, unique per event; an ObjectId upstream.")
    type: str = Field(min_length=1, max_length=256, description="Event type that dispatchers match, e.g. user_deleted.")
    content: dict[str, Any] | None = Field(default=None, description="Event payload object.")
    creation_timestamp: StrictInt | datetime | None = Field(
        default=None, description="Creation time as epoch milliseconds (or an ISO-8601 string)."
    )


class DocumentChange(BaseModel):
    """The `data` of a document-change CloudEvent: one document of a data-service schema."""

    model_config = ConfigDict(extra="allow", title="Document change")

    schemaId: str = _NAME
    schemaName: str | None = Field(default=None, max_length=256)
    documentId: str = _NAME
    status: str | None = Field(default=None, max_length=256, description="Document status after the change.")
    userId: str | None = Field(default=None, max_length=256, description="Owner of the document, if any.")
    data: dict[str, Any] | None = Field(default=None, description="The document's data after the change.")
    fromStatus: str | None = Field(default=None, max_length=256, description="Status before a transition.")
    toStatus: str | None = Field(default=None, max_length=256, description="Status after a transition.")
    transitionName: str | None = Field(default=None, max_length=256, description="Name of the transition.")
    creationTimestamp: datetime | None = None
    updateTimestamp: datetime | None = None


class DocumentChangeEvent(BaseModel):
    """A CloudEvents 1.0 structured-mode JSON event announcing a document change."""

    model_config = ConfigDict(extra="allow", title="Document change CloudEvent")

    specversion: Literal["1.0"]
    id: str = _NAME
    source: str = _NAME
    type: Literal["document.created", "document.updated", "document.deleted", "document.transitioned"]
    time: Rfc3339Timestamp | None = None
    datacontenttype: str | None = Field(
        default=None, max_length=256, description="A JSON media type such as application/json, if given."
    )
    subject: str | None = Field(default=None, max_length=256, description="The document id.")
    data: DocumentChange

    @field_validator("datacontenttype")
    @classmethod
    def _require_json(cls, value: str | None) -> str | None:
        if value is not None and not is_json_media_type(value):
            raise ValueError(f"must be a JSON media type such as application/json (got {value!r})")
        return value

    @model_validator(mode="after")
    def _require_transition_statuses(self) -> DocumentChangeEvent:
        if self.type == "document.transitioned" and (self.data.fromStatus is None or self.data.toStatus is None):
            raise ValueError("document.transitioned events need data.fromStatus and data.toStatus")
        return self


class CloudEvent(BaseModel):
    """A CloudEvents 1.0 event in the JSON event format, of any type.

    Extension attributes are further members. `data` contains JSON data or text, and
    `data_base64` contains other binary data as Base64. An event has at most one of them.
    """

    model_config = ConfigDict(extra="allow", title="CloudEvent")

    specversion: Literal["1.0"]
    id: str = _NAME
    source: str = _NAME
    type: str = _NAME
    time: Rfc3339Timestamp | None = None
    datacontenttype: str | None = Field(default=None, min_length=1, max_length=256, description="Media type of data.")
    dataschema: str | None = Field(default=None, min_length=1, description="URI of the schema that data follows.")
    subject: str | None = Field(default=None, max_length=256)
    data: Any = Field(default=None, description="The event data: any JSON value, or text for non-JSON media types.")
    data_base64: str | None = Field(default=None, description="Binary event data, Base64-encoded.")

    @field_validator("data_base64")
    @classmethod
    def _require_base64(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                base64.b64decode(value, validate=True)
            except binascii.Error as exc:
                raise ValueError(f"must be Base64 text: {exc}") from exc
        return value

    @model_validator(mode="after")
    def _require_one_data_member(self) -> CloudEvent:
        if "data" in self.model_fields_set and "data_base64" in self.model_fields_set:
            raise ValueError("an event has either data or data_base64, not both")
        return self


DebeziumOp = Literal["c", "u", "d", "r", "t"]

DEBEZIUM_OPERATIONS: dict[str, str] = {
    "c": "created", "u": "updated", "d": "deleted", "r": "read", "t": "truncated",
}


class DebeziumSource(BaseModel):
    """The `source` block of a Debezium change event: where and when the change was made.

    Connectors add their own position fields, such as `lsn` (PostgreSQL) or `file` and
    `pos` (MySQL); they are kept as further members.
    """

    model_config = ConfigDict(extra="allow", title="Debezium source", populate_by_name=True)

    connector: str | None = Field(default=None, description="Connector kind, e.g. postgresql or mysql.")
    name: str | None = Field(default=None, description="Logical name of the connector (the topic prefix).")
    db: str = _NAME
    schema_: str | None = Field(default=None, alias="schema", max_length=256,
                                description="Database schema; absent for connectors without schemas (MySQL).")
    table: str = _NAME
    ts_ms: StrictInt | None = Field(default=None, description="When the change was made in the database, epoch ms.")


class DebeziumChange(BaseModel):
    """A Debezium change event (the envelope's payload): one row change of one table.

    `op` is c (create), u (update), d (delete), r (read during a snapshot) or t (truncate).
    Creates, updates and reads need `after`; deletes need `before`.
    """

    model_config = ConfigDict(extra="allow", title="Debezium change event")

    op: DebeziumOp
    before: dict[str, Any] | None = Field(default=None, description="The row before the change.")
    after: dict[str, Any] | None = Field(default=None, description="The row after the change.")
    source: DebeziumSource
    ts_ms: StrictInt | None = Field(default=None, description="When the connector processed the change, epoch ms.")
    transaction: dict[str, Any] | None = Field(
        default=None, description="The transaction's id, total_order and data_collection_order, when enabled."
    )

    @model_validator(mode="after")
    def _require_row(self) -> DebeziumChange:
        operation = DEBEZIUM_OPERATIONS[self.op]
        if self.op in ("c", "u", "r") and self.after is None:
            raise ValueError(f"op {self.op!r} ({operation}) needs after, the row after the change")
        if self.op == "d" and self.before is None:
            raise ValueError(
                "op 'd' (deleted) needs before, the deleted row; on PostgreSQL set the table's "
                "REPLICA IDENTITY to DEFAULT or FULL"
            )
        return self


class DebeziumChangeWithSchema(BaseModel):
    """A Debezium change event as Kafka Connect's JsonConverter writes it with schemas.enable=true.

    With schemas.enable=false the record value is the payload alone.
    """

    model_config = ConfigDict(extra="forbid", title="Debezium change event with schema", populate_by_name=True)

    schema_: dict[str, Any] | None = Field(default=None, alias="schema", description="Kafka Connect schema.")
    payload: DebeziumChange
