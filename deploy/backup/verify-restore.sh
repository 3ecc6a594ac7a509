#!/usr/bin/env bash
# Restores a HeartRule backup into a scratch PostgreSQL instance and proves
# it usable. Run it on a restore host (never against the production data
# directory); it needs the PostgreSQL server binaries of the backup's major
# version, pgbackrest (for pgBackRest backups), python3 and the heartrule binary.
#
# pgBackRest (default): restore to the verification mark of a manifest
# written by pgbackrest-backup.sh (default: the newest in --manifest-dir), or
# to --target-time:
#   verify-restore.sh --stanza heartrule [--config FILE | --config-path DIR]
#       [--manifest-dir DIR | --manifest FILE] [--target-time '2026-12-04 10:15:00+00' [--set LABEL]]
# pg_dump set written by pg-dump.sh:
#   verify-restore.sh --dump /var/backups/heartrule/heartrule-<stamp>.dump
# An instance already running (e.g. right after pg-restore.sh):
#   verify-restore.sh --check-only --db-url postgres://… [--manifest FILE]
# Common options:
#   --scratch DIR      work folder (created; must not exist) [mktemp under /var/tmp]
#   --port N           port of the scratch instance [a free one]
#   --pg-bin DIR       PostgreSQL binaries [/usr/lib/postgresql/<manifest major>/bin]
#   --server-bin PATH  heartrule binary [heartrule on PATH]
#   --config-dir DIR   HeartRule config folder (default.yaml, prompts/) [../../config]
#   --migrations-dir DIR  the release's migrations folder [../../migrations]
#   --pg-user USER     OS user that runs PostgreSQL when this runs as root [postgres]
#   --keep             leave the scratch instance running for inspection
#   --verify-repo      also run `pgbackrest verify` (reads the whole repository)
#
# Checks: (1) migrations equal the manifest's and this release's migrations
# folder; (2) row counts per table equal the manifest's exactly; (3) amcheck:
# every B-tree index (bt_index_check with heapallindexed) and every table's
# heap (verify_heapam); (4) the heartrule server started against the restored
# database (no migrations, no script import, mock LLM, no Redis) reads the
# manifest's known session through GET /api/sessions/{id}/messages, and the
# counts are unchanged afterwards. Without a manifest (--target-time alone,
# or --check-only alone) (2) is skipped and the known session is taken from
# the restored data. Exit status 0 only if every check passed; the restore
# time (RTO) is printed.
set -euo pipefail

usage() { sed -n '2,37p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-2}"; }
say() { printf '==> %s\n' "$*"; }
die() { printf 'verify-restore.sh: %s\n' "$*" >&2; exit 1; }

HERE="$(cd "$(dirname "$0")" && pwd)"
MODE=pgbackrest STANZA="" PGBR_CONFIG=() MANIFEST="" MANIFEST_DIR=/var/lib/pgbackrest/heartrule-manifests
TARGET_TIME="" SET="" DUMP="" DB_URL="" SCRATCH="" PORT="" PG_BIN="" SERVER_BIN=heartrule
CONFIG_DIR="$HERE/../../config" MIGRATIONS_DIR="$HERE/../../migrations" PG_USER=postgres KEEP=0 VERIFY_REPO=0
while [ $# -gt 0 ]; do
  case "$1" in
    --stanza) STANZA="$2"; shift 2 ;;
    --config) PGBR_CONFIG=("--config=$2"); shift 2 ;;
    --config-path) PGBR_CONFIG=("--config-path=$2"); shift 2 ;;
    --manifest) MANIFEST="$2"; shift 2 ;;
    --manifest-dir) MANIFEST_DIR="$2"; shift 2 ;;
    --target-time) TARGET_TIME="$2"; shift 2 ;;
    --set) SET="$2"; shift 2 ;;
    --dump) MODE=dump; DUMP="$2"; shift 2 ;;
    --check-only) MODE=check; shift ;;
    --db-url) DB_URL="$2"; shift 2 ;;
    --scratch) SCRATCH="$2"; shift 2 ;;
    --port) PORT="$2"; shift 2 ;;
    --pg-bin) PG_BIN="$2"; shift 2 ;;
    --server-bin) SERVER_BIN="$2"; shift 2 ;;
    --config-dir) CONFIG_DIR="$2"; shift 2 ;;
    --migrations-dir) MIGRATIONS_DIR="$2"; shift 2 ;;
    --pg-user) PG_USER="$2"; shift 2 ;;
    --keep) KEEP=1; shift ;;
    --verify-repo) VERIFY_REPO=1; shift ;;
    -h|--help) usage 0 ;;
    *) echo "verify-restore.sh: unknown argument $1" >&2; usage ;;
  esac
done

