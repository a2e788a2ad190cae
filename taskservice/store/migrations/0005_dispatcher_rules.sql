-- Content filters and transition conditions on dispatchers; input mapping, key
-- expressions, relative delay and priority on task actions.

ALTER TABLE dispatchers
    ADD COLUMN filter jsonb,
    ADD COLUMN transition jsonb;

ALTER TABLE dispatcher_actions
    ADD COLUMN input jsonb,
    ADD COLUMN include_event boolean,
    ADD COLUMN deduplication_key text,
    ADD COLUMN concurrency_key text,
    ADD COLUMN delay_s double precision CHECK (delay_s IS NULL OR delay_s >= 0),
    ADD COLUMN priority bigint,
    ADD CHECK (delay_s IS NULL OR start_timestamp IS NULL);
