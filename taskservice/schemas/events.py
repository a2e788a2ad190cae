"""Input event contracts: ExtraHorizon events and CloudEvents document changes."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, model_validator

DOCUMENT_EVENT_TYPES = ("document.created", "document.updated", "document.deleted", "document.transitioned")

_NAME = Field(min_length=1, max_length=256)


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
    time: datetime | None = None
    datacontenttype: Literal["application/json"] | None = None
    subject: str | None = Field(default=None, max_length=256, description="The document id.")
    data: DocumentChange

    @model_validator(mode="after")
    def _require_transition_statuses(self) -> DocumentChangeEvent:
        if self.type == "document.transitioned" and (self.data.fromStatus is None or self.data.toStatus is None):
            raise ValueError("document.transitioned events need data.fromStatus and data.toStatus")
        return self
