"""pydantic models of every request body, and of the response objects for the OpenAPI document.

Request models ignore unknown keys, as ExtraHorizon does, and use strict scalar types so
that "30" is not taken for 30. Timestamps accept ISO-8601 strings and epoch numbers.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr

MAX_SAFE_INTEGER = 9_007_199_254_740_991

PermissionMode = Literal["permissionRequired", "allUsers", "public"]


class Body(BaseModel):
    """Base of request bodies: unknown keys are ignored."""

    model_config = ConfigDict(extra="ignore")


# Tasks -----------------------------------------------------------------------------------


class TaskCreate(Body):
    """Body of POST /tasks/v1."""

    functionName: StrictStr
    data: dict[str, Any] | None = None
    tags: list[StrictStr] | None = None
    priority: StrictInt | None = Field(default=None, ge=-MAX_SAFE_INTEGER, le=MAX_SAFE_INTEGER)
    startTimestamp: datetime | None = None
    concurrencyKey: StrictStr | None = Field(
        default=None, min_length=1, max_length=256,
        description="Extension: tasks with the same key run one at a time, in queue order.",
    )


class ExecuteBody(Body):
    """Body of POST /tasks/v1/functions/{name}/execute; the SDK sends {"data": …}."""

    data: dict[str, Any] | None = None


class EmptyBody(Body):
    """Body of cancel, enable and disable; the SDK sends {}."""


# Functions -------------------------------------------------------------------------------


class EnvironmentVariable(Body):
    """One environment variable of a function."""

    value: StrictStr


class ExecutionOptions(Body):
    """Who may execute a function directly or call it as an API function, and its default priority."""

    permissionMode: PermissionMode = "permissionRequired"
    defaultPriority: StrictInt = Field(default=0, ge=-MAX_SAFE_INTEGER, le=MAX_SAFE_INTEGER)


class RetryPolicyBody(BaseModel):
    """ExtraHorizon retry policy; further keys (worker extensions) are kept as given."""

    model_config = ConfigDict(extra="allow")

    enabled: StrictBool = False
    errorsToRetry: list[StrictStr] = Field(default_factory=list)


class FunctionFields(Body):
    """Writable fields shared by create and update."""

    description: StrictStr | None = None
    entryPoint: StrictStr | None = None
    runtime: StrictStr | None = None
    timeLimit: StrictInt | None = None
    memoryLimit: StrictInt | None = None
    environmentVariables: dict[str, EnvironmentVariable] | None = None
    executionOptions: ExecutionOptions | None = None
    retryPolicy: RetryPolicyBody | None = None
    concurrencyLimit: StrictInt | None = Field(default=None, description="Extension: tasks running at once.")
    code: StrictStr | None = Field(default=None, description="Base64 of a zip archive, at most 10 MB.")


class FunctionCreate(FunctionFields):
    """Body of POST /tasks/v1/functions."""

    name: StrictStr
    code: StrictStr
    entryPoint: StrictStr
    runtime: StrictStr


class FunctionUpdate(FunctionFields):
    """Body of PUT /tasks/v1/functions/{name}; absent fields keep their value."""


# Dispatchers -----------------------------------------------------------------------------


class Recipients(Body):
    """Recipients of a mail action."""

    to: list[StrictStr]
    cc: list[StrictStr] | None = None
    bcc: list[StrictStr] | None = None


class ActionFields(Body):
    """Fields of an action that both creation and update accept."""

    name: StrictStr | None = None
    description: StrictStr | None = None
    functionName: StrictStr | None = None
    data: dict[str, Any] | None = None
    tags: list[StrictStr] | None = None
    startTimestamp: datetime | None = None
    recipients: Recipients | None = None
    templateId: StrictStr | None = None
    input: Any = Field(default=None, description=(
        "Extension: input mapping; keys ending in .$ take a JSONPath value from the event, "
        "e.g. {\"userId.$\": \"$.data.userId\"}."))
    includeEvent: Any = Field(default=None, description=(
        "Extension: whether the task data gets the event under `event` (default true; false for transitions)."))
    deduplicationKey: Any = Field(default=None, description=(
        "Extension: key template; one task per action and key value, e.g. \"$.data.documentId\"."))
    concurrencyKey: Any = Field(default=None, description=(
        "Extension: key template; tasks with the same key run one at a time."))
    delaySeconds: Any = Field(default=None, description="Extension: start this many seconds after the event time.")
    priority: Any = Field(default=None, description="Extension: task priority; default the function's.")


class ActionCreate(ActionFields):
    """An action without id, inside a dispatcher or on its own."""

    type: Literal["task", "mail"]


class ActionUpdate(ActionFields):
    """Partial update of an action; its type never changes."""

    type: Literal["task", "mail"] | None = None


class DispatcherCreate(Body):
    """Body of POST /dispatchers/v1."""

    eventType: StrictStr
    name: StrictStr | None = None
    description: StrictStr | None = None
    tags: list[StrictStr] | None = None
    filter: Any = Field(default=None, description=(
        "Extension: event pattern (EventBridge syntax) the normalised event must match; see docs/filters.md."))
    transition: Any = Field(default=None, description=(
        "Extension: for document.transitioned events, the name, fromStatus, toStatus and schemaId to react to."))
    actions: list[ActionCreate] = Field(default_factory=list)


class DispatcherUpdate(Body):
    """Body of PUT /dispatchers/v1/{id}."""

    eventType: StrictStr | None = None
    name: StrictStr | None = None
    description: StrictStr | None = None
    tags: list[StrictStr] | None = None
    filter: Any = Field(default=None, description=(
        "Extension: event pattern (EventBridge syntax) the normalised event must match; see docs/filters.md."))
    transition: Any = Field(default=None, description=(
        "Extension: for document.transitioned events, the name, fromStatus, toStatus and schemaId to react to."))


# Schedules -------------------------------------------------------------------------------


class ScheduleCreate(Body):
    """Body of POST /tasks/v1/schedules."""

    functionName: StrictStr
    interval: StrictInt = Field(ge=1, description="Seconds between task creations.")
    data: dict[str, Any] | None = None
    priority: StrictInt | None = Field(default=None, ge=-MAX_SAFE_INTEGER, le=MAX_SAFE_INTEGER)
    startTimestamp: datetime | None = None


# Responses (documentation only; handlers build plain dictionaries) -------------------


class PageInfo(BaseModel):
    """Paging of a list; total is absent when the query had skipCount()."""

    total: int | None = None
    offset: int
    limit: int


class TaskError(BaseModel):
    """Why a task failed."""

    type: Literal["runtime", "invocation"]
    name: str | None = None
    message: str


class Task(BaseModel):
    """A task. attempt, startedTimestamp, finishedTimestamp, duration and result are extensions."""

    id: str
    functionName: str
    status: Literal["new", "inProgress", "complete", "retried", "failed", "canceled"]
    statusChangedTimestamp: str
    data: dict[str, Any]
    tags: list[str]
    priority: int
    startTimestamp: str
    createdByUserId: str | None = None
    createdByApplicationId: str | None = None
    retriedByTaskId: str | None = None
    retryForTaskIds: list[str] | None = None
    error: TaskError | None = None
    attempt: int
    startedTimestamp: str | None = None
    finishedTimestamp: str | None = None
    duration: float | None = Field(default=None, description="Seconds from start to end of the last run.")
    creationTimestamp: str
    updateTimestamp: str
    result: Any = Field(default=None, description="Function return value; execute and GET /tasks/v1/{id} only.")


class TaskPage(BaseModel):
    """A page of tasks."""

    page: PageInfo
    data: list[Task]


class LogLine(BaseModel):
    """One runtime log line, `<ISO time>\\t<request id>\\t<LEVEL>\\t<text>`."""

    message: str
    timestamp: str


class LogPage(BaseModel):
    """A page of log lines."""

    page: PageInfo
    data: list[LogLine]


class AffectedRecords(BaseModel):
    """Result of an update, delete, cancel, enable or disable."""

    affectedRecords: int


class FunctionListItem(BaseModel):
    """A function in the list."""

    name: str
    description: str | None = None
    updateTimestamp: str


class FunctionPage(BaseModel):
    """Every function in one page."""

    page: PageInfo
    data: list[FunctionListItem]


class FunctionDetails(BaseModel):
    """A function's settings; code is write-only."""

    name: str
    description: str | None = None
    entryPoint: str
    runtime: str
    timeLimit: int
    memoryLimit: int
    environmentVariables: dict[str, EnvironmentVariable]
    executionOptions: ExecutionOptions
    retryPolicy: dict[str, Any]
    enabled: bool
    concurrencyLimit: int | None = None
    creationTimestamp: str
    updateTimestamp: str


