"""The metrics follow the naming rules: one module, `taskservice_` names, base units, bounded labels."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from pathlib import Path

from prometheus_client import REGISTRY
from prometheus_client.metrics_core import Metric

import taskservice.metrics  # noqa: F401 - registers every metric
from tests.operations.common import REPOSITORY_ROOT

# Labels whose values come from small fixed sets or from configuration (topics,
# partitions, function names, route templates).
ALLOWED_LABELS = {"topic", "partition", "outcome", "status", "source", "function", "reason", "operation",
                  "policy", "method", "route", "role", "dependency"}
# Labels that would grow with traffic.
FORBIDDEN_LABELS = {"task_id", "event_id", "offset", "key", "id", "worker_id", "schedule_id", "user_id", "message"}
# Units other than the base ones (seconds, bytes) in any spelling.
NON_BASE_UNITS = re.compile(r"_(ms|milliseconds|microseconds|minutes|hours|days|kb|kilobytes|mb|megabytes|percent)(_|$)")

# The measurements operators asked for, and the metric that carries each.
REQUIRED_METRICS = {
    "records consumed by topic and outcome": ("taskservice_records_consumed_total", {"topic", "outcome"}),
    "records dead-lettered": ("taskservice_records_dead_lettered_total", {"topic", "reason"}),
    "consumer lag per partition": ("taskservice_consumer_lag_records", {"topic", "partition"}),
    "tasks created by source and function": ("taskservice_tasks_created_total", {"source", "function"}),
    "status transitions": ("taskservice_task_status_transitions_total", {"function", "status"}),
    "task duration by function and outcome": ("taskservice_task_duration_seconds", {"function", "outcome"}),
    "queue wait by function": ("taskservice_task_queue_wait_seconds", {"function"}),
    "due-task queue depth": ("taskservice_tasks_due", {"function"}),
    "age of the oldest due task": ("taskservice_oldest_due_task_age_seconds", {"function"}),
    "running tasks": ("taskservice_tasks_running", set()),
    "free slots": ("taskservice_worker_free_slots", set()),
    "retries": ("taskservice_task_retries_total", {"function"}),
    "zombie recoveries": ("taskservice_zombie_tasks_recovered_total", {"function"}),
    "outbox backlog": ("taskservice_outbox_unsent_messages", set()),
    "outbox backlog age": ("taskservice_outbox_oldest_unsent_age_seconds", set()),
    "publish failures": ("taskservice_outbox_publish_failures_total", set()),
    "schedule fires": ("taskservice_schedule_fires_total", {"outcome"}),
    "schedule misses": ("taskservice_schedule_fires_missed_total", {"policy"}),
    "API request durations by route and status": ("taskservice_api_request_duration_seconds",
                                                  {"method", "route", "status"}),
    "database errors": ("taskservice_database_errors_total", {"operation"}),
    "broker errors": ("taskservice_broker_errors_total", {"operation"}),
    "role loops running": ("taskservice_role_running", {"role"}),
    "role loop progress": ("taskservice_role_last_progress_timestamp_seconds", {"role"}),
    "dependency reachability": ("taskservice_dependency_reachable", {"dependency"}),
}


def _families() -> dict[str, Metric]:
    families = {}
    for family in REGISTRY.collect():
        if family.name.startswith("taskservice_"):
            # prometheus_client names a counter family without its _total suffix.
            name = f"{family.name}_total" if family.type == "counter" else family.name
            families[name] = family
    return families


def _label_names(family: Metric) -> set[str]:
    collector = next(c for c in REGISTRY._collector_to_names  # noqa: SLF001 - the registry has no public lookup
                     if family.name in REGISTRY._collector_to_names[c])  # noqa: SLF001
    return set(getattr(collector, "_labelnames", ()))


def test_names_and_suffixes() -> None:
    families = _families()
    assert families, "no taskservice_ metric is registered"
    for name, family in families.items():
        assert re.fullmatch(r"taskservice_[a-z][a-z0-9_]*[a-z0-9]", name), f"{name} is not snake_case"
        assert not NON_BASE_UNITS.search(name), f"{name} uses a unit other than seconds or bytes"
        if family.type == "counter":
            assert name.endswith("_total"), f"counter {name} must end in _total"
        else:
            assert not name.endswith("_total"), f"{family.type} {name} must not end in _total"
        if family.type == "histogram":
            assert name.endswith(("_seconds", "_bytes")), f"histogram {name} must be in seconds or bytes"
        if {"duration", "age", "wait", "latency", "timestamp"} & set(name.split("_")) and family.type != "counter":
            assert name.endswith("_seconds"), f"{name} measures time, so it must end in _seconds"
        assert family.documentation.strip(), f"{name} has no help text"


def test_labels_come_from_the_allow_list() -> None:
    for name, family in _families().items():
        labels = _label_names(family)
        assert not labels & FORBIDDEN_LABELS, f"{name} has unbounded labels {sorted(labels & FORBIDDEN_LABELS)}"
        assert labels <= ALLOWED_LABELS, f"{name} has labels outside the allow-list: {sorted(labels - ALLOWED_LABELS)}"


def test_required_metrics_exist() -> None:
    families = _families()
    for purpose, (name, labels) in REQUIRED_METRICS.items():
        assert name in families, f"no metric for {purpose}: expected {name}"
        assert _label_names(families[name]) == labels, \
            f"{name} ({purpose}) has labels {sorted(_label_names(families[name]))}, expected {sorted(labels)}"


def test_metrics_defined_in_one_module() -> None:
    constructors = re.compile(r"\b(Counter|Gauge|Histogram|Summary|Info|Enum)\(\s*[\"']")
    package = REPOSITORY_ROOT / "taskservice"
    offenders = [str(path.relative_to(REPOSITORY_ROOT)) for path in package.rglob("*.py")
                 if path.name != "metrics.py" and constructors.search(path.read_text())]
    assert not offenders, f"metrics defined outside taskservice/metrics.py: {offenders}"


def test_multiprocess_mode_adds_up_processes(tmp_path: Path) -> None:
    """With PROMETHEUS_MULTIPROC_DIR, /metrics reports the sum of every process's counters."""
    directory = tmp_path / "metrics"
    directory.mkdir()
    env = {"PROMETHEUS_MULTIPROC_DIR": str(directory), "PATH": "/usr/bin:/bin"}
    record = textwrap.dedent("""
        import sys
        from taskservice import metrics
        from taskservice.observability.multiprocess import release_process_metrics
        metrics.TASKS_CREATED.labels(source="event", function="echo").inc(3)
        metrics.TASKS_RUNNING.set(2)
        if sys.argv[1] == "exit":
            release_process_metrics()
    """)
    for mode in ("stay", "exit"):
        subprocess.run([sys.executable, "-c", record, mode], env=env, cwd=REPOSITORY_ROOT, check=True, timeout=60)
    render = "from taskservice.api.operations import metrics_exposition; print(metrics_exposition().decode())"
    output = subprocess.run([sys.executable, "-c", render], env=env, cwd=REPOSITORY_ROOT, check=True, timeout=60,
                            capture_output=True, text=True).stdout

    created = re.search(r'^taskservice_tasks_created_total\{function="echo",source="event"\} (\S+)$', output, re.M)
    running = re.search(r"^taskservice_tasks_running (\S+)$", output, re.M)
    assert created is not None and float(created.group(1)) == 6.0, f"tasks created across processes: {output}"
    # The process that released its metrics no longer counts toward the live gauge.
    assert running is not None and float(running.group(1)) == 2.0, f"running tasks across processes: {output}"
