"""Five-field cron expressions: parsing and validation.

Supported syntax, per field: `*`, a number, a range `a-b`, a step `*/s`, `a-b/s` or `a/s`
(from a to the field's maximum), and comma-separated lists of these. Months accept
`jan`–`dec` and days of the week `sun`–`sat` (any case), also in ranges. Day of week 0
and 7 are both Sunday. The macros `@yearly`, `@annually`, `@monthly`, `@weekly`,
`@daily`, `@midnight` and `@hourly` stand for their usual five fields. `?`, `L`, `W`,
`#`, seconds and years are not supported.

Day matching follows Vixie cron. When both the day-of-month and the day-of-week field
are restricted (neither starts with `*`), a day matches if either field matches.
Otherwise both must match.
"""

from __future__ import annotations

import calendar
from dataclasses import dataclass, field
from datetime import date, time

from taskservice.errors import InvalidDefinitionError


class InvalidScheduleError(InvalidDefinitionError):
    """Raised when a schedule's cron expression, time zone, interval or other field is invalid."""


@dataclass(frozen=True)
class _FieldSpec:
    name: str
    minimum: int
    maximum: int
    names: dict[str, int] = field(default_factory=dict)


_MONTH_NAMES = {name.lower(): number for number, name in enumerate(calendar.month_abbr) if name}
_DAY_NAMES = {"sun": 0, "mon": 1, "tue": 2, "wed": 3, "thu": 4, "fri": 5, "sat": 6}

_FIELDS = (
    _FieldSpec("minute", 0, 59),
    _FieldSpec("hour", 0, 23),
    _FieldSpec("day-of-month", 1, 31),
    _FieldSpec("month", 1, 12, _MONTH_NAMES),
    # 7 is accepted as Sunday and folded to 0 after parsing.
    _FieldSpec("day-of-week", 0, 7, _DAY_NAMES),
)

MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}

# Maximum number of days per month, February in a leap year.
_MAX_DAYS_IN_MONTH = {month: calendar.monthrange(2000, month)[1] for month in range(1, 13)}


@dataclass(frozen=True)
class CronExpression:
    """A parsed five-field expression; `text` is the expression as given."""

    text: str
    minutes: frozenset[int]
    hours: frozenset[int]
    days_of_month: frozenset[int]
    months: frozenset[int]
    # 0 is Sunday.
    days_of_week: frozenset[int]
    day_of_month_star: bool
    day_of_week_star: bool
    # True when the minute or hour field starts with `*`. Such expressions follow the
    # wall clock through daylight-saving changes instead of the fixed-time rule.
    follows_wall_clock: bool
    # Every matching time of day, ascending.
    times_of_day: tuple[time, ...]

    def matches_date(self, day: date) -> bool:
        """Return whether the expression fires on this local date."""
        if day.month not in self.months:
            return False
        day_of_month = day.day in self.days_of_month
        day_of_week = day.isoweekday() % 7 in self.days_of_week
        if self.day_of_month_star or self.day_of_week_star:
            return day_of_month and day_of_week
        return day_of_month or day_of_week


def parse_cron(text: str) -> CronExpression:
    """Parse a five-field cron expression or macro; raise InvalidScheduleError naming the field and value."""
    if not isinstance(text, str) or not text.strip():
        raise InvalidScheduleError("cron expression is empty; give five fields, e.g. '30 2 * * *'")
    source = text.strip()
    expanded = MACROS.get(source.lower(), source)
    if expanded.startswith("@"):
        raise InvalidScheduleError(
            f"cron expression {source!r}: unknown macro; use one of {', '.join(sorted(MACROS))}"
        )
    parts = expanded.split()
    if len(parts) != 5:
        raise InvalidScheduleError(
            f"cron expression {source!r} has {len(parts)} fields; it needs five: "
            "minute hour day-of-month month day-of-week"
        )
    values = [_parse_field(source, spec, part) for spec, part in zip(_FIELDS, parts)]
    minutes, hours, days_of_month, months, days_of_week = values
    days_of_week = frozenset(day % 7 for day in days_of_week)
    expression = CronExpression(
        text=source,
        minutes=minutes,
        hours=hours,
        days_of_month=days_of_month,
        months=months,
        days_of_week=days_of_week,
        day_of_month_star=parts[2].startswith("*"),
        day_of_week_star=parts[4].startswith("*"),
        follows_wall_clock=parts[0].startswith("*") or parts[1].startswith("*"),
        times_of_day=tuple(time(hour, minute) for hour in sorted(hours) for minute in sorted(minutes)),
    )
    _check_some_date_matches(expression)
    return expression


def _parse_field(source: str, spec: _FieldSpec, part: str) -> frozenset[int]:
    values: set[int] = set()
    for item in part.split(","):
        values.update(_parse_item(source, spec, item))
    return frozenset(values)


def _parse_item(source: str, spec: _FieldSpec, item: str) -> range:
    def invalid(reason: str) -> InvalidScheduleError:
        return InvalidScheduleError(f"cron expression {source!r}: {spec.name} field has invalid value {item!r}; {reason}")

    if not item:
        raise invalid("a list item is empty")
    base, slash, step_text = item.partition("/")
    step = 1
    if slash:
        if not step_text.isdigit() or int(step_text) < 1:
            raise invalid("the step after '/' must be a positive whole number")
        step = int(step_text)
        if step > spec.maximum - spec.minimum + 1:
            raise invalid(f"the step {step} is larger than the field's range {spec.minimum}-{spec.maximum}")
    if base == "*":
        return range(spec.minimum, spec.maximum + 1, step)
    low_text, dash, high_text = base.partition("-")
    low = _parse_value(spec, low_text, invalid)
    if dash:
        high = _parse_value(spec, high_text, invalid)
        if spec.name == "day-of-week" and high == 0 and low > 0:
            high = 7  # a range such as sat-sun ends on Sunday written as 7
        if high < low:
            raise invalid(f"the range {low}-{high} runs backwards; write it as a list of two ranges")
    elif slash:
        high = spec.maximum
    else:
        high = low
    return range(low, high + 1, step)


def _parse_value(spec: _FieldSpec, text: str, invalid) -> int:  # type: ignore[no-untyped-def]
    lowered = text.lower()
    if lowered in spec.names:
        return spec.names[lowered]
    if not text.isdigit():
        allowed = f"{spec.minimum}-{spec.maximum}"
        if spec.names:
            allowed += f" or a name such as {next(iter(spec.names))!r}"
        raise invalid(f"use {allowed}")
    number = int(text)
    if not spec.minimum <= number <= spec.maximum:
        raise invalid(f"use {spec.minimum}-{spec.maximum}")
    return number


def _check_some_date_matches(expression: CronExpression) -> None:
    """Reject day-of-month and month combinations that never occur, such as 30 February."""
    if not (expression.day_of_month_star or expression.day_of_week_star):
        return  # either field matching is enough, and every weekday occurs in every month
    if any(day <= _MAX_DAYS_IN_MONTH[month] for month in expression.months for day in expression.days_of_month):
        return
    raise InvalidScheduleError(
        f"cron expression {expression.text!r} never fires: no day in its day-of-month field "
        f"({', '.join(map(str, sorted(expression.days_of_month)))}) occurs in its months "
        f"({', '.join(map(str, sorted(expression.months)))})"
    )
