-- Every turn rewrites its session's state documents (variables, engine
-- state: several kB each once a conversation has run a while) and stores a
-- reply's metadata and, with an Idempotency-Key, the whole response. Values
-- over ~2 kB are compressed; lz4 does that several times faster than the
-- default pglz (measured: ~0.25 ms less PostgreSQL time per turn at 20
-- turns of state). Only new values use it; nothing is rewritten, and the
-- change is a catalogue update that both the previous and this version of
-- the server run against. A server built without lz4 keeps pglz: the
-- migration then changes nothing and says so.
DO $$
BEGIN
    ALTER TABLE sessions
        ALTER COLUMN variables SET COMPRESSION lz4,
        ALTER COLUMN engine_state SET COMPRESSION lz4;
    ALTER TABLE messages ALTER COLUMN metadata SET COMPRESSION lz4;
    ALTER TABLE idempotency_keys ALTER COLUMN response SET COMPRESSION lz4;
EXCEPTION WHEN feature_not_supported THEN
    RAISE NOTICE 'this PostgreSQL server has no lz4; state documents stay compressed with pglz';
END
$$;
