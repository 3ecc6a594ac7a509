-- Conversation messages, ordered by a per-session seq (1, 2, 3, …) instead
-- of a timestamp, so ordering never depends on clocks.
CREATE TABLE messages (
    id          uuid         PRIMARY KEY DEFAULT gen_random_uuid(),
    session_id  uuid         NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    seq         bigint       NOT NULL,
    turn_id     uuid         NOT NULL,
    role        text         NOT NULL,
    content     text         NOT NULL,
    action_id   varchar(255) NULL,
    action_type text         NULL,
    metadata    jsonb        NOT NULL DEFAULT '{}'::jsonb,
    created_at  timestamptz  NOT NULL DEFAULT now(),
    -- Also the index history reads use (ORDER BY seq DESC LIMIT n).
    CONSTRAINT messages_session_seq_key UNIQUE (session_id, seq),
    CONSTRAINT messages_seq_check CHECK (seq >= 1),
    CONSTRAINT messages_role_check CHECK (role IN ('user', 'assistant', 'system')),
    CONSTRAINT messages_action_type_check
        CHECK (action_type IS NULL OR action_type IN ('ai_say', 'ai_ask', 'ai_think', 'use_skill'))
);
