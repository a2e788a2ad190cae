-- Functions, dispatchers, tasks, task logs and the result outbox.

CREATE TABLE functions (
    name                   text PRIMARY KEY,
    description            text,
    entry_point            text NOT NULL,
    runtime                text NOT NULL,
    -- The code as a zip archive; workers unpack it once per digest.
    code_zip               bytea NOT NULL,
    code_digest            text NOT NULL,
    time_limit_s           integer NOT NULL DEFAULT 30,
    memory_limit_mb        integer NOT NULL DEFAULT 128,
    environment_variables  jsonb NOT NULL DEFAULT '{}',
    execution_options      jsonb NOT NULL DEFAULT '{}',
    retry_policy           jsonb NOT NULL DEFAULT '{"enabled": false, "errorsToRetry": []}',
    enabled                boolean NOT NULL DEFAULT true,
    creation_timestamp     timestamptz NOT NULL DEFAULT now(),
    update_timestamp       timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE dispatchers (
    id                  text PRIMARY KEY,
    name                text UNIQUE,
    description         text,
    event_type          text NOT NULL,
    tags                text[] NOT NULL DEFAULT '{}',
    creation_timestamp  timestamptz NOT NULL DEFAULT now(),
    update_timestamp    timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX dispatchers_event_type ON dispatchers (event_type);

CREATE TABLE dispatcher_actions (
    id                  text PRIMARY KEY,
    dispatcher_id       text NOT NULL REFERENCES dispatchers (id) ON DELETE CASCADE,
    type                text NOT NULL CHECK (type IN ('task', 'mail')),
    name                text,
    description         text,
    function_name       text,
    data                jsonb NOT NULL DEFAULT '{}',
    tags                text[] NOT NULL DEFAULT '{}',
    start_timestamp     timestamptz,
    recipients          jsonb,
    template_id         text,
    creation_timestamp  timestamptz NOT NULL DEFAULT now(),
    update_timestamp    timestamptz NOT NULL DEFAULT now(),
    UNIQUE (dispatcher_id, name),
    CHECK (type <> 'task' OR function_name IS NOT NULL)
);

CREATE TABLE tasks (
    id                          text PRIMARY KEY,
    function_name               text NOT NULL,
    status                      text NOT NULL DEFAULT 'new'
        CHECK (status IN ('new', 'inProgress', 'complete', 'retried', 'failed', 'canceled')),
    status_changed_timestamp    timestamptz NOT NULL DEFAULT now(),
    data                        jsonb NOT NULL DEFAULT '{}',
    tags                        text[] NOT NULL DEFAULT '{}',
    priority                    bigint NOT NULL DEFAULT 0,
    start_timestamp             timestamptz NOT NULL DEFAULT now(),
    created_by_user_id          text,
    created_by_application_id   text,
    creation_timestamp          timestamptz NOT NULL DEFAULT now(),
    update_timestamp            timestamptz NOT NULL DEFAULT now(),
    -- Exactly-once creation: one task per (event, dispatcher action) or per (schedule, fire time).
    idempotency_key             text UNIQUE,
    source                      text NOT NULL CHECK (source IN ('event', 'api', 'schedule', 'retry')),
    event_id                    text,
    event_timestamp             timestamptz,
    attempt                     integer NOT NULL DEFAULT 0,
    retried_by_task_id          text,
    retry_for_task_ids          text[] NOT NULL DEFAULT '{}',
    error                       jsonb,
    result                      jsonb,
    started_timestamp           timestamptz,
    finished_timestamp          timestamptz,
    lease_expires_at            timestamptz,
    worker_id                   text
);

-- The claim query walks this index in queue order and stops at the first batch.
CREATE INDEX tasks_due ON tasks (priority DESC, start_timestamp ASC, id) WHERE status = 'new';
CREATE INDEX tasks_in_progress_lease ON tasks (lease_expires_at) WHERE status = 'inProgress';
CREATE INDEX tasks_function_name ON tasks (function_name, creation_timestamp);

CREATE TABLE task_logs (
    task_id     text NOT NULL,
    attempt     integer NOT NULL,
    line_number integer NOT NULL,
    timestamp   timestamptz NOT NULL,
    message     text NOT NULL,
    PRIMARY KEY (task_id, attempt, line_number)
);

-- Result messages waiting for the relay; rows are kept after publishing as the publish record.
CREATE TABLE outbox (
    id          bigserial PRIMARY KEY,
    topic       text NOT NULL,
    message_key text NOT NULL,
    payload     jsonb NOT NULL,
    task_id     text,
    attempt     integer,
    created_at  timestamptz NOT NULL DEFAULT now(),
    sent_at     timestamptz
);

CREATE INDEX outbox_pending ON outbox (id) WHERE sent_at IS NULL;
CREATE UNIQUE INDEX outbox_task_attempt ON outbox (topic, task_id, attempt) WHERE task_id IS NOT NULL;

-- Timestamps on the wire: ISO-8601 UTC with milliseconds and a Z suffix.
CREATE FUNCTION taskservice_iso(ts timestamptz) RETURNS text
    LANGUAGE sql STABLE
    RETURN to_char(ts AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"');

-- The body of a result message, built from a task row in its final state.
CREATE FUNCTION taskservice_result_message(t tasks) RETURNS jsonb
    LANGUAGE sql STABLE
    RETURN jsonb_strip_nulls(jsonb_build_object(
        'taskId', t.id,
        'functionName', t.function_name,
        'status', t.status,
        'attempt', t.attempt,
        'error', t.error,
        'eventId', t.event_id,
        'tags', to_jsonb(t.tags),
        'creationTimestamp', taskservice_iso(t.creation_timestamp),
        'startTimestamp', taskservice_iso(t.start_timestamp),
        'startedTimestamp', taskservice_iso(t.started_timestamp),
        'finishedTimestamp', taskservice_iso(t.finished_timestamp),
        'statusChangedTimestamp', taskservice_iso(t.status_changed_timestamp)
    )) || jsonb_build_object('result', t.result);

-- Wake sleeping workers and relays at commit; identical notifications in one
-- transaction are delivered once, so a batch insert costs one notification.
CREATE FUNCTION taskservice_notify_tasks() RETURNS trigger
    LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('taskservice_tasks', '');
    RETURN NULL;
END $$;

CREATE TRIGGER tasks_notify AFTER INSERT ON tasks
    FOR EACH STATEMENT EXECUTE FUNCTION taskservice_notify_tasks();

CREATE FUNCTION taskservice_notify_outbox() RETURNS trigger
    LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('taskservice_outbox', '');
    RETURN NULL;
END $$;

CREATE TRIGGER outbox_notify AFTER INSERT ON outbox
    FOR EACH STATEMENT EXECUTE FUNCTION taskservice_notify_outbox();

CREATE FUNCTION taskservice_notify_definitions() RETURNS trigger
    LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('taskservice_definitions', TG_TABLE_NAME);
    RETURN NULL;
END $$;

CREATE TRIGGER dispatchers_notify AFTER INSERT OR UPDATE OR DELETE ON dispatchers
    FOR EACH STATEMENT EXECUTE FUNCTION taskservice_notify_definitions();
CREATE TRIGGER dispatcher_actions_notify AFTER INSERT OR UPDATE OR DELETE ON dispatcher_actions
    FOR EACH STATEMENT EXECUTE FUNCTION taskservice_notify_definitions();
CREATE TRIGGER functions_notify AFTER INSERT OR UPDATE OR DELETE ON functions
    FOR EACH STATEMENT EXECUTE FUNCTION taskservice_notify_definitions();
