#!/usr/bin/env python3
"""Live check of the monitoring kit against the real server and a real Prometheus.

Starts, each on a free 127.0.0.1 port and all torn down at the end:
  * a fake OpenAI-compatible LLM (plain and streamed chat completions) that
    answers about 30% of prompts with a 500, and an OTLP/HTTP sink on the same
    port so the span-pipeline metrics exist;
  * the real `heartrule` binary on a fresh PostgreSQL database of its own
    (created, migrated with `heartrule migrate`, dropped) and a Redis key
    prefix of its own (deleted), with the fake as `openai` provider and as
    its fallback;
  * the node, PostgreSQL and Redis exporters;
  * Prometheus (scrape and evaluation every 2s, its own data folder) with a
    copy of the kit's rule files, and the job names of the kit's config.

Then it drives a mixed load (sessions on the example scripts, plain and
streamed turns, reads, unknown sessions and scripts, malformed bodies, busy
sessions, a Redis fault) and asks Prometheus's HTTP API for every rule
expression (must parse and evaluate without error), every panel query of every
dashboard (must parse and return data) and for the alert the load is built to
trigger (must reach `firing`). Exits non-zero on any failure.
"""

from __future__ import annotations

import argparse
import hashlib
import http.server
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections import Counter
from pathlib import Path

import yaml

ALERT = "LlmErrorRatioHigh"
# Share of distinct prompts the fake LLM fails. Failing by prompt (not by
# call) makes a retry of a failed prompt fail too, so the retry counters move
# and the logical-call error ratio stays near this share.
FAIL_SHARE = 0.30
SCRAPE_INTERVAL = "2s"
# Every `for:` of the copied rules is shortened to this so the alert can
# fire within the check's few minutes; the kit's own durations are unchanged.
SHORT_FOR = "10s"
LOAD_MIN_SECONDS = 60
LOAD_MAX_SECONDS = 90
WORKERS = 4
SCRIPTS = ("hello", "cbt_intake")
# The exporters the kit's Prometheus scrapes beside the server (Debian
# packages), by kind: binary and the port a kit config would name.
EXPORTERS = {
    "node": ("prometheus-node-exporter", 9100),
    "postgres": ("prometheus-postgres-exporter", 9187),
    "redis": ("prometheus-redis-exporter", 9121),
}
# Grafana's built-in variables and the values the check gives them.
BUILTIN_VARIABLES = {
    "__rate_interval": "1m",
    "__interval_ms": "10000",
    "__interval": "10s",
    "__range_ms": "300000",
    "__range_s": "300",
    "__range": "5m",
}


class CheckFailed(Exception):
    """A failed precondition or check; the message says which."""


def log(message: str) -> None:
    print(f"[live-check {time.strftime('%H:%M:%S')}] {message}", flush=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def call(method: str, url: str, body: object | None = None, raw: bytes | None = None,
         timeout: float = 15.0, headers: dict | None = None) -> tuple[int, bytes]:
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    request = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        request.add_header("content-type", "application/json")
    for key, value in (headers or {}).items():
        request.add_header(key, value)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


# --------------------------------------------------------------------------
# Fake OpenAI-compatible LLM + OTLP/HTTP sink
# --------------------------------------------------------------------------

def fake_reply_text() -> str:
    # The engine asks for JSON; these keys satisfy the example scripts'
    # questions and extractions well enough to keep sessions moving.
    return json.dumps({
        "content": "Thank you. Could you tell me a little more?",
        "EXIT": "false",
        "BRIEF": "asked",
        "visitor_name": "Sam",
        "user_name": "Sam",
    })


class FakeLlm(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, port: int):
        super().__init__(("127.0.0.1", port), FakeLlmHandler)
        self.counts: Counter = Counter()
        self.lock = threading.Lock()

    def count(self, key: str) -> None:
        with self.lock:
            self.counts[key] += 1


class FakeLlmHandler(http.server.BaseHTTPRequestHandler):
    server: FakeLlm
    protocol_version = "HTTP/1.1"

    def log_message(self, *_args) -> None:  # keep the check's output readable
        pass

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("content-type", content_type)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length)
        if self.path.endswith("/v1/traces"):
            # An empty ExportTraceServiceResponse: every span accepted.
            self.server.count("otlp_exports")
            self._send(200, b"", "application/x-protobuf")
            return
        if not self.path.endswith("/chat/completions"):
            self._send(404, b'{"error":{"message":"not found"}}', "application/json")
            return
        request = json.loads(body or b"{}")
        digest = hashlib.sha256(json.dumps(request.get("messages"), sort_keys=True).encode())
        if int(digest.hexdigest()[:8], 16) / 0xFFFFFFFF < FAIL_SHARE:
            self.server.count("failed")
            self._send(500, b'{"error":{"message":"injected failure","type":"server_error"}}',
                       "application/json")
            return
        self.server.count("answered")
        text = fake_reply_text()
        usage = {"prompt_tokens": 120, "completion_tokens": 40, "total_tokens": 160}
        if request.get("stream"):
            events = [
                {"id": "c", "object": "chat.completion.chunk", "model": "fake-model",
                 "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]},
                {"id": "c", "object": "chat.completion.chunk", "model": "fake-model",
                 "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": "stop"}]},
                {"id": "c", "object": "chat.completion.chunk", "model": "fake-model",
                 "choices": [], "usage": usage},
            ]
            payload = "".join(f"data: {json.dumps(event)}\n\n" for event in events)
            payload += "data: [DONE]\n\n"
            self._send(200, payload.encode(), "text/event-stream")
            return
        completion = {
            "id": "c", "object": "chat.completion", "model": "fake-model",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                         "finish_reason": "stop"}],
            "usage": usage,
        }
        self._send(200, json.dumps(completion).encode(), "application/json")


