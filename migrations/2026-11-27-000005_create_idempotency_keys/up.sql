-- The response of each turn sent with an Idempotency-Key, replayed when the
-- same key comes again; written in the turn's own transaction.
CREATE TABLE idempotency_keys (
    session_id   uuid        NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    idem_key     text        NOT NULL,
    -- Hash of the request body, so a reused key with another body is caught.
    request_hash text        NOT NULL,
    response     jsonb       NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (session_id, idem_key)
);
