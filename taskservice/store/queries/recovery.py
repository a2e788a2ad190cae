"""SQL of the recovery tools: redrive of failed tasks and the record of dead-letter replays."""

from __future__ import annotations

# Redrive --------------------------------------------------------------------------------

# Failed tasks that match the filters and have no redrive task yet, oldest failure first.
# $1 function name, $2 error name, $3 failed at or after, $4 failed before (each NULL for
# any), then the row limit as the last parameter. Tasks of deleted or disabled functions
# are left out, because their new task could not run. The status change time of a failed
# task is the time it failed, since `failed` is a final status.
_REDRIVE_CANDIDATES = """
SELECT t.id, t.function_name, t.data, t.tags, t.priority, t.event_id, t.event_timestamp,
       t.retry_for_task_ids, t.created_by_user_id, t.created_by_application_id, t.concurrency_key,
       t.error ->> 'name' AS error_name, t.status_changed_timestamp AS failed_timestamp,
       row_number() OVER (ORDER BY t.status_changed_timestamp, t.id) AS position
FROM tasks t
JOIN functions f ON f.name = t.function_name AND f.enabled
WHERE t.status = 'failed'
  AND ($1::text IS NULL OR t.function_name = $1)
  AND ($2::text IS NULL OR t.error ->> 'name' = $2)
  AND ($3::timestamptz IS NULL OR t.status_changed_timestamp >= $3)
  AND ($4::timestamptz IS NULL OR t.status_changed_timestamp < $4)
  AND NOT EXISTS (SELECT 1 FROM tasks r WHERE r.idempotency_key = 'redrive:' || t.id)
ORDER BY t.status_changed_timestamp, t.id
"""

# The failed tasks a redrive with the same filters would select, for a dry run. $5 is the limit.
list_redrive_candidates = """
SELECT c.id AS failed_task_id, c.function_name, c.error_name, c.failed_timestamp
FROM (""" + _REDRIVE_CANDIDATES + """
      LIMIT $5) AS c
ORDER BY c.position
"""

# Redrive a batch in one statement. Each selected failed task gets one new task with the
# same function, data, tags, priority, event and concurrency key, keyed
# 'redrive:<failed task id>'; the new task lists the failed one after its earlier retries
# in retry_for_task_ids, and the failed task, which stays failed, points at it through
# retried_by_task_id. $5 contains one new id per row, so its length is the batch limit. The
# attempt count starts again at 0, so the function's retry policy applies in full. A
# concurrent redrive of the same task loses on the idempotency key and returns nothing.
redrive_failed_tasks = """
WITH selected AS (""" + _REDRIVE_CANDIDATES + """
    LIMIT cardinality($5::text[])
), inserted AS (
    INSERT INTO tasks (id, function_name, data, tags, priority, idempotency_key, source,
                       event_id, event_timestamp, retry_for_task_ids, created_by_user_id,
                       created_by_application_id, concurrency_key)
    SELECT ($5::text[])[s.position], s.function_name, s.data, s.tags, s.priority, 'redrive:' || s.id,
           'redrive', s.event_id, s.event_timestamp, s.retry_for_task_ids || s.id, s.created_by_user_id,
           s.created_by_application_id, s.concurrency_key
    FROM selected s
    ON CONFLICT (idempotency_key) DO NOTHING
    RETURNING id, retry_for_task_ids[cardinality(retry_for_task_ids)] AS failed_task_id
), linked AS (
    UPDATE tasks AS t
    SET retried_by_task_id = i.id, update_timestamp = now()
    FROM inserted i
    WHERE t.id = i.failed_task_id AND t.status = 'failed'
    RETURNING t.id
)
SELECT s.id AS failed_task_id, i.id AS task_id, s.function_name, s.error_name, s.failed_timestamp
FROM inserted i
JOIN selected s ON s.id = i.failed_task_id
ORDER BY s.position
"""

# Whether a function exists and is enabled; no row when it does not exist.
get_function_enabled = """
SELECT enabled FROM functions WHERE name = $1
"""

# Dead-letter replays ----------------------------------------------------------------------

# Idempotency keys among $1 that already have a task, for dry runs of a replay.
list_existing_idempotency_keys = """
SELECT idempotency_key FROM tasks WHERE idempotency_key = ANY($1::text[])
"""

# Earlier replays of the given source records, from a JSON array of
# {source_topic, source_partition, source_offset}.
list_dead_letter_replays = """
SELECT d.source_topic, d.source_partition, d.source_offset, d.replay_partition, d.replay_offset,
       d.replay_count, d.last_replayed_at
FROM jsonb_to_recordset($1::text::jsonb) AS r(source_topic text, source_partition integer, source_offset bigint)
JOIN dead_letter_replays d USING (source_topic, source_partition, source_offset)
"""

# Record a batch of replays; a forced replay of a recorded source record counts up and
# keeps the first replay time.
record_dead_letter_replays = """
INSERT INTO dead_letter_replays (source_topic, source_partition, source_offset, dead_letter_topic,
                                 dead_letter_partition, dead_letter_offset, replay_partition, replay_offset)
SELECT r.source_topic, r.source_partition, r.source_offset, r.dead_letter_topic,
       r.dead_letter_partition, r.dead_letter_offset, r.replay_partition, r.replay_offset
FROM jsonb_to_recordset($1::text::jsonb) AS r(
         source_topic text, source_partition integer, source_offset bigint, dead_letter_topic text,
         dead_letter_partition integer, dead_letter_offset bigint, replay_partition integer,
         replay_offset bigint)
ON CONFLICT (source_topic, source_partition, source_offset) DO UPDATE
SET dead_letter_topic = EXCLUDED.dead_letter_topic,
    dead_letter_partition = EXCLUDED.dead_letter_partition,
    dead_letter_offset = EXCLUDED.dead_letter_offset,
    replay_partition = EXCLUDED.replay_partition,
    replay_offset = EXCLUDED.replay_offset,
    replay_count = dead_letter_replays.replay_count + 1,
    last_replayed_at = now()
"""
