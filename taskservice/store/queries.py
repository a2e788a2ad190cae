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
                   idempotency_key, source, event_id, event_timestamp, concurrency_key,
                   created_by_user_id, created_by_application_id)
SELECT r.id, r.function_name, r.data, coalesce(r.tags, '{}'),
       coalesce(r.priority, (f.execution_options ->> 'defaultPriority')::bigint, 0),
       coalesce(r.start_timestamp, now()),
       r.idempotency_key, r.source, r.event_id, r.event_timestamp, r.concurrency_key,
       r.created_by_user_id, r.created_by_application_id
FROM jsonb_to_recordset($1::text::jsonb) AS r(
         id text, function_name text, data jsonb, tags text[], priority bigint,
         start_timestamp timestamptz, idempotency_key text, source text,
         event_id text, event_timestamp timestamptz, concurrency_key text,
         created_by_user_id text, created_by_application_id text)
LEFT JOIN functions f ON f.name = r.function_name
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
# is never retried.
finish_tasks = """
WITH outcome AS (
    SELECT * FROM jsonb_to_recordset($1::text::jsonb) AS r(
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
    WHERE t.id = o.id AND t.attempt = o.attempt AND t.status = 'inProgress'
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


# HTTP API ---------------------------------------------------------------------------------
# List statements are templates: `{where}` and `{order}` are filled by
# taskservice.store.rql_sql from fixed fragments whose values are all `$n` parameters,
# and the paging parameters follow the filter's.

# Wire columns of a task in lists; `result` is left out (it can be megabytes).
API_TASK_COLUMNS = """
id, function_name, status, status_changed_timestamp, data, tags, priority, start_timestamp,
created_by_user_id, created_by_application_id, creation_timestamp, update_timestamp,
retried_by_task_id, retry_for_task_ids, error, attempt, started_timestamp, finished_timestamp
"""

api_list_tasks = """
SELECT """ + API_TASK_COLUMNS + """
FROM tasks
WHERE {where}
ORDER BY {order}
LIMIT {limit} OFFSET {offset}
"""

api_count_tasks = """
SELECT count(*) FROM tasks WHERE {where}
"""

api_get_task = """
SELECT """ + API_TASK_COLUMNS + """, result FROM tasks WHERE id = $1
"""

# Create a task from the API in one round trip. No row: the function does not exist;
# enabled false: it is disabled and nothing was inserted.
api_insert_task = """
WITH f AS (
    SELECT name, enabled, execution_options FROM functions WHERE name = $2
), inserted AS (
    INSERT INTO tasks (id, function_name, data, tags, priority, start_timestamp,
                       created_by_user_id, created_by_application_id, source, concurrency_key)
    SELECT $1, f.name, $3::text::jsonb, $4::text[],
           coalesce($5::bigint, (f.execution_options ->> 'defaultPriority')::bigint, 0),
           coalesce($6::timestamptz, now()), $7, $8, 'api', $9
    FROM f WHERE f.enabled
    RETURNING """ + API_TASK_COLUMNS + """
)
SELECT f.enabled, inserted.* FROM f LEFT JOIN inserted ON true
"""

# Create the backing task of a direct execution already inProgress for this process, so
# no worker claims it. Its lease outlives the time limit, so the sweep only fails it when
# this process died mid-run. Same result shape as api_insert_task.
# The commit does not wait for its WAL flush (synchronous_commit off for this transaction
# only): finish_tasks commits synchronously later and flushes the WAL past this insert, and
# a crash before that fails the request anyway.
api_insert_running_task = """
WITH f AS (
    SELECT name, enabled, execution_options FROM functions, set_config('synchronous_commit', 'off', true)
    WHERE name = $2
), inserted AS (
    INSERT INTO tasks (id, function_name, status, data, priority, created_by_user_id,
                       created_by_application_id, source, attempt, started_timestamp,
                       worker_id, lease_expires_at)
    SELECT $1, f.name, 'inProgress', $3::text::jsonb,
           coalesce((f.execution_options ->> 'defaultPriority')::bigint, 0), $4, $5, 'api', 1, now(),
           $6, now() + make_interval(secs => $7)
    FROM f WHERE f.enabled
    RETURNING id, function_name, data::text AS data, tags, priority, start_timestamp, attempt,
              creation_timestamp, status_changed_timestamp, event_id, event_timestamp,
              created_by_user_id, created_by_application_id, retry_for_task_ids
)
SELECT f.enabled, inserted.* FROM f LEFT JOIN inserted ON true
"""

# Status and attempt of a task, to tell an unknown task from one in the wrong state.
api_get_task_state = """
SELECT status, attempt FROM tasks WHERE id = $1
"""

# Log lines of a task from $2 on, across its attempts in run order.
api_list_task_logs = """
SELECT timestamp, message FROM task_logs
WHERE task_id = $1 AND ($2::timestamptz IS NULL OR timestamp >= $2)
ORDER BY attempt, line_number
LIMIT $3 OFFSET $4
"""

# Log lines of every task of a function within [$2, $3]; the deprecated function log.
api_list_function_logs = """
SELECT l.timestamp, l.message FROM tasks t
JOIN task_logs l ON l.task_id = t.id
WHERE t.function_name = $1 AND t.creation_timestamp <= $3 AND l.timestamp BETWEEN $2 AND $3
ORDER BY l.timestamp, l.task_id, l.attempt, l.line_number
LIMIT $4 OFFSET $5
"""

# Functions

api_list_functions = """
SELECT name, description, update_timestamp FROM functions ORDER BY name
"""

# Settings of one function without its code; FOR UPDATE variant below for changes.
api_get_function = """
SELECT name, description, entry_point, runtime, code_digest, time_limit_s, memory_limit_mb,
       environment_variables, execution_options, retry_policy, enabled, concurrency_limit,
       creation_timestamp, update_timestamp
