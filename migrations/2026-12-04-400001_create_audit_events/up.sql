-- The audit log: who did what to which script or user, and when, with the
-- content hashes before and after. Rows are only ever inserted. An erasure
-- of a user keeps its own record and every earlier one: target_id is the
-- user id, and details hold counts and names, never conversation text or
-- variable values, so no row here belongs to the erased sessions.
CREATE TABLE audit_events (
    id            uuid        PRIMARY KEY,
    occurred_at   timestamptz NOT NULL,
    actor_subject text        NOT NULL,
    -- The actor's role names, e.g. ["admin"].
    actor_roles   jsonb       NOT NULL DEFAULT '[]'::jsonb,
    action        text        NOT NULL,
    target_type   text        NOT NULL,
    target_id     text        NOT NULL,
    before_hash   text        NULL,
    after_hash    text        NULL,
    details       jsonb       NOT NULL DEFAULT '{}'::jsonb,
    CONSTRAINT audit_events_action_check CHECK (action IN (
        'script.create', 'script.import', 'script.update', 'script.delete',
        'user.export', 'user.erase'
    )),
    CONSTRAINT audit_events_target_type_check CHECK (target_type IN ('script', 'user')),
    CONSTRAINT audit_events_actor_roles_is_array CHECK (jsonb_typeof(actor_roles) = 'array')
);

-- The list is served newest first, optionally by target or by actor.
CREATE INDEX idx_audit_events_occurred_at ON audit_events (occurred_at DESC, id DESC);
CREATE INDEX idx_audit_events_target ON audit_events (target_type, target_id, occurred_at DESC);
CREATE INDEX idx_audit_events_actor ON audit_events (actor_subject, occurred_at DESC);
