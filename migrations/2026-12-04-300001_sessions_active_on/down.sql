ALTER TABLE sessions RESET (fillfactor);
ALTER TABLE sessions DROP COLUMN IF EXISTS active_on;
