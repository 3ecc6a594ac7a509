#!/usr/bin/env python3
"""Checks the log-shipping config against log lines of the real server.

Vector, Loki and Elasticsearch do not install here, so this reads what the
shipping config relies on and checks it against real output:

1. From deploy/monitoring/logs/: the fields the Vector remap transform
   extracts (`.flat = string(."server.field") ?? ...`, the coercion giving
   their type), the Loki labels and structured metadata, the fields the
   Elasticsearch template indexes with their types, the retention settings.
2. Starts the real server binary (in-memory store, mock LLM, JSON logs,
   traces exported to a stand-in OTLP receiver so that lines carry trace_id)
   on free ports, with its rolling log files in a temporary directory,
   creates a session on an example script, answers it, asks for a missing
   session and sends an invalid request, then stops it and reads its stdout.
3. Every source field the config extracts appears in those lines with the
   type its coercion expects. The remap program itself is compiled and run
   on every line by VRL (vrl-python: Vector's remap language as a library),
   and what it outputs is what the checks read: session_id, script_id,
   error_code, trace_id, route and status are shipped with their types;
   every Loki label renders on every line and stays bounded; every
   structured-metadata and indexed Elasticsearch field is shipped, with a
   type its mapping accepts. The file source's pattern matches the files the
   server wrote.

    check_log_fields.py --binary $CARGO_TARGET_DIR/debug/heartrule
"""

from __future__ import annotations

import argparse
import fnmatch
import http.server
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import yaml
from vrl_python import VRLRuntime

ROOT = Path(__file__).resolve().parents[3]
LOGS = ROOT / "deploy/monitoring/logs"

# The fields operators must be able to search by (issue: centralised logs).
REQUIRED = {"session_id", "script_id", "error_code", "trace_id", "route", "status"}
# Never a Loki label: one stream per value.
UNBOUNDED = {"session_id", "script_id", "trace_id", "span_id", "request_id", "message", "latency_ms"}

# The VRL coercion functions the transform uses, and the JSON types each accepts.
COERCIONS = {
    "string": (str,),
    "int": (int,),
    # VRL's float() rejects integers; the server writes every f64 with a
    # decimal point or an exponent, so a JSON integer here is a real mismatch.
    "float": (float,),
    "bool": (bool,),
}
# Elasticsearch mapping types and the JSON types a value of theirs may have.
ES_TYPES = {
    "keyword": (str,),
    "text": (str,),
    "short": (int,),
    "integer": (int,),
    "long": (int,),
    "float": (int, float),
    "double": (int, float),
    "boolean": (bool,),
    "date": (str,),
}

MAPPING = re.compile(
    r'^\s*\.([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(string|int|float|bool)\(\s*\.((?:"[^"]+")|[A-Za-z_][A-Za-z0-9_]*)\s*\)\s*\?\?')
TEMPLATE = re.compile(r"^\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}$")

errors: list[str] = []


def err(message: str) -> None:
    errors.append(message)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def type_ok(value, accepted: tuple[type, ...]) -> bool:
    if isinstance(value, bool) and bool not in accepted:
        return False
    return isinstance(value, accepted)


# ------------------------------------------------------------ the config


def file_includes() -> list[str]:
    """The glob patterns of the Vector file source."""
    vector = yaml.safe_load((LOGS / "vector/vector.yaml").read_text())
    files = [s for s in vector.get("sources", {}).values() if s.get("type") == "file"]
    if len(files) != 1 or not files[0].get("include"):
        err("vector.yaml: expected one file source with include patterns")
        return []
    return files[0]["include"]


