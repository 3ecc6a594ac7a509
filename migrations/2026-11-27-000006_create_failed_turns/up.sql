-- Turns that failed (LLM down, timeout, …): nothing of them was applied,
-- but the user's words and the error are kept so the client can retry.
CREATE TABLE failed_turns (
    id            uuid        PRIMARY KEY,
    session_id    uuid        NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    user_input    text        NULL,
    error_code    text        NOT NULL,
    error_message text        NOT NULL,
    position      jsonb       NOT NULL,
    failed_at     timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT failed_turns_error_code_check CHECK (error_code IN (
        'SCRIPT_NOT_FOUND', 'SCRIPT_PARSE_ERROR', 'SCRIPT_VALIDATION_ERROR',
        'SESSION_NOT_FOUND', 'SESSION_EXECUTION_ERROR', 'ACTION_EXECUTION_ERROR',
        'LLM_SERVICE_ERROR', 'VARIABLE_EXTRACTION_ERROR', 'DATABASE_ERROR',
        'INTERNAL_SERVER_ERROR', 'CONFLICT'
    ))
);

CREATE INDEX idx_failed_turns_session_id ON failed_turns (session_id, failed_at);
