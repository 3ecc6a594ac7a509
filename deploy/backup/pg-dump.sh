#!/usr/bin/env bash
# Logical backup of the HeartRule database for small installs (no WAL
# archiving, no point-in-time recovery: you get the state at dump time).
#
#   pg-dump.sh --db-url postgres://postgres@127.0.0.1:5432/heartrule --out-dir /var/backups/heartrule [--keep 14]
#
# Without --db-url the URL comes from $DATABASE_URL (as the server's does).
# Writes, under --out-dir, one set per run named heartrule-<UTC stamp>:
#   .dump           pg_dump custom format (compressed; restore with pg-restore.sh)
#   .globals.sql    roles and their memberships (pg_dumpall --globals-only,
#                   without password hashes: set passwords again after a restore)
#   .manifest.json  migrations and exact row counts per table at dump time
#   .sha256         checksums of the three files above
# and deletes all but the newest --keep sets (default 14). A set is written
# under a temporary name and renamed when complete, so a crash never leaves a
# half-written dump that looks valid.
#
# The manifest and the dump see the same data: one read-only REPEATABLE READ
# transaction exports its snapshot, counts every table in it, and pg_dump
# runs with --snapshot on that snapshot. Writes continue meanwhile.
#
# Needs pg_dump/pg_dumpall/psql of the server's major version or newer (PG_BIN
# selects the folder, e.g. /usr/lib/postgresql/15/bin) and a role that can
# read every table (the database owner or a superuser).
set -euo pipefail

usage() { sed -n '2,24p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-2}"; }

DB_URL="${DATABASE_URL:-}" OUT_DIR="" KEEP=14
while [ $# -gt 0 ]; do
  case "$1" in
    --db-url) DB_URL="$2"; shift 2 ;;
    --out-dir) OUT_DIR="$2"; shift 2 ;;
    --keep) KEEP="$2"; shift 2 ;;
    -h|--help) usage 0 ;;
    *) echo "pg-dump.sh: unknown argument $1" >&2; usage ;;
  esac
done
[ -n "$DB_URL" ] && [ -n "$OUT_DIR" ] || usage
[[ "$KEEP" =~ ^[1-9][0-9]*$ ]] || { echo "pg-dump.sh: --keep must be a positive integer" >&2; exit 2; }

HERE="$(cd "$(dirname "$0")" && pwd)"
PG_BIN="${PG_BIN:-}"
bin() { if [ -n "$PG_BIN" ]; then echo "$PG_BIN/$1"; else echo "$1"; fi; }

mkdir -p "$OUT_DIR"
stamp="$(date -u +%Y%m%dT%H%M%SZ)"
base="$OUT_DIR/heartrule-$stamp"
work="$OUT_DIR/.heartrule-$stamp.partial"
mkdir "$work"
PSQL_PID=""
cleanup() {
  [ -n "$PSQL_PID" ] && kill "$PSQL_PID" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

# The snapshot lives as long as this psql session's transaction stays open.
coproc PSQL { "$(bin psql)" -X -q -At -v ON_ERROR_STOP=1 "$DB_URL" 2>&1; }
ask() { # one statement on the open session; prints its single output line
  printf '%s\n' "$1" >&"${PSQL[1]}"
  local line
  IFS= read -r -t 600 line <&"${PSQL[0]}" || { echo "pg-dump.sh: no answer from psql to: $1" >&2; exit 1; }
  case "$line" in ERROR:*|FATAL:*|psql:*) echo "pg-dump.sh: $line" >&2; exit 1 ;; esac
  printf '%s\n' "$line"
}
snapshot="$(ask "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; SELECT pg_export_snapshot();")"
ask "\\i '$HERE/manifest.sql'" >"$work/manifest.json"

"$(bin pg_dump)" --format=custom --compress=6 --snapshot="$snapshot" \
  --file="$work/dump" --dbname="$DB_URL"
"$(bin pg_dumpall)" --globals-only --no-role-passwords \
  --dbname="$DB_URL" --file="$work/globals.sql"

printf 'COMMIT;\n' >&"${PSQL[1]}"
exec {PSQL[1]}>&-
wait "$PSQL_PID"
PSQL_PID=""

# A dump that pg_restore cannot list is not a backup.
"$(bin pg_restore)" --list "$work/dump" >/dev/null

mv "$work/dump" "$base.dump"
mv "$work/globals.sql" "$base.globals.sql"
mv "$work/manifest.json" "$base.manifest.json"
(cd "$OUT_DIR" && sha256sum "heartrule-$stamp.dump" "heartrule-$stamp.globals.sql" \
  "heartrule-$stamp.manifest.json" >"heartrule-$stamp.sha256")

# Retention: the newest $KEEP complete sets (a set is complete once its
# .sha256 exists).
mapfile -t sets < <(cd "$OUT_DIR" && ls -1 heartrule-*.sha256 2>/dev/null | sort -r)
for old in "${sets[@]:$KEEP}"; do
  name="${old%.sha256}"
  rm -f "$OUT_DIR/$name".{dump,globals.sql,manifest.json,sha256}
done

echo "pg-dump.sh: wrote $base.dump ($(du -h "$base.dump" | cut -f1)), manifest $base.manifest.json"
