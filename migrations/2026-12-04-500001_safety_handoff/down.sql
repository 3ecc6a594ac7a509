DROP TABLE safety_deliveries;
UPDATE sessions SET status = 'paused' WHERE status = 'handoff';
ALTER TABLE sessions DROP CONSTRAINT sessions_status_check;
ALTER TABLE sessions ADD CONSTRAINT sessions_status_check
    CHECK (status IN ('active', 'paused', 'completed', 'failed'));
