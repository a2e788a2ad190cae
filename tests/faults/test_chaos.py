"""Workers killed at random while 1,000 retry-enabled tasks flow through the service.

Three worker processes run the tasks; one more process ingests, relays results and
sweeps expired leases. Every few seconds a randomly chosen worker is killed with SIGKILL
and restarted. The tasks it held come back through the sweep as zombieTaskCleaned
failures that the retry policy retries, up to maxAttempts runs per chain.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import orjson

from taskservice.config import Settings
from tests.faults.common import exh_topic, nothing_pending, records_by_task, wait_for_log
from tests.support import (
    ServiceProcess, TopicReader, exh_event, fetch, prepare, publish, read_json_lines, set_function_env, wait_for,
)

SEED = 20_270_301
EVENT_COUNT = 1_000
WORKERS = 3
MAX_ATTEMPTS = 3
# The events arrive in bursts, one before each kill, so that the killed worker is likely
# to hold claimed or running tasks. 20 bursts of 50 events with 1.3 to 5 s between kills
# spread the run over about 60 s.
BURSTS = 20
CHAOS_S = 120.0
FUNCTION = "sleep-retry"


def _chains(rows: list[Any]) -> dict[str, list[Any]]:
    """Group task rows into retry chains keyed by the first task's id, each ordered by attempt."""
    chains: dict[str, list[Any]] = defaultdict(list)
    for row in rows:
        root = row["retry_for_task_ids"][0] if row["retry_for_task_ids"] else row["id"]
        chains[root].append(row)
    return {root: sorted(chain, key=lambda row: row["attempt"]) for root, chain in chains.items()}


