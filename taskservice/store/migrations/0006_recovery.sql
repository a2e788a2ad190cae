-- Redrive of failed tasks, and the record of dead letters replayed into their source topic.

-- A redrive re-runs a failed task as a new task with source 'redrive' and the
-- idempotency key 'redrive:<failed task id>', so each failed task is redriven at most once.
ALTER TABLE tasks DROP CONSTRAINT tasks_source_check;
ALTER TABLE tasks ADD CONSTRAINT tasks_source_check
    CHECK (source IN ('event', 'api', 'schedule', 'retry', 'redrive'));

-- One row per source record that `taskservice dlq replay --to source` published again.
-- The key is the source record, not the dead letter, because ingest can dead-letter the
-- same source record twice (a crash between the dead letter and the offset commit).
-- A later replay of the same source record is skipped unless forced.
CREATE TABLE dead_letter_replays (
    source_topic            text NOT NULL,
    source_partition        integer NOT NULL,
    source_offset           bigint NOT NULL,
    -- The dead letter that was replayed most recently.
    dead_letter_topic       text NOT NULL,
    dead_letter_partition   integer NOT NULL,
    dead_letter_offset      bigint NOT NULL,
    -- Where the most recent replay was written in the source topic.
    replay_partition        integer NOT NULL,
    replay_offset           bigint NOT NULL,
    replay_count            integer NOT NULL DEFAULT 1,
    first_replayed_at       timestamptz NOT NULL DEFAULT now(),
    last_replayed_at        timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (source_topic, source_partition, source_offset)
);