FROM functions WHERE name = $1
"""

api_lock_function = """
SELECT name, description, entry_point, runtime, code_digest, time_limit_s, memory_limit_mb,
       environment_variables, execution_options, retry_policy, enabled, concurrency_limit,
       creation_timestamp, update_timestamp
FROM functions WHERE name = $1 FOR UPDATE
"""

api_get_function_zip = """
SELECT code_zip FROM functions WHERE name = $1
"""

# Insert a function; no row when the name is taken.
api_insert_function = """
INSERT INTO functions (name, description, entry_point, runtime, code_zip, code_digest,
                       time_limit_s, memory_limit_mb, environment_variables,
                       execution_options, retry_policy, concurrency_limit)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9::text::jsonb, $10::text::jsonb, $11::text::jsonb, $12)
ON CONFLICT (name) DO NOTHING
RETURNING name
"""

# Replace a function's settings, and its code when $5 is not NULL.
api_update_function = """
UPDATE functions
SET description = $2, entry_point = $3, runtime = $4,
    code_zip = coalesce($5, code_zip), code_digest = coalesce($6, code_digest),
    time_limit_s = $7, memory_limit_mb = $8, environment_variables = $9::text::jsonb,
    execution_options = $10::text::jsonb, retry_policy = $11::text::jsonb,
    concurrency_limit = $12, update_timestamp = now()
WHERE name = $1
RETURNING name
"""

api_delete_function = """
DELETE FROM functions WHERE name = $1 RETURNING name
"""

# Enable or disable; the update timestamp moves only when the state changes.
api_set_function_enabled = """
UPDATE functions
SET enabled = $2,
    update_timestamp = CASE WHEN enabled IS DISTINCT FROM $2 THEN now() ELSE update_timestamp END
WHERE name = $1
RETURNING name
"""

# Dispatchers

# The actions of dispatcher d in array order, as one JSON array in their wire form.
API_DISPATCHER_ACTIONS = """
coalesce((SELECT jsonb_agg(jsonb_build_object(
              'id', a.id, 'type', a.type, 'name', a.name, 'description', a.description,
              'functionName', a.function_name, 'data', a.data, 'tags', to_jsonb(a.tags),
              'startTimestamp', (extract(epoch FROM a.start_timestamp) * 1000)::bigint,
              'recipients', a.recipients, 'templateId', a.template_id)
              ORDER BY a.creation_timestamp, a.id)
          FROM dispatcher_actions a WHERE a.dispatcher_id = d.id), '[]'::jsonb)
"""

API_DISPATCHER_COLUMNS = """
d.id, d.name, d.description, d.event_type, d.tags, d.creation_timestamp, d.update_timestamp,
""" + API_DISPATCHER_ACTIONS + """ AS actions
"""

api_list_dispatchers = """
SELECT """ + API_DISPATCHER_COLUMNS + """
FROM dispatchers d
WHERE {where}
ORDER BY {order}
LIMIT {limit} OFFSET {offset}
"""

api_count_dispatchers = """
SELECT count(*) FROM dispatchers d WHERE {where}
"""

api_get_dispatcher = """
SELECT """ + API_DISPATCHER_COLUMNS + """
FROM dispatchers d WHERE d.id = $1
"""

api_insert_dispatcher = """
INSERT INTO dispatchers (id, name, description, event_type, tags)
VALUES ($1, $2, $3, $4, $5)
"""

# Insert an action of either type; a clock tick apart keeps array order for a batch.
api_insert_action = """
INSERT INTO dispatcher_actions (id, dispatcher_id, type, name, description, function_name,
                                data, tags, start_timestamp, recipients, template_id,
                                creation_timestamp)
