ALTER TABLE scripts DROP COLUMN deprecated_at;
ALTER TABLE script_versions
    DROP CONSTRAINT script_versions_files_is_array,
    DROP COLUMN files;
DROP TABLE script_files;
