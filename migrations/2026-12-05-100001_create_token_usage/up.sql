-- compat: reviewed: a new table only; the previous version never reads it,
-- and its commits simply add no usage rows.
--
-- The tokens the LLM calls of committed turns used, per session and UTC
-- hour (a turn adds to its hour's row in its commit statement). Sums give a
-- session's total, a user's day and every user's hour, for the quotas and
-- the usage report. Deleted with the session.
CREATE TABLE token_usage (
    session_id        uuid         NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    hour              timestamptz  NOT NULL,
    user_id           varchar(255) NOT NULL,
    prompt_tokens     bigint       NOT NULL DEFAULT 0,
    completion_tokens bigint       NOT NULL DEFAULT 0,
    total_tokens      bigint       NOT NULL DEFAULT 0,
    llm_calls         bigint       NOT NULL DEFAULT 0,
    PRIMARY KEY (session_id, hour),
    CONSTRAINT token_usage_counts_check CHECK (
        prompt_tokens >= 0 AND completion_tokens >= 0 AND total_tokens >= 0 AND llm_calls >= 0
    ),
    CONSTRAINT token_usage_hour_check CHECK (date_trunc('hour', hour AT TIME ZONE 'UTC') = hour AT TIME ZONE 'UTC')
);

-- A user's day (quota check, usage report) and every user's hour (the
-- global budget).
CREATE INDEX idx_token_usage_user_hour ON token_usage (user_id, hour);
CREATE INDEX idx_token_usage_hour ON token_usage (hour);
