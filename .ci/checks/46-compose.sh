#!/usr/bin/env bash
# The documented development path works: docker-compose.dev.yml is a valid
# Compose file, and every PostgreSQL / Redis URL the documentation gives for
# it (.env.example, README.md) carries the credentials, port and database
# the Compose file sets up.
set -euo pipefail
cd "$(dirname "$0")/../.."

if docker compose version >/dev/null 2>&1; then
  compose=(docker compose)
else
  command -v docker-compose >/dev/null || { apt-get update -qq && apt-get install -y -qq docker-compose; }
  compose=(docker-compose)
fi
python3 -c 'import yaml' 2>/dev/null || pip install -q pyyaml

"${compose[@]}" -f docker-compose.dev.yml config -q
echo "docker-compose.dev.yml: valid"

python3 - <<'PY'
import re
import sys
import urllib.parse

import yaml

compose = yaml.safe_load(open("docker-compose.dev.yml"))
services = compose["services"]
pg = services["postgres"]
env = pg.get("environment", {})
if isinstance(env, list):
    env = dict(item.split("=", 1) for item in env)
user = env.get("POSTGRES_USER", "postgres")
password = env.get("POSTGRES_PASSWORD")
database = env.get("POSTGRES_DB", user)


def host_port(service, container_port):
    for mapping in services[service].get("ports", []):
        parts = str(mapping).split(":")
        if parts[-1] == str(container_port):
            return int(parts[-2])
    sys.exit(f"docker-compose.dev.yml: {service} publishes no port for {container_port}")


pg_port, redis_port = host_port("postgres", 5432), host_port("redis", 6379)
expected_pg = f"postgres://{user}:{password}@127.0.0.1:{pg_port}/{database}"
expected_redis = f"redis://127.0.0.1:{redis_port}"
problems = []
checked = 0
for doc in (".env.example", "README.md"):
    text = open(doc, encoding="utf-8").read()
    for url in re.findall(r"postgres(?:ql)?://[^\s`'\"]+", text):
        parsed = urllib.parse.urlsplit(url)
        # Only URLs of the development services (local host, default port).
        if parsed.hostname not in ("127.0.0.1", "localhost") or (parsed.port or 5432) != pg_port:
            continue
        checked += 1
        if (parsed.username, parsed.password, parsed.path.lstrip("/")) != (user, password, database):
            problems.append(f"{doc}: {url} does not match the Compose credentials ({expected_pg})")
    for url in re.findall(r"redis://[^\s`'\"]+", text):
        parsed = urllib.parse.urlsplit(url)
        if parsed.hostname in ("127.0.0.1", "localhost"):
            checked += 1
            if (parsed.port or 6379) != redis_port or parsed.password:
                problems.append(f"{doc}: {url} does not match the Compose Redis ({expected_redis})")
env_example = open(".env.example", encoding="utf-8").read()
if not re.search(rf"^#? ?DATABASE_URL={re.escape(expected_pg)}$", env_example, re.M):
    problems.append(f".env.example: no DATABASE_URL={expected_pg} line")
if problems:
    print("\n".join(problems), file=sys.stderr)
    sys.exit(1)
print(f"{checked} documented URLs match the Compose services ({expected_pg}, {expected_redis})")
PY
