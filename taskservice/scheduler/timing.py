"""Fire times of schedules as UTC instants: the interval grid, cron in a time zone, catch-up.

Interval schedules fire at `start + k * interval` for k = 0, 1, 2, … in real elapsed
seconds, computed in integer microseconds, so fire times never drift and ignore time
zones and daylight-saving changes.

Cron schedules read their expression as wall-clock time in an IANA time zone. Daylight-
saving changes follow the Vixie cron rule (Debian's cron(8)):

- Fixed-time expressions are those where neither the minute nor the hour field starts
  with `*`. A local time that does not exist fires once, at the first instant after the
  gap, so 02:30 on a day when 02:00 jumps to 03:00 fires at 03:00. A local time that
  occurs twice fires once, at its first occurrence. Several nonexistent times that map
  to the same instant fire once.
- Wall-clock expressions (the minute or hour field starts with `*`, such as `*/15 * * * *`
  or `0 * * * *`): they fire at every real instant whose local time matches. A skipped
  hour brings no fires, and a repeated hour fires again, so steps keep their real spacing.

Every function here is pure; `now` is always passed in.
"""

from __future__ import annotations

import bisect
import functools
import heapq
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from taskservice.scheduler.cron import CronExpression, InvalidScheduleError, parse_cron

CatchUpPolicy = Literal["skip", "latest", "all"]
CATCH_UP_POLICIES: tuple[CatchUpPolicy, ...] = ("skip", "latest", "all")
DEFAULT_CATCH_UP: CatchUpPolicy = "latest"

# A cron iterator gives up after this many consecutive local days without a fire time.
# Every expression that parse_cron accepts matches some date within 28 years, except
# 29 February with a weekday restriction, which still recurs within 40 years.
MAX_EMPTY_DAYS = 366 * 40

# Missed fire times counted one by one for cron schedules; beyond this the count is a
# lower bound (interval schedules are always counted exactly).
MAX_COUNTED_MISSED = 10_000

_MICROSECOND = timedelta(microseconds=1)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def parse_time_zone(name: str) -> ZoneInfo:
    """Return the IANA time zone with this name; raise InvalidScheduleError if zoneinfo has none."""
    if not isinstance(name, str) or not name.strip():
        raise InvalidScheduleError("time zone is empty; give an IANA name such as 'Europe/Berlin' or 'UTC'")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise InvalidScheduleError(
            f"time zone {name!r} is not a known IANA time zone; use a name such as 'America/New_York' or 'UTC'"
        ) from exc


