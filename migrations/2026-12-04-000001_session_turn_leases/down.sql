DELETE FROM failed_turns WHERE error_code = 'TURN_IN_PROGRESS';
ALTER TABLE failed_turns DROP CONSTRAINT failed_turns_error_code_check;
ALTER TABLE failed_turns ADD CONSTRAINT failed_turns_error_code_check CHECK (error_code IN (
    'SCRIPT_NOT_FOUND', 'SCRIPT_PARSE_ERROR', 'SCRIPT_VALIDATION_ERROR',
    'SESSION_NOT_FOUND', 'SESSION_EXECUTION_ERROR', 'ACTION_EXECUTION_ERROR',
    'LLM_SERVICE_ERROR', 'VARIABLE_EXTRACTION_ERROR', 'DATABASE_ERROR',
    'INTERNAL_SERVER_ERROR', 'CONFLICT'
));
ALTER TABLE sessions RESET (fillfactor);
ALTER TABLE sessions
    DROP CONSTRAINT sessions_lease_check,
    DROP COLUMN lease_expires_at,
    DROP COLUMN lease_owner;
