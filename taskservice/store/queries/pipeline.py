"""SQL of the event pipeline: tasks, the outbox, metric samples, functions and dispatchers."""

from __future__ import annotations

# Tasks --------------------------------------------------------------------------------

# Insert a batch. Rows whose idempotency key exists are skipped. Of rows sharing a key within
# the batch the first is kept, which needs the ORDER BY because the join may reorder rows.
# Priority falls back to the function's defaultPriority, then 0, and the start time to now.
insert_tasks = """
INSERT INTO tasks (id, function_name, data, tags, priority, start_timestamp,
                   idempotency_key, source, event_id, event_timestamp, concurrency_key,
                   created_by_user_id, created_by_application_id)
SELECT r.id, r.function_name, r.data, coalesce(r.tags, '{}'),
       coalesce(r.priority, (f.execution_options ->> 'defaultPriority')::bigint, 0),
       coalesce(r.start_timestamp, now()),
       r.idempotency_key, r.source, r.event_id, r.event_timestamp, r.concurrency_key,
       r.created_by_user_id, r.created_by_application_id
FROM ROWS FROM (jsonb_to_recordset($1::text::jsonb) AS (
         id text, function_name text, data jsonb, tags text[], priority bigint,
         start_timestamp timestamptz, idempotency_key text, source text,
         event_id text, event_timestamp timestamptz, concurrency_key text,
         created_by_user_id text, created_by_application_id text))
     WITH ORDINALITY AS r(id, function_name, data, tags, priority, start_timestamp, idempotency_key, source,
                          event_id, event_timestamp, concurrency_key, created_by_user_id,
                          created_by_application_id, position)
LEFT JOIN functions f ON f.name = r.function_name
ORDER BY r.position
ON CONFLICT (idempotency_key) DO NOTHING
RETURNING id, function_name, idempotency_key
"""

# Serialises claims across workers, so the running counts read by claim_tasks are exact.
lock_claims = """
SELECT pg_advisory_xact_lock(8390046240938033517)
"""

# Claim due tasks in queue order, within the limits. The `locked` CTE takes row locks with
# SKIP LOCKED so claims never wait on rows that a cancel or sweep holds. It leaves out
# functions at their concurrency limit and keys already running, so their backlog does not
# fill the batch. `allowed` then keeps, per function, only as many as its free slots, per
# concurrency key only the first in queue order, and overall only the free global slots
# ($4, NULL for no limit). The outer UPDATE re-checks the status because a row can change
# between snapshot and lock.
claim_tasks = """
WITH running AS (
    SELECT function_name, count(*) AS n FROM tasks WHERE status = 'inProgress' GROUP BY function_name
), saturated AS (
    SELECT f.name FROM functions f JOIN running r ON r.function_name = f.name
    WHERE f.concurrency_limit IS NOT NULL AND r.n >= f.concurrency_limit
), busy_keys AS (
    SELECT DISTINCT concurrency_key FROM tasks
    WHERE status = 'inProgress' AND concurrency_key IS NOT NULL
), locked AS (
    SELECT id, function_name, concurrency_key, priority, start_timestamp FROM tasks
    WHERE status = 'new' AND start_timestamp <= now()
      AND function_name NOT IN (SELECT name FROM saturated)
      AND (concurrency_key IS NULL OR concurrency_key NOT IN (SELECT concurrency_key FROM busy_keys))
    ORDER BY priority DESC, start_timestamp ASC, id ASC
    LIMIT $1
    FOR UPDATE SKIP LOCKED
), ranked AS (
    SELECT l.id, l.priority, l.start_timestamp, l.concurrency_key, f.concurrency_limit,
           coalesce(r.n, 0) AS running_count,
           row_number() OVER (PARTITION BY l.function_name
                              ORDER BY l.priority DESC, l.start_timestamp, l.id) AS function_rank,
           row_number() OVER (PARTITION BY l.concurrency_key
                              ORDER BY l.priority DESC, l.start_timestamp, l.id) AS key_rank
    FROM locked l
    LEFT JOIN functions f ON f.name = l.function_name
    LEFT JOIN running r ON r.function_name = l.function_name
), allowed AS (
    SELECT id FROM ranked
    WHERE (concurrency_limit IS NULL OR function_rank <= concurrency_limit - running_count)
      AND (concurrency_key IS NULL OR key_rank = 1)
    ORDER BY priority DESC, start_timestamp ASC, id ASC
    LIMIT CASE WHEN $4::integer IS NULL THEN NULL
               ELSE greatest($4::integer - (SELECT coalesce(sum(n), 0) FROM running)::integer, 0) END
)
UPDATE tasks AS t
SET status = 'inProgress',
    status_changed_timestamp = now(),
    update_timestamp = now(),
    started_timestamp = now(),
    attempt = t.attempt + 1,
    worker_id = $2,
    lease_expires_at = now() + make_interval(secs => $3)
FROM allowed
WHERE t.id = allowed.id AND t.status = 'new'
RETURNING t.id, t.function_name, t.data::text AS data, t.tags, t.priority,
          t.start_timestamp, t.attempt, t.creation_timestamp, t.status_changed_timestamp,
          t.event_id, t.event_timestamp, t.created_by_user_id, t.created_by_application_id,
          t.retry_for_task_ids, t.concurrency_key
"""

