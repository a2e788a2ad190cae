"""Every runtime SQL statement of the service, named after the repository method that runs it.

Bulk statements take their rows as one JSON array (`$1::text::jsonb`) and expand it with
`jsonb_to_recordset`, so a batch of any size costs one round trip and one parameter.
Every statement that changes a task's status checks the prior status in its WHERE clause.
"""

from __future__ import annotations

# Tasks --------------------------------------------------------------------------------

# Insert a batch; rows whose idempotency key exists are skipped. Priority falls back to
# the function's defaultPriority, then 0; the start time falls back to now.
insert_tasks = """
INSERT INTO tasks (id, function_name, data, tags, priority, start_timestamp,
                   idempotency_key, source, event_id, event_timestamp)
SELECT r.id, r.function_name, r.data, coalesce(r.tags, '{}'),
       coalesce(r.priority, (f.execution_options ->> 'defaultPriority')::bigint, 0),
       coalesce(r.start_timestamp, now()),
       r.idempotency_key, r.source, r.event_id, r.event_timestamp
FROM jsonb_to_recordset($1::text::jsonb) AS r(
         id text, function_name text, data jsonb, tags text[], priority bigint,
         start_timestamp timestamptz, idempotency_key text, source text,
         event_id text, event_timestamp timestamptz)
LEFT JOIN functions f ON f.name = r.function_name
ON CONFLICT (idempotency_key) DO NOTHING
RETURNING id, function_name, idempotency_key
"""

# Claim due tasks in queue order. The CTE takes row locks with SKIP LOCKED so that
# concurrent workers never claim the same row and never wait on each other; the outer
# UPDATE re-checks the status because a row can change between snapshot and lock.
claim_tasks = """
WITH due AS (
    SELECT id FROM tasks
    WHERE status = 'new' AND start_timestamp <= now()
    ORDER BY priority DESC, start_timestamp ASC, id ASC
    LIMIT $1
    FOR UPDATE SKIP LOCKED
)
UPDATE tasks AS t
SET status = 'inProgress',
    status_changed_timestamp = now(),
    update_timestamp = now(),
    started_timestamp = now(),
    attempt = t.attempt + 1,
    worker_id = $2,
    lease_expires_at = now() + make_interval(secs => $3)
FROM due
WHERE t.id = due.id AND t.status = 'new'
RETURNING t.id, t.function_name, t.data::text AS data, t.tags, t.priority,
          t.start_timestamp, t.attempt, t.creation_timestamp, t.status_changed_timestamp,
          t.event_id, t.event_timestamp, t.created_by_user_id, t.created_by_application_id
"""

# The earliest start time of a task that is not yet due, to time the next claim.
next_due_timestamp = """
SELECT min(start_timestamp) FROM tasks WHERE status = 'new' AND start_timestamp > now()
"""

# Finish a batch of runs: store each outcome, queue its result message and keep its log
# lines, all in one statement so that they commit together. Runs whose task is no longer
# inProgress with the same attempt (recovered by the sweep) change nothing.
finish_tasks = """
WITH outcome AS (
    SELECT * FROM jsonb_to_recordset($1::text::jsonb) AS r(
        id text, attempt integer, status text, result jsonb, error jsonb,
        started_timestamp timestamptz, finished_timestamp timestamptz, logs jsonb)
), finished AS (
    UPDATE tasks AS t
    SET status = o.status,
        status_changed_timestamp = now(),
        update_timestamp = now(),
        result = o.result,
        error = o.error,
        started_timestamp = o.started_timestamp,
        finished_timestamp = o.finished_timestamp,
        lease_expires_at = NULL
    FROM outcome o
    WHERE t.id = o.id AND t.attempt = o.attempt AND t.status = 'inProgress'
      AND o.status IN ('complete', 'failed')
    RETURNING t.*
), queued AS (
    INSERT INTO outbox (topic, message_key, payload, task_id, attempt)
    SELECT $2, f.id, taskservice_result_message(f), f.id, f.attempt FROM finished f
    ON CONFLICT (topic, task_id, attempt) WHERE task_id IS NOT NULL DO NOTHING
), logged AS (
    INSERT INTO task_logs (task_id, attempt, line_number, timestamp, message)
    SELECT o.id, o.attempt, l.ordinality::integer, (l.line ->> 0)::timestamptz, l.line ->> 1
    FROM outcome o, jsonb_array_elements(o.logs) WITH ORDINALITY AS l(line, ordinality)
    ON CONFLICT DO NOTHING
)
SELECT id, function_name, status FROM finished
"""

