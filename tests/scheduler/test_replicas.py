"""Three scheduler processes on one host, with restarts, a stopped process and a full outage.

Real time is scaled down: a schedule fires every 3 s and the run lasts about 65 s.
All three processes share the hostname, which is the setup where schedulers that
elect a leader by hostname fire twice.

Timeline, in seconds from the start:
  0-24   three replicas; at 8, 16 and 24 one of them is killed with SIGKILL and replaced;
  ~30    the replica that fired most recently is stopped with SIGSTOP, right after its
         fire, for 10 s, then continued with SIGCONT (it wakes up with a stale view);
  ~44    every replica is killed; 10 s later three new ones start (a full outage);
  ~64    the replicas are stopped with SIGTERM.
Schedule A catches up with policy 'all', schedule B with 'latest'.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import signal
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from taskservice.config import Settings
from taskservice.store.db import Pool
from tests.support import ServiceProcess

INTERVAL_S = 3
STOP_S = 10.0
OUTAGE_S = 10.0


class Replicas:
    """Scheduler processes, each incarnation logging to its own file."""

    def __init__(self, settings: Settings, log_dir: Path) -> None:
        self._settings = settings
        self._log_dir = log_dir
        self.running: list[ServiceProcess] = []
        self.started = 0

    def start(self) -> ServiceProcess:
        self.started += 1
        replica = ServiceProcess(self._settings, roles="scheduler",
                                 log_path=self._log_dir / f"replica-{self.started}.log").start()
        self.running.append(replica)
        return replica

    def kill(self, replica: ServiceProcess) -> None:
        replica.kill()
        self.running.remove(replica)

    def by_pid(self, pid: int) -> ServiceProcess:
        return next(replica for replica in self.running if replica.process and replica.process.pid == pid)

    def events(self, name: str) -> list[dict[str, Any]]:
        """Return every log entry with this event name, from every incarnation."""
        entries = []
        for path in sorted(self._log_dir.glob("replica-*.log")):
            for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
                if line.startswith("{"):
                    entry = json.loads(line)
                    if entry.get("event") == name:
                        entries.append(entry)
        return entries


async def sleep_until(deadline: float) -> None:
    await asyncio.sleep(max(0.0, deadline - time.monotonic()))


async def next_fire_event(replicas: Replicas, after_fire_time: str, timeout_s: float) -> dict[str, Any]:
    """Wait for a schedule_fired entry with a later fire time; return it."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        newer = [entry for entry in replicas.events("schedule_fired") if entry["fire_time"] > after_fire_time]
        if newer:
            return max(newer, key=lambda entry: entry["fire_time"])
        await asyncio.sleep(0.02)
    raise AssertionError(f"no schedule fired after {after_fire_time} within {timeout_s} s")


def grid(start: datetime, first: datetime, last: datetime) -> list[datetime]:
    """Return the fire times start + k * INTERVAL_S from first to last inclusive."""
    begin = round((first - start).total_seconds() / INTERVAL_S)
    end = round((last - start).total_seconds() / INTERVAL_S)
    return [start + timedelta(seconds=INTERVAL_S * k) for k in range(begin, end + 1)]


@pytest.mark.slow
@pytest.mark.timeout(150)
async def test_replicas_with_restarts_stop_and_outage(
        scheduler_settings: Settings, add_schedule: Callable[..., Any], pool: Pool, tmp_path: Path) -> None:
    settings = scheduler_settings.model_copy(update={"log_format": "json", "log_level": "INFO"})
    now = datetime.now(UTC)
    start = datetime.fromtimestamp(math.ceil(now.timestamp()) + 5, UTC)
    schedule_all = await add_schedule(interval_s=INTERVAL_S, now=now, start_timestamp=start, catch_up="all")
    schedule_latest = await add_schedule(interval_s=INTERVAL_S, now=now, start_timestamp=start, catch_up="latest")

    replicas = Replicas(settings, tmp_path)
    began = time.monotonic()
    try:
        for _ in range(3):
            replicas.start()

        # Restart one replica every 8 s.
        for restart in range(3):
            await sleep_until(began + 8 * (restart + 1))
            replicas.kill(replicas.running[0])
            replicas.start()

        # Stop the replica that fired most recently, just after its fire, for 10 s.
        await sleep_until(began + 30)
        latest_seen = max(entry["fire_time"] for entry in replicas.events("schedule_fired"))
        firing = await next_fire_event(replicas, latest_seen, timeout_s=10)
        stopped = replicas.by_pid(int(firing["scheduler_id"].split(":")[1]))
        assert stopped.process is not None
        os.kill(stopped.process.pid, signal.SIGSTOP)
        stop_began = datetime.now(UTC)
        await asyncio.sleep(STOP_S)
        os.kill(stopped.process.pid, signal.SIGCONT)
        stop_ended = datetime.now(UTC)

        # Full outage: every replica dies, new ones start 10 s later.
        await sleep_until(began + 44)
        for replica in list(replicas.running):
            replicas.kill(replica)
        outage_began = datetime.now(UTC)
        await asyncio.sleep(OUTAGE_S)
        outage_ended = datetime.now(UTC)
        for _ in range(3):
            replicas.start()

        await sleep_until(began + 64)
        stopped_at = datetime.now(UTC)
        exit_codes = [replica.terminate(timeout=30) for replica in replicas.running]
    finally:
        for replica in list(replicas.running):
            replica.kill()

    assert exit_codes == [0, 0, 0]
    rows = await pool.fetch("SELECT data ->> 'scheduleId' AS schedule_id, start_timestamp, status FROM tasks")
    assert {row["status"] for row in rows} == {"new"}, "no task failed"
    fires_all = sorted(row["start_timestamp"] for row in rows if row["schedule_id"] == schedule_all["id"])
    fires_latest = sorted(row["start_timestamp"] for row in rows if row["schedule_id"] == schedule_latest["id"])

    # Exactly one task per fire time, for both schedules.
    assert len(fires_all) == len(set(fires_all))
    assert len(fires_latest) == len(set(fires_latest))

    # 'all': every fire time from the start to the end of the run, the outage included.
    assert fires_all == grid(start, start, fires_all[-1])
    assert fires_all[-1] > stopped_at - timedelta(seconds=INTERVAL_S + 1)
    assert len(fires_all) >= (stopped_at - start).total_seconds() // INTERVAL_S

    # The SIGSTOP window lost nothing: the other replicas kept firing both schedules.
    during_stop = [t for t in grid(start, start, fires_all[-1]) if stop_began <= t <= stop_ended]
    assert len(during_stop) >= 3
    assert set(during_stop) <= set(fires_latest)

    # 'latest': one gap, inside the outage, of every missed fire time but the most recent.
    missing = sorted(set(grid(start, start, fires_latest[-1])) - set(fires_latest))
    assert missing, "a 10 s outage with a 3 s interval misses fire times"
    assert missing == grid(start, missing[0], missing[-1]), "the missed fire times are consecutive"
    assert outage_began - timedelta(seconds=INTERVAL_S) < missing[0]
    assert missing[-1] < outage_ended
    caught_up = missing[-1] + timedelta(seconds=INTERVAL_S)
    assert caught_up in fires_latest
    assert caught_up < outage_ended + timedelta(seconds=INTERVAL_S)
    missed_logs = [entry for entry in replicas.events("schedule_fires_missed")
                   if entry["schedule_id"] == schedule_latest["id"]]
    assert [entry["missed"] for entry in missed_logs] == [len(missing)]

    # No leader: more than one process fired.
    firers = {entry["scheduler_id"] for entry in replicas.events("schedule_fired")}
    assert len(firers) >= 2
