#!/usr/bin/env bash
# Backup → point-in-time restore → verify, on a throwaway PostgreSQL 15
# cluster this check creates itself (never the shared server on 5432):
#  0. the pg_dump CronJob example validates against Kubernetes 1.30;
#  1. initdb in a temp dir, WAL archiving into a pgBackRest repository in the
#     temp dir, configured from deploy/backup/pgbackrest.conf and
#     postgresql-archiving.conf (paths and ports swapped);
#  2. `heartrule migrate`, then the real server (mock LLM) writes sessions;
#     `pgbackrest check`, full backup;
#  3. phase A writes; then pgbackrest-backup.sh (diff backup + verification
#     mark), pg-dump.sh, the target time T and a pg_dumpall; phase B writes;
#  4. restore the full backup to T (WAL replay of phase A) into a scratch
#     data dir on another port, timed (RTO); exactly phase A's writes are
#     there and none of B's; pg_dumpall diffed with the one at T; amcheck and
#     the server reading a known session (verify-restore.sh --check-only);
#  5. `pgbackrest verify` on the repository and verify-restore.sh end to end
#     on the diff backup's verification mark (verify-restore.sh --verify-repo),
#     then on the pg_dump set.
# The measured figures are printed at the end (docs/operations/backup.md
# quotes them).
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT="$PWD"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/heartrule/target}"

log() { printf '\n--> %s\n' "$*"; }
fail() { printf 'FAIL: %s\n' "$*" >&2; exit 1; }
PG_BIN=/usr/lib/postgresql/15/bin

