DROP INDEX CONCURRENTLY IF EXISTS idx_failed_turns_failed_at;
