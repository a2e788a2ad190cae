-- Retries, cancellation of running tasks, concurrency limits and keys, task_failed events.

ALTER TABLE tasks
    ADD COLUMN concurrency_key text,
    ADD COLUMN cancel_requested_at timestamptz;

ALTER TABLE functions
    ADD COLUMN concurrency_limit integer CHECK (concurrency_limit IS NULL OR concurrency_limit > 0);

-- Running tasks per function and per concurrency key, read by every claim; the sweep
-- finds expired leases through the first one too. Fewer indexes make each status
-- change cheaper, so the lease and per-function indexes of the first migration go.
DROP INDEX tasks_in_progress_lease;
DROP INDEX tasks_function_name;
CREATE INDEX tasks_running_function ON tasks (function_name, lease_expires_at) WHERE status = 'inProgress';
CREATE INDEX tasks_running_concurrency_key ON tasks (concurrency_key)
    WHERE status = 'inProgress' AND concurrency_key IS NOT NULL;

-- Extended result message: running cancellation and the retry link.
CREATE OR REPLACE FUNCTION taskservice_result_message(t tasks) RETURNS jsonb
    LANGUAGE sql STABLE
    RETURN jsonb_strip_nulls(jsonb_build_object(
        'taskId', t.id,
        'functionName', t.function_name,
        'status', t.status,
        'attempt', t.attempt,
        'error', t.error,
        'eventId', t.event_id,
        'tags', to_jsonb(t.tags),
        'retriedByTaskId', t.retried_by_task_id,
        'retryForTaskIds', CASE WHEN cardinality(t.retry_for_task_ids) > 0 THEN to_jsonb(t.retry_for_task_ids) END,
        'creationTimestamp', taskservice_iso(t.creation_timestamp),
        'startTimestamp', taskservice_iso(t.start_timestamp),
        'startedTimestamp', taskservice_iso(t.started_timestamp),
        'finishedTimestamp', taskservice_iso(t.finished_timestamp),
        'statusChangedTimestamp', taskservice_iso(t.status_changed_timestamp)
    )) || jsonb_build_object('result', t.result);

-- The ExtraHorizon task_failed event for a task that failed for good.
CREATE FUNCTION taskservice_task_failed_event(t tasks, event_id text) RETURNS jsonb
    LANGUAGE sql STABLE
    RETURN jsonb_build_object(
        'id', event_id,
        'type', 'task_failed',
        'content', jsonb_build_object('id', t.id, 'functionName', t.function_name, 'error', t.error),
        'creation_timestamp', (extract(epoch FROM now()) * 1000)::bigint
    );