class Action(BaseModel):
    """A dispatcher action; startTimestamp is epoch milliseconds."""

    id: str
    type: Literal["task", "mail"]
    name: str | None = None
    description: str | None = None
    functionName: str | None = None
    data: dict[str, Any] | None = None
    tags: list[str] | None = None
    startTimestamp: int | None = None
    recipients: Recipients | None = None
    templateId: str | None = None
    input: dict[str, Any] | None = None
    includeEvent: bool | None = None
    deduplicationKey: str | None = None
    concurrencyKey: str | None = None
    delaySeconds: float | None = None
    priority: int | None = None


class Dispatcher(BaseModel):
    """A dispatcher with its actions; timestamps are epoch milliseconds."""

    id: str
    name: str | None = None
    description: str | None = None
    eventType: str
    tags: list[str]
    filter: dict[str, Any] | None = None
    transition: dict[str, str] | None = None
    actions: list[Action]
    creationTimestamp: int
    updateTimestamp: int


class DispatcherPage(BaseModel):
    """A page of dispatchers."""

    page: PageInfo
    data: list[Dispatcher]


class Schedule(BaseModel):
    """An interval schedule."""

    id: str
    functionName: str
    interval: int | None = None
    data: dict[str, Any]
    priority: int | None = None
    startTimestamp: str
    nextTimestamp: str
    nextFireTimestamps: list[str] = Field(default_factory=list, description="Extension: the next fire times.")
    cronExpression: str | None = Field(default=None, description="Extension: a five-field cron expression.")
    timeZone: str | None = Field(default=None, description="Extension: the IANA time zone of the cron expression.")
    tags: list[str] | None = Field(default=None, description="Extension: tags given to every created task.")
    paused: bool | None = Field(default=None, description="Extension: whether the schedule is paused.")
    catchUp: str | None = Field(default=None, description="Extension: skip, latest or all missed fire times.")
    createdByUserId: str | None = None
    createdByApplicationId: str | None = None
    creationTimestamp: str
    updateTimestamp: str


class SchedulePage(BaseModel):
    """A page of schedules."""

    page: PageInfo
    data: list[Schedule]


class ApiRequestRecord(BaseModel):
    """The record of one API-function call; duration is seconds."""

    id: str
    functionName: str
    method: str
    path: str
    userId: str | None = None
    applicationId: str | None = None
    statusCode: int
    timestamp: str
    duration: float
    error: dict[str, Any] | None = None


class ApiRequestPage(BaseModel):
    """A page of API requests."""

    page: PageInfo
    data: list[ApiRequestRecord]


class ErrorBody(BaseModel):
    """Every error response."""

    code: int | None = None
    name: str
    message: str
