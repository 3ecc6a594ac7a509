#!/usr/bin/env bash
# The rolling-update promise (docs/operations/upgrades.md): the previous
# version of the server keeps working on the schema the new version migrated
# to.
#  1. Every migration's up.sql is additive, or says why it is safe
#     (`-- compat: reviewed|contract: …`), checked by lib/migration_lint.py.
#  2. For the newest migration: the server as it was just before that
#     migration was added (built from a temporary git worktree) runs the
#     conversation happy path, concurrent turns included, on a database the
#     current binary migrated.
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$(pwd)

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/heartrule/target}"
PG_HOST=127.0.0.1 PG_PORT=5432 PG_USER=postgres
python3 -c 'import yaml' 2>/dev/null || pip install -q pyyaml

echo "== migration lint"
python3 .ci/checks/lib/migration_lint.py migrations

newest=$(ls -d migrations/*/ | sort | tail -1)
newest=${newest%/}
added=$(git log --diff-filter=A --format=%H -1 -- "$newest")
[ -n "$added" ] || { echo "$newest is not committed yet: commit it, then run this check" >&2; exit 1; }
previous=$(git rev-parse "$added^")
echo "== previous version: $(git log --oneline -1 "$previous") (before $(basename "$newest"))"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

work=$(mktemp -d /tmp/heartrule-upgrade.XXXXXX)
# A stable path per commit, so the previous version's checkout is made once.
old_src="$CARGO_TARGET_DIR/../upgrade-compat/$previous"
db="heartrule_upgrade_$$"
server_pid=""
cleanup() {
  status=$?
  [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null && wait "$server_pid" 2>/dev/null || true
  dropdb -h "$PG_HOST" -p "$PG_PORT" -U "$PG_USER" --if-exists --force "$db" 2>/dev/null || true
  [ "$status" -ne 0 ] && [ -e "$work/old-server.log" ] && tail -n 40 "$work/old-server.log"
  rm -rf "$work"
  exit "$status"
}
trap cleanup EXIT

if [ ! -e "$old_src/Cargo.toml" ]; then
  mkdir -p "$(dirname "$old_src")"
  git worktree prune
  git worktree add --detach "$old_src" "$previous" >/dev/null
fi
# Both versions' workspace crates build to the same files of the shared
# target folder, and cargo judges them fresh by source mtimes: a checkout
# whose files are older than the other version's last build would pass for
# fresh and leave the other version's binary. Touching the workspace's
# sources (and migrations, which the binary embeds) before each build makes
# cargo rebuild the workspace crates of the version asked for; the
# dependencies stay cached.
build_server_in() {
  find "$1/crates" "$1/migrations" -type f -exec touch {} +
  (cd "$1" && cargo build -q -p heartrule-server)
}
started=$(date +%s)
build_server_in "$old_src"
cp "$CARGO_TARGET_DIR/debug/heartrule" "$work/heartrule-old"
echo "previous version built in $(( $(date +%s) - started )) s"
build_server_in .
cp "$CARGO_TARGET_DIR/debug/heartrule" "$work/heartrule-new"
# The shared target folder holds one debug/heartrule, which a build of
# another checkout may replace: make sure each copy is the version it should
# be, by the migrations embedded in it.
if grep -qa "$(basename "$newest")" "$work/heartrule-old"; then
  echo "the previous-version binary embeds $(basename "$newest"): not the previous version" >&2
  exit 1
fi
grep -qa "$(basename "$newest")" "$work/heartrule-new" \
  || { echo "the current binary does not embed $(basename "$newest"): stale build?" >&2; exit 1; }

createdb -h "$PG_HOST" -p "$PG_PORT" -U "$PG_USER" "$db"
url="postgres://$PG_USER@$PG_HOST:$PG_PORT/$db"
DATABASE_URL="$url" "$work/heartrule-new" migrate >/dev/null
latest=$(psql -At -h "$PG_HOST" -p "$PG_PORT" -U "$PG_USER" -d "$db" \
  -c "SELECT max(version) FROM __diesel_schema_migrations")
expected=$(basename "$newest" | cut -d_ -f1 | tr -d -)
[ "$latest" = "$expected" ] || { echo "schema at $latest, expected $expected" >&2; exit 1; }
echo "database migrated to $latest by the current version"

port=$(free_port)
# The previous version must not migrate (it does not know the newest
# migration) and must serve on the schema as it is.
DATABASE_URL="$url" \
HEARTRULE__DATABASE__RUN_MIGRATIONS=false \
HEARTRULE__SERVER__PORT="$port" \
HEARTRULE__SERVER__WORKERS=2 \
HEARTRULE_CONFIG_DIR="$old_src/config" \
HEARTRULE__SCRIPTS__PRELOAD_DIR="$old_src/examples/scripts" \
HEARTRULE__ENGINE__PROMPTS_DIR="$old_src/config/prompts" \
RUST_LOG=warn \
  "$work/heartrule-old" >"$work/old-server.log" 2>&1 &
server_pid=$!
base="http://127.0.0.1:$port"
for _ in $(seq 1 100); do
  curl -fs "$base/health" >/dev/null 2>&1 && break
  kill -0 "$server_pid" 2>/dev/null || { echo "the previous version exited" >&2; exit 1; }
  sleep 0.2
done
curl -fs "$base/ready" >/dev/null || { echo "the previous version is not ready on the new schema" >&2; exit 1; }
python3 .ci/checks/lib/conversation.py "$base" 16
kill -TERM "$server_pid"
wait "$server_pid" || { echo "the previous version did not stop cleanly" >&2; exit 1; }
server_pid=""
# What the previous version wrote is valid for the new one: no lease left
# behind and the lease CHECK holds.
leftover=$(psql -At -h "$PG_HOST" -p "$PG_PORT" -U "$PG_USER" -d "$db" \
  -c "SELECT count(*) FROM sessions WHERE lease_owner IS NOT NULL OR lease_expires_at IS NOT NULL")
[ "$leftover" = 0 ] || { echo "$leftover sessions hold a lease after the previous version ran" >&2; exit 1; }
echo "upgrade-compat check passed: the previous version serves on the new schema"
