-- Stored scripts: the YAML source and the typed document parsed from it.
-- Enum columns are text with CHECK constraints spelled like the domain's
-- `as_str()` values, so a new variant is a one-line migration, not an
-- `ALTER TYPE ... ADD VALUE` (which cannot run inside a transaction).
CREATE TABLE scripts (
    id             uuid         PRIMARY KEY DEFAULT gen_random_uuid(),
    script_name    varchar(255) NOT NULL,
    script_type    text         NOT NULL,
    status         text         NOT NULL DEFAULT 'draft',
    script_content text         NOT NULL,
    -- Hex SHA-256 of script_content; keys the parsed-script cache.
    content_hash   text         NOT NULL,
    -- serde of heartrule_domain::ScriptDocument.
    parsed_content jsonb        NOT NULL,
    -- Only technique scripts have one; NULLs do not collide in UNIQUE.
    technique_id   text         NULL,
    version        varchar(50)  NOT NULL DEFAULT '1.0.0',
    author         text         NOT NULL DEFAULT '',
    description    text         NOT NULL DEFAULT '',
    tags           jsonb        NOT NULL DEFAULT '[]'::jsonb,
    created_at     timestamptz  NOT NULL DEFAULT now(),
    updated_at     timestamptz  NOT NULL DEFAULT now(),
    CONSTRAINT scripts_script_name_key UNIQUE (script_name),
    CONSTRAINT scripts_technique_id_key UNIQUE (technique_id),
    CONSTRAINT scripts_script_type_check
        CHECK (script_type IN ('session', 'technique', 'awareness')),
    CONSTRAINT scripts_status_check
        CHECK (status IN ('draft', 'published', 'archived')),
    CONSTRAINT scripts_tags_is_array CHECK (jsonb_typeof(tags) = 'array')
);

CREATE INDEX idx_scripts_type_status ON scripts (script_type, status);
-- The list is served newest first.
CREATE INDEX idx_scripts_created_at ON scripts (created_at DESC, id DESC);
