-- compat: reviewed: the new lease columns are nullable and NULL together,
-- which is what the previous version writes by not naming them, and the
-- failed_turns CHECK only gains TURN_IN_PROGRESS. The previous version's
-- turns lock the row; a lease claim waits for that lock, and either side's
-- commit is fenced by turn_count, so mixed versions never apply a turn twice.
-- .ci/checks/47-upgrade-compat.sh runs the previous version on this schema.
-- A turn no longer holds a row lock (and a pooled connection) while the LLM
-- thinks: it claims a lease on the session instead. lease_owner is the id of
-- the running turn and lease_expires_at when a crashed owner's claim lapses;
-- a commit applies only while its turn still owns the lease (the fence).
ALTER TABLE sessions
    ADD COLUMN lease_owner      uuid        NULL,
    ADD COLUMN lease_expires_at timestamptz NULL,
    ADD CONSTRAINT sessions_lease_check
        CHECK ((lease_owner IS NULL) = (lease_expires_at IS NULL));

-- A turn whose commit lost its lease is recorded with the user's words.
ALTER TABLE failed_turns DROP CONSTRAINT failed_turns_error_code_check;
ALTER TABLE failed_turns ADD CONSTRAINT failed_turns_error_code_check CHECK (error_code IN (
    'SCRIPT_NOT_FOUND', 'SCRIPT_PARSE_ERROR', 'SCRIPT_VALIDATION_ERROR',
    'SESSION_NOT_FOUND', 'SESSION_EXECUTION_ERROR', 'ACTION_EXECUTION_ERROR',
    'LLM_SERVICE_ERROR', 'VARIABLE_EXTRACTION_ERROR', 'DATABASE_ERROR',
    'INTERNAL_SERVER_ERROR', 'CONFLICT', 'TURN_IN_PROGRESS'
));

-- Every turn updates its session row twice (the claim, then the commit).
-- Free space on each page lets PostgreSQL keep the new row versions on the
-- same page as heap-only tuples, without touching the four indexes.
ALTER TABLE sessions SET (fillfactor = 70);
