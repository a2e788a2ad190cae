"""Parsing and validation of five-field cron expressions."""

from __future__ import annotations

from datetime import date

import pytest

from taskservice.scheduler.cron import InvalidScheduleError, parse_cron


def test_fields_parse_to_sets() -> None:
    expression = parse_cron("0,30 9-17/2 1,15 jan-mar MON-FRI")
    assert expression.minutes == {0, 30}
    assert expression.hours == {9, 11, 13, 15, 17}
    assert expression.days_of_month == {1, 15}
    assert expression.months == {1, 2, 3}
    assert expression.days_of_week == {1, 2, 3, 4, 5}
    assert not expression.follows_wall_clock


@pytest.mark.parametrize(
    ("text", "minutes"),
    [("*/15 * * * *", {0, 15, 30, 45}), ("5/20 * * * *", {5, 25, 45}), ("10-20/5 * * * *", {10, 15, 20}),
     ("59 * * * *", {59})],
)
def test_minute_steps(text: str, minutes: set[int]) -> None:
    assert parse_cron(text).minutes == minutes


def test_sunday_is_zero_or_seven() -> None:
    assert parse_cron("0 0 * * 7").days_of_week == {0}
    assert parse_cron("0 0 * * 5-7").days_of_week == {5, 6, 0}
    assert parse_cron("0 0 * * sat-sun").days_of_week == {6, 0}


@pytest.mark.parametrize(
    ("macro", "fields"),
    [("@hourly", "0 * * * *"), ("@daily", "0 0 * * *"), ("@midnight", "0 0 * * *"), ("@weekly", "0 0 * * 0"),
     ("@monthly", "0 0 1 * *"), ("@yearly", "0 0 1 1 *"), ("@ANNUALLY", "0 0 1 1 *")],
)
def test_macros(macro: str, fields: str) -> None:
    expanded, reference = parse_cron(macro), parse_cron(fields)
    assert (expanded.minutes, expanded.hours, expanded.days_of_month, expanded.months, expanded.days_of_week) == (
        reference.minutes, reference.hours, reference.days_of_month, reference.months, reference.days_of_week)
    assert expanded.text == macro


@pytest.mark.parametrize(
    ("text", "follows_wall_clock"),
    [("*/15 * * * *", True), ("30 * * * *", True), ("* 2 * * *", True), ("@hourly", True),
     ("30 2 * * *", False), ("0 */2 * * *", True), ("0 0-23 * * *", False), ("@daily", False)],
)
def test_wall_clock_rule_follows_leading_star(text: str, follows_wall_clock: bool) -> None:
    assert parse_cron(text).follows_wall_clock is follows_wall_clock


def test_day_of_month_or_day_of_week() -> None:
    both = parse_cron("0 0 13 * fri")  # the 13th, or any Friday
    assert both.matches_date(date(2027, 8, 13))  # a Friday the 13th
    assert both.matches_date(date(2027, 8, 6))  # a Friday
    assert both.matches_date(date(2027, 9, 13))  # a Monday the 13th
    assert not both.matches_date(date(2027, 9, 14))
    starred = parse_cron("0 0 */2 * fri")  # odd days that are Fridays
    assert starred.matches_date(date(2027, 8, 13))
    assert not starred.matches_date(date(2027, 8, 6))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "cron expression is empty"),
        ("* * * *", "has 4 fields; it needs five"),
        ("* * * * * *", "has 6 fields"),
        ("60 * * * *", "minute field has invalid value '60'; use 0-59"),
        ("* 24 * * *", "hour field has invalid value '24'; use 0-23"),
        ("* * 0 * *", "day-of-month field has invalid value '0'; use 1-31"),
        ("* * * 13 *", "month field has invalid value '13'; use 1-12"),
        ("* * * foo *", "month field has invalid value 'foo'; use 1-12 or a name such as 'jan'"),
        ("* * * * 8", "day-of-week field has invalid value '8'; use 0-7"),
        ("*/0 * * * *", "the step after '/' must be a positive whole number"),
        ("*/61 * * * *", "the step 61 is larger than the field's range 0-59"),
        ("30-10 * * * *", "the range 30-10 runs backwards"),
        ("1,,2 * * * *", "a list item is empty"),
        ("? * * * *", "minute field has invalid value '?'"),
        ("0 0 L * *", "day-of-month field has invalid value 'L'"),
        ("0 0 30 2 *", "never fires"),
        ("0 0 31 4,6,9,11 *", "never fires"),
        ("@reboot", "unknown macro"),
    ],
)
def test_invalid_expressions_name_field_and_value(text: str, message: str) -> None:
    with pytest.raises(InvalidScheduleError) as raised:
        parse_cron(text)
    assert message in str(raised.value)


def test_february_29_is_accepted() -> None:
    assert parse_cron("0 0 29 2 *").days_of_month == {29}
