#!/usr/bin/env bash
# The API contract against the real thing: the server binary on its own
# PostgreSQL database and Redis key prefix, with the mock LLM, probed by
# schemathesis with every check (`--checks all`) and stateful links (the
# document's OpenAPI `links`: scripts lead to new sessions, a new session to
# its messages, turns and chat), authenticated with a bearer JWT. Any
# failure fails the check; the summary line is printed last.
#
#   bash .ci/checks/60-api-contract.sh
#
# CONTRACT_AUTH=jwt (the default) starts the server with `auth.mode: jwt`
# and an HS256 secret of its own, and sends a token minted here (subject
# with the `admin` role, issuer and audience of the server, 1 h expiry).
# CONTRACT_AUTH=off runs the server without authentication; the
# `ignored_auth` check then has nothing to verify and is skipped.
# CONTRACT_MAX_EXAMPLES and CONTRACT_SEED bound and fix the generated cases.
set -euo pipefail
cd "$(dirname "$0")/../.."

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/heartrule/target}"
SCHEMATHESIS_VERSION=4.32.5
CONTRACT_AUTH="${CONTRACT_AUTH:-jwt}"
CONTRACT_MAX_EXAMPLES="${CONTRACT_MAX_EXAMPLES:-100}"
CONTRACT_SEED="${CONTRACT_SEED:-1204}"
PG_HOST=127.0.0.1 PG_PORT=5432 PG_USER=postgres
REDIS_URL="${HEARTRULE_TEST_REDIS_URL:-redis://127.0.0.1:6379}"

# Server settings for the run, beyond the database, Redis and auth below.
# Rate limits: schemathesis sends a few thousand requests in minutes from one
# subject and one address, so the limits are lifted far above that here
# (a 429 is declared, but every one would hide the check it interrupts).
SERVER_ENV=(
  HEARTRULE__RATE_LIMITS__PER_SUBJECT__RATE=100000
  HEARTRULE__RATE_LIMITS__PER_SUBJECT__BURST=100000
  HEARTRULE__RATE_LIMITS__PER_IP__RATE=100000
  HEARTRULE__RATE_LIMITS__PER_IP__BURST=100000
  HEARTRULE__RATE_LIMITS__LLM__RATE=100000
  HEARTRULE__RATE_LIMITS__LLM__BURST=100000
)

case "$CONTRACT_AUTH" in
  jwt | off) ;;
  *) echo "CONTRACT_AUTH must be jwt or off, not $CONTRACT_AUTH" >&2; exit 1 ;;
esac

command -v createdb >/dev/null || { apt-get update -qq && apt-get install -y -qq postgresql-client; }
command -v redis-cli >/dev/null || { apt-get update -qq && apt-get install -y -qq redis-tools; }

# schemathesis in a virtualenv of its own, reused across runs: its
# dependencies stay away from the other checks' Python packages.
venv="$HOME/.cache/heartrule/schemathesis-$SCHEMATHESIS_VERSION"
if ! "$venv/bin/schemathesis" --version 2>/dev/null | grep -q "$SCHEMATHESIS_VERSION"; then
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q "schemathesis==$SCHEMATHESIS_VERSION"
fi

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

