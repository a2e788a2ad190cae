"""The `taskservice schedules` command, run as a user runs it."""

from __future__ import annotations

import subprocess
import sys

import pytest

from taskservice.admin import register_functions
from taskservice.config import Settings
from tests.conftest import TEST_FUNCTIONS_DIR
from tests.support import REPOSITORY_ROOT, settings_environment


def run_cli(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "taskservice.cli", "schedules", *args],
                          env=settings_environment(settings), cwd=REPOSITORY_ROOT,
                          capture_output=True, text=True, timeout=60)


@pytest.fixture
async def cli_settings(scheduler_settings: Settings) -> Settings:
    """Settings of a database where the test function 'echo' is registered."""
    await register_functions(scheduler_settings, TEST_FUNCTIONS_DIR)
    return scheduler_settings


def row_of(listing: str, schedule_id: str) -> str:
    return next(line for line in listing.splitlines() if line.startswith(schedule_id))


async def test_create_list_pause_resume_delete(cli_settings: Settings) -> None:
    created = run_cli(cli_settings, "create", "--function", "echo", "--interval", "3600",
                      "--start", "2099-01-01T00:00:00Z", "--tags", "reports,nightly", "--data", '{"kind": "daily"}')
    assert created.returncode == 0, created.stderr
    interval_id = created.stdout.strip()
    assert len(interval_id) == 24

    created = run_cli(cli_settings, "create", "--function", "echo", "--cron", "30 2 * * *",
                      "--time-zone", "America/New_York", "--start", "2099-03-07T00:00:00Z",
                      "--catch-up", "all", "--catch-up-max", "5")
    assert created.returncode == 0, created.stderr
    cron_id = created.stdout.strip()

    listing = run_cli(cli_settings, "list", "--count", "3")
    assert listing.returncode == 0, listing.stderr
    assert listing.stdout.splitlines()[0].split() == ["ID", "FUNCTION", "TIMING", "STATE", "CATCH-UP", "NEXT",
                                                      "FIRE", "TIMES"]
    interval_row = row_of(listing.stdout, interval_id)
    assert "every 3600 s" in interval_row
    assert "active" in interval_row
    assert "latest" in interval_row
    assert interval_row.endswith(
        "2099-01-01T00:00:00.000Z, 2099-01-01T01:00:00.000Z, 2099-01-01T02:00:00.000Z")
    cron_row = row_of(listing.stdout, cron_id)
    assert "cron '30 2 * * *' America/New_York" in cron_row
    assert "all (max 5)" in cron_row
    # 02:30 does not exist on 2099-03-08, so that day's fire time is 03:00 EDT.
    assert cron_row.endswith(
        "2099-03-07T07:30:00.000Z (2099-03-07 02:30 EST), 2099-03-08T07:00:00.000Z (2099-03-08 03:00 EDT), "
        "2099-03-09T06:30:00.000Z (2099-03-09 02:30 EDT)")

    paused = run_cli(cli_settings, "pause", interval_id)
    assert (paused.returncode, paused.stdout.strip()) == (0, f"paused schedule {interval_id}")
    assert "paused" in row_of(run_cli(cli_settings, "list").stdout, interval_id)
    again = run_cli(cli_settings, "pause", interval_id)
    assert again.returncode == 1
    assert f"schedule {interval_id} is already paused" in again.stderr

    resumed = run_cli(cli_settings, "resume", interval_id)
    assert (resumed.returncode, resumed.stdout.strip()) == (0, f"resumed schedule {interval_id}")
    assert "active" in row_of(run_cli(cli_settings, "list").stdout, interval_id)

    deleted = run_cli(cli_settings, "delete", interval_id)
    assert (deleted.returncode, deleted.stdout.strip()) == (0, f"deleted schedule {interval_id}")
    assert interval_id not in run_cli(cli_settings, "list").stdout
    missing = run_cli(cli_settings, "delete", interval_id)
    assert missing.returncode == 1
    assert f"schedule {interval_id} does not exist" in missing.stderr


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--cron", "61 * * * *"], "minute field has invalid value '61'; use 0-59"),
        (["--cron", "0 0 30 2 *"], "never fires"),
        (["--cron", "0 0 * * mon-sun-fri"], "day-of-week field has invalid value"),
        (["--cron", "*/0 * * * *"], "the step after '/' must be a positive whole number"),
        (["--cron", "0 0 * *"], "has 4 fields; it needs five"),
        (["--cron", "0 3 * * *", "--time-zone", "Mars/Olympus_Mons"], "'Mars/Olympus_Mons' is not a known IANA time zone"),
        (["--interval", "0"], "interval must be a whole number of seconds of at least 1 (got 0)"),
        (["--interval", "1.5"], "interval must be a whole number of seconds of at least 1 (got 1.5)"),
        (["--interval", "soon"], "--interval 'soon' is not a number of seconds"),
        (["--interval", "60", "--time-zone", "Europe/Berlin"], "applies to cron schedules only"),
        (["--interval", "60", "--start", "2099-01-01T00:00:00"], "has no offset"),
        (["--interval", "60", "--data", "[1]"], "--data must be a JSON object"),
    ],
)
async def test_invalid_schedule_is_rejected(cli_settings: Settings, arguments: list[str], message: str) -> None:
    completed = run_cli(cli_settings, "create", "--function", "echo", *arguments)
    assert completed.returncode == 1
    assert message in completed.stderr
    assert completed.stdout == ""


async def test_unknown_function_is_rejected(cli_settings: Settings) -> None:
    completed = run_cli(cli_settings, "create", "--function", "no-such-function", "--interval", "60")
    assert completed.returncode == 1
    assert "function 'no-such-function' is not registered" in completed.stderr


async def test_invalid_schedule_id_is_rejected(cli_settings: Settings) -> None:
    completed = run_cli(cli_settings, "pause", "not-an-id")
    assert completed.returncode == 1
    assert "schedule id 'not-an-id' is invalid" in completed.stderr


async def test_interval_or_cron_is_required(cli_settings: Settings) -> None:
    completed = run_cli(cli_settings, "create", "--function", "echo")
    assert completed.returncode == 2
    assert "one of the arguments --interval --cron is required" in completed.stderr