# The earliest start time of a task that is not yet due, to time the next claim.
next_due_timestamp = """
SELECT min(start_timestamp) FROM tasks WHERE status = 'new' AND start_timestamp > now()
"""

# Finish a batch of runs in one statement, so that everything commits together: store
# each outcome, create the retry task of a retried run, queue the result message (and the
# task_failed event of a final failure), and keep the log lines. A run whose task is no
# longer inProgress with the same attempt (recovered by the sweep) changes nothing. A task
# whose cancellation was requested while it ran ends canceled whatever its outcome, and
# is never retried. The status guard compares with a column of `outcome` instead of a
# literal, so the planner cannot drive the UPDATE from the partial index of running tasks:
# once statistics say few tasks run, that plan compared every running task with every outcome.
finish_tasks = """
WITH outcome AS (
    SELECT *, 'inProgress'::text AS running FROM jsonb_to_recordset($1::text::jsonb) AS r(
        id text, attempt integer, status text, result jsonb, error jsonb,
        started_timestamp timestamptz, finished_timestamp timestamptz, logs jsonb,
        retry_id text, retry_start_timestamp timestamptz, failed_event_id text)
), finished AS (
    UPDATE tasks AS t
    SET status = CASE WHEN t.cancel_requested_at IS NOT NULL THEN 'canceled' ELSE o.status END,
        status_changed_timestamp = now(),
        update_timestamp = now(),
        result = CASE WHEN t.cancel_requested_at IS NULL AND o.status = 'complete' THEN o.result END,
        error = CASE WHEN t.cancel_requested_at IS NOT NULL
                     THEN jsonb_build_object('type', 'runtime', 'name', 'TaskCanceled',
                                             'message', 'The task was cancelled while it ran')
                     ELSE o.error END,
        retried_by_task_id = CASE WHEN t.cancel_requested_at IS NULL AND o.status = 'retried'
                                  THEN o.retry_id END,
        started_timestamp = o.started_timestamp,
        finished_timestamp = o.finished_timestamp,
        lease_expires_at = NULL
    FROM outcome o
    WHERE t.id = o.id AND t.attempt = o.attempt AND t.status = o.running
      AND o.status IN ('complete', 'failed', 'retried')
    RETURNING t.*
), retries AS (
    INSERT INTO tasks (id, function_name, data, tags, priority, start_timestamp, idempotency_key,
                       source, event_id, event_timestamp, attempt, retry_for_task_ids,
                       created_by_user_id, created_by_application_id, concurrency_key)
    SELECT f.retried_by_task_id, f.function_name, f.data, f.tags, f.priority, o.retry_start_timestamp,
           'retry:' || f.id, 'retry', f.event_id, f.event_timestamp, f.attempt,
           f.retry_for_task_ids || f.id, f.created_by_user_id, f.created_by_application_id,
           f.concurrency_key
    FROM finished f JOIN outcome o ON o.id = f.id
    WHERE f.status = 'retried'
    ON CONFLICT (idempotency_key) DO NOTHING
), queued AS (
    INSERT INTO outbox (topic, message_key, payload, task_id, attempt)
    SELECT $2, f.id, taskservice_result_message(f), f.id, f.attempt FROM finished f
    ON CONFLICT (topic, task_id, attempt) WHERE task_id IS NOT NULL DO NOTHING
), failed_events AS (
    INSERT INTO outbox (topic, message_key, payload, task_id, attempt)
    SELECT $3, o.failed_event_id, taskservice_task_failed_event(f, o.failed_event_id), f.id, f.attempt
    FROM finished f JOIN outcome o ON o.id = f.id
    WHERE f.status = 'failed' AND o.failed_event_id IS NOT NULL AND $3 <> ''
    ON CONFLICT (topic, task_id, attempt) WHERE task_id IS NOT NULL DO NOTHING
), logged AS (
    INSERT INTO task_logs (task_id, attempt, line_number, timestamp, message)
    SELECT o.id, o.attempt, l.ordinality::integer, (l.line ->> 0)::timestamptz, l.line ->> 1
    FROM outcome o, jsonb_array_elements(o.logs) WITH ORDINALITY AS l(line, ordinality)
    ON CONFLICT DO NOTHING
)
SELECT id, function_name, status, attempt FROM finished
"""

