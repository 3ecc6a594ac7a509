-- compat: reviewed: a new table only; the previous version never reads it,
-- and its commits simply record no exchanges.
--
-- The LLM exchanges of committed turns, written in the turn's commit
-- statement: per call the hash of the exact prompt and the response, so a
-- replay of the session against another script version reuses the response
-- wherever the prompt is unchanged. The prompt text only where content
-- capture is allowed (NULL otherwise). Deleted with the session.
CREATE TABLE llm_exchanges (
    session_id  uuid        NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    -- The turn's number in the session: 1 for the opening turn, then the
    -- session's turn_count after each committed turn.
    turn_number bigint      NOT NULL,
    -- The call's place among the turn's calls, from 0.
    call_index  integer     NOT NULL,
    turn_id     uuid        NOT NULL,
    action_id   text        NOT NULL,
    purpose     text        NOT NULL,
    -- Hex SHA-256 of the purpose, sampling settings and exact prompt.
    prompt_hash text        NOT NULL,
    prompt      text        NULL,
    response    text        NOT NULL,
    -- The clock reading the turn ran with.
    created_at  timestamptz NOT NULL,
    PRIMARY KEY (session_id, turn_number, call_index),
    CONSTRAINT llm_exchanges_numbers_check CHECK (turn_number >= 1 AND call_index >= 0)
);