def to_utc(value: datetime) -> datetime:
    """Return an aware datetime in UTC; reject naive datetimes, whose instant is unknown."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"datetime {value.isoformat()} has no time zone; pass an aware datetime")
    return value.astimezone(UTC)


def format_fire_time(fire_time: datetime) -> str:
    """Format a fire time as ISO-8601 UTC with milliseconds and a Z suffix, as on the wire."""
    return to_utc(fire_time).strftime("%Y-%m-%dT%H:%M:%S.") + f"{fire_time.microsecond // 1000:03d}Z"


@dataclass(frozen=True)
class ScheduleTiming:
    """When a schedule fires: an interval grid from start, or a cron expression in a zone."""

    start: datetime
    interval_s: int | None = None
    cron: CronExpression | None = None
    zone: ZoneInfo = ZoneInfo("UTC")

    def __post_init__(self) -> None:
        object.__setattr__(self, "start", to_utc(self.start))
        if (self.interval_s is None) == (self.cron is None):
            raise InvalidScheduleError("a schedule needs exactly one of an interval and a cron expression")
        if self.interval_s is not None and (isinstance(self.interval_s, bool) or self.interval_s < 1):
            raise InvalidScheduleError(f"interval must be a whole number of seconds of at least 1 (got {self.interval_s!r})")

    @classmethod
    def from_schedule(cls, schedule: Mapping[str, Any]) -> ScheduleTiming:
        """Build the timing of a schedule row (interval_s or cron_expression, time_zone, start_timestamp)."""
        cron_text = schedule.get("cron_expression")
        return cls(
            start=schedule["start_timestamp"],
            interval_s=schedule.get("interval_s"),
            cron=parse_cron(cron_text) if cron_text is not None else None,
            zone=parse_time_zone(schedule.get("time_zone") or "UTC"),
        )

    def fire_times_after(self, after: datetime, *, inclusive: bool = False) -> Iterator[datetime]:
        """Yield fire times later than after (or equal, when inclusive), ascending, none before start."""
        after = to_utc(after)
        if after < self.start:
            after, inclusive = self.start, True
        if self.interval_s is not None:
            return _interval_after(self.start, self.interval_s, after, inclusive)
        assert self.cron is not None
        return _cron_after(self.cron, self.zone, after, inclusive)

    def fire_times_before(self, before: datetime, *, inclusive: bool = True) -> Iterator[datetime]:
        """Yield fire times earlier than before (or equal, when inclusive), descending, down to start."""
        before = to_utc(before)
        if self.interval_s is not None:
            return _interval_before(self.start, self.interval_s, before, inclusive)
        assert self.cron is not None
        return _cron_before(self.cron, self.zone, before, inclusive, self.start)

    def first_fire_time(self, not_before: datetime | None = None) -> datetime | None:
        """Return the first fire time at or after max(start, not_before), or None if there is none."""
        after = self.start if not_before is None else max(self.start, to_utc(not_before))
        return next(self.fire_times_after(after, inclusive=True), None)

    def count_between(self, first: datetime, last: datetime, limit: int = MAX_COUNTED_MISSED) -> int:
        """Count fire times in [first, last]; cron counts stop at limit."""
        first, last = to_utc(first), to_utc(last)
        if last < first:
            return 0
        if self.interval_s is not None:
            low = _grid_index_at_or_after(self.start, self.interval_s, first)
            high = _grid_index_at_or_before(self.start, self.interval_s, last)
            return max(0, high - low + 1)
        count = 0
        for fire_time in self.fire_times_after(first, inclusive=True):
            if fire_time > last or count >= limit:
                break
            count += 1
        return count


def next_fire_times(schedule: Mapping[str, Any], after: datetime, count: int) -> list[datetime]:
    """Return up to count fire times of a schedule row strictly after `after`, as UTC datetimes.

    The row needs start_timestamp and either interval_s or cron_expression (with
    time_zone). Raises InvalidScheduleError for an invalid expression or time zone.
    """
    timing = ScheduleTiming.from_schedule(schedule)
    result: list[datetime] = []
    for fire_time in timing.fire_times_after(after):
        if len(result) >= count:
            break
        result.append(fire_time)
    return result


@dataclass(frozen=True)
class FirePlan:
    """The plan for one due schedule: fire times to run, the missed count, the next fire time."""

    # Fire times that get a task, ascending.
    fire_times: list[datetime]
    # Due fire times that the catch-up policy dropped.
    missed: int
    # The first fire time after now; None when the expression never fires again.
    next_timestamp: datetime | None


def plan_fires(
    timing: ScheduleTiming,
    next_timestamp: datetime,
    now: datetime,
    catch_up: CatchUpPolicy,
    catch_up_max: int,
    misfire_grace_s: float,
) -> FirePlan:
    """Decide which due fire times in [next_timestamp, now] get a task.

    With one due fire time every policy runs it when it is on time. With more (after
    downtime or a pause), 'skip' runs only the most recent one and only when it is at
    most misfire_grace_s old, 'latest' runs only the most recent one, and 'all' runs the
    most recent catch_up_max of them. The others count as missed.
    """
    if catch_up not in CATCH_UP_POLICIES:
        raise InvalidScheduleError(f"catch-up policy {catch_up!r} is unknown; use skip, latest or all")
    next_timestamp, now = to_utc(next_timestamp), to_utc(now)
    if next_timestamp > now:
        return FirePlan([], 0, next_timestamp)

    keep = catch_up_max if catch_up == "all" else 1
    recent: list[datetime] = []
    for fire_time in timing.fire_times_before(now, inclusive=True):
        if fire_time < next_timestamp or len(recent) >= keep:
            break
        recent.append(fire_time)
    recent.reverse()
    if catch_up == "skip" and recent and (now - recent[-1]).total_seconds() > misfire_grace_s:
        recent = []

    due = timing.count_between(next_timestamp, now)
    following = next(timing.fire_times_after(now), None)
    return FirePlan(recent, max(0, due - len(recent)), following)


# Interval grid -------------------------------------------------------------------------


def _micros(value: datetime) -> int:
    return (value - _EPOCH) // _MICROSECOND


def _grid_index_at_or_after(start: datetime, interval_s: int, at: datetime) -> int:
    elapsed = _micros(at) - _micros(start)
    step = interval_s * 1_000_000
    return max(0, -(-elapsed // step))


def _grid_index_at_or_before(start: datetime, interval_s: int, at: datetime) -> int:
    return (_micros(at) - _micros(start)) // (interval_s * 1_000_000)


def _grid_point(start: datetime, interval_s: int, index: int) -> datetime:
    return start + timedelta(seconds=interval_s * index)


def _interval_after(start: datetime, interval_s: int, after: datetime, inclusive: bool) -> Iterator[datetime]:
    index = _grid_index_at_or_after(start, interval_s, after)
    if not inclusive and _grid_point(start, interval_s, index) == after:
        index += 1
    while True:
        try:
            fire_time = _grid_point(start, interval_s, index)
        except OverflowError:
            return  # past year 9999
        yield fire_time
        index += 1


def _interval_before(start: datetime, interval_s: int, before: datetime, inclusive: bool) -> Iterator[datetime]:
    index = _grid_index_at_or_before(start, interval_s, before)
    if index >= 0 and not inclusive and _grid_point(start, interval_s, index) == before:
        index -= 1
    while index >= 0:
        yield _grid_point(start, interval_s, index)
        index -= 1


# Cron in a time zone -------------------------------------------------------------------


def _offset_at(zone: ZoneInfo, epoch_seconds: int) -> timedelta:
    offset = datetime.fromtimestamp(epoch_seconds, zone).utcoffset()
    assert offset is not None
    return offset


@functools.lru_cache(maxsize=4096)
def _transition_between(zone: ZoneInfo, before_s: int, after_s: int) -> datetime:
    """Return the first instant in (before_s, after_s] whose UTC offset differs from before_s's."""
    offset_before = _offset_at(zone, before_s)
    low, high = before_s, after_s
    while high - low > 1:
        middle = (low + high) // 2
        if _offset_at(zone, middle) == offset_before:
            low = middle
        else:
            high = middle
    return datetime.fromtimestamp(high, UTC)