# Extend the leases of tasks this worker is still running; report cancellation requests.
renew_leases = """
UPDATE tasks SET lease_expires_at = now() + make_interval(secs => $3)
WHERE id = ANY($1::text[]) AND worker_id = $2 AND status = 'inProgress'
RETURNING id, cancel_requested_at IS NOT NULL AS cancel_requested
"""

# Lock in-progress tasks whose lease expired (their worker died or hung). The sweep
# finishes them with a zombieTaskCleaned outcome through finish_tasks in the same
# transaction.
lock_expired_leases = """
SELECT id, function_name, attempt, started_timestamp,
       (SELECT f.retry_policy::text FROM functions f WHERE f.name = tasks.function_name) AS retry_policy
FROM tasks
WHERE status = 'inProgress' AND lease_expires_at < now()
ORDER BY lease_expires_at
LIMIT $1
FOR UPDATE SKIP LOCKED
"""

# Cancel a task. A new task becomes canceled at once; a running one is flagged (when $2 is
# true) and its worker interrupts it. Returns the status before and after the change.
cancel_task = """
WITH target AS (
    SELECT id, status FROM tasks WHERE id = $1 FOR UPDATE
), changed AS (
    UPDATE tasks AS t
    SET status = CASE WHEN target.status = 'new' THEN 'canceled' ELSE t.status END,
        status_changed_timestamp = CASE WHEN target.status = 'new' THEN now()
                                        ELSE t.status_changed_timestamp END,
        cancel_requested_at = CASE WHEN target.status = 'inProgress' THEN now()
                                   ELSE t.cancel_requested_at END,
        update_timestamp = now()
    FROM target
    WHERE t.id = target.id
      AND (target.status = 'new' OR (target.status = 'inProgress' AND $2 AND t.cancel_requested_at IS NULL))
    RETURNING t.id, t.status, t.worker_id
)
SELECT target.status AS previous_status, changed.status AS status, changed.worker_id,
       CASE WHEN changed.status = 'inProgress'
            THEN pg_notify('taskservice_cancel', changed.id) IS NOT NULL END AS notified
FROM target LEFT JOIN changed ON changed.id = target.id
"""

# Return claimed tasks to the queue when a worker stops before running them.
release_tasks = """
UPDATE tasks
SET status = 'new', status_changed_timestamp = now(), update_timestamp = now(),
    attempt = attempt - 1, worker_id = NULL, lease_expires_at = NULL, started_timestamp = NULL
WHERE id = ANY($1::text[]) AND worker_id = $2 AND status = 'inProgress'
RETURNING id
"""

count_tasks_by_status = """
SELECT status, count(*) AS count FROM tasks GROUP BY status
"""

# Outbox --------------------------------------------------------------------------------

# Lock a batch of unsent messages; the relay publishes them inside this transaction.
claim_outbox = """
SELECT id, topic, message_key, payload::text AS payload, task_id, attempt
FROM outbox
WHERE sent_at IS NULL
ORDER BY id
LIMIT $1
FOR UPDATE SKIP LOCKED
"""

mark_outbox_sent = """
UPDATE outbox SET sent_at = now() WHERE id = ANY($1::bigint[]) AND sent_at IS NULL
"""

count_unsent_outbox = """
SELECT count(*) FROM outbox WHERE sent_at IS NULL
"""

