#!/usr/bin/env bash
# The server behind PgBouncer (Debian's 1.18, our own instance as an
# unprivileged user on a free port, in front of a fresh database), the real
# binary (docs/operations/pgbouncer.md):
#  - transaction pooling with database.transaction_pooling on: the
#    conversation happy path with concurrent sessions and turns, through 3
#    server connections shared by the server's 12 client connections; zero
#    failed requests, no warning or error logged, every turn stored;
#  - session pooling with the switch off (the default): the same happy path;
#  - transaction pooling with the switch off must fail with `prepared
#    statement "sN" does not exist` (diesel-async prepares a statement in one
#    exchange and runs it in the next, which PgBouncer 1.18 may send to
#    another server connection): the switch is what makes it work. Last,
#    because it leaves stray prepared statements on PgBouncer's connections.
set -euo pipefail
cd "$(dirname "$0")/../.."

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/heartrule/target}"
PG_HOST=127.0.0.1 PG_PORT=5432 PG_USER=postgres
SESSIONS=24

command -v pgbouncer >/dev/null || { apt-get update -qq && apt-get install -y -qq pgbouncer; }
command -v psql >/dev/null || { apt-get update -qq && apt-get install -y -qq postgresql-client; }

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

work=$(mktemp -d /tmp/heartrule-pgbouncer.XXXXXX)
db="heartrule_pgbouncer_$$"
pgbouncer_pid="" server_pid=""
cleanup() {
  status=$?
  [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null && wait "$server_pid" 2>/dev/null || true
  [ -n "$pgbouncer_pid" ] && kill "$pgbouncer_pid" 2>/dev/null && wait "$pgbouncer_pid" 2>/dev/null || true
  dropdb -h "$PG_HOST" -p "$PG_PORT" -U "$PG_USER" --if-exists --force "$db" 2>/dev/null || true
  if [ "$status" -ne 0 ]; then
    echo "--- pgbouncer log"; tail -n 30 "$work/pgbouncer.log" 2>/dev/null || true
    for log in "$work"/server-*.log; do
      [ -e "$log" ] && { echo "--- $(basename "$log")"; tail -n 30 "$log"; }
    done
  fi
  rm -rf "$work"
  exit "$status"
}
trap cleanup EXIT

# Our own copy of the binary: a later build elsewhere cannot swap it mid-check.
cargo build -q -p heartrule-server
cp "$CARGO_TARGET_DIR/debug/heartrule" "$work/heartrule"
HEARTRULE__DATABASE__TRANSACTION_POOLING=true "$work/heartrule" check-config >/dev/null \
  || { echo "$CARGO_TARGET_DIR/debug/heartrule does not know database.transaction_pooling: stale build?" >&2; exit 1; }

createdb -h "$PG_HOST" -p "$PG_PORT" -U "$PG_USER" "$db"
direct_url="postgres://$PG_USER@$PG_HOST:$PG_PORT/$db"
# Migrations hold a session-level advisory lock across several transactions,
# which transaction pooling cannot keep: they run on a direct connection.
DATABASE_URL="$direct_url" "$work/heartrule" migrate

pgb_port=$(free_port)
cat >"$work/pgbouncer.ini" <<INI
[databases]
heartrule_session = host=$PG_HOST port=$PG_PORT dbname=$db user=$PG_USER pool_mode=session pool_size=12
heartrule_transaction = host=$PG_HOST port=$PG_PORT dbname=$db user=$PG_USER pool_mode=transaction

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $pgb_port
unix_socket_dir =
auth_type = trust
auth_file = $work/userlist.txt
pool_mode = transaction
; Transaction pooling: fewer server connections than the server's pool of
; client connections, so clients share them as they would in production.
default_pool_size = 3
max_client_conn = 200
; The admin console, for SHOW POOLS.
admin_users = $PG_USER
logfile = $work/pgbouncer.log
pidfile = $work/pgbouncer.pid
INI
echo "\"$PG_USER\" \"\"" >"$work/userlist.txt"
# PgBouncer refuses to run as root.
chown -R nobody "$work"
runuser -u nobody -- pgbouncer "$work/pgbouncer.ini" &
pgbouncer_pid=$!
for _ in $(seq 1 50); do
  pg_isready -q -h 127.0.0.1 -p "$pgb_port" -U "$PG_USER" -d heartrule_session && break
  sleep 0.2
done
pg_isready -q -h 127.0.0.1 -p "$pgb_port" -U "$PG_USER" -d heartrule_session \
  || { echo "PgBouncer did not start" >&2; exit 1; }

# Starts the server through PgBouncer's database $1 with
# database.transaction_pooling $2; $3 = log name.
start_server() {
  local port
  port=$(free_port)
  DATABASE_URL="postgres://$PG_USER@127.0.0.1:$pgb_port/$1" \
  HEARTRULE__DATABASE__TRANSACTION_POOLING="$2" \
  HEARTRULE__DATABASE__RUN_MIGRATIONS=false \
  HEARTRULE__DATABASE__MAX_CONNECTIONS=12 \
  HEARTRULE__SERVER__PORT="$port" \
  HEARTRULE__SERVER__WORKERS=2 \
  HEARTRULE__TELEMETRY__LOG__FORMAT=json \
  RUST_LOG=info \
    "$work/heartrule" >"$work/server-$3.log" 2>&1 &
  server_pid=$!
  base="http://127.0.0.1:$port"
  for _ in $(seq 1 100); do
    curl -fs "$base/health" >/dev/null 2>&1 && return 0
    kill -0 "$server_pid" 2>/dev/null || { echo "the server ($3) exited" >&2; return 1; }
    sleep 0.2
  done
  echo "the server ($3) did not answer /health" >&2
  return 1
}

stop_server() {
  kill -TERM "$server_pid"
  wait "$server_pid" || { echo "the server did not stop cleanly" >&2; return 1; }
  server_pid=""
}

# No warning or error in the server's log $1, beyond the startup notices of
# the local-use defaults this check runs with (authentication off, no on-call
# webhook), which say so on purpose.
clean_log() {
  local found
  found=$(grep '"level":"\(WARN\|ERROR\)"' "$work/server-$1.log" \
    | grep -v '"event":"\(authentication_off\|safety_webhook_missing\)"' || true)
  if [ -n "$found" ]; then
    echo "warnings or errors in the server log ($1):" >&2
    echo "$found" >&2
    return 1
  fi
}

user_messages() {
  psql -At -h "$PG_HOST" -p "$PG_PORT" -U "$PG_USER" -d "$db" \
    -c "SELECT count(*) FROM messages WHERE role = 'user'"
}

# "<client connections> <server connections>" PgBouncer holds for database $1.
pgbouncer_connections() {
  local clients servers
  clients=$(psql -At -h 127.0.0.1 -p "$pgb_port" -U "$PG_USER" -d pgbouncer -c 'SHOW CLIENTS' \
    | awk -F'|' -v d="$1" '$3 == d' | wc -l)
  servers=$(psql -At -h 127.0.0.1 -p "$pgb_port" -U "$PG_USER" -d pgbouncer -c 'SHOW SERVERS' \
    | awk -F'|' -v d="$1" '$3 == d' | wc -l)
  echo "$clients $servers"
}

echo "== transaction pooling, database.transaction_pooling=true"
start_server heartrule_transaction true transaction
curl -fs "$base/ready" | python3 -c 'import json,sys; r=json.load(sys.stdin); assert r["status"]=="ok", r'
# Three rounds of concurrent conversations; any failed request fails the check.
for _ in 1 2 3; do python3 .ci/checks/lib/conversation.py "$base" "$SESSIONS"; done
read -r clients servers < <(pgbouncer_connections heartrule_transaction)
echo "PgBouncer: $clients client connections from the server over $servers server connections"
[ "$servers" -le 3 ] && [ "$clients" -gt "$servers" ] \
  || { echo "expected more client than server connections, at most 3 of those" >&2; exit 1; }
clean_log transaction
stop_server
stored=$(user_messages)
[ "$stored" -eq $((3 * SESSIONS)) ] \
  || { echo "expected $((3 * SESSIONS)) user messages in the database, found $stored" >&2; exit 1; }
echo "stored user messages: $stored"

echo "== session pooling, database.transaction_pooling=false"
start_server heartrule_session false session
python3 .ci/checks/lib/conversation.py "$base" "$SESSIONS"
clean_log session
stop_server
stored=$(user_messages)
[ "$stored" -eq $((4 * SESSIONS)) ] \
  || { echo "expected $((4 * SESSIONS)) user messages in the database, found $stored" >&2; exit 1; }
echo "stored user messages: $stored"

echo "== transaction pooling, database.transaction_pooling=false: must fail"
prepared_statement_error='prepared statement [^ ]*s[0-9]+[^ ]* (does not exist|already exists)'
if start_server heartrule_transaction false transaction-off; then
  python3 .ci/checks/lib/conversation.py "$base" "$SESSIONS" --expect-failures \
    >"$work/transaction-off.out" || {
    cat "$work/transaction-off.out"
    echo "every request succeeded through transaction pooling without" \
         "database.transaction_pooling: PgBouncer now keeps prepared statements" \
         "(>= 1.21?); update docs/operations/pgbouncer.md" >&2
    exit 1
  }
  cat "$work/transaction-off.out"
  grep -Eq "$prepared_statement_error" "$work/transaction-off.out" || {
    echo "the requests failed, but not on prepared statements: see above" >&2
    exit 1
  }
  stop_server || true
else
  # The same failure, already in the connection probe at start-up.
  server_pid=""
  grep -Eq "$prepared_statement_error" "$work/server-transaction-off.log" || {
    echo "the server did not start, but not because of prepared statements:" >&2
    tail -n 20 "$work/server-transaction-off.log" >&2
    exit 1
  }
  echo "the server could not even start:" \
       "$(grep -Eo "$prepared_statement_error" "$work/server-transaction-off.log" | head -n 1)"
fi
echo "pgbouncer check passed"
