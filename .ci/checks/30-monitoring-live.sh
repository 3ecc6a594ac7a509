#!/usr/bin/env bash
# The monitoring kit against the real thing: the server binary on PostgreSQL
# and Redis with a failing fake LLM, under a short mixed load, scraped with
# the node, PostgreSQL and Redis exporters by a real Prometheus that loads
# the kit's rules. Every rule expression and every dashboard panel query is
# asked of Prometheus's HTTP API, and the LlmErrorRatioHigh alert must fire.
# deploy/monitoring/tests/live_check.py does the work and cleans up what it
# starts (processes, the database, the Redis keys, its temporary folder),
# also on Ctrl-C or SIGTERM. See docs/operations/metrics.md.
#
#   bash .ci/checks/30-monitoring-live.sh [--keep-temp] [--rules-dir D] [--dashboards-dir D]
set -euo pipefail
cd "$(dirname "$0")/../.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target}"

apt_install() {
    if [ "$(id -u)" -eq 0 ]; then
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
    else
        sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
    fi
}
command -v prometheus >/dev/null && command -v promtool >/dev/null || apt_install prometheus
command -v createdb >/dev/null || apt_install postgresql-client
for exporter in prometheus-node-exporter prometheus-postgres-exporter prometheus-redis-exporter; do
    command -v "$exporter" >/dev/null || apt_install "$exporter"
done
python3 -c 'import yaml' 2>/dev/null || pip install -q pyyaml

cargo build -q -p heartrule-server
python3 deploy/monitoring/tests/live_check.py --binary "$CARGO_TARGET_DIR/debug/heartrule" "$@"
