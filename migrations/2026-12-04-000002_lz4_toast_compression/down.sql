-- Back to the server's default_toast_compression; values already stored
-- with lz4 stay readable (PostgreSQL records the method per value).
ALTER TABLE sessions
    ALTER COLUMN variables SET COMPRESSION DEFAULT,
    ALTER COLUMN engine_state SET COMPRESSION DEFAULT;
ALTER TABLE messages ALTER COLUMN metadata SET COMPRESSION DEFAULT;
ALTER TABLE idempotency_keys ALTER COLUMN response SET COMPRESSION DEFAULT;
