-- Candidates of the retention cleanup: sessions whose last active day is
-- old enough (or unknown). CONCURRENTLY: building it does not block turns;
-- that needs its own statement outside a transaction (metadata.toml). A
-- build that failed leaves an INVALID index of this name: drop it, then
-- migrate again.
CREATE INDEX CONCURRENTLY idx_sessions_active_on ON sessions (active_on);
