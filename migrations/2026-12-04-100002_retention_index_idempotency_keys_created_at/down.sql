DROP INDEX CONCURRENTLY IF EXISTS idx_idempotency_keys_created_at;