VALUES ($1, $2, $3, $4, $5, $6, $7::text::jsonb, $8, $9, $10::text::jsonb, $11,
        clock_timestamp())
RETURNING id
"""

# Apply the fields present in the JSON patch $2; absent fields keep their value.
api_update_dispatcher = """
UPDATE dispatchers
SET event_type = CASE WHEN $2::text::jsonb ? 'eventType' THEN $2::text::jsonb ->> 'eventType' ELSE event_type END,
    name = CASE WHEN $2::text::jsonb ? 'name' THEN $2::text::jsonb ->> 'name' ELSE name END,
    description = CASE WHEN $2::text::jsonb ? 'description' THEN $2::text::jsonb ->> 'description'
                       ELSE description END,
    tags = CASE WHEN $2::text::jsonb ? 'tags'
                THEN ARRAY(SELECT jsonb_array_elements_text($2::text::jsonb -> 'tags')) ELSE tags END,
    update_timestamp = now()
WHERE id = $1
RETURNING id
"""

api_delete_dispatcher = """
DELETE FROM dispatchers WHERE id = $1 RETURNING id
"""

api_update_action = """
UPDATE dispatcher_actions
SET name = CASE WHEN $3::text::jsonb ? 'name' THEN $3::text::jsonb ->> 'name' ELSE name END,
    description = CASE WHEN $3::text::jsonb ? 'description' THEN $3::text::jsonb ->> 'description'
                       ELSE description END,
    function_name = CASE WHEN $3::text::jsonb ? 'functionName' THEN $3::text::jsonb ->> 'functionName'
                         ELSE function_name END,
    data = CASE WHEN $3::text::jsonb ? 'data' THEN $3::text::jsonb -> 'data' ELSE data END,
    tags = CASE WHEN $3::text::jsonb ? 'tags'
                THEN ARRAY(SELECT jsonb_array_elements_text($3::text::jsonb -> 'tags')) ELSE tags END,
    start_timestamp = CASE WHEN $3::text::jsonb ? 'startTimestamp'
                           THEN ($3::text::jsonb ->> 'startTimestamp')::timestamptz ELSE start_timestamp END,
    recipients = CASE WHEN $3::text::jsonb ? 'recipients' THEN $3::text::jsonb -> 'recipients'
                      ELSE recipients END,
    template_id = CASE WHEN $3::text::jsonb ? 'templateId' THEN $3::text::jsonb ->> 'templateId'
                       ELSE template_id END,
    update_timestamp = now()
WHERE dispatcher_id = $1 AND id = $2
RETURNING id
"""

api_delete_action = """
DELETE FROM dispatcher_actions WHERE dispatcher_id = $1 AND id = $2 RETURNING id
"""

api_get_action_type = """
SELECT type FROM dispatcher_actions WHERE dispatcher_id = $1 AND id = $2
"""

# API functions

API_REQUEST_COLUMNS = """
id, function_name, method, path, user_id, application_id, status_code, timestamp, duration, error
"""

api_list_api_requests = """
SELECT """ + API_REQUEST_COLUMNS + """
FROM api_requests
WHERE {where}
ORDER BY {order}
LIMIT {limit} OFFSET {offset}
"""

api_count_api_requests = """
SELECT count(*) FROM api_requests WHERE {where}
"""

# Record one API-function call and its log lines ($11, [[time, line], …]) together.
api_insert_api_request = """
WITH inserted AS (
    INSERT INTO api_requests (id, function_name, method, path, user_id, application_id,
                              status_code, timestamp, duration, error)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10::text::jsonb)
    RETURNING id
), logged AS (
    INSERT INTO api_request_logs (api_request_id, line_number, timestamp, message)
    SELECT $1, l.ordinality::integer, (l.line ->> 0)::timestamptz, l.line ->> 1
    FROM jsonb_array_elements($11::text::jsonb) WITH ORDINALITY AS l(line, ordinality)
)
SELECT id FROM inserted
"""

api_api_request_exists = """
SELECT EXISTS (SELECT 1 FROM api_requests WHERE id = $1)
"""

api_list_api_request_logs = """
SELECT timestamp, message FROM api_request_logs
WHERE api_request_id = $1 AND ($2::timestamptz IS NULL OR timestamp >= $2)
ORDER BY line_number
LIMIT $3 OFFSET $4
"""

# Schedules (table from the scheduler's migration; interval schedules only here)

API_SCHEDULE_COLUMNS = """
id, function_name, interval_s, cron_expression, time_zone, data, tags, priority,
start_timestamp, next_timestamp, paused, catch_up, created_by_user_id, created_by_application_id,
creation_timestamp, update_timestamp
"""

api_list_schedules = """
SELECT """ + API_SCHEDULE_COLUMNS + """
FROM schedules
WHERE {where}
ORDER BY {order}
LIMIT {limit} OFFSET {offset}
"""

api_count_schedules = """
SELECT count(*) FROM schedules WHERE {where}
"""

# Create an interval schedule whose first fire time is its start time. No row: the
# function does not exist.
api_insert_schedule = """
INSERT INTO schedules (id, function_name, interval_s, data, priority, start_timestamp,
                       next_timestamp, created_by_user_id, created_by_application_id)