def read_config() -> tuple[dict[str, tuple[str, str]], dict[str, str], dict[str, str], dict[str, str]]:
    """(target -> (coercion, source field), loki labels, loki metadata, es field -> type)."""
    vector = yaml.safe_load((LOGS / "vector/vector.yaml").read_text())
    sinks = {}
    for name in ("sink-loki.yaml", "sink-elasticsearch.yaml"):
        sinks.update(yaml.safe_load((LOGS / "vector" / name).read_text()).get("sinks", {}))
    remaps = [t for t in vector.get("transforms", {}).values() if t.get("type") == "remap"]
    if len(remaps) != 1:
        err(f"vector.yaml: expected one remap transform, found {len(remaps)}")
        return {}, {}, {}, {}
    mappings: dict[str, tuple[str, str]] = {}
    for line in remaps[0]["source"].splitlines():
        m = MAPPING.match(line)
        if m:
            mappings[m.group(1)] = (m.group(2), m.group(3).strip('"'))
    loki = [s for s in sinks.values() if s.get("type") == "loki"]
    es = [s for s in sinks.values() if s.get("type") == "elasticsearch"]
    if len(loki) != 1 or len(es) != 1:
        err("vector: expected one loki and one elasticsearch sink")
        return mappings, {}, {}, {}
    for sink in loki + es:
        if sink.get("inputs") != [next(k for k, t in vector["transforms"].items() if t is remaps[0])]:
            err(f"vector: sink {sink.get('type')} must read the remap transform's output")
        if not sink.get("compression") or sink["compression"] == "none":
            err(f"vector: sink {sink.get('type')} must compress what it sends")

    def template_fields(block: dict, what: str) -> dict[str, str]:
        fields = {}
        for key, value in (block or {}).items():
            m = TEMPLATE.match(str(value))
            if not m:
                err(f"vector: loki {what} {key}: expected a single '{{{{ field }}}}' template, got {value!r}")
                continue
            fields[key] = m.group(1)
        return fields

    labels = template_fields(loki[0].get("labels"), "label")
    metadata = template_fields(loki[0].get("structured_metadata"), "structured_metadata")
    template = json.loads((LOGS / "elasticsearch/index-template.json").read_text())
    props = template["template"]["mappings"]["properties"]
    es_fields = {name: spec["type"] for name, spec in props.items()}
    lifecycle = template["template"]["settings"].get("index.lifecycle.name")
    policy = json.loads((LOGS / "elasticsearch/ilm-policy.json").read_text())
    delete_after = policy["policy"]["phases"].get("delete", {}).get("min_age")
    if lifecycle != "heartrule-logs" or delete_after != "90d":
        err(f"elasticsearch: the index template must use the heartrule-logs lifecycle policy deleting after 90d "
            f"(got {lifecycle!r}, {delete_after!r})")
    loki_config = yaml.safe_load((LOGS / "loki.yaml").read_text())
    limits = loki_config.get("limits_config", {})
    if limits.get("retention_period") != "2160h" or not loki_config.get("compactor", {}).get("retention_enabled"):
        err("loki.yaml: the default retention is 90 days (limits_config.retention_period: 2160h, "
            "compactor.retention_enabled: true)")
    if metadata and not limits.get("allow_structured_metadata"):
        err("loki.yaml: structured metadata is sent, so limits_config.allow_structured_metadata must be true")
    return mappings, labels, metadata, es_fields


# ------------------------------------------------------------ the server


class OtlpSink(http.server.BaseHTTPRequestHandler):
    """Accepts OTLP/HTTP exports: an empty protobuf body is a valid success."""

    def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
        self.rfile.read(int(self.headers.get("content-length", 0)))
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


def request(base: str, method: str, path: str, body: dict | None = None,
            token: str | None = None) -> tuple[int, dict]:
    data = json.dumps(body).encode() if body is not None else None
    headers = {"content-type": "application/json"}
    if token:
        headers["authorization"] = f"Bearer {token}"
    req = urllib.request.Request(base + path, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, json.loads(resp.read() or b"{}")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


def run_server(binary: Path, log_dir: Path) -> list[str]:
    otlp = http.server.ThreadingHTTPServer(("127.0.0.1", 0), OtlpSink)
    threading.Thread(target=otlp.serve_forever, daemon=True).start()
    port = free_port()
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("HEARTRULE__", "DATABASE_URL", "REDIS_URL", "LLM_PROVIDER", "RUST_LOG", "API_"))}
    env.update({
        "APP_ENV": "production",  # JSON lines, traces on: what an operator ships
        "API_HOST": "127.0.0.1",
        "API_PORT": str(port),
        "DATABASE_URL": "",
        "REDIS_URL": "",
        "LLM_PROVIDER": "mock",
        "HEARTRULE__TELEMETRY__TRACES__ENDPOINT": f"http://127.0.0.1:{otlp.server_address[1]}",
        "HEARTRULE__TELEMETRY__TRACES__PROTOCOL": "http_protobuf",
        "HEARTRULE__SERVER__SHUTDOWN_GRACE_PERIOD": "5s",
        # production.yaml requires bearer tokens.
        "HEARTRULE__AUTH__HS256_SECRET": "ci-stand-in-not-a-secret-but-long-enough",
        # The rolling files Vector tails, beside stdout.
        "HEARTRULE__TELEMETRY__LOG__FILE__DIRECTORY": str(log_dir),
    })
    out = Path(os.environ.get("TMPDIR", "/tmp")) / f"heartrule-log-fields-{os.getpid()}.log"
    with out.open("w") as stdout:
        proc = subprocess.Popen([str(binary)], cwd=ROOT, env=env, stdout=stdout, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    token = subprocess.run([str(binary), "token", "--subject", "log-fields", "--role", "client"],
                           cwd=ROOT, env=env, check=True, capture_output=True, text=True).stdout.strip()
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if request(base, "GET", "/health")[0] == 200:
                    break
            except (urllib.error.URLError, ConnectionError):
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"the server did not start:\n{out.read_text()}")
            time.sleep(0.2)
        status, scripts = request(base, "GET", "/api/scripts", token=token)
        hello = next(s["id"] for s in scripts["scripts"] if s["scriptName"] == "hello")
        status, created = request(base, "POST", "/api/sessions", {"userId": "log-fields", "scriptId": hello},
                                  token=token)
        if status != 200:
            raise SystemExit(f"creating a session answered {status}: {created}")
        status, turn = request(base, "POST", f"/api/sessions/{created['sessionId']}/messages",
                               {"content": "Ming"}, token=token)
        if status != 200:
            raise SystemExit(f"the turn answered {status}: {turn}")
        # Errors: a missing session (error.code + session.id) and an invalid body.
        status, _ = request(base, "GET", "/api/sessions/00000000-0000-0000-0000-000000000000",
                            token=token)
        if status != 404:
            raise SystemExit(f"a missing session answered {status}, expected 404")
        status, _ = request(base, "POST", "/api/sessions", {"userId": "log-fields", "scriptId": "not-a-uuid"},
                            token=token)
        if status != 400:
            raise SystemExit(f"an invalid body answered {status}, expected 400")
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        otlp.shutdown()
    lines = out.read_text().splitlines()
    out.unlink()
    return lines


