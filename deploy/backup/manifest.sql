-- The HeartRule backup manifest: what a restore of this backup must contain.
-- Run inside the transaction whose snapshot the backup captures (pg-dump.sh:
-- the snapshot pg_dump is given; pgbackrest-backup.sh: a transaction that
-- holds SHARE locks on every table while it creates the restore point), so
-- the counts are exact, not a race with live writes. Prints one JSON line.
--
-- Every table of the public schema is counted, including diesel's
-- __diesel_schema_migrations; query_to_xml runs each count in this
-- transaction's snapshot. The "known session" is the one with the most
-- messages (ties: lowest id); verify-restore.sh reads its history through the
-- server's HTTP API and compares it with the digest below.
SELECT json_build_object(
    'format', 'heartrule-backup-manifest/1',
    'taken_at', to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
    'database', current_database(),
    'server_version_num', current_setting('server_version_num')::int,
    'system_identifier', (SELECT system_identifier::text FROM pg_control_system()),
    'migrations', (SELECT coalesce(json_agg(version ORDER BY version), '[]'::json)
                     FROM __diesel_schema_migrations),
    'row_counts', (SELECT coalesce(json_object_agg(t.tablename, t.n ORDER BY t.tablename), '{}'::json)
                     FROM (SELECT tablename,
                                  (xpath('/row/n/text()',
                                         query_to_xml(format('SELECT count(*) AS n FROM %I.%I',
                                                             schemaname, tablename),
                                                      false, true, '')))[1]::text::bigint AS n
                             FROM pg_tables
                            WHERE schemaname = 'public') AS t),
    'known_session', (SELECT json_build_object(
                                 'id', k.session_id,
                                 'messages', k.n,
                                 'last_seq', k.last_seq,
                                 -- sha256 of "seq:role:content" lines in seq order.
                                 'digest', encode(sha256(convert_to(string_agg(
                                     m.seq || ':' || m.role || ':' || m.content, E'\n' ORDER BY m.seq),
                                     'UTF8')), 'hex'))
                         FROM (SELECT session_id, count(*) AS n, max(seq) AS last_seq
                                 FROM messages
                                GROUP BY session_id
                                ORDER BY count(*) DESC, session_id
                                LIMIT 1) AS k
                         JOIN messages m ON m.session_id = k.session_id
                        GROUP BY k.session_id, k.n, k.last_seq)
) AS manifest;
