-- Variable snapshots: one row per variable a turn wrote, with its real
-- scope and the turn id. The identity id keeps the insertion order.
CREATE TABLE variables (
    id            bigint       GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    session_id    uuid         NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    turn_id       uuid         NOT NULL,
    variable_name varchar(255) NOT NULL,
    scope         text         NOT NULL,
    -- Phase or topic id for those scopes.
    scope_key     text         NULL,
    value         jsonb        NOT NULL,
    value_type    text         NOT NULL,
    source        varchar(255) NOT NULL,
    created_at    timestamptz  NOT NULL DEFAULT now(),
    CONSTRAINT variables_scope_check CHECK (scope IN ('global', 'session', 'phase', 'topic')),
    CONSTRAINT variables_value_type_check
        CHECK (value_type IN ('null', 'string', 'number', 'boolean', 'array', 'object'))
);

CREATE INDEX idx_variables_session_id ON variables (session_id);
