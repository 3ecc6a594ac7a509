#!/usr/bin/env bash
# Starts (or checks) the local PostgreSQL and Redis the tests talk to.
# Usage: scripts/services.sh start|check
set -euo pipefail

PG_HOST=127.0.0.1 PG_PORT=5432 REDIS_PORT=6379

pg_up() { pg_isready -h "$PG_HOST" -p "$PG_PORT" -U postgres -q 2>/dev/null; }
redis_up() { [ "$(redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping 2>/dev/null)" = "PONG" ]; }

wait_for() { # name, check-function
  for _ in $(seq 1 60); do "$2" && return 0; sleep 0.5; done
  echo "ERROR: $1 did not become ready" >&2
  return 1
}

start_postgres() {
  pg_up && { echo "postgres: already running"; return; }
  if ! command -v pg_ctlcluster >/dev/null; then
    echo "ERROR: PostgreSQL is not running and pg_ctlcluster is not installed" >&2; exit 1
  fi
  echo "postgres: starting"
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | sort -V | tail -1)" main start
  wait_for postgres pg_up
}

start_redis() {
  redis_up && { echo "redis: already running"; return; }
  if ! command -v redis-server >/dev/null; then
    echo "ERROR: Redis is not running and redis-server is not installed" >&2; exit 1
  fi
  echo "redis: starting"
  mkdir -p /var/lib/redis /var/log/redis
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port "$REDIS_PORT" --save "" \
    --appendonly no --dir /var/lib/redis --logfile /var/log/redis/ci.log
  wait_for redis redis_up
}

case "${1:-start}" in
  start) start_postgres; start_redis ;;
  check) pg_up && echo "postgres: up" || { echo "postgres: DOWN"; exit 1; }
         redis_up && echo "redis: up" || { echo "redis: DOWN"; exit 1; } ;;
  *) echo "usage: $0 start|check" >&2; exit 2 ;;
esac
