#!/usr/bin/env bash
# One scheduled pgBackRest backup of the HeartRule cluster, plus a verification
# mark that verify-restore.sh restores to and checks.
#
#   pgbackrest-backup.sh --stanza heartrule --type full|diff|incr \
#       --db-url postgres:///heartrule?host=/var/run/postgresql \
#       [--manifest-dir /var/lib/pgbackrest/heartrule-manifests] [--config FILE | --config-path DIR]
#
# Run it as the PostgreSQL OS user (postgres) on the database host, where
# pgbackrest.conf points pg1-path at the data directory. It
#  1. takes the backup (`pgbackrest backup --type=…`; expire runs after it
#     and applies the retention of pgbackrest.conf);
#  2. writes the verification mark: one transaction takes SHARE locks on
#     every table of the database (writers wait, readers do not; at most
#     --lock-timeout per attempt, retried), counts every table, and creates a
#     named restore point while nothing can commit. Restoring to that name
#     therefore reproduces the counts exactly. Writes pause for as long as the
#     counts take (a sequential scan of each table);
#  3. runs `pgbackrest check`, which switches WAL and waits until the segment
#     holding the restore point is archived;
#  4. saves the manifest as <backup label>.manifest.json in --manifest-dir and
#     deletes manifests whose backup has expired from the repository.
# Keep --manifest-dir on storage that outlives the database host (it is small
# JSON); verify-restore.sh reads the newest one by default.
set -euo pipefail

usage() { sed -n '2,25p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-2}"; }

STANZA="" TYPE="" DB_URL="" MANIFEST_DIR=/var/lib/pgbackrest/heartrule-manifests
CONFIG=() LOCK_TIMEOUT=5s ATTEMPTS=5
while [ $# -gt 0 ]; do
  case "$1" in
    --stanza) STANZA="$2"; shift 2 ;;
    --type) TYPE="$2"; shift 2 ;;
    --db-url) DB_URL="$2"; shift 2 ;;
    --manifest-dir) MANIFEST_DIR="$2"; shift 2 ;;
    --config) CONFIG=("--config=$2"); shift 2 ;;
    --config-path) CONFIG=("--config-path=$2"); shift 2 ;;
    --lock-timeout) LOCK_TIMEOUT="$2"; shift 2 ;;
    -h|--help) usage 0 ;;
    *) echo "pgbackrest-backup.sh: unknown argument $1" >&2; usage ;;
  esac
done
[ -n "$STANZA" ] && [ -n "$DB_URL" ] || usage
case "$TYPE" in full|diff|incr) ;; *) echo "pgbackrest-backup.sh: --type must be full, diff or incr" >&2; usage ;; esac

HERE="$(cd "$(dirname "$0")" && pwd)"
PG_BIN="${PG_BIN:-}"
bin() { if [ -n "$PG_BIN" ]; then echo "$PG_BIN/$1"; else echo "$1"; fi; }
pgbr() { pgbackrest "${CONFIG[@]}" --stanza="$STANZA" "$@"; }

mkdir -p "$MANIFEST_DIR"

pgbr --type="$TYPE" backup
label="$(pgbr --output=json info | python3 -c '
import json, sys
stanzas = json.load(sys.stdin)
backups = stanzas[0]["backup"] if stanzas else []
if not backups:
    sys.exit("no backup in the repository after the backup command")
print(backups[-1]["label"])')"

point="heartrule-verify-$label"
mark=""
for attempt in $(seq 1 "$ATTEMPTS"); do
  # The locks cover every table the manifest counts; pg_create_restore_point
  # is called while they are held, so no commit falls between the counts and
  # the restore point. The transaction itself writes nothing.
  if mark="$("$(bin psql)" -X -q -At -v ON_ERROR_STOP=1 -v point="$point" -d "$DB_URL" <<SQL
BEGIN ISOLATION LEVEL READ COMMITTED;
SET LOCAL lock_timeout = '$LOCK_TIMEOUT';
DO \$\$
DECLARE tables text;
BEGIN
  SELECT string_agg(format('%I.%I', schemaname, tablename), ', ') INTO tables
    FROM pg_tables WHERE schemaname = 'public';
  IF tables IS NULL THEN
    RAISE EXCEPTION 'no tables in schema public: is this the HeartRule database?';
  END IF;
  EXECUTE 'LOCK TABLE ' || tables || ' IN SHARE MODE';
END
\$\$;
\i '$HERE/manifest.sql'
SELECT json_build_object('name', :'point', 'lsn', pg_create_restore_point(:'point'));
COMMIT;
SQL
  )"; then
    break
  fi
  mark=""
  echo "pgbackrest-backup.sh: verification mark attempt $attempt failed (lock timeout?); retrying" >&2
  sleep $((attempt * 2))
done
[ -n "$mark" ] || { echo "pgbackrest-backup.sh: could not write the verification mark" >&2; exit 1; }

# Archives the WAL segment that holds the restore point (and fails loudly
# when archiving is broken).
pgbr check

printf '%s\n' "$mark" | python3 -c '
import json, os, sys
manifest_line, point_line = [l for l in sys.stdin.read().splitlines() if l.strip()]
manifest = json.loads(manifest_line)
manifest["stanza"], manifest["backup_label"], manifest["backup_type"] = sys.argv[1:4]
manifest["restore_point"] = json.loads(point_line)
path = os.path.join(sys.argv[4], sys.argv[2] + ".manifest.json")
with open(path + ".partial", "w") as f:
    json.dump(manifest, f, indent=2, sort_keys=True)
    f.write("\n")
os.replace(path + ".partial", path)
print(f"pgbackrest-backup.sh: backup {sys.argv[2]} ({sys.argv[3]}), manifest {path}")
' "$STANZA" "$label" "$TYPE" "$MANIFEST_DIR"

# Manifests of expired backups can no longer be restored to.
pgbr --output=json info | python3 -c '
import json, os, sys
labels = {b["label"] for s in json.load(sys.stdin) for b in s.get("backup", [])}
folder = sys.argv[1]
for name in os.listdir(folder):
    if name.endswith(".manifest.json") and name[: -len(".manifest.json")] not in labels:
        os.remove(os.path.join(folder, name))
' "$MANIFEST_DIR"
