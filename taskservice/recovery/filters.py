"""Filters that select dead letters and failed tasks, their parsing, and the defaults of both.

This module imports no Kafka or database client, so the command line can build its
parsers from it without loading either.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Literal, get_args

from taskservice.errors import ServiceError
from taskservice.schemas.results import DeadLetterReason

DEAD_LETTER_REASONS: tuple[str, ...] = get_args(DeadLetterReason)

ReplayTarget = Literal["source", "matching"]
REPLAY_TARGETS: tuple[ReplayTarget, ...] = get_args(ReplayTarget)

# Time to wait for the broker to return records of a partition before giving up, s.
DEFAULT_READ_TIMEOUT_S = 30.0
# Failed tasks one redrive selects when no limit is given, and the most one HTTP request may ask for.
DEFAULT_REDRIVE_LIMIT = 100
MAX_REDRIVE_LIMIT_PER_REQUEST = 1000

_RELATIVE_PART = re.compile(r"(\d+)([smhdw])")
_RELATIVE_TIME = re.compile(r"(?:\d+[smhdw])+")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3_600, "d": 86_400, "w": 604_800}

TIME_FORMAT_HINT = "an ISO-8601 time with an offset such as 2027-01-31T09:00:00Z, or a relative time such as 30m, 2h or 1d12h"


class InvalidFilterError(ServiceError):
    """Raised when a filter value is invalid; the message names the value and the fix."""


def parse_time(text: str, option: str, now: datetime | None = None) -> datetime:
    """Parse an ISO-8601 time with an offset, or a relative time (`2h` means two hours before now).

    Raises InvalidFilterError naming the option, the value and the accepted forms.
    """
    value = text.strip()
    if _RELATIVE_TIME.fullmatch(value):
        seconds = sum(int(amount) * _UNIT_SECONDS[unit] for amount, unit in _RELATIVE_PART.findall(value))
        return (now or datetime.now(UTC)) - timedelta(seconds=seconds)
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise InvalidFilterError(f"{option} {text!r} is not a time; give {TIME_FORMAT_HINT}") from None
    if parsed.tzinfo is None:
        raise InvalidFilterError(
            f"{option} {text!r} has no UTC offset; add Z for UTC or an offset such as +01:00, "
            "or give a relative time such as 2h"
        )
    return parsed


def parse_time_range(
    since: str | None, until: str | None, now: datetime | None = None
) -> tuple[datetime | None, datetime | None]:
    """Parse the --since and --until values; raise InvalidFilterError when since is not before until."""
    now = now or datetime.now(UTC)
    start = parse_time(since, "since", now) if since is not None else None
    end = parse_time(until, "until", now) if until is not None else None
    if start is not None and end is not None and start >= end:
        raise InvalidFilterError(
            f"since {since!r} ({format_time(start)}) is not before until {until!r} ({format_time(end)}); "
            "swap them or widen the range"
        )
    return start, end


def parse_reasons(values: list[str] | None) -> frozenset[str] | None:
    """Parse repeated or comma-separated reason codes; raise InvalidFilterError for an unknown one."""
    if not values:
        return None
    reasons = {reason.strip() for value in values for reason in value.split(",") if reason.strip()}
    unknown = sorted(reasons - set(DEAD_LETTER_REASONS))
    if unknown:
        raise InvalidFilterError(
            f"unknown dead-letter reason {', '.join(map(repr, unknown))}; use one of {', '.join(DEAD_LETTER_REASONS)}"
        )
    return frozenset(reasons)


def check_limit(limit: int | None, option: str = "limit", maximum: int | None = None) -> int | None:
    """Return limit when it is None or within 1 to maximum; raise InvalidFilterError otherwise."""
    if limit is None:
        return None
    if limit < 1 or (maximum is not None and limit > maximum):
        bound = f"between 1 and {maximum}" if maximum is not None else "at least 1"
        raise InvalidFilterError(f"{option} must be {bound} (got {limit})")
    return limit


def format_time(moment: datetime) -> str:
    """Format a time as ISO-8601 UTC with milliseconds and a Z suffix, as the API does."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