def _local_to_utc(local: datetime, zone: ZoneInfo) -> tuple[datetime, datetime]:
    """Return the UTC instants of a naive local time read with fold=0 and with fold=1.

    Equal: the time exists once. First earlier: it occurs twice (a repeated hour).
    First later: it does not exist (a skipped hour), and the transition lies between.
    """
    first = local.replace(tzinfo=zone, fold=0).astimezone(UTC)
    second = local.replace(tzinfo=zone, fold=1).astimezone(UTC)
    return first, second


def _fire_instants(local: datetime, zone: ZoneInfo, follows_wall_clock: bool) -> list[datetime]:
    first, second = _local_to_utc(local, zone)
    if first == second:
        return [first]
    if first < second:
        return [first, second] if follows_wall_clock else [first]
    if follows_wall_clock:
        return []
    return [_transition_between(zone, int(second.timestamp()), int(first.timestamp()))]


def _first_instant_of_day(zone: ZoneInfo, day: date) -> datetime:
    """Return the earliest instant at which the local date is day or later."""
    first, second = _local_to_utc(datetime.combine(day, time()), zone)
    if first <= second:
        return first
    return _transition_between(zone, int(second.timestamp()), int(first.timestamp()))


def _last_entry_into_day(zone: ZoneInfo, day: date) -> datetime:
    """Return the latest instant at which the local clock shows day 00:00 or jumps past it."""
    first, second = _local_to_utc(datetime.combine(day, time()), zone)
    if first <= second:
        return second
    return _transition_between(zone, int(second.timestamp()), int(first.timestamp()))


@dataclass(frozen=True)
class _Window:
    """Instants accepted by a cron iterator: after `low` and before `high`, each bound optional."""

    low: datetime | None = None
    low_inclusive: bool = False
    high: datetime | None = None
    high_inclusive: bool = False

    def __contains__(self, instant: datetime) -> bool:
        if self.low is not None and (instant < self.low or (instant == self.low and not self.low_inclusive)):
            return False
        return not (self.high is not None and (instant > self.high or (instant == self.high and not self.high_inclusive)))


def _day_fire_times(
    cron: CronExpression, zone: ZoneInfo, day: date, window: _Window, *, descending: bool = False
) -> Iterator[datetime]:
    """Yield the fire instants of one local date inside window, unique, ascending (or descending)."""
    if not cron.matches_date(day):
        return iter(())
    midnight = datetime.combine(day, time(), tzinfo=zone)
    next_midnight = datetime.combine(day + timedelta(days=1), time(), tzinfo=zone)
    offsets = {
        midnight.utcoffset(), midnight.replace(fold=1).utcoffset(),
        next_midnight.utcoffset(), next_midnight.replace(fold=1).utcoffset(),
    }
    if len(offsets) == 1:
        # NOTE: a day is taken as free of transitions when its two midnights have the same
        # single offset; two transitions that cancel out within one day would be missed.
        offset = offsets.pop()
        assert offset is not None
        moments = _moments_in_window(cron.times_of_day, day, offset, window)
        if descending:
            moments = moments[::-1]
        return (datetime.combine(day, moment, tzinfo=UTC) - offset for moment in moments)
    instants = _transition_day_fire_times(cron, zone, day)
    return iter(sorted((instant for instant in instants if instant in window), reverse=descending))