# Extend the leases of tasks this worker is still running.
renew_leases = """
UPDATE tasks SET lease_expires_at = now() + make_interval(secs => $3)
WHERE id = ANY($1::text[]) AND worker_id = $2 AND status = 'inProgress'
RETURNING id
"""

# Fail in-progress tasks whose lease expired (their worker died or hung) and queue their
# result messages. The worker that held the lease can no longer finish them, because
# finish_tasks requires status inProgress.
fail_expired_leases = """
WITH expired AS (
    SELECT id FROM tasks
    WHERE status = 'inProgress' AND lease_expires_at < now()
    ORDER BY lease_expires_at
    LIMIT $2
    FOR UPDATE SKIP LOCKED
), failed AS (
    UPDATE tasks AS t
    SET status = 'failed',
        status_changed_timestamp = now(),
        update_timestamp = now(),
        finished_timestamp = now(),
        lease_expires_at = NULL,
        error = jsonb_build_object(
            'type', 'runtime', 'name', 'zombieTaskCleaned',
            'message', 'The worker running this task stopped renewing its lease')
    FROM expired e
    WHERE t.id = e.id AND t.status = 'inProgress'
    RETURNING t.*
), queued AS (
    INSERT INTO outbox (topic, message_key, payload, task_id, attempt)
    SELECT $1, f.id, taskservice_result_message(f), f.id, f.attempt FROM failed f
    ON CONFLICT (topic, task_id, attempt) WHERE task_id IS NOT NULL DO NOTHING
)
SELECT id, function_name FROM failed
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
SELECT id, topic, message_key, payload::text AS payload, attempt
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

# Functions ------------------------------------------------------------------------------

upsert_function = """
INSERT INTO functions (name, description, entry_point, runtime, code_zip, code_digest,
                       time_limit_s, memory_limit_mb, environment_variables,
                       execution_options, retry_policy)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9::text::jsonb, $10::text::jsonb, $11::text::jsonb)
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
    update_timestamp = now()
WHERE (functions.code_digest, functions.entry_point, functions.runtime, functions.time_limit_s,
       functions.memory_limit_mb, functions.environment_variables, functions.execution_options,
       functions.retry_policy, functions.description)
      IS DISTINCT FROM
      (EXCLUDED.code_digest, EXCLUDED.entry_point, EXCLUDED.runtime, EXCLUDED.time_limit_s,
       EXCLUDED.memory_limit_mb, EXCLUDED.environment_variables, EXCLUDED.execution_options,
       EXCLUDED.retry_policy, EXCLUDED.description)
RETURNING name
"""

# Function settings without code; the worker fetches code by digest when it lacks it.
list_function_settings = """
SELECT name, entry_point, runtime, code_digest, time_limit_s, memory_limit_mb,
       environment_variables::text AS environment_variables, enabled, update_timestamp
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

insert_dispatcher = """
INSERT INTO dispatchers (id, name, description, event_type, tags)
VALUES ($1, $2, $3, $4, $5)
"""

insert_dispatcher_action = """
INSERT INTO dispatcher_actions (id, dispatcher_id, type, name, description, function_name,
                                data, tags, start_timestamp)
VALUES ($1, $2, 'task', $3, $4, $5, $6::text::jsonb, $7, $8)
"""

get_dispatcher_id_by_name = """
SELECT id FROM dispatchers WHERE name = $1
"""

# Task actions of every dispatcher, for the ingest matcher.
list_task_actions = """
SELECT d.id AS dispatcher_id, d.event_type, a.id AS action_id, a.function_name,
       a.data::text AS data, a.tags, a.start_timestamp
FROM dispatchers d
JOIN dispatcher_actions a ON a.dispatcher_id = d.id
WHERE a.type = 'task'
ORDER BY d.id, a.id
"""
