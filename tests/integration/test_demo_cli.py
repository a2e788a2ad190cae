"""The demo and the command line, run as a user runs them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from taskservice.config import Settings
from tests.support import REPOSITORY_ROOT, TopicReader, fetch, settings_environment


def _run_cli(args: list[str], env: dict[str, str], timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "taskservice.cli", *args], env=env, cwd=REPOSITORY_ROOT,
                          capture_output=True, text=True, timeout=timeout)


def _last_json_line(output: str) -> dict:
    return json.loads(output.strip().splitlines()[-1])


def test_demo_on_configured_servers(settings: Settings) -> None:
    env = settings_environment(settings.model_copy(update={"functions_dir": REPOSITORY_ROOT / "functions"}))
    completed = _run_cli(["demo", "--json", "--limit", "60", "--rate", "400"], env)
    assert completed.returncode == 0, completed.stderr[-3000:]
    summary = _last_json_line(completed.stdout)
    assert summary["events_published"] == 85
    assert summary["tasks_expected"] == 85
    assert summary["tasks_created"] == 85
    assert summary["tasks_completed"] == 85
    assert summary["tasks_failed"] == 0
    assert summary["results_received"] == 85
    assert summary["dead_lettered"] == 3
    assert summary["users_cleaned_up"] == 25
    assert summary["latency_p50_ms"] > 0
    assert summary["all_accounted_for"] is True


@pytest.mark.slow
def test_demo_with_embedded_servers(tmp_path: Path) -> None:
    env = {key: value for key, value in os.environ.items()
           if not key.startswith("TASKSERVICE_") and key not in ("DATABASE_URL", "KAFKA_BOOTSTRAP_SERVERS")}
    env["TASKSERVICE_STATE_DIR"] = str(tmp_path / "state")
    completed = _run_cli(["demo", "--json", "--limit", "30"], env)
    assert completed.returncode == 0, completed.stderr[-3000:]
    summary = _last_json_line(completed.stdout)
    assert summary["tasks_created"] == summary["tasks_expected"] == 55
    assert summary["results_received"] == 55
    assert summary["all_accounted_for"] is True


async def test_events_publish_reaches_tasks(settings: Settings, tmp_path: Path) -> None:
    from tests.support import prepare, running_service, wait_for

    await prepare(settings, [("user_deleted", "echo")])
    topic = next(name for name, fmt in settings.topics.items() if fmt == "exh")
    lines = [json.dumps({"id": f"cli-{i}", "type": "user_deleted", "content": {"n": i}}) for i in range(5)]
    path = tmp_path / "events.jsonl"
    path.write_text("\n".join(lines) + "\n\n")
    env = settings_environment(settings)
    async with TopicReader(settings, settings.results_topic) as results, running_service(settings):
        completed = _run_cli(["events", "publish", str(path), "--topic", topic], env, timeout=60)
        assert completed.returncode == 0, completed.stderr
        assert "published 5 record(s)" in completed.stdout
        assert "warning" not in completed.stderr

        async def five_results() -> bool:
            return len(results.records) >= 5

        await wait_for(five_results, timeout=60, message="5 results")
    rows = await fetch(settings, "SELECT count(*) AS n FROM tasks")
    assert rows[0]["n"] == 5


def test_events_publish_rejects_invalid_line(settings: Settings, tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"id": "ok", "type": "x"}\n{"id": broken\n')
    completed = _run_cli(["events", "publish", str(path), "--topic", "anything"], settings_environment(settings),
                         timeout=60)
    assert completed.returncode == 1
    assert "bad.jsonl:2 is not valid JSON" in completed.stderr
    assert "--raw" in completed.stderr


def test_events_publish_warns_of_unread_topic(settings: Settings, tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    path.write_text('{"id": "w1", "type": "user_deleted"}\n')
    completed = _run_cli(["events", "publish", str(path), "--topic", "typo-events"], settings_environment(settings),
                         timeout=60)
    assert completed.returncode == 0, completed.stderr
    assert "ingest does not read topic 'typo-events'" in completed.stderr


def test_events_publish_missing_file(settings: Settings, tmp_path: Path) -> None:
    completed = _run_cli(["events", "publish", str(tmp_path / "absent.jsonl"), "--topic", "t"],
                         settings_environment(settings), timeout=60)
    assert completed.returncode == 1
    assert "absent.jsonl does not exist" in completed.stderr


def test_invalid_setting_stops_with_message(settings: Settings) -> None:
    env = settings_environment(settings) | {"TASKSERVICE_WORKER_CLAIM_BATCH_SIZE": "0"}
    completed = _run_cli(["migrate"], env, timeout=60)
    assert completed.returncode == 2
    assert "worker_claim_batch_size" in completed.stderr


def test_run_rejects_unknown_role(settings: Settings) -> None:
    completed = _run_cli(["run", "--role", "ingest,bogus"], settings_environment(settings), timeout=60)
    assert completed.returncode != 0
    assert "unknown role 'bogus'" in completed.stderr


def test_migrate_is_idempotent(settings: Settings) -> None:
    completed = _run_cli(["migrate"], settings_environment(settings), timeout=60)
    assert completed.returncode == 0, completed.stderr
    assert "applied 0 migration(s)" in completed.stdout
