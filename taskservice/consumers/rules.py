"""Checks and compiled forms of the matching rules of dispatchers and their task actions.

The HTTP API and the command line check a definition here before saving it, and the
dispatcher table compiles the saved rows with the same functions, so a rule that was
accepted always loads. Every error is a RuleError whose message names the field, the value
and the fix. Field names are the wire names of the Dispatchers API.

Rules beyond the event type:
- `filter` on a dispatcher: an event pattern (see patterns.py) over the normalised event.
- `transition` on a dispatcher of `document.transitioned` events: the transition name and
  statuses (and schema) to react to. Its tasks get `schemaId` and `documentId` in their data.
- On a task action: `input` (an input mapping), `includeEvent`, `deduplicationKey` and
  `concurrencyKey` (key templates), `delaySeconds` (after the event time) and `priority`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from taskservice.consumers.expressions import (
    ExpressionError,
    InputMapping,
    KeyTemplate,
    compile_input,
    compile_template,
)
from taskservice.consumers.patterns import Pattern, PatternError, compile_pattern

TRANSITION_EVENT_TYPE = "document.transitioned"
# Wire field of `transition` → field of the event's `data` it must equal.
TRANSITION_FIELDS = {"name": "transitionName", "fromStatus": "fromStatus", "toStatus": "toStatus",
                     "schemaId": "schemaId"}
MAX_DELAY_S = 366 * 24 * 3600.0
PRIORITY_RANGE = (-(2**63), 2**63 - 1)
TASK_ACTION_FIELDS = ("input", "includeEvent", "deduplicationKey", "concurrencyKey", "delaySeconds", "priority")


class RuleError(ValueError):
    """Raised when a dispatcher or action rule is malformed."""


def check_transition(value: Any, event_type: str | None) -> dict[str, str] | None:
    """Check a `transition` object; it belongs to dispatchers of document.transitioned events."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise RuleError(
            f"transition must be an object such as {{\"name\": \"analyze\", \"toStatus\": \"analyzed\"}}, "
            f"got {type(value).__name__}")
    unknown = sorted(set(value) - set(TRANSITION_FIELDS))
    if unknown:
        raise RuleError(f"transition has unknown field {unknown[0]!r}; use {', '.join(TRANSITION_FIELDS)}")
    for field, item in value.items():
        if not isinstance(item, str) or not item or len(item) > 256:
            raise RuleError(f"transition.{field} must be a string of 1 to 256 characters, got {item!r}")
    if event_type is not None and event_type != TRANSITION_EVENT_TYPE:
        raise RuleError(
            f"transition applies to eventType {TRANSITION_EVENT_TYPE!r}, not {event_type!r}; "
            f"change eventType or use filter instead")
    return dict(value)


def _transition_pattern(transition: dict[str, str]) -> dict[str, Any]:
    return {"data": {TRANSITION_FIELDS[field]: [value] for field, value in transition.items()}}


def _merge(left: dict[str, Any], right: dict[str, Any], where: str) -> dict[str, Any]:
    merged = dict(left)
    for key, value in right.items():
        if key not in merged:
            merged[key] = value
        elif isinstance(merged[key], dict) and isinstance(value, dict) and key != "$or":
            merged[key] = _merge(merged[key], value, f"{where}.{key}")
        else:
            raise RuleError(
                f"filter and transition both constrain {where}.{key}; keep the condition in one of them")
    return merged


def compile_dispatcher_pattern(filter_value: Any, transition: dict[str, str] | None) -> Pattern | None:
    """Return the compiled pattern of a dispatcher's filter and transition, or None for neither."""
    if filter_value is None and not transition:
        return None
    if filter_value is not None and not isinstance(filter_value, dict):
        raise RuleError(
            f"filter must be a JSON object (an event pattern) such as {{\"data\": {{\"status\": [\"analyzed\"]}}}}, "
            f"got {type(filter_value).__name__}")
    pattern: dict[str, Any] = dict(filter_value or {})
    if transition:
        pattern = _merge(pattern, _transition_pattern(transition), "")
    try:
        return compile_pattern(pattern)
    except PatternError as exc:
        raise RuleError(str(exc)) from exc


@dataclass(frozen=True, slots=True)
class ActionRules:
    """The compiled rules of one task action."""

    input: InputMapping | None = None
    include_event: bool | None = None
    deduplication_key: KeyTemplate | None = None
    concurrency_key: KeyTemplate | None = None
    delay_s: float | None = None
    priority: int | None = None


def compile_action_rules(fields: dict[str, Any], *, has_start_timestamp: bool = False) -> ActionRules:
    """Check and compile the rule fields of a task action, given by wire name."""
    try:
        mapping = compile_input(fields["input"]) if fields.get("input") is not None else None
        dedup = _template(fields, "deduplicationKey")
        concurrency = _template(fields, "concurrencyKey")
    except ExpressionError as exc:
        raise RuleError(str(exc)) from exc
    include_event = fields.get("includeEvent")
    if include_event is not None and not isinstance(include_event, bool):
        raise RuleError(f"includeEvent must be true or false, got {include_event!r}")
    delay = fields.get("delaySeconds")
    if delay is not None:
        if isinstance(delay, bool) or not isinstance(delay, int | float) or not math.isfinite(delay) \
                or not 0 <= delay <= MAX_DELAY_S:
            raise RuleError(f"delaySeconds must be a number of seconds from 0 to {MAX_DELAY_S:.0f}, got {delay!r}")
        if has_start_timestamp:
            raise RuleError("give either startTimestamp (a fixed time) or delaySeconds (after the event), not both")
        delay = float(delay)
    priority = fields.get("priority")
    if priority is not None and (isinstance(priority, bool) or not isinstance(priority, int)
                                 or not PRIORITY_RANGE[0] <= priority <= PRIORITY_RANGE[1]):
        raise RuleError(f"priority must be a whole number (64-bit), got {priority!r}")
    return ActionRules(mapping, include_event, dedup, concurrency, delay, priority)


def _template(fields: dict[str, Any], name: str) -> KeyTemplate | None:
    value = fields.get(name)
    return compile_template(value, name) if value is not None else None


def check_mail_action(fields: dict[str, Any]) -> None:
    """Reject task-action rule fields on a mail action."""
    present = [name for name in TASK_ACTION_FIELDS if fields.get(name) is not None]
    if present:
        raise RuleError(f"{present[0]} applies to task actions only; remove it from the mail action")


def dispatcher_rule_columns(fields: dict[str, Any]) -> dict[str, Any]:
    """Check `filter` and `transition` of a dispatcher given by wire name; return their columns."""
    transition = check_transition(fields.get("transition"), fields.get("eventType"))
    compile_dispatcher_pattern(fields.get("filter"), transition)
    return {"filter": fields.get("filter"), "transition": transition}


def action_rule_columns(fields: dict[str, Any], action_type: str) -> dict[str, Any]:
    """Check the rule fields of an action given by wire name; return their columns."""
    if action_type != "task":
        check_mail_action(fields)
        return {}
    rules = compile_action_rules(fields, has_start_timestamp=fields.get("startTimestamp") is not None)
    return {
        "input": fields.get("input"), "include_event": rules.include_event,
        "deduplication_key": fields.get("deduplicationKey"), "concurrency_key": fields.get("concurrencyKey"),
        "delay_s": rules.delay_s, "priority": rules.priority,
    }