# --- tools ----------------------------------------------------------------
missing=()
command -v pgbackrest >/dev/null || missing+=(pgbackrest)
[ -x "$PG_BIN/initdb" ] || missing+=(postgresql-15)
# amcheck ships in postgresql-15 itself on Debian 12 (postgresql-contrib-15 is
# only a name it provides).
[ -f /usr/share/postgresql/15/extension/amcheck.control ] || missing+=(postgresql-15)
command -v jq >/dev/null || missing+=(jq)
command -v curl >/dev/null || missing+=(curl)
if [ "${#missing[@]}" -gt 0 ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
fi
id postgres >/dev/null 2>&1 || fail "the postgres OS user is missing (the postgresql-15 package creates it)"
command -v kubernetes-validate >/dev/null || pip install -q kubernetes-validate

# The Kubernetes CronJob of the pg_dump path, against a pinned Kubernetes.
kubernetes-validate --strict --quiet -k 1.30.0 deploy/backup/pg-dump-cronjob.yaml

build_start=$SECONDS
cargo build -q -p heartrule-server
BUILD_S=$((SECONDS - build_start))
cycle_start=$SECONDS
T="$(mktemp -d /tmp/hr-backup.XXXXXX)"
# A private copy: the binary in the shared target dir may be rebuilt meanwhile.
cp "$CARGO_TARGET_DIR/debug/heartrule" "$T/heartrule"
BIN="$T/heartrule"

# --- cleanup --------------------------------------------------------------
SERVER_PID=""
stop_server() {
  if [ -n "$SERVER_PID" ]; then
    kill "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
    SERVER_PID=""
  fi
}
cleanup() {
  local rc=$?
  stop_server
  for data in "$T/src" "$T/restored"; do
    [ -f "$data/postmaster.pid" ] && runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$data" -m immediate stop >/dev/null 2>&1
  done
  if [ "$rc" != 0 ]; then
    for f in "$T"/log/*.log "$T/src.log" "$T/restored.log" "$T/server.log"; do
      [ -f "$f" ] && { echo "--- $f (last 25 lines)" >&2; tail -25 "$f" >&2; }
    done
  fi
  rm -rf "$T"
  exit "$rc"
}
trap cleanup EXIT
chown postgres: "$T"
chmod 711 "$T"
as_pg() { runuser -u postgres -- "$@"; }
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
PORT_SRC="$(free_port)" PORT_RST="$(free_port)" PORT_API="$(free_port)"
[ "$PORT_SRC" != "$PORT_RST" ] || PORT_RST="$(free_port)"
SRC_URL="postgres://postgres@127.0.0.1:$PORT_SRC/heartrule"
RST_URL="postgres://postgres@127.0.0.1:$PORT_RST/heartrule"
psql_at() { local url="$1"; shift; "$PG_BIN/psql" -X -q -At -v ON_ERROR_STOP=1 -d "$url" "$@"; }

# --- 1. cluster and repository --------------------------------------------
log "throwaway cluster on port $PORT_SRC, pgBackRest repository in $T/repo"
as_pg mkdir -p "$T/run" "$T/etc/conf.d" "$T/repo" "$T/log" "$T/spool" "$T/lock" "$T/dumps" "$T/manifests"
# The shipped pgbackrest.conf with this cluster's paths: every other option
# (encryption, compression, bundling, async archiving, retention) is tested
# as shipped.
python3 - "$ROOT/deploy/backup/pgbackrest.conf" "$T" "$PORT_SRC" <<'PY' | as_pg tee "$T/etc/pgbackrest.conf" >/dev/null
import sys
src, t, port = sys.argv[1:]
override = {
    "repo1-path": f"{t}/repo", "spool-path": f"{t}/spool", "log-path": f"{t}/log",
    "pg1-path": f"{t}/src", "pg1-port": port, "pg1-socket-path": f"{t}/run",
}
seen = set()
for line in open(src, encoding="utf-8"):
    key = line.split("=", 1)[0].strip()
    if "=" in line and not line.lstrip().startswith("#") and key in override:
        line = f"{key}={override[key]}\n"
        seen.add(key)
    print(line, end="")
    if line.strip() == "[global]":
        print(f"lock-path={t}/lock")
missing = set(override) - seen
if missing:
    sys.exit(f"pgbackrest.conf no longer sets {sorted(missing)}")
PY
printf '[global]\nrepo1-cipher-pass=%s\n' "$(head -c 36 /dev/urandom | base64)" | as_pg tee "$T/etc/conf.d/repo1-cipher.conf" >/dev/null
chmod 600 "$T/etc/conf.d/repo1-cipher.conf"
pgbr() { as_pg pgbackrest --config-path="$T/etc" --stanza=heartrule "$@"; }

as_pg "$PG_BIN/initdb" -D "$T/src" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 --data-checksums >/dev/null
{
  echo "port = $PORT_SRC"
  echo "listen_addresses = '127.0.0.1'"
  echo "unix_socket_directories = '$T/run'"
  # The shipped archiving settings, pointed at this repository's config.
  sed "s|pgbackrest --stanza=heartrule|pgbackrest --config-path=$T/etc --stanza=heartrule|" \
    "$ROOT/deploy/backup/postgresql-archiving.conf"
} | as_pg tee -a "$T/src/postgresql.conf" >/dev/null
grep -q "^archive_command = 'pgbackrest --config-path=$T/etc" "$T/src/postgresql.conf" \
  || fail "postgresql-archiving.conf's archive_command was not adapted"
as_pg "$PG_BIN/pg_ctl" -D "$T/src" -l "$T/src.log" -w start >/dev/null
"$PG_BIN/createdb" -h 127.0.0.1 -p "$PORT_SRC" -U postgres heartrule

# --- 2. schema, server, first writes, full backup -------------------------
log "heartrule migrate, then the server writes through the API"
DATABASE_URL="$SRC_URL" "$BIN" migrate >/dev/null
(exec env -u REDIS_URL DATABASE_URL="$SRC_URL" LLM_PROVIDER=mock API_HOST=127.0.0.1 \
  API_PORT="$PORT_API" HEARTRULE__TELEMETRY__TRACES__ENABLED=false "$BIN" serve >"$T/server.log" 2>&1) &
SERVER_PID=$!
API="http://127.0.0.1:$PORT_API"
for _ in $(seq 1 120); do curl -fsS -o /dev/null "$API/ready" 2>/dev/null && break; sleep 0.5; done
curl -fsS -o /dev/null "$API/ready" || fail "the server did not become ready"
script_id() { curl -fsS "$API/api/scripts" | jq -er --arg n "$1" '.scripts[] | select(.scriptName == $n) | .id'; }
HELLO="$(script_id hello)" CBT="$(script_id cbt_intake)"
new_session() { # user script → session id
  curl -fsS -X POST "$API/api/sessions" -H 'content-type: application/json' \
    -d "{\"userId\":\"$1\",\"scriptId\":\"$2\"}" | jq -er .sessionId
}
answer() { # session words
  curl -fsS -X POST "$API/api/sessions/$1/messages" -H 'content-type: application/json' \
    -d "$(jq -nc --arg c "$2" '{content: $c}')" | jq -er .executionStatus >/dev/null
}
history_len() { curl -fsS "$API/api/sessions/$1/messages" | jq -er '.data | length'; }

for i in 1 2 3; do s="$(new_session "base-$i" "$HELLO")"; answer "$s" "Base visitor $i"; done
pgbr stanza-create >/dev/null
pgbr check >/dev/null
pgbr --type=full backup >/dev/null
FULL_LABEL="$(pgbr --output=json info | jq -er '.[0].backup[-1].label')"
echo "full backup $FULL_LABEL"

# --- 3. phase A, the target, phase B --------------------------------------
log "phase A"
A_SESSIONS=()
for i in 1 2 3 4; do
  s="$(new_session "phase-a-$i" "$CBT")"
  for turn in 1 2 3; do answer "$s" "A$i answer $turn: 我今天有点焦虑"; done
  A_SESSIONS+=("$s")
done
for i in 1 2; do s="$(new_session "phase-a-hello-$i" "$HELLO")"; answer "$s" "Visitor A$i"; A_SESSIONS+=("$s"); done
declare -A A_LEN
for s in "${A_SESSIONS[@]}"; do A_LEN[$s]="$(history_len "$s")"; done

log "differential backup with its verification mark, pg_dump set, target time"
as_pg env PG_BIN="$PG_BIN" "$ROOT/deploy/backup/pgbackrest-backup.sh" --stanza heartrule --type diff \
  --config-path "$T/etc" --db-url "$SRC_URL" --manifest-dir "$T/manifests"
MANIFEST="$(ls -1 "$T"/manifests/*.manifest.json | tail -1)"
as_pg env PG_BIN="$PG_BIN" "$ROOT/deploy/backup/pg-dump.sh" --db-url "$SRC_URL" --out-dir "$T/dumps"
# No commit happens between the last phase A turn and T (the mark and the
# dump only read), and B starts a second after T: recovery to T must stop
# exactly between them.
sleep 1
TARGET="$(psql_at "$SRC_URL" -c "SELECT to_char(clock_timestamp(), 'YYYY-MM-DD HH24:MI:SS.US+00') FROM (SELECT set_config('timezone', 'UTC', true)) s")"
"$PG_BIN/pg_dumpall" -h 127.0.0.1 -p "$PORT_SRC" -U postgres --restrict-key=heartrulebackupci -f "$T/dumpall-target.sql"
sleep 1
echo "target time $TARGET"

log "phase B"
B_SESSIONS=()
for i in 1 2 3; do s="$(new_session "phase-b-$i" "$HELLO")"; answer "$s" "Visitor B$i"; B_SESSIONS+=("$s"); done
# B also continues conversations that A started: those turns must vanish.
for s in "${A_SESSIONS[@]:0:2}"; do answer "$s" "B continues this session"; done
for s in "${A_SESSIONS[@]:0:2}"; do
  [ "$(history_len "$s")" -gt "${A_LEN[$s]}" ] || fail "phase B did not add messages to $s"
done
stop_server
# Archives the segment holding phase B's commits: recovery has to read past
# T to know where to stop.
pgbr check >/dev/null

# --- 4. point-in-time restore to T, timed ---------------------------------
log "restore the full backup $FULL_LABEL to $TARGET (port $PORT_RST)"
as_pg mkdir "$T/restored"
chmod 700 "$T/restored"
t0="$(date +%s%3N)"
pgbr restore --pg1-path="$T/restored" --set="$FULL_LABEL" --type=time --target="$TARGET" \
  --target-action=promote --archive-mode=off >/dev/null
t_files="$(date +%s%3N)"
as_pg "$PG_BIN/pg_ctl" -D "$T/restored" -l "$T/restored.log" -w \
  -o "-c port=$PORT_RST -c unix_socket_directories=$T/run" start >/dev/null
promoted=0
for _ in $(seq 1 600); do
  if [ "$(psql_at "postgres://postgres@127.0.0.1:$PORT_RST/postgres" -c 'SELECT pg_is_in_recovery()' 2>/dev/null)" = f ]; then
    promoted=1; break
  fi
  sleep 0.1
done
[ "$promoted" = 1 ] || fail "the restored cluster did not finish recovery"
t1="$(date +%s%3N)"
RTO_MS=$((t1 - t0)) FILES_MS=$((t_files - t0))
grep -q "recovery stopping before commit" "$T/restored.log" \
  || fail "recovery did not stop at a commit after the target (see restored.log)"
[ "$(psql_at "$RST_URL" -c 'SHOW archive_mode')" = off ] || fail "the restored cluster would archive into the repository"

log "exactly phase A's writes"
for s in "${A_SESSIONS[@]}"; do
  got="$(psql_at "$RST_URL" -c "SELECT count(*) FROM messages WHERE session_id = '$s'")"
  [ "$got" = "${A_LEN[$s]}" ] || fail "session $s (phase A) has $got messages restored, ${A_LEN[$s]} at the target"
done
for s in "${B_SESSIONS[@]}"; do
  [ "$(psql_at "$RST_URL" -c "SELECT count(*) FROM sessions WHERE id = '$s'")" = 0 ] \
    || fail "session $s of phase B is in the restore"
done
[ "$(psql_at "$RST_URL" -c "SELECT count(*) FROM sessions WHERE user_id LIKE 'phase-b-%' OR user_id LIKE 'base-%'")" = 3 ] \
  || fail "unexpected sessions in the restore"
echo "ok: ${#A_SESSIONS[@]} phase A sessions with their messages at T, none of ${#B_SESSIONS[@]} phase B sessions nor B's turns on A's sessions"

log "pg_dumpall at T vs the restored cluster"
"$PG_BIN/pg_dumpall" -h 127.0.0.1 -p "$PORT_RST" -U postgres --restrict-key=heartrulebackupci -f "$T/dumpall-restored.sql"
python3 "$ROOT/deploy/backup/restore_checks.py" dumpall-diff "$T/dumpall-target.sql" "$T/dumpall-restored.sql"

log "verify-restore.sh --check-only on the restored cluster"
"$ROOT/deploy/backup/verify-restore.sh" --check-only --db-url "$RST_URL" --manifest "$MANIFEST" \
  --server-bin "$BIN" --pg-bin "$PG_BIN"
as_pg "$PG_BIN/pg_ctl" -D "$T/restored" -m fast stop >/dev/null

# --- 5. the operator's paths end to end, and the repository ----------------
log "verify-restore.sh: pgbackrest verify, then the diff backup to its verification mark"
"$ROOT/deploy/backup/verify-restore.sh" --stanza heartrule --config-path "$T/etc" --manifest-dir "$T/manifests" \
  --verify-repo --scratch "$T/verify-pitr" --server-bin "$BIN" --pg-bin "$PG_BIN"

log "verify-restore.sh: the pg_dump set"
DUMP="$(ls -1 "$T"/dumps/heartrule-*.dump | tail -1)"
"$ROOT/deploy/backup/verify-restore.sh" --dump "$DUMP" --scratch "$T/verify-dump" --server-bin "$BIN" --pg-bin "$PG_BIN"

# --- figures ---------------------------------------------------------------
ROWS="$(jq -r '.row_counts | "\(.sessions) sessions, \(.messages) messages, \(.variables) variable rows"' "$MANIFEST")"
DB_SIZE="$(psql_at "$SRC_URL" -c "SELECT pg_size_pretty(pg_database_size('heartrule'))")"
CLUSTER_SIZE="$(psql_at "$SRC_URL" -c "SELECT pg_size_pretty(sum(pg_database_size(datname))::bigint) FROM pg_database")"
REPO="$(pgbr --output=json info | jq -r '[.[0].backup[] | "\(.type) \(.info.size / 1048576 | floor) MiB of cluster → \(.info.repository.delta / 1024 | floor) KiB stored"] | join("; ")')"
log "figures"
echo "data at the target: $ROWS; at the end: heartrule database $DB_SIZE, whole cluster $CLUSTER_SIZE"
echo "backups (zstd + aes-256-cbc): $REPO"
echo "point-in-time restore (full backup + WAL of phase A): files restored in ${FILES_MS} ms, open for writes after ${RTO_MS} ms"
echo "check: $((SECONDS - cycle_start)) s for the cycle, after $BUILD_S s of cargo build"
echo "backup-restore: OK"
