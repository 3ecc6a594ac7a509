-- compat: reviewed: the previous version never writes `files`, so its
-- version inserts (and the trigger's) take the default '[]', which the new
-- check admits; it never reads script_files or deprecated_at.
--
-- A project's draft holds files beside its session script (techniques,
-- prompt templates, conversation tests); publishing snapshots them into the
-- version. Only additions, so the previous server keeps working: a new
-- table, a defaulted column, a nullable column.
CREATE TABLE script_files (
    script_id  uuid        NOT NULL REFERENCES scripts (id) ON DELETE CASCADE,
    path       text        NOT NULL,
    file_type  text        NOT NULL,
    content    text        NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now(),
    updated_by text        NOT NULL DEFAULT '',
    PRIMARY KEY (script_id, path),
    CONSTRAINT script_files_path_length CHECK (char_length(path) BETWEEN 1 AND 255)
);

-- The version's files, serde of Vec<ProjectFile>; a version published
-- without files (every version the previous server wrote) has none.
ALTER TABLE script_versions
    ADD COLUMN files jsonb NOT NULL DEFAULT '[]'::jsonb,
    ADD CONSTRAINT script_versions_files_is_array CHECK (jsonb_typeof(files) = 'array');

-- A deprecated project starts no new sessions; NULL is active. A timestamp,
-- not a new `status` value the previous server could not read.
ALTER TABLE scripts ADD COLUMN deprecated_at timestamptz NULL;
