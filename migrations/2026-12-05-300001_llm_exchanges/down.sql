-- The audit records of replays stay (the log is insert-only): the narrower
-- checks apply to new rows only.
ALTER TABLE audit_events
    DROP CONSTRAINT audit_events_action_check,
    ADD CONSTRAINT audit_events_action_check CHECK (action IN (
        'script.create', 'script.import', 'script.update', 'script.delete',
        'user.export', 'user.erase'
    )) NOT VALID,
    DROP CONSTRAINT audit_events_target_type_check,
    ADD CONSTRAINT audit_events_target_type_check
        CHECK (target_type IN ('script', 'user')) NOT VALID;

DROP TABLE llm_exchanges;
