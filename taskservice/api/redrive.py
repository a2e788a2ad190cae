"""Route POST /tasks/v1/redrive (extension): re-run failed tasks in bulk, once per failed task."""

from __future__ import annotations

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr

from taskservice.api.auth import require
from taskservice.api.context import context_of
from taskservice.api.errors import FieldFormatError, IllegalStateError, ResourceUnknownError
from taskservice.api.models import ErrorBody
from taskservice.api.wire import WireResponse, both_spellings
from taskservice.auth.tokens import Caller
from taskservice.errors import NotFoundError
from taskservice.recovery.filters import (
    DEFAULT_REDRIVE_LIMIT,
    MAX_REDRIVE_LIMIT_PER_REQUEST,
    TIME_FORMAT_HINT,
    InvalidFilterError,
    parse_time_range,
)
from taskservice.recovery.redrive import (
    MAX_ERROR_NAME_LENGTH,
    FunctionDisabledError,
    RedriveSelection,
    check_error_name,
    redrive_failed_tasks,
)
from taskservice.store.recovery_repository import RecoveryRepository

router = APIRouter(prefix="/tasks/v1", tags=["tasks"], responses={400: {"model": ErrorBody}, 401: {"model": ErrorBody}})


class RedriveRequest(BaseModel):
    """Body of POST /tasks/v1/redrive. Unknown keys are rejected, so a misspelt filter cannot widen the selection."""

    model_config = ConfigDict(extra="forbid")

    functionName: StrictStr | None = Field(default=None, description="Only failed tasks of this function.")
    errorName: StrictStr | None = Field(
        default=None, max_length=MAX_ERROR_NAME_LENGTH,
        description="Only failed tasks whose error name is this, e.g. Runtime.Timeout.")
    since: StrictStr | None = Field(default=None, description=f"Only tasks that failed at or after: {TIME_FORMAT_HINT}.")
    until: StrictStr | None = Field(default=None, description="Only tasks that failed before this time, same forms.")
    limit: StrictInt = Field(default=DEFAULT_REDRIVE_LIMIT, ge=1, le=MAX_REDRIVE_LIMIT_PER_REQUEST,
                             description="Maximum number of failed tasks to redrive, oldest failure first.")
    dryRun: StrictBool = Field(default=False, description="Return what would be redriven and change nothing.")


class RedrivenTaskBody(BaseModel):
    """A failed task and the new task that re-runs it; taskId is null in a dry run."""

    failedTaskId: str
    taskId: str | None
    functionName: str
    errorName: str | None
    failedTimestamp: str


class RedriveResult(BaseModel):
    """Number of failed tasks redriven (or selected, in a dry run), with each pair of ids."""

    affectedRecords: int
    dryRun: bool
    data: list[RedrivenTaskBody]


@both_spellings(router.post, "/redrive", response_model=RedriveResult, summary="Redrive failed tasks (extension)")
async def redrive(request: Request, body: RedriveRequest, caller: Caller = require("CREATE_TASKS")) -> WireResponse:
    """Create one new task per selected failed task, with the same function, data, tags and priority.

    Only tasks in status failed are selected, oldest failure first, and never twice: the
    new task's idempotency key is `redrive:<failed task id>`.
    """
    try:
        since, until = parse_time_range(body.since, body.until)
        selection = RedriveSelection(function_name=body.functionName, error_name=check_error_name(body.errorName),
                                     since=since, until=until)
        redriven = await redrive_failed_tasks(RecoveryRepository(context_of(request).pool), selection, body.limit,
                                              dry_run=body.dryRun, requested_by=caller.user_id)
    except InvalidFilterError as exc:
        raise FieldFormatError(str(exc)) from exc
    except NotFoundError as exc:
        raise ResourceUnknownError(str(exc)) from exc
    except FunctionDisabledError as exc:
        raise IllegalStateError(str(exc)) from exc
    return WireResponse({"affectedRecords": len(redriven), "dryRun": body.dryRun,
                         "data": [task.as_json() for task in redriven]})