checks() { python3 "$HERE/restore_checks.py" "$@"; }
# PostgreSQL refuses to run as root; so does the scratch instance's owner.
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u "$PG_USER" -- "$@"; else "$@"; fi; }
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
now_ms() { date +%s%3N; }

# --- what to restore ------------------------------------------------------
case "$MODE" in
  pgbackrest)
    [ -n "$STANZA" ] || die "--stanza is required (or --dump / --check-only)"
    if [ -z "$MANIFEST" ] && [ -z "$TARGET_TIME" ]; then
      MANIFEST="$(ls -1 "$MANIFEST_DIR"/*.manifest.json 2>/dev/null | sort | tail -1 || true)"
      [ -n "$MANIFEST" ] || die "no manifest in $MANIFEST_DIR (run pgbackrest-backup.sh, or give --target-time)"
    fi ;;
  dump)
    [ -f "$DUMP" ] || die "no dump at $DUMP"
    [ -n "$MANIFEST" ] || MANIFEST="${DUMP%.dump}.manifest.json"
    [ -f "$MANIFEST" ] || die "no manifest $MANIFEST next to the dump" ;;
  check)
    [ -n "$DB_URL" ] || die "--check-only needs --db-url" ;;
esac
[ -z "$MANIFEST" ] || [ -f "$MANIFEST" ] || die "no manifest at $MANIFEST"
[ -z "$MIGRATIONS_DIR" ] || [ -d "$MIGRATIONS_DIR" ] || die "no migrations folder at $MIGRATIONS_DIR"
[ -d "$CONFIG_DIR" ] || die "no HeartRule config folder at $CONFIG_DIR"
CONFIG_DIR="$(cd "$CONFIG_DIR" && pwd)"
command -v "$SERVER_BIN" >/dev/null || die "heartrule binary not found: $SERVER_BIN (--server-bin)"

DB_NAME=heartrule
if [ -n "$MANIFEST" ]; then
  say "manifest $MANIFEST (taken $(checks field "$MANIFEST" taken_at))"
  DB_NAME="$(checks field "$MANIFEST" database)"
  if [ -z "$PG_BIN" ]; then
    PG_BIN="/usr/lib/postgresql/$(( $(checks field "$MANIFEST" server_version_num) / 10000 ))/bin"
  fi
fi
if [ "$MODE" != check ]; then
  [ -n "$PG_BIN" ] || PG_BIN="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)"
  [ -x "$PG_BIN/postgres" ] || die "no PostgreSQL server binaries in $PG_BIN (--pg-bin)"
fi
psql_bin() { if [ -n "$PG_BIN" ] && [ -x "$PG_BIN/psql" ]; then echo "$PG_BIN/psql"; else echo psql; fi; }
sql() { "$(psql_bin)" -X -q -At -v ON_ERROR_STOP=1 -d "$DB_URL" "$@"; }

# --- scratch instance -----------------------------------------------------
WORK="$(mktemp -d /tmp/heartrule-verify.XXXXXX)"
SERVER_PID="" STARTED=0
cleanup() {
  local rc=$?
  if [ -n "$SERVER_PID" ]; then kill "$SERVER_PID" 2>/dev/null || true; wait "$SERVER_PID" 2>/dev/null || true; fi
  if [ "$STARTED" = 1 ] && [ "$KEEP" = 0 ]; then
    as_pg "$PG_BIN/pg_ctl" -D "$SCRATCH/data" -m immediate stop >/dev/null 2>&1 || true
  fi
  if [ "$KEEP" = 0 ] && [ -n "$SCRATCH" ] && [ "$MODE" != check ]; then rm -rf "$SCRATCH"; fi
  if [ "$rc" != 0 ] && [ -f "$WORK/server.log" ]; then
    echo "--- heartrule server log (last 30 lines)" >&2; tail -30 "$WORK/server.log" >&2
  fi
  rm -rf "$WORK"
  if [ "$KEEP" = 1 ] && [ "$STARTED" = 1 ]; then
    echo "kept: scratch instance $SCRATCH/data on port $PORT ($DB_URL); stop it with: $PG_BIN/pg_ctl -D $SCRATCH/data stop"
  fi
  exit "$rc"
}
trap cleanup EXIT

start_scratch() {
  # Our own settings over whatever came with the data directory: loopback
  # only, trust on loopback (the copy lives for minutes on a restore host),
  # never archiving into the production repository.
  [ -f "$SCRATCH/data/postgresql.conf" ] || as_pg touch "$SCRATCH/data/postgresql.conf"
  printf 'local all all trust\nhost all all 127.0.0.1/32 trust\n' | as_pg tee "$SCRATCH/hba.conf" >/dev/null
  as_pg touch "$SCRATCH/ident.conf"
  local opts="-c port=$PORT -c listen_addresses=127.0.0.1 -c unix_socket_directories=$SCRATCH/run"
  opts+=" -c hba_file=$SCRATCH/hba.conf -c ident_file=$SCRATCH/ident.conf -c archive_mode=off"
  as_pg "$PG_BIN/pg_ctl" -D "$SCRATCH/data" -l "$SCRATCH/postgres.log" -w -t 3600 -o "$opts" start >/dev/null \
    || { tail -30 "$SCRATCH/postgres.log" >&2; die "the scratch instance did not start"; }
  STARTED=1
}

