DROP INDEX CONCURRENTLY IF EXISTS idx_sessions_updated_at;