SELECT $1, f.name, $3, $4::text::jsonb, $5, coalesce($6::timestamptz, now()),
       coalesce($6::timestamptz, now()), $7, $8
FROM functions f WHERE f.name = $2
RETURNING """ + API_SCHEDULE_COLUMNS + """
"""

api_delete_schedule = """
DELETE FROM schedules WHERE id = $1 RETURNING id
"""

# Users, OAuth2 clients and tokens

api_count_users = """
SELECT count(*) FROM users
"""

api_insert_user = """
INSERT INTO users (id, email, password_hash, permissions) VALUES ($1, $2, $3, $4)
"""

api_get_user_by_email = """
SELECT id, email, password_hash, permissions, creation_timestamp FROM users WHERE email = $1
"""

api_list_users = """
SELECT id, email, permissions, creation_timestamp FROM users ORDER BY email
"""

api_set_user_permissions = """
UPDATE users SET permissions = $2, update_timestamp = now() WHERE email = $1 RETURNING id
"""

api_set_user_password = """
UPDATE users SET password_hash = $2, update_timestamp = now() WHERE email = $1 RETURNING id
"""

api_delete_user = """
DELETE FROM users WHERE email = $1 RETURNING id
"""

api_insert_oauth2_client = """
INSERT INTO oauth2_clients (id, client_id, secret_hash, name) VALUES ($1, $2, $3, $4)
"""

api_get_oauth2_client = """
SELECT id, client_id, secret_hash, name FROM oauth2_clients WHERE client_id = $1
"""

api_list_oauth2_clients = """
SELECT id, client_id, secret_hash IS NOT NULL AS confidential, name, creation_timestamp
FROM oauth2_clients ORDER BY client_id
"""

api_delete_oauth2_client = """
DELETE FROM oauth2_clients WHERE client_id = $1 RETURNING id
"""

# Insert a login or API token; expiry times are seconds from now. Drops tokens that
# expired more than a day ago, so the table does not grow with every login.
api_insert_token = """
WITH swept AS (
    DELETE FROM tokens
    WHERE coalesce(refresh_expires_at, access_expires_at) < now() - interval '1 day'
)
INSERT INTO tokens (id, user_id, application_id, access_token_hash, access_expires_at,
                    refresh_token_hash, refresh_expires_at, description)
VALUES ($1, $2, $3, $4, now() + make_interval(secs => $5), $6,
        CASE WHEN $6::text IS NULL THEN NULL ELSE now() + make_interval(secs => $7) END, $8)
"""

# Consume a valid refresh token and store the new pair as a new row. Refresh tokens are
# single-use; the old access token stays valid until it expires, so another client that
# shares it keeps working.
api_rotate_refresh_token = """
WITH consumed AS (
    UPDATE tokens SET refresh_token_hash = NULL, refresh_expires_at = NULL
    WHERE refresh_token_hash = $1 AND refresh_expires_at > now()
    RETURNING user_id, application_id
)
INSERT INTO tokens (id, user_id, application_id, access_token_hash, access_expires_at,
                    refresh_token_hash, refresh_expires_at)
SELECT $6, user_id, application_id, $2, now() + make_interval(secs => $3),
       $4, now() + make_interval(secs => $5)
