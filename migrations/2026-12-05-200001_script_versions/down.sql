DROP TRIGGER scripts_record_version ON scripts;
DROP FUNCTION scripts_record_version();
ALTER TABLE scripts
    DROP COLUMN current_version,
    DROP COLUMN draft_content,
    DROP COLUMN draft_revision,
    DROP COLUMN draft_updated_at,
    DROP COLUMN draft_updated_by;
DROP TABLE script_versions;
