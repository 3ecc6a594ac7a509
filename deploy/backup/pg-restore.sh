#!/usr/bin/env bash
# Restores a dump written by pg-dump.sh into an empty database.
#
#   pg-restore.sh --dump /var/backups/heartrule/heartrule-20261204T010000Z.dump \
#                 --db-url postgres://postgres@127.0.0.1:5432/heartrule [--globals] [--no-owner]
#
# - Checks the set's .sha256 first: a corrupt or truncated dump is refused.
# - Refuses a target database that already has tables in its public schema
#   (restore into a freshly created database: `createdb heartrule`), so a
#   mistyped URL never merges a backup into live data.
# - --globals first applies the set's roles (.globals.sql) through the
#   target server's `postgres` database; roles that exist already are
#   reported by psql and skipped. Passwords are not in the backup.
# - --no-owner makes the connecting role own everything (restoring into a
#   server where the original owner role does not exist).
# - Restores in one transaction (all or nothing), then ANALYZEs, since
#   planner statistics are not part of a dump.
# Then check the result: verify-restore.sh --check-only --db-url … --manifest <set>.manifest.json
set -euo pipefail

usage() { sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-2}"; }

DUMP="" DB_URL="" GLOBALS=0 NO_OWNER=()
while [ $# -gt 0 ]; do
  case "$1" in
    --dump) DUMP="$2"; shift 2 ;;
    --db-url) DB_URL="$2"; shift 2 ;;
    --globals) GLOBALS=1; shift ;;
    --no-owner) NO_OWNER=(--no-owner); shift ;;
    -h|--help) usage 0 ;;
    *) echo "pg-restore.sh: unknown argument $1" >&2; usage ;;
  esac
done
[ -n "$DUMP" ] && [ -n "$DB_URL" ] || usage
[ -f "$DUMP" ] || { echo "pg-restore.sh: no dump at $DUMP" >&2; exit 1; }

PG_BIN="${PG_BIN:-}"
bin() { if [ -n "$PG_BIN" ]; then echo "$PG_BIN/$1"; else echo "$1"; fi; }
psql_at() { "$(bin psql)" -X -q -At -v ON_ERROR_STOP=1 "$@"; }

set_base="${DUMP%.dump}"
sums="$set_base.sha256"
[ -f "$sums" ] || { echo "pg-restore.sh: no checksum file $sums next to the dump" >&2; exit 1; }
(cd "$(dirname "$DUMP")" && sha256sum --check --quiet "$(basename "$sums")") \
  || { echo "pg-restore.sh: checksum mismatch in $sums: refusing to restore" >&2; exit 1; }

tables="$(psql_at "$DB_URL" -c "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'")"
if [ "$tables" != 0 ]; then
  echo "pg-restore.sh: the target database already has $tables table(s) in schema public; restore into an empty database" >&2
  exit 1
fi

if [ "$GLOBALS" = 1 ]; then
  # Same server, maintenance database: swap the path of the URL.
  maint_url="$(python3 -c 'import sys, urllib.parse as u; p = u.urlsplit(sys.argv[1]); print(u.urlunsplit(p._replace(path="/postgres")))' "$DB_URL")"
  # Without ON_ERROR_STOP: roles that exist already (postgres, at least)
  # fail their CREATE ROLE and keep their attributes from the ALTER ROLE
  # that follows; only other errors are shown.
  "$(bin psql)" -X -q "$maint_url" -f "$set_base.globals.sql" 2>&1 >/dev/null \
    | { grep -v 'ERROR:  role ".*" already exists' || true; } >&2
fi

start=$(date +%s)
"$(bin pg_restore)" --exit-on-error --single-transaction "${NO_OWNER[@]}" \
  --dbname="$DB_URL" "$DUMP"
psql_at "$DB_URL" -c "ANALYZE"
echo "pg-restore.sh: restored $(basename "$DUMP") in $(( $(date +%s) - start ))s"