work=$(mktemp -d /tmp/heartrule-contract.XXXXXX)
db="heartrule_contract_$$"
prefix="heartrule-contract-$$"
server_pid=""
cleanup() {
  status=$?
  if [ -n "$server_pid" ]; then
    kill "$server_pid" 2>/dev/null && wait "$server_pid" 2>/dev/null || true
  fi
  dropdb -h "$PG_HOST" -p "$PG_PORT" -U "$PG_USER" --if-exists --force "$db" 2>/dev/null || true
  redis-cli -u "$REDIS_URL" --scan --pattern "$prefix:*" 2>/dev/null \
    | xargs -r redis-cli -u "$REDIS_URL" del >/dev/null 2>&1 || true
  if [ "$status" -ne 0 ] && [ -e "$work/server.log" ]; then
    echo "--- server log: the last warnings and errors"
    grep '"level":"\(WARN\|ERROR\)"' "$work/server.log" | tail -n 20 || true
  fi
  rm -rf "$work"
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Our own copy of the binary: a later build elsewhere cannot swap it mid-check.
cargo build -q -p heartrule-server
cp "$CARGO_TARGET_DIR/debug/heartrule" "$work/heartrule"
createdb -h "$PG_HOST" -p "$PG_PORT" -U "$PG_USER" "$db"

auth_env=()
auth_args=()
auth_off_args=()
if [ "$CONTRACT_AUTH" = jwt ]; then
  secret=$(python3 -c 'import secrets; print(secrets.token_urlsafe(48))')
  auth_env=(
    HEARTRULE__AUTH__MODE=jwt
    HEARTRULE__AUTH__HS256_SECRET="$secret"
    HEARTRULE__AUTH__ISSUER=heartrule-ci
    HEARTRULE__AUTH__AUDIENCE=heartrule-api
  )
  # An HS256 JWT from the standard library: header.payload.signature, each
  # base64url without padding.
  token=$(SECRET="$secret" python3 - <<'PY'
import base64, hashlib, hmac, json, os, time

def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

header = {"alg": "HS256", "typ": "JWT"}
now = int(time.time())
claims = {
    "sub": "contract-admin",
    "roles": ["admin"],
    "iss": "heartrule-ci",
    "aud": "heartrule-api",
    "iat": now,
    "exp": now + 3600,
}
signing_input = ".".join(
    b64(json.dumps(part, separators=(",", ":")).encode()) for part in (header, claims)
)
signature = hmac.new(os.environ["SECRET"].encode(), signing_input.encode(), hashlib.sha256).digest()
print(f"{signing_input}.{b64(signature)}")
PY
)
  auth_args=(-H "Authorization: Bearer $token")
else
  # Nothing enforces the declared bearerAuth: no token is generated, and
  # requests without one are not expected to fail.
  auth_off_args=(--exclude-checks ignored_auth --generation-with-security-parameters false)
fi

port=$(free_port)
base="http://127.0.0.1:$port"
env \
  DATABASE_URL="postgres://$PG_USER@$PG_HOST:$PG_PORT/$db" \
  REDIS_URL="$REDIS_URL" \
  HEARTRULE__REDIS__KEY_PREFIX="$prefix" \
  LLM_PROVIDER=mock \
  HEARTRULE__SERVER__PORT="$port" \
  HEARTRULE__SERVER__WORKERS=2 \
  HEARTRULE__TELEMETRY__LOG__FORMAT=json \
  RUST_LOG=info RUST_BACKTRACE=0 \
  ${auth_env[@]+"${auth_env[@]}"} \
  ${SERVER_ENV[@]+"${SERVER_ENV[@]}"} \
  "$work/heartrule" >"$work/server.log" 2>&1 &
server_pid=$!
for _ in $(seq 1 150); do
  curl -fs "$base/ready" >/dev/null 2>&1 && break
  if ! kill -0 "$server_pid" 2>/dev/null; then
    echo "the server exited:" >&2
    tail -n 20 "$work/server.log" >&2
    server_pid=""
    exit 1
  fi
  sleep 0.2
done
curl -fs "$base/ready" >/dev/null || { echo "the server did not become ready" >&2; exit 1; }
if [ "$CONTRACT_AUTH" = jwt ]; then
  # The token must open the API, and its absence must not: otherwise every
  # case below would test the 401 path only, or nothing about auth.
  curl -fs "${auth_args[@]}" "$base/api/scripts" >/dev/null \
    || { echo "the minted token is refused by the server" >&2; exit 1; }
  anonymous=$(curl -s -o /dev/null -w '%{http_code}' "$base/api/scripts")
  [ "$anonymous" = 401 ] || { echo "GET /api/scripts without a token: $anonymous, not 401" >&2; exit 1; }
fi

# One worker: with threads, hypothesis's lambda descriptions hit CPython
# 3.11's AST recursion-depth bug (python/cpython#106905) now and then.
started=$(date +%s)
set +e
"$venv/bin/schemathesis" --config-file .ci/checks/lib/api-contract.toml run "$base/openapi.json" \
  --checks all ${auth_off_args[@]+"${auth_off_args[@]}"} \
  --max-examples "$CONTRACT_MAX_EXAMPLES" \
  --seed "$CONTRACT_SEED" \
  --workers 1 \
  --request-timeout 30 \
  --generation-database none \
  --no-color \
  ${auth_args[@]+"${auth_args[@]}"} \
  2>&1 | tee "$work/schemathesis.out"
status=${PIPESTATUS[0]}
set -e
echo "schemathesis $SCHEMATHESIS_VERSION (auth: $CONTRACT_AUTH) took $(($(date +%s) - started))s"
if [ "$status" -ne 0 ]; then
  echo "schemathesis found disagreements between /openapi.json and the server (exit $status)" >&2
  exit "$status"
fi
# None of our code may have logged an error while being probed (actix's
# own parser logs the malformed requests schemathesis sends on purpose).
if grep '"level":"ERROR"' "$work/server.log" | grep -q '"target":"heartrule'; then
  echo "errors in the server log:" >&2
  grep '"level":"ERROR"' "$work/server.log" | grep '"target":"heartrule' | head -n 20 >&2
  exit 1
fi
echo "api contract check passed"
