"""Output contracts: task result messages and dead-letter headers."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class TaskError(BaseModel):
    """Why a task run failed: `runtime` when the code started and failed, `invocation` when it could not start."""

    type: Literal["runtime", "invocation"]
    name: str
    message: str


class TaskResultMessage(BaseModel):
    """One message on the results topic per finished run; the record key is the task id.

    A consumer deduplicates on (taskId, attempt): a message may be delivered more than
    once after a crash, and every copy is byte-identical.
    """

    model_config = ConfigDict(title="Task result message", extra="forbid")

    taskId: str = Field(description="Task id, 24 lowercase hex characters; also the record key.")
    functionName: str
    status: Literal["complete", "failed", "retried", "canceled"] = Field(
        description="complete or failed; retried when a retry task follows; canceled when cancelled while running."
    )
    attempt: int = Field(ge=1, description="Run number of this task, starting at 1.")
    result: Any = Field(default=None, description="The function's return value; null when it failed.")
    error: TaskError | None = Field(default=None, description="Present unless status is complete.")
    eventId: str | None = Field(default=None, description="Id of the event that created the task, if any.")
    tags: list[str] = Field(default_factory=list)
    retriedByTaskId: str | None = Field(default=None, description="The retry task, when status is retried.")
    retryForTaskIds: list[str] | None = Field(default=None, description="Earlier tasks of the chain, oldest first.")
    creationTimestamp: str
    startTimestamp: str = Field(description="When the task became due.")
    startedTimestamp: str | None = Field(default=None, description="When this run started.")
    finishedTimestamp: str | None = None
    statusChangedTimestamp: str


# Reason codes of dead-lettered records, sent in the `reason` header:
# - not_utf8: the value, or the data of a binary-mode CloudEvent, is not UTF-8 text.
# - invalid_json: the value, or JSON data of a binary-mode CloudEvent, is not valid JSON.
# - not_an_object: the value is JSON but not an object.
# - schema_mismatch: the event does not follow its format's contract (a field missing or of the wrong type).
# - too_large: the value exceeds max_record_bytes, or the task data max_task_data_bytes.
# - unsupported_value: PostgreSQL rejected the task data.
# - mapping_failed: a path of a dispatcher rule (input mapping, key template, transition ids) found nothing.
# - no_value: the record has no value, and its format needs one (exh, and cloudevents without ce_specversion).
# - invalid_header: a CloudEvents header (ce_* or content-type) is not UTF-8, has no value, repeats, or
#   names no attribute.
# - unsupported_content_type: content-type names a CloudEvents event format other than JSON, or text data
#   in a charset other than UTF-8.
DeadLetterReason = Literal[
    "not_utf8", "invalid_json", "not_an_object", "schema_mismatch", "too_large", "unsupported_value", "no_value",
    "mapping_failed", "invalid_header", "unsupported_content_type",
]

DEAD_LETTER_HEADERS = {
    "reason": "Reason code, one of DeadLetterReason.",
    "detail": "Human-readable description of what was wrong, naming the field.",
    "source_topic": "Topic the record was read from.",
    "source_partition": "Partition number, as decimal text.",
    "source_offset": "Offset, as decimal text.",
    "consumer_group": "Consumer group that rejected it.",
}