FROM consumed
RETURNING user_id, application_id
"""

api_refresh_token_expired = """
SELECT refresh_expires_at <= now() FROM tokens WHERE refresh_token_hash = $1
"""

# The caller behind a bearer token, whether the token has expired, and the seconds it has left.
api_authenticate_token = """
SELECT t.user_id, t.application_id, t.access_expires_at <= now() AS expired, u.permissions,
       extract(epoch FROM t.access_expires_at - now())::float8 AS remaining_s
FROM tokens t JOIN users u ON u.id = t.user_id
WHERE t.access_token_hash = $1
"""

api_list_tokens = """
SELECT t.id, u.email, t.application_id, t.description, t.creation_timestamp,
       t.access_expires_at, t.refresh_token_hash IS NOT NULL AS refreshable
FROM tokens t JOIN users u ON u.id = t.user_id
WHERE $1::text IS NULL OR u.email = $1
ORDER BY t.creation_timestamp
"""

api_delete_token = """
DELETE FROM tokens WHERE id = $1 RETURNING id
"""

# Schedules ------------------------------------------------------------------------------

SCHEDULE_COLUMNS = """
id, function_name, interval_s, cron_expression, time_zone, data, tags, priority,
start_timestamp, next_timestamp, catch_up, catch_up_max, paused, paused_timestamp,
last_fire_timestamp, last_task_id, created_by_user_id, created_by_application_id,
creation_timestamp, update_timestamp
"""

insert_schedule = """
INSERT INTO schedules (id, function_name, interval_s, cron_expression, time_zone, data, tags,
                       priority, start_timestamp, next_timestamp, catch_up, catch_up_max,
                       created_by_user_id, created_by_application_id)
VALUES ($1, $2, $3, $4, $5, $6::text::jsonb, $7, $8, $9, $10, $11, $12, $13, $14)
RETURNING """ + SCHEDULE_COLUMNS

get_schedule = """
SELECT """ + SCHEDULE_COLUMNS + """ FROM schedules WHERE id = $1
"""

list_schedules = """
SELECT """ + SCHEDULE_COLUMNS + """ FROM schedules ORDER BY creation_timestamp, id LIMIT $1 OFFSET $2
"""

delete_schedule = """
DELETE FROM schedules WHERE id = $1 RETURNING id
"""

# Pause and resume change only a schedule in the other state. Resuming keeps
# next_timestamp, so the catch-up policy decides about the fire times missed meanwhile.
pause_schedule = """
UPDATE schedules SET paused = true, paused_timestamp = now(), update_timestamp = now()
WHERE id = $1 AND NOT paused
RETURNING id
"""

resume_schedule = """
UPDATE schedules SET paused = false, paused_timestamp = NULL, update_timestamp = now()
WHERE id = $1 AND paused
RETURNING id
"""

# Bound the time a scheduler transaction may sit idle, for example in a process stopped
# by SIGSTOP. The server then ends the session, so its row locks are released and its
# uncommitted tasks and schedule changes roll back.
limit_schedule_transaction = """
SELECT set_config('idle_in_transaction_session_timeout', $1::text, true)
"""

# Lock due schedules, earliest first. SKIP LOCKED lets replicas fire different schedules
# at once, and never lets two of them handle one schedule in the same instant.
claim_due_schedules = """
SELECT """ + SCHEDULE_COLUMNS + """
FROM schedules
WHERE NOT paused AND next_timestamp <= $1
ORDER BY next_timestamp, id
LIMIT $2
FOR UPDATE SKIP LOCKED
"""

# Move schedules to their next fire time. The compare-and-set on the old next_timestamp
# makes a replica that acted on a stale row change nothing.
advance_schedules = """
UPDATE schedules AS s
SET next_timestamp = r.next_timestamp,
    paused = s.paused OR r.pause,
    paused_timestamp = CASE WHEN r.pause AND NOT s.paused THEN now() ELSE s.paused_timestamp END,
    last_fire_timestamp = coalesce(r.last_fire_timestamp, s.last_fire_timestamp),
    last_task_id = CASE WHEN r.last_fire_timestamp IS NULL THEN s.last_task_id ELSE r.last_task_id END,
    update_timestamp = now()
FROM jsonb_to_recordset($1::text::jsonb) AS r(
         id text, old_next_timestamp timestamptz, next_timestamp timestamptz, pause boolean,
         last_fire_timestamp timestamptz, last_task_id text)
WHERE s.id = r.id AND s.next_timestamp = r.old_next_timestamp
RETURNING s.id
"""

# The earliest fire time of any active schedule, to time the scheduler's sleep.
next_schedule_timestamp = """
SELECT min(next_timestamp) FROM schedules WHERE NOT paused
"""
