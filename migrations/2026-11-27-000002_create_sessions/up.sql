-- One user walking one script. The engine state is split: status, position
-- and variables have their own columns (queryable, stored once) and
-- engine_state holds the rest of heartrule_domain::EngineState.
CREATE TABLE sessions (
    id               uuid         PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id          varchar(255) NOT NULL,
    script_id        uuid         NOT NULL REFERENCES scripts (id) ON DELETE RESTRICT,
    -- content_hash of the script version the session last ran.
    script_hash      text         NOT NULL,
    status           text         NOT NULL DEFAULT 'active',
    execution_status text         NOT NULL DEFAULT 'running',
    -- serde of heartrule_domain::Position.
    position         jsonb        NOT NULL,
    -- serde of heartrule_domain::VariableStore.
    variables        jsonb        NOT NULL DEFAULT '{}'::jsonb,
    -- serde of heartrule_domain::EngineState without status/position/variables.
    engine_state     jsonb        NOT NULL,
    turn_count       bigint       NOT NULL DEFAULT 0,
    -- seq of the last stored message; the next message gets last_message_seq + 1.
    last_message_seq bigint       NOT NULL DEFAULT 0,
    -- Error code of the last failed turn; cleared by the next committed turn.
    last_error       text         NULL,
    created_at       timestamptz  NOT NULL DEFAULT now(),
    updated_at       timestamptz  NOT NULL DEFAULT now(),
    completed_at     timestamptz  NULL,
    CONSTRAINT sessions_status_check
        CHECK (status IN ('active', 'paused', 'completed', 'failed')),
    CONSTRAINT sessions_execution_status_check
        CHECK (execution_status IN ('running', 'waiting_input', 'paused', 'completed', 'error')),
    CONSTRAINT sessions_turn_count_check CHECK (turn_count >= 0),
    CONSTRAINT sessions_last_message_seq_check CHECK (last_message_seq >= 0)
);

CREATE INDEX idx_sessions_user_created ON sessions (user_id, created_at);
CREATE INDEX idx_sessions_status ON sessions (status);
-- Backs the foreign key (script deletes would otherwise scan sessions).
CREATE INDEX idx_sessions_script_id ON sessions (script_id);
