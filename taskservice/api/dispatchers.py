"""Routes under /dispatchers/v1: dispatchers and their actions.

Dispatcher and action timestamps are epoch milliseconds, the form of the Dispatchers
Service documentation. Mail actions are stored and listed, but this service sends no
mail: only task actions run when a matching event arrives.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Request

from taskservice.api.auth import require
from taskservice.api.context import context_of
from taskservice.api.errors import (
    FieldFormatError,
    MissingRequiredFieldsError,
    ResourceAlreadyExistsError,
    ResourceUnknownError,
)
from taskservice.api.models import (
    Action,
    ActionCreate,
    ActionUpdate,
    AffectedRecords,
    Dispatcher,
    DispatcherCreate,
    DispatcherPage,
    DispatcherUpdate,
    ErrorBody,
)
from taskservice.api.tasks import compiled_rql
from taskservice.api.wire import WireResponse, affected, both_spellings, drop_none, epoch_ms, object_id, page, selected
from taskservice.auth.tokens import Caller
from taskservice.consumers.rules import RuleError, action_rule_columns, dispatcher_rule_columns
from taskservice.errors import AlreadyExistsError
from taskservice.ids import new_object_id
from taskservice.store.db import Record
from taskservice.store.resources import DISPATCHERS

router = APIRouter(prefix="/dispatchers/v1", tags=["dispatchers"],
                   responses={400: {"model": ErrorBody}, 401: {"model": ErrorBody}, 404: {"model": ErrorBody}})


def dispatcher_wire(row: Record) -> dict[str, Any]:
    """Build a Dispatcher object with its actions."""
    return drop_none({
        "id": row["id"],
        "name": row["name"],
        "description": row["description"],
        "eventType": row["event_type"],
        "tags": list(row["tags"]),
        "filter": row["filter"],
        "transition": row["transition"],
        "actions": [drop_none(action) for action in row["actions"]],
        "creationTimestamp": epoch_ms(row["creation_timestamp"]),
        "updateTimestamp": epoch_ms(row["update_timestamp"]),
    })


def _utc(value: datetime | None) -> datetime | None:
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


def _checked(check: Any, *args: Any) -> dict[str, Any]:
    """Run a rule check and report a bad rule as a field format error."""
    try:
        columns: dict[str, Any] = check(*args)
    except RuleError as exc:
        raise FieldFormatError(str(exc)) from exc
    return columns


def _action_row(action: ActionCreate) -> dict[str, Any]:
    if action.type == "task" and not action.functionName:
        raise MissingRequiredFieldsError("a task action needs functionName")
    if action.type == "mail" and (action.recipients is None or not action.templateId):
        raise MissingRequiredFieldsError("a mail action needs recipients and templateId")
    rules = _checked(action_rule_columns, action.model_dump(exclude_none=True), action.type)
    return rules | {
        "id": new_object_id(), "type": action.type, "name": action.name, "description": action.description,
        "function_name": action.functionName if action.type == "task" else None,
        "data": action.data or {}, "tags": action.tags or [], "start_timestamp": _utc(action.startTimestamp),
        "recipients": action.recipients.model_dump(exclude_none=True) if action.recipients else None,
        "template_id": action.templateId,
    }


async def _dispatcher_or_404(request: Request, dispatcher_id: str) -> Record:
    row = await context_of(request).api.get_dispatcher(object_id(dispatcher_id, "dispatcherId"))
    if row is None:
        raise ResourceUnknownError(f"no dispatcher with id {dispatcher_id}")
    return row


@both_spellings(router.get, "/", response_model=DispatcherPage, summary="List dispatchers (RQL)")
async def list_dispatchers(request: Request, _caller: Caller = require("VIEW_DISPATCHERS")) -> WireResponse:
    """Return a page of dispatchers with their actions."""
    compiled = compiled_rql(request, DISPATCHERS)
    total, rows = await context_of(request).api.list_dispatchers(compiled)
    items = [selected(dispatcher_wire(row), compiled.select) for row in rows]
    return WireResponse(page(items, total, compiled.offset, compiled.limit))


@both_spellings(router.post, "/", response_model=Dispatcher, summary="Create a dispatcher")
async def create_dispatcher(request: Request, body: DispatcherCreate,
                            _caller: Caller = require("CREATE_DISPATCHERS")) -> WireResponse:
    """Create a dispatcher with its actions; names must be unique."""
    if not body.eventType:
        raise FieldFormatError("eventType must not be empty")
    dispatcher = {"id": new_object_id(), "name": body.name, "description": body.description,
                  "event_type": body.eventType, "tags": body.tags or [],
                  **_checked(dispatcher_rule_columns, body.model_dump(include={"eventType", "filter", "transition"}))}
    actions = [_action_row(action) for action in body.actions]
    try:
        await context_of(request).api.insert_dispatcher(dispatcher, actions)
    except AlreadyExistsError as exc:
        raise ResourceAlreadyExistsError(str(exc)) from exc
    return WireResponse(dispatcher_wire(await _dispatcher_or_404(request, dispatcher["id"])))


@router.put("/{dispatcher_id}", response_model=AffectedRecords, summary="Update a dispatcher")
async def update_dispatcher(request: Request, dispatcher_id: str, body: DispatcherUpdate,
                            _caller: Caller = require("UPDATE_DISPATCHERS")) -> WireResponse:
    """Change eventType, name, description, tags, filter or transition; actions have their own routes."""
    object_id(dispatcher_id, "dispatcherId")
    patch = body.model_dump(include=body.model_fields_set)
    if "eventType" in patch and not patch["eventType"]:
        raise FieldFormatError("eventType must not be empty")
    if patch.keys() & {"eventType", "filter", "transition"}:
        # The rules are checked as they will be after the update, with the stored fields kept.
        current = dispatcher_wire(await _dispatcher_or_404(request, dispatcher_id))
        _checked(dispatcher_rule_columns, {field: patch.get(field, current.get(field))
                                           for field in ("eventType", "filter", "transition")})
    try:
        found = await context_of(request).api.update_dispatcher(dispatcher_id, patch)
    except AlreadyExistsError as exc:
        raise ResourceAlreadyExistsError(str(exc)) from exc
    if not found:
        raise ResourceUnknownError(f"no dispatcher with id {dispatcher_id}")
    return affected(1)


@router.delete("/{dispatcher_id}", response_model=AffectedRecords, summary="Delete a dispatcher")
async def delete_dispatcher(request: Request, dispatcher_id: str,
                            _caller: Caller = require("DELETE_DISPATCHERS")) -> WireResponse:
    """Delete a dispatcher and its actions."""
    if not await context_of(request).api.delete_dispatcher(object_id(dispatcher_id, "dispatcherId")):
        raise ResourceUnknownError(f"no dispatcher with id {dispatcher_id}")
    return affected(1)


@both_spellings(router.post, "/{dispatcher_id}/actions", response_model=Action, summary="Add an action")
async def create_action(request: Request, dispatcher_id: str, body: ActionCreate,
                        _caller: Caller = require("UPDATE_DISPATCHERS")) -> WireResponse:
    """Add an action to a dispatcher and return it."""
    await _dispatcher_or_404(request, dispatcher_id)
    action = _action_row(body)
    try:
        await context_of(request).api.insert_action(dispatcher_id, action)
    except AlreadyExistsError as exc:
        raise ResourceAlreadyExistsError(str(exc)) from exc
    created = await _dispatcher_or_404(request, dispatcher_id)
    return WireResponse(next(drop_none(item) for item in created["actions"] if item["id"] == action["id"]))


@router.put("/{dispatcher_id}/actions/{action_id}", response_model=AffectedRecords, summary="Update an action")
async def update_action(request: Request, dispatcher_id: str, action_id: str, body: ActionUpdate,
                        _caller: Caller = require("UPDATE_DISPATCHERS")) -> WireResponse:
    """Change the given fields of an action; its type is fixed."""
    object_id(dispatcher_id, "dispatcherId")
    object_id(action_id, "actionId")
    context = context_of(request)
    current_type = await context.api.get_action_type(dispatcher_id, action_id)
    if current_type is None:
        raise ResourceUnknownError(f"no action {action_id} in dispatcher {dispatcher_id}")
    given = body.model_fields_set
    if "type" in given and body.type != current_type:
        raise FieldFormatError(f"the type of an action cannot change (it is {current_type})")
    patch = body.model_dump(include=given - {"type"}, mode="json")
    if current_type == "task" and "functionName" in patch and not patch["functionName"]:
        raise FieldFormatError("functionName of a task action must not be empty")
    dispatcher = await _dispatcher_or_404(request, dispatcher_id)
    stored = next((item for item in dispatcher["actions"] if item["id"] == action_id), {})
    _checked(action_rule_columns, {**stored, **patch}, current_type)
    try:
        found = await context.api.update_action(dispatcher_id, action_id, patch)
    except AlreadyExistsError as exc:
        raise ResourceAlreadyExistsError(str(exc)) from exc
    if not found:
        raise ResourceUnknownError(f"no action {action_id} in dispatcher {dispatcher_id}")
    return affected(1)


@router.delete("/{dispatcher_id}/actions/{action_id}", response_model=AffectedRecords, summary="Delete an action")
async def delete_action(request: Request, dispatcher_id: str, action_id: str,
                        _caller: Caller = require("UPDATE_DISPATCHERS")) -> WireResponse:
    """Remove an action from its dispatcher."""
    object_id(dispatcher_id, "dispatcherId")
    object_id(action_id, "actionId")
    if not await context_of(request).api.delete_action(dispatcher_id, action_id):
        raise ResourceUnknownError(f"no action {action_id} in dispatcher {dispatcher_id}")
    return affected(1)
