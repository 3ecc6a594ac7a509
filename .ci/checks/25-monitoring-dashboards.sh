#!/usr/bin/env bash
# Monitoring kit, the parts that are not Prometheus rules: Grafana dashboards
# (lint against the metric catalogue, every query parsed by promtool), the
# OpenTelemetry Collector config (structure against the components' documented
# config), the log-shipping config (against real server log lines) and the
# docker compose monitoring profile.
set -euo pipefail
cd "$(dirname "$0")/../.."

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/heartrule/target}"
here=.ci/checks/monitoring-dashboards
log() { printf '\n--> %s\n' "$*"; }

apt_updated=
need_apt() { # need_apt COMMAND PACKAGE
  command -v "$1" >/dev/null && return
  [ -n "$apt_updated" ] || { apt-get update -qq; apt_updated=1; }
  apt-get install -y -qq "$2" >/dev/null
}
need_apt python3 python3
need_apt promtool prometheus
# `docker compose` (v2 plugin) when present, else Debian's docker-compose;
# only `config` is used, which needs no Docker engine.
if docker compose version >/dev/null 2>&1; then
  compose() { docker compose "$@"; }
else
  need_apt docker-compose docker-compose
  compose() { docker-compose "$@"; }
fi
python3 -c 'import yaml' 2>/dev/null || pip install -q PyYAML
# Vector's remap language as a Python library: the log check runs the
# shipping transform itself on the server's lines.
python3 -c 'import vrl_python' 2>/dev/null || pip install -q vrl-python==0.1.0

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# The binary of this checkout, copied so that a concurrent build in a shared
# target directory cannot swap it while the checks run.
cargo build -q -p heartrule-server
cp "$CARGO_TARGET_DIR/debug/heartrule" "$work/heartrule"
"$work/heartrule" metrics-doc >"$work/metrics.md"

log "dashboards are what generate_dashboards.py writes"
python3 deploy/monitoring/grafana/generate_dashboards.py --check

log "dashboard lint"
python3 "$here/lint_dashboards.py" --catalogue "$work/metrics.md"

log "OpenTelemetry Collector config"
python3 "$here/check_otel_collector.py"

log "log-shipping fields against real server logs"
python3 "$here/check_log_fields.py" --binary "$work/heartrule"

log "compose monitoring profile"
compose -f docker-compose.dev.yml --profile monitoring config -q
# The dev Prometheus config, laid out as the container sees it (with the
# kit's rules when they exist), so promtool also loads the rules it names.
mkdir -p "$work/prometheus/rules"
cp deploy/monitoring/compose/prometheus.dev.yml "$work/prometheus/prometheus.yml"
if [ -d deploy/monitoring/prometheus/rules ]; then
  cp deploy/monitoring/prometheus/rules/* "$work/prometheus/rules/"
fi
promtool check config "$work/prometheus/prometheus.yml"
python3 "$here/check_compose.py"

echo "monitoring dashboards: all checks passed"