# Metrics samples ------------------------------------------------------------------------

# Due tasks per function and the age of the oldest, read through the tasks_due partial
# index. Registered functions without due tasks report 0, and tasks of a function that
# is not registered are still counted, hence the full join.
sample_due_tasks = """
WITH due AS (
    SELECT function_name, count(*) AS due, min(start_timestamp) AS oldest
    FROM tasks
    WHERE status = 'new' AND start_timestamp <= now()
    GROUP BY function_name
)
SELECT coalesce(due.function_name, functions.name) AS function_name, coalesce(due.due, 0) AS due,
       coalesce(extract(epoch FROM now() - due.oldest), 0)::float8 AS oldest_age_s
FROM due FULL JOIN functions ON functions.name = due.function_name
"""

# Unpublished outbox messages and the age of the oldest, through the outbox_pending index.
sample_outbox = """
SELECT count(*) AS unsent,
       coalesce(extract(epoch FROM now() - min(created_at)), 0)::float8 AS oldest_age_s
FROM outbox
WHERE sent_at IS NULL
"""

# Functions ------------------------------------------------------------------------------

upsert_function = """
INSERT INTO functions (name, description, entry_point, runtime, code_zip, code_digest,
                       time_limit_s, memory_limit_mb, environment_variables,
                       execution_options, retry_policy, concurrency_limit)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9::text::jsonb, $10::text::jsonb, $11::text::jsonb, $12)
ON CONFLICT (name) DO UPDATE
SET description = EXCLUDED.description,
    entry_point = EXCLUDED.entry_point,
    runtime = EXCLUDED.runtime,
    code_zip = EXCLUDED.code_zip,
    code_digest = EXCLUDED.code_digest,
    time_limit_s = EXCLUDED.time_limit_s,
    memory_limit_mb = EXCLUDED.memory_limit_mb,
    environment_variables = EXCLUDED.environment_variables,
    execution_options = EXCLUDED.execution_options,
    retry_policy = EXCLUDED.retry_policy,
    concurrency_limit = EXCLUDED.concurrency_limit,
    update_timestamp = now()
WHERE (functions.code_digest, functions.entry_point, functions.runtime, functions.time_limit_s,
       functions.memory_limit_mb, functions.environment_variables, functions.execution_options,
       functions.retry_policy, functions.description, functions.concurrency_limit)
      IS DISTINCT FROM
      (EXCLUDED.code_digest, EXCLUDED.entry_point, EXCLUDED.runtime, EXCLUDED.time_limit_s,
       EXCLUDED.memory_limit_mb, EXCLUDED.environment_variables, EXCLUDED.execution_options,
       EXCLUDED.retry_policy, EXCLUDED.description, EXCLUDED.concurrency_limit)
RETURNING name
"""

# Function settings without code; the worker fetches code by digest when it lacks it.
list_function_settings = """
SELECT name, entry_point, runtime, code_digest, time_limit_s, memory_limit_mb,
       environment_variables::text AS environment_variables, retry_policy::text AS retry_policy,
       concurrency_limit, enabled, update_timestamp
FROM functions
"""

get_function_code = """
SELECT code_zip FROM functions WHERE name = $1 AND code_digest = $2
"""

set_function_environment_variable = """
UPDATE functions
SET environment_variables = environment_variables || jsonb_build_object($2::text, jsonb_build_object('value', $3::text)),
    update_timestamp = now()
WHERE name = $1
RETURNING name
"""

# Dispatchers ----------------------------------------------------------------------------

get_dispatcher_id_by_name = """
SELECT id FROM dispatchers WHERE name = $1
"""

# Task actions of every dispatcher, for the ingest matcher.
list_task_actions = """
SELECT d.id AS dispatcher_id, d.event_type, d.filter::text AS filter, d.transition::text AS transition,
       a.id AS action_id, a.function_name, a.data::text AS data, a.tags, a.start_timestamp,
       a.input::text AS input, a.include_event, a.deduplication_key, a.concurrency_key, a.delay_s, a.priority
FROM dispatchers d
JOIN dispatcher_actions a ON a.dispatcher_id = d.id
WHERE a.type = 'task'
ORDER BY d.creation_timestamp, d.id, a.creation_timestamp, a.id
"""
