-- compat: reviewed: the previous version writes only the statuses it knows,
-- which the widened CHECK still allows, and never reads safety_deliveries.
-- It would refuse to load a session this version put in 'handoff' (an
-- unknown status is reported as corrupt data), which is what such a session
-- needs: its script must not run until a person has released it.
--
-- The crisis protocol pauses a session in 'handoff' until an editor or
-- admin (or the configured cooldown) releases it.
ALTER TABLE sessions DROP CONSTRAINT sessions_status_check;
ALTER TABLE sessions ADD CONSTRAINT sessions_status_check
    CHECK (status IN ('active', 'paused', 'completed', 'failed', 'handoff'));

-- Each attempt to deliver a safety alert to the on-call webhook: the alert
-- is the id of the turn that followed the protocol.
CREATE TABLE safety_deliveries (
    alert_id     uuid        NOT NULL,
    attempt      bigint      NOT NULL,
    session_id   uuid        NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    outcome      text        NOT NULL,
    http_status  bigint      NULL,
    error        text        NULL,
    attempted_at timestamptz NOT NULL,
    PRIMARY KEY (alert_id, attempt),
    CONSTRAINT safety_deliveries_outcome_check CHECK (outcome IN ('delivered', 'failed')),
    CONSTRAINT safety_deliveries_attempt_check CHECK (attempt >= 1)
);

CREATE INDEX idx_safety_deliveries_session ON safety_deliveries (session_id, attempted_at);