async def test_random_worker_kills_keep_chains_consistent(settings: Settings, tmp_path: Path) -> None:
    settings = settings.model_copy(update={
        "lease_s": 5.0, "heartbeat_interval_s": 1.0, "sweep_interval_s": 1.0,
        "worker_claim_batch_size": 10, "worker_max_in_flight": 20, "runtime_processes_per_function": 2,
    })
    invocations = tmp_path / "invocations.jsonl"
    await prepare(settings, [("user_deleted", FUNCTION)])
    await set_function_env(settings, FUNCTION, "SLEEP_SECONDS", "0.02")
    await set_function_env(settings, FUNCTION, "SLEEP_MAX_SECONDS", "0.05")
    await set_function_env(settings, FUNCTION, "INVOCATION_LOG", str(invocations))
    events = [exh_event(f"user-{number:04d}") for number in range(EVENT_COUNT)]
    rng = random.Random(SEED)
    kills: list[tuple[float, int]] = []
    started = time.monotonic()

    def start_worker(index: int, generation: int) -> ServiceProcess:
        return ServiceProcess(settings, roles="worker",
                              log_path=tmp_path / f"worker-{index}-{generation}.log").start()

    async with TopicReader(settings, settings.results_topic) as results:
        with contextlib.ExitStack() as stack:
            coordinator_log = tmp_path / "coordinator.log"
            stack.enter_context(ServiceProcess(settings, roles="ingest,relay,sweeper", log_path=coordinator_log))
            workers = [start_worker(index, 0) for index in range(WORKERS)]
            stack.callback(lambda: [worker.kill() for worker in workers])
            await wait_for_log(coordinator_log, "partitions assigned", timeout=30)
            burst_size = EVENT_COUNT // BURSTS
            for burst in range(BURSTS):
                if time.monotonic() - started > CHAOS_S:
                    raise AssertionError(f"the chaos phase took more than {CHAOS_S} s (seed {SEED}, kills {kills})")
                await publish(settings, exh_topic(settings), events[burst * burst_size:(burst + 1) * burst_size])
                await asyncio.sleep(rng.uniform(0.2, 1.0))
                victim = rng.randrange(WORKERS)
                workers[victim].kill()
                kills.append((round(time.monotonic() - started, 1), victim))
                await asyncio.sleep(rng.uniform(0.0, 1.0))
                workers[victim] = start_worker(victim, len(kills))
                await asyncio.sleep(rng.uniform(1.0, 3.0))

            async def settled() -> bool:
                rows = await fetch(settings, "SELECT count(*) AS n FROM tasks WHERE source = 'event'")
                return rows[0]["n"] == EVENT_COUNT and await nothing_pending(settings)

            await wait_for(settled, timeout=90, message=f"every chain final (seed {SEED}, kills {kills})")
            rows = await fetch(settings, "SELECT * FROM tasks")

            async def results_read() -> bool:
                return len(results.records) >= len(rows) and await results.caught_up()

            await wait_for(results_read, timeout=60, message=f"{len(rows)} result messages read (seed {SEED})")

    context = f"seed {SEED}, kills at (s, worker) {kills}"
    chains = _chains(rows)
    root_of = {row["id"]: root for root, chain in chains.items() for row in chain}
    outcomes = Counter(chain[-1]["status"] for chain in chains.values())
    zombies = sum(1 for row in rows if (orjson.loads(row["error"]) if isinstance(row["error"], str)
                                        else row["error"] or {}).get("name") == "zombieTaskCleaned")
    print(f"{context}: {len(rows)} tasks in {len(chains)} chains, final {dict(outcomes)}, {zombies} zombie runs")

    assert kills, f"no worker was killed ({context})"
    assert zombies > 0, f"no kill caught a running task, so nothing was recovered ({context})"
    assert len(chains) == EVENT_COUNT, f"expected {EVENT_COUNT} chains, got {len(chains)} ({context})"
    roots = Counter(row["event_id"] for row in rows if row["source"] == "event")
    assert set(roots.values()) == {1}, f"an event has more than one first task ({context})"
    for root, chain in chains.items():
        statuses = [row["status"] for row in chain]
        assert statuses[:-1] == ["retried"] * (len(chain) - 1), f"chain {root} has statuses {statuses} ({context})"
        assert statuses[-1] in ("complete", "failed"), f"chain {root} ended {statuses[-1]} ({context})"
        assert [row["attempt"] for row in chain] == list(range(1, len(chain) + 1)), \
            f"chain {root} has attempts {[row['attempt'] for row in chain]} ({context})"
        assert len(chain) <= MAX_ATTEMPTS, f"chain {root} ran {len(chain)} attempts ({context})"
        if statuses[-1] == "failed":
            assert len(chain) == MAX_ATTEMPTS, f"chain {root} failed after {len(chain)} attempts ({context})"

    runs = read_json_lines(invocations)
    per_task = Counter(run["task_id"] for run in runs)
    per_chain = Counter(root_of[run["task_id"]] for run in runs)
    assert set(per_task) <= set(root_of), f"the invocation log names unknown tasks ({context})"
    assert max(per_task.values()) == 1, f"a task ran more than once: {per_task.most_common(3)} ({context})"
    assert max(per_chain.values()) <= MAX_ATTEMPTS, \
        f"a chain ran more than {MAX_ATTEMPTS} times: {per_chain.most_common(3)} ({context})"
    complete_chains = {root for root, chain in chains.items() if chain[-1]["status"] == "complete"}
    assert complete_chains <= set(per_chain), f"a complete chain has no recorded run ({context})"

    by_task = records_by_task(results.records)
    expected = {(row["id"], row["attempt"], row["status"]) for row in rows}
    messages = Counter((task_id, message["attempt"], message["status"])
                       for task_id, copies in by_task.items()
                       for message in (orjson.loads(copy.value) for copy in copies))
    assert set(messages) == expected, (
        f"result messages and task rows differ: {len(set(messages) - expected)} messages without a matching "
        f"row, {len(expected - set(messages))} rows without a message ({context})"
    )
    repeated = [key for key, count in messages.items() if count > 1]
    assert not repeated, f"{len(repeated)} (task, attempt) pairs have more than one result message ({context})"
