-- A script becomes a project: a mutable draft and immutable published
-- versions, with `current_version` naming the one new sessions start on. The
-- scripts row keeps the current version's content in its old columns
-- (script_content, content_hash, parsed_content), so the previous server
-- reads and writes scripts as before; a trigger turns each of its content
-- writes into a new version, so no content goes unrecorded in a mixed
-- deployment. Only additions: new table, nullable or defaulted columns.
CREATE TABLE script_versions (
    -- Deferred: a new script's first version is inserted before its row, so
    -- the trigger below finds it and leaves it alone.
    script_id      uuid        NOT NULL REFERENCES scripts (id) ON DELETE CASCADE
                               DEFERRABLE INITIALLY DEFERRED,
    number         integer     NOT NULL,
    script_content text        NOT NULL,
    -- Hex SHA-256 of script_content: what a session started on it records
    -- in sessions.script_hash.
    content_hash   text        NOT NULL,
    parsed_content jsonb       NOT NULL,
    -- Subject of the actor who published it.
    author         text        NOT NULL DEFAULT '',
    note           text        NOT NULL DEFAULT '',
    -- Compatible-mode load warnings, serde of Vec<LoadWarning>.
    warnings       jsonb       NOT NULL DEFAULT '[]'::jsonb,
    created_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (script_id, number),
    CONSTRAINT script_versions_number_check CHECK (number >= 1),
    CONSTRAINT script_versions_warnings_is_array CHECK (jsonb_typeof(warnings) = 'array')
);

-- A running session loads its version by content hash.
CREATE INDEX idx_script_versions_hash ON script_versions (script_id, content_hash);

ALTER TABLE scripts
    ADD COLUMN current_version integer NULL,
    ADD COLUMN draft_content text NULL,
    ADD COLUMN draft_revision bigint NOT NULL DEFAULT 0,
    ADD COLUMN draft_updated_at timestamptz NULL,
    ADD COLUMN draft_updated_by text NULL;

-- Every existing script's content is its version 1.
INSERT INTO script_versions
    (script_id, number, script_content, content_hash, parsed_content, author, note, created_at)
SELECT id, 1, script_content, content_hash, parsed_content, author, 'migrated', updated_at
FROM scripts;
UPDATE scripts SET current_version = 1;

-- A content write that names no stored version with that content (an
-- insert or update by the previous server, which knows nothing of
-- versions) is recorded as the next version and made current.
CREATE FUNCTION scripts_record_version() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    next_number integer;
BEGIN
    IF NEW.current_version IS NOT NULL AND EXISTS (
        SELECT 1 FROM script_versions
        WHERE script_id = NEW.id
          AND number = NEW.current_version
          AND content_hash = NEW.content_hash
    ) THEN
        RETURN NULL;
    END IF;
    SELECT coalesce(max(number), 0) + 1 INTO next_number
    FROM script_versions WHERE script_id = NEW.id;
    INSERT INTO script_versions
        (script_id, number, script_content, content_hash, parsed_content, author, note, created_at)
    VALUES (NEW.id, next_number, NEW.script_content, NEW.content_hash, NEW.parsed_content,
            NEW.author, 'written without a version', NEW.updated_at);
    UPDATE scripts SET current_version = next_number WHERE id = NEW.id;
    RETURN NULL;
END
$$;

CREATE TRIGGER scripts_record_version
    AFTER INSERT OR UPDATE OF content_hash ON scripts
    FOR EACH ROW EXECUTE FUNCTION scripts_record_version();
