"""SQL of schedules."""

from __future__ import annotations

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
