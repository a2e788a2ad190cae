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


DeadLetterReason = Literal[
    "not_utf8", "invalid_json", "not_an_object", "schema_mismatch", "too_large", "unsupported_value", "no_value"
]

DEAD_LETTER_HEADERS = {
    "reason": "Reason code, one of DeadLetterReason.",
    "detail": "Human-readable description of what was wrong, naming the field.",
    "source_topic": "Topic the record was read from.",
    "source_partition": "Partition number, as decimal text.",
    "source_offset": "Offset, as decimal text.",
    "consumer_group": "Consumer group that rejected it.",
}
