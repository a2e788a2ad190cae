-- Schedules: interval and cron schedules that create tasks at their fire times.
--
-- Exactly one task per (schedule, fire time): the scheduler inserts each task with the
-- idempotency key 'schedule:<schedule id>:<fire time as ISO-8601 UTC with milliseconds>',
-- so a second insert of the same fire time, from any replica, is a no-op. Replicas
-- advance next_timestamp with a compare-and-set on its old value inside the transaction
-- that inserts the tasks, so no leader is needed.

CREATE TABLE schedules (
    id                          text PRIMARY KEY,
    function_name               text NOT NULL,
    -- Interval schedules: fire times are start_timestamp + k * interval_s, k = 0, 1, 2, …
    interval_s                  bigint CHECK (interval_s > 0),
    -- Cron schedules: a five-field expression, read as wall-clock time in time_zone.
    cron_expression             text,
    -- IANA time zone name; cron schedules only. Interval schedules count real seconds.
    time_zone                   text NOT NULL DEFAULT 'UTC',
    data                        jsonb NOT NULL DEFAULT '{}',
    tags                        text[] NOT NULL DEFAULT '{}',
    -- NULL: each task takes its function's defaultPriority, else 0.
    priority                    bigint,
    -- No fire time lies before this instant.
    start_timestamp             timestamptz NOT NULL DEFAULT now(),
    -- The earliest fire time not yet handled; fire times are UTC instants.
    next_timestamp              timestamptz NOT NULL,
    -- What happens to fire times missed while no scheduler ran or the schedule was paused:
    -- 'skip' drops them, 'latest' runs the most recent one, 'all' runs the most recent
    -- catch_up_max of them.
    catch_up                    text NOT NULL DEFAULT 'latest' CHECK (catch_up IN ('skip', 'latest', 'all')),
    catch_up_max                integer NOT NULL DEFAULT 100 CHECK (catch_up_max BETWEEN 1 AND 10000),
    paused                      boolean NOT NULL DEFAULT false,
    paused_timestamp            timestamptz,
    -- The most recent fire time that created a task, and that task.
    last_fire_timestamp         timestamptz,
    last_task_id                text,
    created_by_user_id          text,
    created_by_application_id   text,
    creation_timestamp          timestamptz NOT NULL DEFAULT now(),
    update_timestamp            timestamptz NOT NULL DEFAULT now(),
    CHECK (num_nonnulls(interval_s, cron_expression) = 1)
);

-- The scheduler's claim query walks this index from the earliest due schedule.
CREATE INDEX schedules_due ON schedules (next_timestamp) WHERE NOT paused;

-- Wake sleeping schedulers when a schedule is created, deleted, paused, resumed or
-- retimed. Advancing next_timestamp after a fire does not notify, so a fire does not
-- wake every replica.
CREATE FUNCTION taskservice_notify_schedules() RETURNS trigger
    LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('taskservice_schedules', '');
    RETURN NULL;
END $$;

CREATE TRIGGER schedules_notify_insert_delete AFTER INSERT OR DELETE ON schedules
    FOR EACH STATEMENT EXECUTE FUNCTION taskservice_notify_schedules();
CREATE TRIGGER schedules_notify_update
    AFTER UPDATE OF paused, interval_s, cron_expression, time_zone, start_timestamp, catch_up
    ON schedules
    FOR EACH STATEMENT EXECUTE FUNCTION taskservice_notify_schedules();