def transform_source() -> str:
    vector = yaml.safe_load((LOGS / "vector/vector.yaml").read_text())
    return next(t["source"] for t in vector["transforms"].values() if t.get("type") == "remap")


def run_transform(lines: list[str]) -> list[dict]:
    """The remap program, compiled by VRL (type errors included) and run on
    each line wrapped the way Vector's file source wraps it."""
    runtime = VRLRuntime()
    source = transform_source()
    try:
        runtime.compile(source)
    except ValueError as e:
        err(f"vector.yaml: the remap program does not compile:\n{e}")
        return []
    out = []
    for line in lines:
        event = {"message": line, "host": "ci-host", "file": "/var/log/heartrule/heartrule.log",
                 "source_type": "file", "timestamp": "2026-01-01T00:00:00Z"}
        out.append(runtime.execute(source, event).processed_event)
    return out


# ------------------------------------------------------------ the check


def main() -> int:
    parser = argparse.ArgumentParser(description="Check the log-shipping config against real server logs.")
    parser.add_argument("--binary", type=Path, required=True, help="the heartrule server binary")
    args = parser.parse_args()

    mappings, labels, metadata, es_fields = read_config()
    with tempfile.TemporaryDirectory() as tmp:
        lines = run_server(args.binary, Path(tmp))
        # The file source's patterns, moved to the test's log directory, must
        # pick up the files the server wrote, and those hold the same JSON lines.
        written = sorted(Path(tmp).iterdir())
        for pattern in file_includes():
            local = str(Path(tmp) / Path(pattern).name)
            if not [f for f in written if fnmatch.fnmatch(str(f), local)]:
                err(f"vector.yaml include {pattern} matches none of the server's files {[f.name for f in written]}")
        file_lines = [line for f in written for line in f.read_text().splitlines()]
        if len(file_lines) != len(lines):
            err(f"the log files hold {len(file_lines)} lines, stdout {len(lines)}")
    events = []
    for i, line in enumerate(lines):
        try:
            event = json.loads(line)
        except json.JSONDecodeError:
            err(f"stdout line {i + 1} is not JSON: {line[:200]}")
            continue
        if not isinstance(event, dict):
            err(f"stdout line {i + 1} is not a JSON object")
            continue
        events.append(event)
    if len(events) < 10:
        err(f"only {len(events)} JSON log lines from the server")

    # 1. Every source field the transform reads exists, with the type its coercion accepts.
    shipped: dict[str, tuple[type, ...]] = {}
    for target, (coercion, source) in sorted(mappings.items()):
        values = [e[source] for e in events if source in e]
        if not values:
            err(f"vector.yaml extracts .{target} from {source!r}, which no log line has")
            continue
        bad = [v for v in values if not type_ok(v, COERCIONS[coercion])]
        if bad:
            err(f"{source!r}: {len(bad)} of {len(values)} values are not {coercion} (e.g. {bad[0]!r})")
        shipped[target] = COERCIONS[coercion]
        print(f"  .{target:<11} <- {source!r:<14} {coercion:<6} in {len(values)} lines")

    # 2. The brief's searchable fields are all extracted.
    for name in sorted(REQUIRED - set(shipped)):
        err(f"vector.yaml does not extract {name}")

    # 3. Run the real transform (Vector's VRL compiler and runtime) on every
    # line, as the file source hands it over, and check what would be shipped.
    shipped_events = run_transform(lines)
    if len(shipped_events) != len(lines):
        err(f"the transform returned {len(shipped_events)} events for {len(lines)} lines")
    for event in shipped_events:
        if "parse_error" in event:
            err(f"the transform could not parse a server line: {event.get('message')!r}")
    for dotted in ("session.id", "script.id", "error.code", "error.type"):
        if any(dotted in event for event in shipped_events):
            err(f"the transform ships {dotted!r} besides its flat name")
    for name in sorted(REQUIRED):
        values = [e[name] for e in shipped_events if name in e]
        want = (int,) if name == "status" else (str,)
        if not values:
            err(f"no shipped event has {name}")
        elif not all(type_ok(v, want) for v in values):
            err(f"shipped {name} values are not all {want[0].__name__}: {values[:3]}")
    if not all(re.fullmatch(r"[0-9a-f]{32}", e["trace_id"]) for e in shipped_events if "trace_id" in e):
        err("a shipped trace_id is not 32 hex digits")

    # 4. Loki: every label renders on every event and stays bounded; every
    # structured-metadata field is shipped as a scalar.
    for key, field in labels.items():
        if field in UNBOUNDED:
            err(f"loki label {key} uses the unbounded field {field!r}: make it structured metadata")
        values = [e.get(field) for e in shipped_events]
        if not all(isinstance(v, str) and v for v in values):
            err(f"loki label {key} ({field}) does not render on every line: {values[:5]}")
        distinct = set(values) - {None}
        if len(distinct) > (5 if field == "level" else 1):
            err(f"loki label {key} took {len(distinct)} values in one short run: {sorted(map(str, distinct))}")
    for key, field in metadata.items():
        values = [e[field] for e in shipped_events if field in e]
        if not values:
            err(f"loki structured_metadata {key} uses {field!r}, which no shipped event has")
        elif not all(type_ok(v, (str, int)) for v in values):
            err(f"loki structured_metadata {key} is not a scalar: {values[0]!r}")
    for name in sorted(REQUIRED - set(labels.values()) - set(metadata.values())):
        err(f"{name} is neither a Loki label nor structured metadata")

    # 5. Elasticsearch: every indexed field is shipped, with a type its
    # mapping accepts (Vector's data_stream mode sends `timestamp` as @timestamp).
    for name, es_type in sorted(es_fields.items()):
        if es_type not in ES_TYPES:
            err(f"index template: unexpected type {es_type!r} for {name}")
            continue
        source = "timestamp" if name == "@timestamp" else name
        values = [e[source] for e in shipped_events if source in e]
        if not values:
            err(f"index template indexes {name!r}, which no shipped event has")
        elif es_type == "date":
            # VRL renders a parsed timestamp as "YYYY-MM-DD hh:mm:ss.f UTC"; a
            # string left unparsed would still read "...T...Z".
            if not all(re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(\.\d+)? UTC", str(v)) for v in values):
                err(f"{name}: the transform left some timestamps unparsed: {values[0]!r}")
        elif not all(type_ok(v, ES_TYPES[es_type]) for v in values):
            bad = next(v for v in values if not type_ok(v, ES_TYPES[es_type]))
            err(f"index template maps {name} as {es_type}, a shipped event has {bad!r}")
    for name in sorted(REQUIRED - set(es_fields)):
        err(f"{name} is not indexed by the Elasticsearch template")

    # 6. What the fields are for: every access line carries route, status and the request's trace.
    access = [e for e in events if e.get("target") == "heartrule::access"]
    if len(access) < 5:
        err(f"expected an access-log line per request, got {len(access)}")
    for e in access:
        if not isinstance(e.get("route"), str) or not type_ok(e.get("status"), (int,)):
            err(f"access line without route/status: {e}")
        if not re.fullmatch(r"[0-9a-f]{32}", str(e.get("trace_id", ""))):
            err(f"access line without a trace_id: {e}")
    codes = {e.get("error.code") for e in events if "error.code" in e}
    if not {"SESSION_NOT_FOUND", "INVALID_REQUEST"} <= codes:
        err(f"the error lines' error.code values are {codes}, expected SESSION_NOT_FOUND and INVALID_REQUEST")

    for e in errors:
        print("ERROR", e)
    print(f"log fields: {len(events)} JSON lines, {len(shipped)} extracted fields, "
          f"{len(shipped_events)} events through the VRL transform, {len(labels)} Loki labels, "
          f"{len(metadata)} structured metadata, {len(es_fields)} indexed fields, errors: {len(errors)}")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