# --------------------------------------------------------------------------
# Redis (a few RESP commands, so the check needs no client library)
# --------------------------------------------------------------------------

class Redis:
    def __init__(self, host: str, port: int):
        self.sock = socket.create_connection((host, port), timeout=5)
        self.reader = self.sock.makefile("rb")

    def command(self, *args: str):
        parts = [f"*{len(args)}\r\n".encode()]
        for arg in args:
            data = arg.encode()
            parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
        self.sock.sendall(b"".join(parts))
        return self._read()

    def _read(self):
        line = self.reader.readline().rstrip(b"\r\n")
        kind, rest = line[:1], line[1:]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            raise CheckFailed(f"Redis error: {rest.decode()}")
        if kind == b":":
            return int(rest)
        if kind == b"$":
            size = int(rest)
            if size < 0:
                return None
            data = self.reader.read(size + 2)[:-2]
            return data.decode()
        if kind == b"*":
            return [self._read() for _ in range(int(rest))]
        raise CheckFailed(f"unexpected Redis reply {line!r}")

    def delete_prefix(self, prefix: str) -> int:
        cursor, deleted = "0", 0
        while True:
            cursor, keys = self.command("SCAN", cursor, "MATCH", f"{prefix}:*", "COUNT", "500")
            if keys:
                deleted += self.command("DEL", *keys)
            if cursor == "0":
                return deleted

    def close(self) -> None:
        self.sock.close()


# --------------------------------------------------------------------------
# The kit: rules and dashboards
# --------------------------------------------------------------------------

def load_rule_files(rules_dir: Path) -> list[tuple[Path, dict]]:
    files = sorted(rules_dir.glob("*.rules.yml"))
    if not files:
        raise CheckFailed(f"no *.rules.yml in {rules_dir}: the monitoring kit's rules are missing")
    loaded = []
    for path in files:
        document = yaml.safe_load(path.read_text()) or {}
        if not document.get("groups"):
            raise CheckFailed(f"{path}: no rule groups")
        loaded.append((path, document))
    return loaded


def rules_of(loaded: list[tuple[Path, dict]]):
    for path, document in loaded:
        for group in document["groups"]:
            for rule in group.get("rules") or []:
                yield path, group.get("name", "?"), rule


def shortened_copy(loaded: list[tuple[Path, dict]], folder: Path) -> list[Path]:
    """The rules with every `for:` at SHORT_FOR and every group evaluated
    at the scrape interval, so the alert can fire within the check."""
    copies = []
    for path, document in loaded:
        document = json.loads(json.dumps(document))  # deep copy
        for group in document["groups"]:
            if "interval" in group:
                group["interval"] = SCRAPE_INTERVAL
            for rule in group.get("rules") or []:
                if "for" in rule:
                    rule["for"] = SHORT_FOR
        copy = folder / path.name
        copy.write_text(yaml.safe_dump(document, sort_keys=False))
        copies.append(copy)
    return copies


def dashboard_files(dashboards_dir: Path) -> list[Path]:
    files = sorted(path for path in dashboards_dir.rglob("*.json") if path.is_file())
    if not files:
        raise CheckFailed(f"no dashboard JSON under {dashboards_dir}: the monitoring kit's dashboards are missing")
    return files


NON_PROMETHEUS = ("loki", "elasticsearch", "tempo", "jaeger", "zipkin", "grafana", "dashboard",
                  "-- grafana --", "-- dashboard --", "-- mixed --")


def datasource_type(datasource, variables: dict) -> str:
    """The plugin type behind a panel or target datasource; "prometheus"
    unless it names or resolves to another one."""
    if datasource is None:
        return "prometheus"
    if isinstance(datasource, dict):
        if datasource.get("type"):
            return str(datasource["type"]).lower()
        datasource = datasource.get("uid") or ""
    name = str(datasource)
    match = re.fullmatch(r"\$\{?(\w+)(?::\w+)?\}?", name)
    if match and match.group(1) in variables:
        return str(variables[match.group(1)]).lower()
    lowered = name.lower()
    for other in NON_PROMETHEUS:
        if other in lowered:
            return other
    return "prometheus"


