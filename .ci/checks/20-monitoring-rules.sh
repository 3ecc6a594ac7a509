#!/usr/bin/env bash
# The monitoring kit (deploy/monitoring, docs/operations/monitoring.md):
# Prometheus configuration and rules, their promtool unit tests, Alertmanager
# configuration, template, routing and inhibition, and the consistency
# checks of deploy/monitoring/tests/check_monitoring.py (runbook links and
# sections, alert labels and annotations, metric names against the server's
# catalogue, the SLO objective, test coverage of every alert).
set -euo pipefail
cd "$(dirname "$0")/../.."

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/heartrule/target}"
MON=deploy/monitoring
PROM=$MON/prometheus
AM=$MON/alertmanager
HELPER=$MON/tests/check_monitoring.py

log() { printf -- '--> %s\n' "$*"; }

# Tools: Debian's packages (promtool is in prometheus, amtool in
# prometheus-alertmanager), PyYAML from PyPI.
missing=()
command -v promtool >/dev/null || missing+=(prometheus)
command -v amtool >/dev/null || missing+=(prometheus-alertmanager)
command -v prometheus-alertmanager >/dev/null || missing+=(prometheus-alertmanager)
if [ "${#missing[@]}" -gt 0 ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
fi
python3 -c 'import yaml' 2>/dev/null || pip install -q pyyaml
command -v yamllint >/dev/null || pip install -q yamllint

WORK=$(mktemp -d)
AM_PID=""
cleanup() {
  if [ -n "$AM_PID" ]; then
    kill "$AM_PID" 2>/dev/null || true
    wait "$AM_PID" 2>/dev/null || true
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT

log "yamllint"
# Long lines are PromQL and test series, which read better unbroken.
yamllint -s -d '{extends: default, rules: {line-length: disable, document-start: disable, truthy: {check-keys: false}, comments: {min-spaces-from-content: 1}}}' $MON

log "promtool check config"
promtool check config $PROM/prometheus.yml
# Debian builds Prometheus without Kubernetes service discovery, so the
# Kubernetes variant is checked with its kubernetes_sd_configs swapped for
# empty static_configs: everything else (relabelling, rule files, alerting)
# is validated as written.
python3 - "$PROM/prometheus.kubernetes.yml" "$WORK/prometheus.kubernetes.yml" <<'EOF'
import sys, yaml
config = yaml.safe_load(open(sys.argv[1]))
def strip(section):
    if section.pop("kubernetes_sd_configs", None) is None:
        raise SystemExit(f"{section.get('job_name', 'alertmanagers')}: expected kubernetes_sd_configs")
    section["static_configs"] = [{"targets": []}]
for job in config["scrape_configs"]:
    strip(job)
for am in config["alerting"]["alertmanagers"]:
    strip(am)
yaml.safe_dump(config, open(sys.argv[2], "w"))
EOF
ln -s "$PWD/$PROM/rules" "$WORK/rules"
promtool check config "$WORK/prometheus.kubernetes.yml"

log "promtool check rules"
promtool check rules $PROM/rules/*.rules.yml

log "promtool test rules"
for test in $PROM/tests/*.test.yml; do
  promtool test rules "$test"
done

log "amtool check-config"
amtool check-config $AM/alertmanager.yml

log "message template"
rendered=$(amtool template render --template.glob="$AM/templates/*.tmpl" \
  --template.data=$AM/tests/notification.json \
  --template.text='{{ template "heartrule.title" . }}|{{ template "heartrule.runbook" . }}|{{ template "heartrule.text" . }}|{{ template "heartrule.email.html" . }}')
for expected in \
  '[FIRING:2] critical HeartRuleInstanceDown production' \
  '|https://github.com/heartrule/heartrule/blob/main/docs/operations/runbook.md#heartruleinstancedown|' \
  'FIRING since 2026-12-04 09:15:00 UTC on heartrule-2' \
  'heartrule-3 (production) failed every scrape of /metrics' \
  '<a href="https://github.com/heartrule/heartrule/blob/main/docs/operations/runbook.md#heartruleinstancedown">runbook</a>'; do
  if [[ "$rendered" != *"$expected"* ]]; then
    printf 'template output lacks %q:\n%s\n' "$expected" "$rendered" >&2
    exit 1
  fi
done
echo "template renders title, runbook link and every alert"

log "amtool config routes test"
python3 $HELPER routes --config $AM/alertmanager.yml --cases $AM/tests/routes.test.yml

log "inhibition (a real Alertmanager)"
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
# Clustering off (it would bind 9094); receivers are never reached within
# the check: the first notification waits for group_wait.
prometheus-alertmanager --config.file=$AM/alertmanager.yml \
  --storage.path="$WORK/alertmanager" \
  --web.listen-address="127.0.0.1:$port" \
  --cluster.listen-address= \
  --log.level=warn >"$WORK/alertmanager.log" 2>&1 &
AM_PID=$!
for _ in $(seq 1 50); do
  if python3 -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$port/-/ready', timeout=1)" 2>/dev/null; then
    break
  fi
  if ! kill -0 "$AM_PID" 2>/dev/null; then
    cat "$WORK/alertmanager.log" >&2
    echo "alertmanager exited" >&2
    exit 1
  fi
  sleep 0.2
done
python3 $HELPER inhibition --url "http://127.0.0.1:$port"

log "the checker's own parsers"
python3 -m unittest discover -s $MON/tests

log "alerts: labels, annotations, runbook sections"
python3 $HELPER alerts
log "SLO objective"
python3 $HELPER slo
log "every alert has a firing and a quiet promtool case"
python3 $HELPER tests

log "metric names against the server's catalogue"
cargo build -q -p heartrule-server
python3 $HELPER metrics --binary "$CARGO_TARGET_DIR/debug/heartrule"

echo "monitoring kit: all checks passed"
