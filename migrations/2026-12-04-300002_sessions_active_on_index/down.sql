DROP INDEX CONCURRENTLY IF EXISTS idx_sessions_active_on;