wait_promoted() {
  # pg_ctl -w returns once read-only connections are accepted; a
  # point-in-time recovery is done when the instance left recovery.
  local state=""
  for _ in $(seq 1 7200); do
    state="$("$(psql_bin)" -X -q -At -d "postgres://postgres@127.0.0.1:$PORT/postgres" \
               -c 'SELECT pg_is_in_recovery()' 2>/dev/null || true)"
    [ "$state" = f ] && return 0
    if ! as_pg "$PG_BIN/pg_ctl" -D "$SCRATCH/data" status >/dev/null 2>&1; then
      tail -30 "$SCRATCH/postgres.log" >&2
      die "the scratch instance stopped during recovery (target not reached?)"
    fi
    sleep 0.5
  done
  die "the scratch instance is still in recovery after an hour"
}

if [ "$MODE" != check ]; then
  [ -n "$SCRATCH" ] || SCRATCH="$(mktemp -u /var/tmp/heartrule-verify.XXXXXX)"
  [ ! -e "$SCRATCH" ] || die "--scratch $SCRATCH exists; give a new folder"
  mkdir -p "$SCRATCH/run"
  [ "$(id -u)" != 0 ] || chown -R "$PG_USER:" "$SCRATCH"
  chmod 700 "$SCRATCH"
  [ -n "$PORT" ] || PORT="$(free_port)"
  DB_URL="postgres://postgres@127.0.0.1:$PORT/$DB_NAME"
  t0="$(now_ms)"
  if [ "$MODE" = pgbackrest ]; then
    target=()
    if [ -n "$TARGET_TIME" ]; then
      target=(--type=time "--target=$TARGET_TIME")
      say "restoring stanza $STANZA to the time $TARGET_TIME"
    else
      target=(--type=name "--target=$(checks field "$MANIFEST" restore_point name)")
      [ -n "$SET" ] || SET="$(checks field "$MANIFEST" backup_label)"
      say "restoring stanza $STANZA backup $SET to its verification mark"
    fi
    [ -z "$SET" ] || target+=("--set=$SET")
    as_pg pgbackrest "${PGBR_CONFIG[@]}" --stanza="$STANZA" restore \
      --pg1-path="$SCRATCH/data" --tablespace-map-all="$SCRATCH/tablespaces" \
      "${target[@]}" --target-action=promote --archive-mode=off \
      --log-level-console=warn
    start_scratch
    wait_promoted
  else
    say "restoring $DUMP into a new cluster"
    as_pg "$PG_BIN/initdb" -D "$SCRATCH/data" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 >/dev/null
    start_scratch
    "$(psql_bin)" -X -q -v ON_ERROR_STOP=1 -d "postgres://postgres@127.0.0.1:$PORT/postgres" \
      -c "CREATE DATABASE \"$DB_NAME\""
    PG_BIN="$PG_BIN" "$HERE/pg-restore.sh" --dump "$DUMP" --db-url "$DB_URL" --globals
  fi
  restore_ms=$(( $(now_ms) - t0 ))
  say "restored and open for writes in $((restore_ms / 1000)).$(printf '%03d' $((restore_ms % 1000)))s (RTO of this restore)"
fi

if [ "$VERIFY_REPO" = 1 ]; then
  [ "$MODE" = pgbackrest ] || die "--verify-repo needs a pgBackRest restore (--stanza)"
  say "pgbackrest verify (every backup file and WAL segment against its checksum)"
  as_pg pgbackrest "${PGBR_CONFIG[@]}" --stanza="$STANZA" verify --output=text --verbose \
    --log-level-console=warn >"$WORK/verify.out" 2>&1 || { cat "$WORK/verify.out" >&2; die "pgbackrest verify failed"; }
  # pgBackRest 2.45 exits 0 even when it finds invalid files: the status
  # lines are the verdict.
  if ! grep -qx 'status: ok' "$WORK/verify.out" || grep -Eq 'status: (error|invalid)' "$WORK/verify.out"; then
    cat "$WORK/verify.out" >&2; die "pgbackrest verify reports an invalid repository"
  fi
  echo "ok: pgbackrest verify: $(grep -c 'status: valid' "$WORK/verify.out") valid backup(s), WAL archive valid"
fi