def panels_of(container: dict):
    for panel in container.get("panels") or []:
        yield panel
        yield from panels_of(panel)  # a row's collapsed panels
    for row in container.get("rows") or []:  # the old schema
        yield from panels_of(row)


def queries_of(dashboard: dict):
    """(kind, title, expr) for every Prometheus query of a dashboard: panel
    targets must return data, annotation queries must only parse."""
    variables = {
        variable.get("name"): variable.get("query")
        for variable in (dashboard.get("templating") or {}).get("list") or []
        if variable.get("type") == "datasource"
    }
    # Variables an operator types (prices, say) are plain values, not label
    # matchers: the query takes their current value, as Grafana renders it.
    values = {
        variable.get("name"): str((variable.get("current") or {}).get("value") or variable.get("query"))
        for variable in (dashboard.get("templating") or {}).get("list") or []
        if variable.get("type") in ("textbox", "constant")
    }

    def with_values(expr):
        for name, value in values.items():
            expr = expr.replace("${" + name + "}", value).replace("$" + name, value)
        return expr

    skipped = []
    found = []
    for panel in panels_of(dashboard):
        for target in panel.get("targets") or []:
            source = datasource_type(target.get("datasource") or panel.get("datasource"), variables)
            title = f"panel '{panel.get('title', '?')}' ref {target.get('refId', '?')}"
            if source != "prometheus":
                skipped.append(f"{title} ({source})")
                continue
            found.append(("panel", title, with_values(target.get("expr"))))
    for annotation in (dashboard.get("annotations") or {}).get("list") or []:
        if "expr" not in annotation:
            continue
        source = datasource_type(annotation.get("datasource"), variables)
        title = f"annotation '{annotation.get('name', '?')}'"
        if source != "prometheus":
            skipped.append(f"{title} ({source})")
            continue
        found.append(("annotation", title, with_values(annotation.get("expr"))))
    return found, skipped


LABEL_MATCHER = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"')
VARIABLE = re.compile(r"\$\{(\w+)(?::[^}]*)?\}|\$(\w+)|\[\[(\w+)(?::[^\]]*)?\]\]")


def substitute(expr: str) -> str:
    """Grafana's rendering of a panel query, with `.*` for every template
    variable in a label matcher (so every environment and instance matches)."""
    for name, value in BUILTIN_VARIABLES.items():  # longest names first
        expr = expr.replace("${" + name + "}", value).replace("$" + name, value)

    def matcher(match: re.Match) -> str:
        label, op, value = match.groups()
        if not VARIABLE.search(value):
            return match.group(0)
        op = {"=": "=~", "!=": "!~"}.get(op, op)
        return f'{label}{op}"{VARIABLE.sub(".*", value)}"'

    expr = LABEL_MATCHER.sub(matcher, expr)
    leftover = VARIABLE.search(expr)
    if leftover:
        raise CheckFailed(f"template variable {leftover.group(0)} outside a label matcher")
    return expr


def kit_jobs(prometheus_yml: Path) -> dict[str, str]:
    """The job names the kit's Prometheus config gives the server and each
    exporter (its static scrape configs, recognised by port, then by name),
    so rules and panels that select on `job` match here too."""
    jobs = {"server": "heartrule", "node": "node", "postgres": "postgres", "redis": "redis"}
    if not prometheus_yml.is_file():
        return jobs
    found: dict[str, str] = {}
    config = yaml.safe_load(prometheus_yml.read_text()) or {}
    for scrape in config.get("scrape_configs") or []:
        name = str(scrape.get("job_name", ""))
        targets = [str(target) for static in scrape.get("static_configs") or []
                   for target in static.get("targets") or []]
        if not name or not targets:
            continue
        ports = {target.rsplit(":", 1)[-1] for target in targets}
        kind = next((kind for kind, (_, port) in EXPORTERS.items() if str(port) in ports), None)
        kind = kind or next((kind for kind in EXPORTERS if kind in name.lower()), None)
        if kind is None and ("heartrule" in name.lower() or "8000" in ports):
            kind = "server"
        if kind and kind not in found:
            found[kind] = name
    return {**jobs, **found}


def catalogue_names(binary: Path) -> set[str]:
    """The metric names of the server's catalogue (`heartrule metrics-doc`)."""
    table = subprocess.run([str(binary), "metrics-doc"], check=True, capture_output=True,
                           text=True).stdout
    names = set(re.findall(r"^\| `([a-z0-9_]+)` \|", table, flags=re.MULTILINE))
    if not names:
        raise CheckFailed("`heartrule metrics-doc` printed no metrics")
    return names


def family_of(series_name: str, declared: set[str]) -> str:
    """The metric a scraped series name belongs to (a histogram's
    `_bucket`/`_sum`/`_count` series belong to the histogram)."""
    for suffix in ("_bucket", "_sum", "_count"):
        base = series_name.removesuffix(suffix)
        if base != series_name and base in declared:
            return base
    return series_name


# --------------------------------------------------------------------------
# Processes
# --------------------------------------------------------------------------

