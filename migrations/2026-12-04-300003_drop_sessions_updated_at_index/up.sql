-- Replaced by idx_sessions_active_on: this index made every turn's commit a
-- non-HOT update. The previous version's cleanup still runs without it,
-- only by scanning. Outside a transaction so dropping it does not block turns.
DROP INDEX CONCURRENTLY IF EXISTS idx_sessions_updated_at;
