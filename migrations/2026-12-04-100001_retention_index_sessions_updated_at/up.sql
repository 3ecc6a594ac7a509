-- Sessions idle the longest first: the retention cleanup picks each batch
-- with ORDER BY updated_at LIMIT n
-- (without it every batch would scan the whole table).
-- CONCURRENTLY: building it does not block turns on a large table; that
-- needs its own statement outside a transaction (metadata.toml). A build
-- that failed leaves an INVALID index of this name: drop it, then migrate again.
CREATE INDEX CONCURRENTLY idx_sessions_updated_at ON sessions (updated_at);