class Stack:
    """Everything the check starts, stopped in reverse order."""

    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.tmp = Path(tempfile.mkdtemp(prefix="heartrule-live-check-"))
        self.processes: list[tuple[str, subprocess.Popen]] = []
        self.fake: FakeLlm | None = None
        self.database: str | None = None
        self.redis_prefix = f"heartrule_live_{uuid.uuid4().hex[:12]}"

    # -- lifecycle
    def stop(self) -> None:
        for name, process in reversed(self.processes):
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    log(f"{name} ignored SIGTERM; killing it")
                    process.kill()
                    process.wait()
        if self.fake:
            self.fake.shutdown()
            self.fake.server_close()
        if self.database:
            subprocess.run(["dropdb", "-h", self.args.pg_host, "-p", str(self.args.pg_port),
                            "-U", self.args.pg_user, "--if-exists", "--force", self.database],
                           check=False)
        try:
            redis = Redis(self.args.redis_host, self.args.redis_port)
            redis.delete_prefix(self.redis_prefix)
            redis.close()
        except (OSError, CheckFailed) as error:
            log(f"could not delete the Redis keys {self.redis_prefix}:*: {error}")
        if self.args.keep_temp:
            log(f"kept {self.tmp}")
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)

    def spawn(self, name: str, argv: list[str], env: dict | None = None) -> subprocess.Popen:
        output = open(self.tmp / f"{name}.log", "wb")  # noqa: SIM115 (closed with the process)
        process = subprocess.Popen(argv, stdout=output, stderr=subprocess.STDOUT,
                                   env=env, start_new_session=True)
        self.processes.append((name, process))
        return process

    def log_tail(self, name: str, lines: int = 30) -> str:
        path = self.tmp / f"{name}.log"
        if not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    def wait_http(self, name: str, url: str, process: subprocess.Popen, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise CheckFailed(f"{name} exited with {process.returncode}:\n{self.log_tail(name)}")
            try:
                status, _ = call("GET", url, timeout=2)
                if status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.2)
        raise CheckFailed(f"{name} not ready at {url} after {timeout}s:\n{self.log_tail(name)}")

    # -- pieces
    def start_fake(self) -> int:
        port = free_port()
        self.fake = FakeLlm(port)
        threading.Thread(target=self.fake.serve_forever, daemon=True).start()
        return port

    def create_database(self) -> str:
        self.database = f"heartrule_live_{uuid.uuid4().hex[:12]}"
        subprocess.run(["createdb", "-h", self.args.pg_host, "-p", str(self.args.pg_port),
                        "-U", self.args.pg_user, self.database], check=True)
        return (f"postgres://{self.args.pg_user}@{self.args.pg_host}:{self.args.pg_port}/"
                f"{self.database}")

    def server_config(self, database_url: str, fake_port: int, port: int) -> Path:
        folder = self.tmp / "config"
        folder.mkdir()
        shutil.copy(Path("config/default.yaml"), folder / "default.yaml")
        override = {
            "server": {"host": "127.0.0.1", "port": port, "workers": 2,
                       "shutdown_grace_period": "2s"},
            "database": {"url": database_url, "max_connections": 8, "run_migrations": False},
            "redis": {"url": f"redis://{self.args.redis_host}:{self.args.redis_port}",
                      "key_prefix": self.redis_prefix},
            "llm": {
                "provider": "openai",
                "openai": {"base_url": f"http://127.0.0.1:{fake_port}/v1",
                           "api_key": "sk-live-check", "model": "fake-model",
                           "timeout": "5s", "provider_name": "fakeai"},
                "resilience": {"max_retries": 1, "initial_backoff": "10ms",
                               "max_backoff": "50ms",
                               "breaker": {"failure_threshold": 5, "open_for": "5s",
                                           "half_open_max_calls": 1}},
                # The fallback talks to the same fake, so a prompt the fake
                # fails also fails there: turns then end in 503s (the 5xx
                # panels have data) while the primary's open breaker still
                # hands calls over (the fallback panels have data too).
                "fallback": {
                    "provider": "openai",
                    "openai": {"base_url": f"http://127.0.0.1:{fake_port}/v1",
                               "api_key": "sk-live-check", "model": "fake-model",
                               "timeout": "5s", "provider_name": "fakeai-fallback"},
                    "resilience": {"max_retries": 0},
                },
            },
            "telemetry": {
                "environment": "livecheck",
                "log": {"format": "json", "level": "info"},
                "traces": {"enabled": True, "endpoint": f"http://127.0.0.1:{fake_port}",
                           "protocol": "http_protobuf", "sampling_ratio": 1.0,
                           "export_timeout": "2s"},
                "metrics": {"enabled": True},
            },
        }
        (folder / "livecheck.yaml").write_text(yaml.safe_dump(override))
        return folder

    def server_env(self) -> dict:
        env = {key: value for key, value in os.environ.items()
               if not key.startswith("HEARTRULE__") and key not in
               ("DATABASE_URL", "REDIS_URL", "LLM_PROVIDER", "API_PORT", "API_HOST", "RUST_LOG")}
        env["APP_ENV"] = "livecheck"
        return env

    def start_exporters(self, jobs: dict[str, str], database_url: str) -> dict[str, int]:
        """The node, PostgreSQL (on the check's database) and Redis
        exporters, so the kit's panels and rules over them have data."""
        ports = {}
        for kind, (binary, _) in EXPORTERS.items():
            port = free_port()
            argv = [binary, f"--web.listen-address=127.0.0.1:{port}"]
            env = dict(os.environ)
            if kind == "postgres":
                env["DATA_SOURCE_NAME"] = f"{database_url}?sslmode=disable"
            if kind == "redis":
                argv = [binary, f"-web.listen-address=127.0.0.1:{port}",
                        f"-redis.addr=redis://{self.args.redis_host}:{self.args.redis_port}"]
            process = self.spawn(f"{kind}-exporter", argv, env=env)
            self.wait_http(f"{kind}-exporter", f"http://127.0.0.1:{port}/metrics", process, 30)
            ports[jobs[kind]] = port
        return ports

    def start_prometheus(self, targets: dict[str, int], rule_copies: list[Path]) -> int:
        port = free_port()
        config = {
            "global": {"scrape_interval": SCRAPE_INTERVAL, "evaluation_interval": SCRAPE_INTERVAL},
            "rule_files": [str(path) for path in rule_copies],
            "scrape_configs": [{
                "job_name": job,
                "static_configs": [{
                    "targets": [f"127.0.0.1:{target_port}"],
                    "labels": {"environment": "livecheck"},
                }],
            } for job, target_port in targets.items()],
        }
        config_path = self.tmp / "prometheus.yml"
        config_path.write_text(yaml.safe_dump(config, sort_keys=False))
        process = self.spawn("prometheus", [
            "prometheus", f"--config.file={config_path}",
            f"--storage.tsdb.path={self.tmp / 'prometheus-data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--storage.tsdb.retention.time=1h",
        ])
        self.wait_http("prometheus", f"http://127.0.0.1:{port}/-/ready", process, 30)
        return port


