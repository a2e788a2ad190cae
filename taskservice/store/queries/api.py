"""SQL of the HTTP API."""

from __future__ import annotations

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
              'recipients', a.recipients, 'templateId', a.template_id,
              'input', a.input, 'includeEvent', a.include_event, 'deduplicationKey', a.deduplication_key,
              'concurrencyKey', a.concurrency_key, 'delaySeconds', a.delay_s, 'priority', a.priority)
              ORDER BY a.creation_timestamp, a.id)
          FROM dispatcher_actions a WHERE a.dispatcher_id = d.id), '[]'::jsonb)
"""

API_DISPATCHER_COLUMNS = """
d.id, d.name, d.description, d.event_type, d.tags, d.filter, d.transition, d.creation_timestamp,
d.update_timestamp,
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
INSERT INTO dispatchers (id, name, description, event_type, tags, filter, transition)
VALUES ($1, $2, $3, $4, $5, $6::text::jsonb, $7::text::jsonb)
"""

# Insert an action of either type; a clock tick apart keeps array order for a batch.
api_insert_action = """
INSERT INTO dispatcher_actions (id, dispatcher_id, type, name, description, function_name,
                                data, tags, start_timestamp, recipients, template_id,
                                input, include_event, deduplication_key, concurrency_key, delay_s, priority,
                                creation_timestamp)
VALUES ($1, $2, $3, $4, $5, $6, $7::text::jsonb, $8, $9, $10::text::jsonb, $11,
        $12::text::jsonb, $13, $14, $15, $16, $17, clock_timestamp())
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
    filter = CASE WHEN $2::text::jsonb ? 'filter' THEN nullif($2::text::jsonb -> 'filter', 'null') ELSE filter END,
    transition = CASE WHEN $2::text::jsonb ? 'transition' THEN nullif($2::text::jsonb -> 'transition', 'null')
                      ELSE transition END,
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
    input = CASE WHEN $3::text::jsonb ? 'input' THEN nullif($3::text::jsonb -> 'input', 'null') ELSE input END,
    include_event = CASE WHEN $3::text::jsonb ? 'includeEvent' THEN ($3::text::jsonb ->> 'includeEvent')::boolean
                         ELSE include_event END,
    deduplication_key = CASE WHEN $3::text::jsonb ? 'deduplicationKey' THEN $3::text::jsonb ->> 'deduplicationKey'
                             ELSE deduplication_key END,
    concurrency_key = CASE WHEN $3::text::jsonb ? 'concurrencyKey' THEN $3::text::jsonb ->> 'concurrencyKey'
                           ELSE concurrency_key END,
    delay_s = CASE WHEN $3::text::jsonb ? 'delaySeconds' THEN ($3::text::jsonb ->> 'delaySeconds')::double precision
                   ELSE delay_s END,
    priority = CASE WHEN $3::text::jsonb ? 'priority' THEN ($3::text::jsonb ->> 'priority')::bigint ELSE priority END,
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