@functools.lru_cache(maxsize=256)
def _transition_day_fire_times(cron: CronExpression, zone: ZoneInfo, day: date) -> frozenset[datetime]:
    """Return the fire instants of a local date with a UTC offset change, one time at a time."""
    instants: set[datetime] = set()
    for moment in cron.times_of_day:
        instants.update(_fire_instants(datetime.combine(day, moment), zone, cron.follows_wall_clock))
    return frozenset(instants)


def _moments_in_window(
    moments: tuple[time, ...], day: date, offset: timedelta, window: _Window
) -> tuple[time, ...]:
    """Return the times of day whose instants, at a constant offset, lie inside window."""
    first, last = 0, len(moments)
    if window.low is not None:
        local = (window.low + offset).replace(tzinfo=None)
        if local.date() > day:
            return ()
        if local.date() == day:
            moment = local.time()
            first = bisect.bisect_left(moments, moment) if window.low_inclusive else bisect.bisect_right(moments, moment)
    if window.high is not None:
        local = (window.high + offset).replace(tzinfo=None)
        if local.date() < day:
            return ()
        if local.date() == day:
            moment = local.time()
            last = bisect.bisect_right(moments, moment) if window.high_inclusive else bisect.bisect_left(moments, moment)
    return moments[first:last]


def _cron_after(cron: CronExpression, zone: ZoneInfo, after: datetime, inclusive: bool) -> Iterator[datetime]:
    # Local dates do not map to disjoint, ordered UTC ranges when the clock goes back
    # across midnight, so each date's instants are merged through a heap and yielded only
    # once no later date can hold an earlier instant.
    window = _Window(low=after, low_inclusive=inclusive)
    day = after.astimezone(zone).date() - timedelta(days=1)
    merged = _Merge(descending=False)
    last_yielded: datetime | None = None
    empty_days = 0
    while empty_days < MAX_EMPTY_DAYS:
        bound = _first_instant_of_day(zone, day)
        while (instant := merged.pop_if(lambda candidate: candidate < bound)) is not None:
            if instant != last_yielded:
                last_yielded = instant
                yield instant
        added = merged.add(_day_fire_times(cron, zone, day, window))
        empty_days = 0 if added or merged else empty_days + 1
        day += timedelta(days=1)


def _cron_before(
    cron: CronExpression, zone: ZoneInfo, before: datetime, inclusive: bool, start: datetime
) -> Iterator[datetime]:
    window = _Window(low=start, low_inclusive=True, high=before, high_inclusive=inclusive)
    day = before.astimezone(zone).date() + timedelta(days=1)
    stop_day = start.astimezone(zone).date() - timedelta(days=2)
    merged = _Merge(descending=True)
    last_yielded: datetime | None = None
    while True:
        # Instants of this date and earlier ones all precede the last entry into the next date.
        bound = _last_entry_into_day(zone, day + timedelta(days=1)) if day >= stop_day else None
        while (instant := merged.pop_if(lambda candidate: bound is None or candidate > bound)) is not None:
            if instant != last_yielded:
                last_yielded = instant
                yield instant
        if bound is None:
            return
        merged.add(_day_fire_times(cron, zone, day, window, descending=True))
        day -= timedelta(days=1)


class _Merge:
    """A lazy k-way merge of sorted instant iterators, one per local date."""

    def __init__(self, *, descending: bool) -> None:
        self._sign = -1 if descending else 1
        self._heap: list[tuple[int, int, datetime, Iterator[datetime]]] = []
        self._sequence = 0

    def __bool__(self) -> bool:
        return bool(self._heap)

    def add(self, instants: Iterator[datetime]) -> bool:
        """Add a sorted iterator; return whether it yielded anything."""
        iterator = iter(instants)
        first = next(iterator, None)
        if first is None:
            return False
        self._push(first, iterator)
        return True

    def pop_if(self, accept) -> datetime | None:  # type: ignore[no-untyped-def]
        """Remove and return the head instant if accept(head) is true."""
        if not self._heap or not accept(self._heap[0][2]):
            return None
        _key, _sequence, instant, iterator = heapq.heappop(self._heap)
        following = next(iterator, None)
        if following is not None:
            self._push(following, iterator)
        return instant

    def _push(self, instant: datetime, iterator: Iterator[datetime]) -> None:
        self._sequence += 1
        heapq.heappush(self._heap, (self._sign * _micros(instant), self._sequence, instant, iterator))