# --------------------------------------------------------------------------
# Load
# --------------------------------------------------------------------------

class Load:
    """A few threads of mixed traffic, good and bad, until stopped."""

    def __init__(self, base: str, script_ids: list[str], redis_prefix: str, redis_address):
        self.base = base
        self.script_ids = script_ids
        self.redis_prefix = redis_prefix
        self.redis_address = redis_address
        self.sessions: list[str] = []
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.statuses: Counter = Counter()
        self.errors: list[str] = []
        self.hello_yaml = Path("examples/scripts/hello.yaml").read_text()

    def record(self, what: str, status: int) -> None:
        with self.lock:
            self.statuses[(what, status)] += 1

    def session(self, rng: random.Random) -> str | None:
        with self.lock:
            return rng.choice(self.sessions) if self.sessions else None

    def create_session(self, rng: random.Random) -> None:
        status, body = call("POST", f"{self.base}/api/sessions",
                            {"userId": f"live-{rng.randrange(50)}",
                             "scriptId": rng.choice(self.script_ids)})
        self.record("create session", status)
        if status in (200, 201):
            with self.lock:
                self.sessions.append(json.loads(body)["sessionId"])
                del self.sessions[:-40]  # keep turning recent sessions

    def turn(self, rng: random.Random) -> None:
        session = self.session(rng)
        if session is None:
            return self.create_session(rng)
        words = " ".join(rng.choice(["I", "feel", "tired", "work", "sleep", "my", "name", "is",
                                     "Sam", "today", "worried", "family"]) for _ in range(6))
        status, _ = call("POST", f"{self.base}/api/sessions/{session}/messages",
                         {"content": f"{words} {rng.randrange(10**6)}"}, timeout=30)
        self.record("turn", status)

    def stream_turn(self, rng: random.Random) -> None:
        session = self.session(rng)
        if session is None:
            return None
        status, _ = call("POST", f"{self.base}/api/chat/stream",
                         {"sessionId": session, "message": f"streamed {rng.randrange(10**6)}"},
                         timeout=30)
        self.record("stream turn", status)
        return None

    def busy_session(self, rng: random.Random) -> None:
        session = self.session(rng)
        if session is None:
            return
        results = []

        def one():
            try:
                results.append(call("POST", f"{self.base}/api/sessions/{session}/messages",
                                    {"content": f"at once {rng.randrange(10**6)}"},
                                    timeout=30)[0])
            except OSError as error:
                with self.lock:
                    self.errors.append(repr(error))

        threads = [threading.Thread(target=one, daemon=True) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        for status in results:
            self.record("concurrent turn", status)

    def reads(self, rng: random.Random) -> None:
        session = self.session(rng)
        if session is None:
            return
        for path in (f"/api/sessions/{session}", f"/api/sessions/{session}/messages",
                     f"/api/sessions/{session}/variables?scoped=true"):
            self.record("read", call("GET", self.base + path)[0])

    def bad_requests(self, rng: random.Random) -> None:
        unknown = str(uuid.uuid4())
        self.record("unknown session turn",
                    call("POST", f"{self.base}/api/sessions/{unknown}/messages",
                         {"content": "hello?"})[0])
        self.record("unknown session read", call("GET", f"{self.base}/api/sessions/{unknown}")[0])
        self.record("unknown script",
                    call("POST", f"{self.base}/api/sessions",
                         {"userId": "live", "scriptId": str(uuid.uuid4())})[0])
        self.record("malformed body",
                    call("POST", f"{self.base}/api/sessions", raw=b'{"userId": ')[0])
        self.record("missing field", call("POST", f"{self.base}/api/chat", {"message": "x"})[0])
        # A second script under a taken name: the unique index refuses it, a
        # database error the persistence metrics count (kind="conflict").
        self.record("duplicate script name",
                    call("POST", f"{self.base}/api/scripts",
                         {"scriptName": "hello", "scriptType": "session",
                          "scriptContent": self.hello_yaml, "author": "live-check"})[0])
        self.record("bad script",
                    call("POST", f"{self.base}/api/scripts",
                         {"scriptName": f"broken-{rng.randrange(10**6)}", "scriptType": "session",
                          "scriptContent": "session: [not, a, script", "author": "live-check"})[0])

    def redis_fault(self, rng: random.Random) -> None:
        """A value of the wrong type under a session's cache key: reading it
        is a real Redis error (WRONGTYPE), which the cache fails open on."""
        session = self.session(rng)
        if session is None:
            return
        redis = Redis(*self.redis_address)
        try:
            key = f"{self.redis_prefix}:session:{session}"
            # Atomic, so the server's own SET cannot land between the two.
            redis.command("MULTI")
            redis.command("DEL", key)
            redis.command("LPUSH", key, "not-a-session")
            redis.command("EXEC")
        finally:
            redis.close()
        self.record("read after Redis fault", call("GET", f"{self.base}/api/sessions/{session}")[0])

    def worker(self, seed: int) -> None:
        rng = random.Random(seed)
        actions = [(self.create_session, 3), (self.turn, 8), (self.stream_turn, 2),
                   (self.reads, 2), (self.bad_requests, 1), (self.busy_session, 1),
                   (self.redis_fault, 1)]
        choices = [action for action, weight in actions for _ in range(weight)]
        while not self.stop.is_set():
            try:
                rng.choice(choices)(rng)
            except Exception as error:  # noqa: BLE001 (reported, and fails the check)
                with self.lock:
                    self.errors.append(repr(error))
                time.sleep(0.2)

    def run(self) -> list[threading.Thread]:
        threads = [threading.Thread(target=self.worker, args=(seed,), daemon=True)
                   for seed in range(WORKERS)]
        for thread in threads:
            thread.start()
        return threads


# --------------------------------------------------------------------------
# Prometheus queries
# --------------------------------------------------------------------------

class Prometheus:
    def __init__(self, port: int):
        self.base = f"http://127.0.0.1:{port}"

    def get(self, path: str, **params) -> dict:
        url = f"{self.base}{path}?{urllib.parse.urlencode(params)}" if params else self.base + path
        status, body = call("GET", url)
        try:
            answer = json.loads(body)
        except json.JSONDecodeError as error:
            raise CheckFailed(f"Prometheus answered {status} with non-JSON: {body[:200]!r}") from error
        return answer

    def query(self, expr: str) -> dict:
        return self.get("/api/v1/query", query=expr, time=f"{time.time():.3f}")

    def alert_state(self, name: str) -> str | None:
        states = [alert["state"] for alert in self.get("/api/v1/alerts")["data"]["alerts"]
                  if alert["labels"].get("alertname") == name]
        if "firing" in states:
            return "firing"
        return states[0] if states else None


# --------------------------------------------------------------------------
# The check
# --------------------------------------------------------------------------

def run(args: argparse.Namespace) -> int:
    started = time.monotonic()
    # Preconditions first: an empty kit fails before anything starts.
    rules = load_rule_files(args.rules_dir)
    alert_rules = [rule for _, _, rule in rules_of(rules) if rule.get("alert") == ALERT]
    if not alert_rules:
        raise CheckFailed(f"no alert {ALERT} in {args.rules_dir}")
    dashboards = []
    for path in dashboard_files(args.dashboards_dir):
        document = json.loads(path.read_text())
        dashboards.append((path, document.get("dashboard", document)))
    binary = Path(args.binary)
    if not binary.is_file():
        raise CheckFailed(f"no server binary at {binary}")
    jobs = kit_jobs(args.prometheus_config)
    if args.job:
        jobs["server"] = args.job

    stack = Stack(args)
    load: Load | None = None
    failures: list[str] = []
    summary: list[str] = []
    try:
        fake_port = stack.start_fake()
        database_url = stack.create_database()
        server_port = free_port()
        config_dir = stack.server_config(database_url, fake_port, server_port)
        env = stack.server_env()
        migrate = subprocess.run([str(binary), "--config-dir", str(config_dir), "migrate"],
                                 env=env, capture_output=True, text=True)
        if migrate.returncode != 0:
            raise CheckFailed(f"heartrule migrate failed:\n{migrate.stdout}\n{migrate.stderr}")
        server = stack.spawn("heartrule", [str(binary), "--config-dir", str(config_dir), "serve"],
                             env=env)
        base = f"http://127.0.0.1:{server_port}"
        stack.wait_http("heartrule", f"{base}/health", server, 60)
        log(f"server on {base}, database {stack.database}, Redis prefix {stack.redis_prefix}")

        copies_dir = stack.tmp / "rules"
        copies_dir.mkdir()
        copies = []
        for copy in shortened_copy(rules, copies_dir):
            # Prometheus refuses to start on a rule file that does not load;
            # leave such a file out, so the other files are still checked.
            checked = subprocess.run(["promtool", "check", "rules", str(copy)],
                                     capture_output=True, text=True)
            if checked.returncode == 0:
                copies.append(copy)
            else:
                failures.append(f"{copy.name}: promtool check rules failed:\n    "
                                + (checked.stdout + checked.stderr).strip().replace("\n", "\n    "))
        targets = {jobs["server"]: server_port, **stack.start_exporters(jobs, database_url)}
        prometheus = Prometheus(stack.start_prometheus(targets, copies))
        loaded = sum(len(group["rules"]) for group in
                     prometheus.get("/api/v1/rules")["data"]["groups"])
        log(f"Prometheus on {prometheus.base} with {loaded} rules from {len(copies)} files")

        status, body = call("GET", f"{base}/api/scripts")
        scripts = {script["scriptName"]: script["id"] for script in json.loads(body)["scripts"]}
        missing = [name for name in SCRIPTS if name not in scripts]
        if status != 200 or missing:
            raise CheckFailed(f"example scripts {missing} not preloaded (GET /api/scripts: {status})")
        load = Load(base, [scripts[name] for name in SCRIPTS], stack.redis_prefix,
                    (args.redis_host, args.redis_port))
        threads = load.run()
        load_started = time.monotonic()
        fired_after = None
        while True:
            time.sleep(2)
            elapsed = time.monotonic() - load_started
            if server.poll() is not None:
                raise CheckFailed(f"the server died under load:\n{stack.log_tail('heartrule')}")
            if fired_after is None and prometheus.alert_state(ALERT) == "firing":
                fired_after = elapsed
                log(f"{ALERT} firing after {elapsed:.0f}s of load")
            if elapsed >= LOAD_MAX_SECONDS or (elapsed >= LOAD_MIN_SECONDS and fired_after):
                break
        load.stop.set()
        for thread in threads:
            thread.join(timeout=40)
        load_seconds = time.monotonic() - load_started
        # One more scrape and evaluation, so the last requests are in.
        time.sleep(5)

        # -- the load itself
        by_status = Counter()
        for (what, status), count in load.statuses.items():
            by_status[status] += count
        summary.append(f"load: {sum(by_status.values())} requests in {load_seconds:.0f}s, "
                       f"by status {dict(sorted(by_status.items()))}")
        fake = stack.fake.counts if stack.fake else Counter()
        summary.append(f"fake LLM: {fake['answered']} answered, {fake['failed']} failed with 500, "
                       f"{fake['otlp_exports']} OTLP exports received")
        for what in ("create session", "turn"):
            ok = sum(count for (kind, status), count in load.statuses.items()
                     if kind == what and 200 <= status < 300)
            if ok == 0:
                failures.append(f"load: no successful '{what}'")
        if not any(400 <= status < 500 for status in by_status):
            failures.append("load: no client errors (unknown sessions, bad input) were produced")
        if fake["failed"] == 0:
            failures.append("fake LLM: no call failed, so the error path was not exercised")
        if load.errors:
            failures.append(f"load: {len(load.errors)} requests raised, e.g. {load.errors[:3]}")

        # -- the scrape target
        targets = prometheus.get("/api/v1/targets")["data"]["activeTargets"]
        healthy = [target for target in targets if target["health"] == "up"]
        if len(healthy) != len(targets) or not targets:
            failures.append("scrape targets not up: " + "; ".join(
                f"{t['labels'].get('job')}: {t.get('lastError')}" for t in targets
                if t["health"] != "up"))
        summary.append("scrape jobs: " + ", ".join(
            f"{kind}={job}" for kind, job in jobs.items()) + f" ({len(healthy)} targets up)")

        # -- what the server exposed: nothing undeclared, and which declared
        # metrics this load never produced (information, not a failure)
        declared = catalogue_names(binary)
        scraped = set(prometheus.get("/api/v1/label/__name__/values",
                                     **{"match[]": f'{{job="{jobs["server"]}"}}'})["data"])
        # Prometheus's own series: `up`, and the alert states it writes with
        # the alerting rule's labels (job included).
        scraped -= {"up", "ALERTS", "ALERTS_FOR_STATE"}
        scraped = {name for name in scraped if not name.startswith("scrape_")}
        families = {family_of(name, declared) for name in scraped}
        undeclared = sorted(families - declared)
        if undeclared:
            failures.append(f"metrics exposed but not in the catalogue: {undeclared}")
        summary.append(f"catalogue: {len(declared & families)} of {len(declared)} declared metrics "
                       f"scraped; not produced by this load: {sorted(declared - families) or 'none'}")

        # -- every rule: parses, evaluates without error in Prometheus
        health = {}
        for group in prometheus.get("/api/v1/rules")["data"]["groups"]:
            for rule in group["rules"]:
                health[(group["name"], rule["name"])] = (rule["health"], rule.get("lastError", ""))
        rule_count = 0
        for path, group, rule in rules_of(rules):
            rule_count += 1
            name = rule.get("alert") or rule.get("record")
            answer = prometheus.query(str(rule.get("expr", "")))
            if answer.get("status") != "success":
                failures.append(f"rule {name} ({path.name}): {answer.get('error')}")
                continue
            state, error = health.get((group, name), ("missing", ""))
            if state != "ok":
                failures.append(f"rule {name} ({path.name}): health {state} {error}".rstrip())
        summary.append(f"rules: {rule_count} expressions from {len(rules)} files queried, "
                       f"{len(alert_rules)} x {ALERT}")

        # -- every dashboard query: parses; a panel query also returns data
        panel_count = annotation_count = 0
        skipped_all = []
        for path, dashboard in dashboards:
            queries, skipped = queries_of(dashboard)
            skipped_all += [f"{path.name}: {item}" for item in skipped]
            for kind, title, expr in queries:
                where = f"{path.name}: {title}"
                if not expr or not str(expr).strip():
                    failures.append(f"{where}: empty expr")
                    continue
                try:
                    rendered = substitute(str(expr))
                except CheckFailed as error:
                    failures.append(f"{where}: {error}")
                    continue
                answer = prometheus.query(rendered)
                if answer.get("status") != "success":
                    failures.append(f"{where}: {answer.get('error')}\n    query: {rendered}")
                    continue
                if kind == "annotation":
                    annotation_count += 1
                    continue
                panel_count += 1
                data = answer["data"]
                if data["resultType"] in ("vector", "matrix") and not data["result"]:
                    failures.append(f"{where}: no data\n    query: {rendered}")
        summary.append(f"dashboards: {len(dashboards)} files, {panel_count} panel queries with "
                       f"data checked, {annotation_count} annotation queries parsed")
        if skipped_all:
            summary.append(f"dashboards: {len(skipped_all)} non-Prometheus queries not checked: "
                           + "; ".join(skipped_all))
        if panel_count == 0 and not any("dashboards" in f for f in failures):
            failures.append("dashboards: not a single Prometheus panel query was found")

        # -- the alert
        if fired_after is None:
            state = prometheus.alert_state(ALERT)
            failures.append(f"alert {ALERT} never reached firing (last state: {state or 'inactive'})")
        else:
            summary.append(f"alert: {ALERT} reached firing after {fired_after:.0f}s of load "
                           f"(for: shortened to {SHORT_FOR})")
    finally:
        if load is not None:
            load.stop.set()  # no request may outlive the server (on SIGTERM, say)
        stack.stop()

    print("\n=== monitoring live check ===")
    for line in summary:
        print(f"  {line}")
    print(f"  took {time.monotonic() - started:.0f}s")
    if failures:
        print(f"\nFAILED: {len(failures)} problem(s)")
        for failure in failures:
            print(f"  - {failure}")
        return 1
    print("\nOK")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--binary", required=True, help="the heartrule server binary")
    parser.add_argument("--rules-dir", type=Path, default=Path("deploy/monitoring/prometheus/rules"))
    parser.add_argument("--dashboards-dir", type=Path,
                        default=Path("deploy/monitoring/grafana/dashboards"))
    parser.add_argument("--prometheus-config", type=Path,
                        default=Path("deploy/monitoring/prometheus/prometheus.yml"),
                        help="the kit's Prometheus config, read only for its job names")
    parser.add_argument("--job", help="scrape job name of the server (default: the kit's, "
                        "else heartrule)")
    parser.add_argument("--pg-host", default="127.0.0.1")
    parser.add_argument("--pg-port", type=int, default=5432)
    parser.add_argument("--pg-user", default="postgres")
    parser.add_argument("--redis-host", default="127.0.0.1")
    parser.add_argument("--redis-port", type=int, default=6379)
    parser.add_argument("--keep-temp", action="store_true", help="keep logs and configs")
    args = parser.parse_args()

    # SIGTERM (CI cancelling) unwinds through the cleanup like Ctrl-C does.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        return run(args)
    except CheckFailed as error:
        print(f"\nFAILED: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
