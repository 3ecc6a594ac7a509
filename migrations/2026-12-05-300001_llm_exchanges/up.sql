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

-- A replay reads another user's conversation, so it is audited: the audit
-- log admits the action `session.replay` on a target of type `session`.
-- compat: reviewed: the checks only widen; the previous version writes
-- none of the new values and every value it writes is still admitted.
ALTER TABLE audit_events
    DROP CONSTRAINT audit_events_action_check,
    ADD CONSTRAINT audit_events_action_check CHECK (action IN (
        'script.create', 'script.import', 'script.update', 'script.delete',
        'user.export', 'user.erase', 'session.replay'
    )),
    DROP CONSTRAINT audit_events_target_type_check,
    ADD CONSTRAINT audit_events_target_type_check
        CHECK (target_type IN ('script', 'user', 'session'));