# --- checks ---------------------------------------------------------------
say "checking $DB_URL"
sql -c "SELECT json_agg(version ORDER BY version) FROM __diesel_schema_migrations" >"$WORK/migrations.json"
checks migrations --restored "$WORK/migrations.json" ${MANIFEST:+--manifest "$MANIFEST"} \
  ${MIGRATIONS_DIR:+--migrations-dir "$MIGRATIONS_DIR"}

sql -f "$HERE/manifest.sql" >"$WORK/restored.json"
EXPECT="$WORK/restored.json"
if [ -n "$MANIFEST" ]; then
  checks counts --manifest "$MANIFEST" --restored "$WORK/restored.json"
  EXPECT="$MANIFEST"
else
  say "SKIPPED row counts: no manifest describes this point in time"
fi

say "amcheck"
had_amcheck="$(sql -c "SELECT count(*) FROM pg_extension WHERE extname = 'amcheck'")"
sql -c "CREATE EXTENSION IF NOT EXISTS amcheck"
# bt_index_check raises an error on the first inconsistency; heapallindexed
# also proves every heap tuple is in the index. verify_heapam returns one row
# per corruption found.
if ! sql <<'SQL'
SELECT format('ok: bt_index_check(heapallindexed) passed on %s B-tree indexes (%s in schema public)',
              count(*), count(*) FILTER (WHERE n.nspname = 'public'))
  FROM pg_index i
  JOIN pg_class c ON c.oid = i.indexrelid
  JOIN pg_am a ON a.oid = c.relam AND a.amname = 'btree'
  JOIN pg_namespace n ON n.oid = c.relnamespace
  CROSS JOIN LATERAL bt_index_check(c.oid, true) AS checked
 WHERE i.indisvalid AND i.indisready AND c.relpersistence <> 't';
SQL
then
  die "amcheck: bt_index_check failed (the error above names the index)"
fi
corrupt="$(sql <<'SQL'
SELECT coalesce(string_agg(format('%s: block %s offset %s: %s', c.oid::regclass, v.blkno, v.offnum, v.msg), E'\n'), '')
  FROM pg_class c
  CROSS JOIN LATERAL verify_heapam(c.oid) AS v
 WHERE c.relkind IN ('r', 'm', 't') AND c.relpersistence <> 't';
SQL
)"
[ -z "$corrupt" ] || die "verify_heapam found corruption:
$corrupt"
echo "ok: verify_heapam found no corruption in $(sql -c "SELECT count(*) FROM pg_class WHERE relkind IN ('r', 'm', 't') AND relpersistence <> 't'") heaps"
# Leave an instance we did not create as we found it.
[ "$had_amcheck" != 0 ] || sql -c "DROP EXTENSION amcheck"

say "heartrule server against the restored database"
mkdir -p "$WORK/no-scripts"
API_PORT_SERVER="$(free_port)"
# cwd is the empty work folder so no .env is read; nothing the server would
# write at start-up (migrations, example scripts) runs.
(cd "$WORK" && exec env -u REDIS_URL -u HEARTRULE__REDIS__URL \
  DATABASE_URL="$DB_URL" LLM_PROVIDER=mock API_HOST=127.0.0.1 API_PORT="$API_PORT_SERVER" \
  HEARTRULE_CONFIG_DIR="$CONFIG_DIR" HEARTRULE__ENGINE__PROMPTS_DIR="$CONFIG_DIR/prompts" \
  HEARTRULE__DATABASE__RUN_MIGRATIONS=false HEARTRULE__SCRIPTS__PRELOAD_DIR="$WORK/no-scripts" \
  HEARTRULE__TELEMETRY__TRACES__ENABLED=false \
  "$SERVER_BIN" serve >"$WORK/server.log" 2>&1) &
SERVER_PID=$!
base="http://127.0.0.1:$API_PORT_SERVER"
ready=0
for _ in $(seq 1 120); do
  kill -0 "$SERVER_PID" 2>/dev/null || die "the heartrule server exited at start-up"
  if curl -fsS -o /dev/null "$base/ready" 2>/dev/null; then ready=1; break; fi
  sleep 0.5
done
[ "$ready" = 1 ] || die "the heartrule server did not become ready in 60s"
checks history --base-url "$base" --expect "$EXPECT"
kill "$SERVER_PID"; wait "$SERVER_PID" 2>/dev/null || true; SERVER_PID=""

# Reading must not have written (the row counts are the manifest's still).
sql -f "$HERE/manifest.sql" >"$WORK/after.json"
checks counts --manifest "$WORK/restored.json" --restored "$WORK/after.json" >/dev/null \
  || die "the server changed row counts while reading"
say "verify-restore: all checks passed${restore_ms:+ (restore ${restore_ms} ms)}"
