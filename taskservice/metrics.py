"""Every Prometheus metric of the service, in base units with bounded label sets.

Labels never carry task ids, keys or offsets. `outcome`, `status` and `source` take
values from the fixed sets named in each help text.

Each gauge names its multiprocess mode. It applies only when PROMETHEUS_MULTIPROC_DIR is
set, so that several processes of one pod share a /metrics endpoint (see
taskservice/api/operations.py).
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

RECORDS_CONSUMED = Counter(
    "taskservice_records_consumed_total",
    "Kafka records read by ingest, by topic and outcome (matched, unmatched, invalid: not an event of the "
    "topic's format, dead_lettered: an event whose tasks could not be stored, skipped: a record that carries "
    "no event by design, such as a Debezium tombstone).",
    ["topic", "outcome"],
)
RECORDS_DEAD_LETTERED = Counter(
    "taskservice_records_dead_lettered_total",
    "Records written to the dead-letter topic, by source topic and reason code.",
    ["topic", "reason"],
)
CONSUMER_LAG = Gauge(
    "taskservice_consumer_lag_records",
    "Records between the committed position and the fetch high-water mark, per partition.",
    ["topic", "partition"],
    multiprocess_mode="livemax",
)
INGEST_BATCH_SECONDS = Histogram(
    "taskservice_ingest_batch_duration_seconds",
    "Time from fetching an ingest batch to committing its offsets.",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
OFFSET_COMMIT_FAILURES = Counter(
    "taskservice_offset_commit_failures_total",
    "Offset commits that failed, for example after a rebalance.",
)
TASKS_CREATED = Counter(
    "taskservice_tasks_created_total",
    "Tasks inserted, by source (event, api, schedule, retry, redrive) and function.",
    ["source", "function"],
)
TASKS_DEDUPLICATED = Counter(
    "taskservice_tasks_deduplicated_total",
    "Task rows skipped because their (event, action) or (schedule, fire time) key already existed.",
)
TASK_STATUS_TRANSITIONS = Counter(
    "taskservice_task_status_transitions_total",
    "Task status changes, by function and new status.",
    ["function", "status"],
)
TASK_DURATION_SECONDS = Histogram(
    "taskservice_task_duration_seconds",
    "Run time of a task in its runtime, by function and outcome (complete, failed).",
    ["function", "outcome"],
    buckets=(0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300),
)
TASK_QUEUE_WAIT_SECONDS = Histogram(
    "taskservice_task_queue_wait_seconds",
    "Time from a task being due to its claim, by function.",
    ["function"],
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5, 30, 120, 600),
)
TASK_RETRIES = Counter(
    "taskservice_task_retries_total",
    "Failed runs followed by a retry task, by function.",
    ["function"],
)
TASKS_RUNNING = Gauge(
    "taskservice_tasks_running",
    "Tasks claimed by this worker process and not yet finished.",
    multiprocess_mode="livesum",
)
WORKER_FREE_SLOTS = Gauge(
    "taskservice_worker_free_slots",
    "Tasks this worker process can still claim before it reaches worker_max_in_flight.",
    multiprocess_mode="livesum",
)
ZOMBIE_TASKS_RECOVERED = Counter(
    "taskservice_zombie_tasks_recovered_total",
    "In-progress tasks whose lease expired and were failed by the sweep, by function.",
    ["function"],
)
OUTBOX_PUBLISHED = Counter(
    "taskservice_outbox_published_total",
    "Outbox messages published to Kafka, by topic.",
    ["topic"],
)
OUTBOX_PUBLISH_FAILURES = Counter(
    "taskservice_outbox_publish_failures_total",
    "Outbox batches whose publish failed and will be retried.",
)
DATABASE_ERRORS = Counter(
    "taskservice_database_errors_total",
    "Database operations that failed on a connection error, by operation.",
    ["operation"],
)
BROKER_ERRORS = Counter(
    "taskservice_broker_errors_total",
    "Kafka operations that failed, by operation.",
    ["operation"],
)
TASKS_REDRIVEN = Counter(
    "taskservice_tasks_redriven_total",
    "Failed tasks re-run as a new task by a redrive (CLI or HTTP API), by function.",
    ["function"],
)
DEAD_LETTERS_REPLAYED = Counter(
    "taskservice_dead_letters_replayed_total",
    "Dead letters handled by `taskservice dlq replay`, by outcome (published: written to the source topic; "
    "matched: tasks stored or already present; unmatched: no dispatcher matched; failed: still rejected; "
    "skipped: replayed before or a duplicate).",
    ["outcome"],
)
SCHEDULE_FIRES = Counter(
    "taskservice_schedule_fires_total",
    "Schedule fire times handled, by outcome (created: a task was inserted; duplicate: "
    "a task for that schedule and fire time already existed).",
    ["outcome"],
)
SCHEDULE_FIRES_MISSED = Counter(
    "taskservice_schedule_fires_missed_total",
    "Due schedule fire times that got no task because of the catch-up policy (skip, latest, all).",
    ["policy"],
)
API_REQUEST_SECONDS = Histogram(
    "taskservice_api_request_duration_seconds",
    "HTTP API request handling time, by method, route template (e.g. /tasks/v1/{task_id}) and status code.",
    ["method", "route", "status"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)

# Sampled from the database every metrics_sample_interval_s by the sweeper and scheduler
# roles, so every replica of those roles reports the same values. Aggregate them with max.
TASKS_DUE = Gauge(
    "taskservice_tasks_due",
    "Tasks in status new whose start time has passed, by function.",
    ["function"],
    multiprocess_mode="livemostrecent",
)
OLDEST_DUE_TASK_AGE_SECONDS = Gauge(
    "taskservice_oldest_due_task_age_seconds",
    "Time since the start time of the oldest due task in status new, by function; 0 when none is due.",
    ["function"],
    multiprocess_mode="livemostrecent",
)
OUTBOX_UNSENT = Gauge(
    "taskservice_outbox_unsent_messages",
    "Outbox messages the relay has not published yet.",
    multiprocess_mode="livemostrecent",
)
OUTBOX_OLDEST_UNSENT_AGE_SECONDS = Gauge(
    "taskservice_outbox_oldest_unsent_age_seconds",
    "Age of the oldest unpublished outbox message; 0 when none waits.",
    multiprocess_mode="livemostrecent",
)

# Process state, set by taskservice.health.Health.
ROLE_RUNNING = Gauge(
    "taskservice_role_running",
    "1 while the role's loop runs in this process, by role (ingest, worker, relay, sweeper, scheduler).",
    ["role"],
    multiprocess_mode="livesum",
)
ROLE_PROGRESS_TIMESTAMP_SECONDS = Gauge(
    "taskservice_role_last_progress_timestamp_seconds",
    "Unix time at which the role's loop last completed an iteration, by role.",
    ["role"],
    multiprocess_mode="livemax",
)
DEPENDENCY_REACHABLE = Gauge(
    "taskservice_dependency_reachable",
    "1 when the last health check reached the dependency (database, broker), else 0.",
    ["dependency"],
    multiprocess_mode="livemin",
)

# Label values known in advance start at 0, so that rate() and the alert rules see these
# series before the first event.
for _operation in ("consumer_start", "dead_letter", "publish_outbox"):
    BROKER_ERRORS.labels(operation=_operation)
for _outcome in ("created", "duplicate"):
    SCHEDULE_FIRES.labels(outcome=_outcome)
for _policy in ("skip", "latest", "all"):
    SCHEDULE_FIRES_MISSED.labels(policy=_policy)
