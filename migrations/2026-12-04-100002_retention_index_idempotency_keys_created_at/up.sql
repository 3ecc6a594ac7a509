-- Expired idempotency keys, found by age for the retention cleanup's batches
-- (without it every batch would scan the whole table).
-- CONCURRENTLY: building it does not block turns on a large table; that
-- needs its own statement outside a transaction (metadata.toml). A build
-- that failed leaves an INVALID index of this name: drop it, then migrate again.
CREATE INDEX CONCURRENTLY idx_idempotency_keys_created_at ON idempotency_keys (created_at);
