#!/usr/bin/env python3
"""Checks deploy/monitoring/otel-collector/config.yaml without the collector.

The collector is not installable here, so this validates the file against
the documented configuration of the components it uses (the OTLP receiver,
memory_limiter, tail_sampling and batch processors, the OTLP exporter, the
health_check extension): known keys only, required keys present, values of
the right kind and range, every pipeline reference defined and every defined
component used, memory_limiter first in the pipeline, and the sampling
policies HeartRule relies on (every error trace, every slow trace, a fraction
of the rest).

    check_otel_collector.py [config.yaml]
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[3]
DEFAULT = ROOT / "deploy/monitoring/otel-collector/config.yaml"

DURATION = re.compile(r"^\d+(\.\d+)?(ns|us|µs|ms|s|m|h)$")
HOST_PORT = re.compile(r"^[A-Za-z0-9_.\-\[\]:]*:\d{1,5}$")

# Keys each component type accepts (its documented config), by section.
KNOWN = {
    "receivers": {
        "otlp": {"protocols"},
    },
    "processors": {
        "memory_limiter": {"check_interval", "limit_mib", "spike_limit_mib", "limit_percentage",
                           "spike_limit_percentage"},
        "batch": {"timeout", "send_batch_size", "send_batch_max_size", "metadata_keys",
                  "metadata_cardinality_limit"},
        "tail_sampling": {"decision_wait", "num_traces", "expected_new_traces_per_sec", "decision_cache",
                          "policies", "sample_on_first_match", "drop_pending_traces_on_shutdown",
                          "block_on_overflow"},
    },
    "exporters": {
        "otlp": {"endpoint", "tls", "headers", "compression", "timeout", "sending_queue", "retry_on_failure",
                 "balancer_name", "keepalive", "auth", "write_buffer_size", "read_buffer_size"},
        "otlphttp": {"endpoint", "traces_endpoint", "tls", "headers", "compression", "timeout",
                     "sending_queue", "retry_on_failure", "encoding"},
        "debug": {"verbosity", "sampling_initial", "sampling_thereafter"},
    },
    "extensions": {
        "health_check": {"endpoint", "path", "check_collector_pipeline", "response_body"},
    },
}

POLICY_TYPES = {
    "always_sample": set(),
    "latency": {"threshold_ms", "upper_threshold_ms"},
    "numeric_attribute": {"key", "min_value", "max_value", "invert_match"},
    "probabilistic": {"sampling_percentage", "hash_salt"},
    "status_code": {"status_codes"},
    "string_attribute": {"key", "values", "enabled_regex_matching", "cache_max_size", "invert_match"},
    "rate_limiting": {"spans_per_second"},
    "span_count": {"min_spans", "max_spans"},
    "boolean_attribute": {"key", "value", "invert_match"},
    "trace_state": {"key", "values"},
}

errors: list[str] = []


def err(where: str, message: str) -> None:
    errors.append(f"{where}: {message}")


def component_type(cid: str) -> str:
    return cid.split("/", 1)[0]


def check_keys(where: str, conf: dict, allowed: set[str]) -> None:
    for key in conf:
        if key not in allowed:
            err(where, f"unknown key {key!r} (documented: {sorted(allowed)})")


def positive_number(where: str, value, upper: float | None = None) -> bool:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0
    if ok and upper is not None and value > upper:
        ok = False
    if not ok:
        err(where, f"must be a number > 0{f' and <= {upper}' if upper else ''} (got {value!r})")
    return ok


def duration(where: str, value) -> None:
    if not isinstance(value, str) or not DURATION.match(value):
        err(where, f"must be a duration like 5s (got {value!r})")


def check_otlp_receiver(where: str, conf: dict) -> None:
    protocols = conf.get("protocols")
    if not isinstance(protocols, dict) or not protocols:
        err(where, "needs protocols (grpc and/or http)")
        return
    for name, proto in protocols.items():
        if name not in ("grpc", "http"):
            err(f"{where}.protocols", f"unknown protocol {name!r}")
            continue
        endpoint = (proto or {}).get("endpoint")
        if endpoint is not None and not HOST_PORT.match(str(endpoint)):
            err(f"{where}.protocols.{name}.endpoint", f"must be host:port (got {endpoint!r})")
    for name in ("grpc", "http"):
        if name not in protocols:
            err(f"{where}.protocols", f"telemetry.traces.protocol may be grpc or http_protobuf: {name} is missing")


def check_memory_limiter(where: str, conf: dict) -> None:
    if "check_interval" not in conf:
        err(where, "check_interval is required (0 disables the checks)")
    else:
        duration(f"{where}.check_interval", conf["check_interval"])
        if str(conf["check_interval"]).startswith("0"):
            err(f"{where}.check_interval", "must be greater than zero")
    if "limit_mib" in conf:
        if positive_number(f"{where}.limit_mib", conf["limit_mib"]) and "spike_limit_mib" in conf:
            if positive_number(f"{where}.spike_limit_mib", conf["spike_limit_mib"]) \
                    and conf["spike_limit_mib"] >= conf["limit_mib"]:
                err(where, "spike_limit_mib must be below limit_mib (the soft limit is their difference)")
    elif "limit_percentage" in conf:
        if positive_number(f"{where}.limit_percentage", conf["limit_percentage"], 100) \
                and "spike_limit_percentage" in conf:
            if positive_number(f"{where}.spike_limit_percentage", conf["spike_limit_percentage"], 100) \
                    and conf["spike_limit_percentage"] >= conf["limit_percentage"]:
                err(where, "spike_limit_percentage must be below limit_percentage")
    else:
        err(where, "needs limit_mib or limit_percentage")


def check_batch(where: str, conf: dict) -> None:
    if "timeout" in conf:
        duration(f"{where}.timeout", conf["timeout"])
    size = conf.get("send_batch_size", 8192)
    if "send_batch_size" in conf:
        positive_number(f"{where}.send_batch_size", size)
    if "send_batch_max_size" in conf:
        if positive_number(f"{where}.send_batch_max_size", conf["send_batch_max_size"]) \
                and conf["send_batch_max_size"] < size:
            err(where, "send_batch_max_size must be >= send_batch_size")


def check_policy(where: str, policy: dict) -> str | None:
    check_keys(where, policy, {"name", "type"} | set(POLICY_TYPES))
    ptype = policy.get("type")
    if not policy.get("name"):
        err(where, "a policy needs a name")
    if ptype not in POLICY_TYPES:
        err(where, f"unknown policy type {ptype!r}")
        return None
    body = policy.get(ptype)
    if POLICY_TYPES[ptype] and not isinstance(body, dict):
        err(where, f"a {ptype} policy needs its `{ptype}:` block")
        return ptype
    body = body or {}
    check_keys(f"{where}.{ptype}", body, POLICY_TYPES[ptype])
    at = f"{where}.{ptype}"
    if ptype == "status_code":
        codes = body.get("status_codes")
        if not codes or not set(codes) <= {"OK", "ERROR", "UNSET"}:
            err(at, f"status_codes must be a non-empty list of OK, ERROR, UNSET (got {codes!r})")
    elif ptype == "latency":
        if positive_number(f"{at}.threshold_ms", body.get("threshold_ms")) and "upper_threshold_ms" in body:
            if body["upper_threshold_ms"] <= body["threshold_ms"]:
                err(at, "upper_threshold_ms must exceed threshold_ms")
    elif ptype == "probabilistic":
        positive_number(f"{at}.sampling_percentage", body.get("sampling_percentage"), 100)
    elif ptype in ("numeric_attribute",):
        if not body.get("key"):
            err(at, "needs key")
        if "min_value" not in body and "max_value" not in body:
            err(at, "needs min_value and/or max_value")
    elif ptype in ("string_attribute", "trace_state"):
        if not body.get("key") or not body.get("values"):
            err(at, "needs key and values")
        if body.get("enabled_regex_matching"):
            for value in body.get("values") or []:
                try:
                    re.compile(value)
                except re.error as e:
                    err(at, f"value {value!r} is not a regular expression: {e}")
    elif ptype == "boolean_attribute":
        if not body.get("key") or not isinstance(body.get("value"), bool):
            err(at, "needs key and a boolean value")
    return ptype


def check_tail_sampling(where: str, conf: dict) -> None:
    for key in ("decision_wait",):
        if key in conf:
            duration(f"{where}.{key}", conf[key])
    for key in ("num_traces", "expected_new_traces_per_sec"):
        if key in conf:
            positive_number(f"{where}.{key}", conf[key])
    if "decision_cache" in conf:
        check_keys(f"{where}.decision_cache", conf["decision_cache"] or {},
                   {"sampled_cache_size", "non_sampled_cache_size"})
    policies = conf.get("policies")
    if not isinstance(policies, list) or not policies:
        err(where, "policies is required and must not be empty")
        return
    names = [p.get("name") for p in policies]
    if len(names) != len(set(names)):
        err(where, f"policy names must be unique: {names}")
    by_type: dict[str, list[dict]] = {}
    for i, policy in enumerate(policies):
        ptype = check_policy(f"{where}.policies[{i}]", policy)
        if ptype:
            by_type.setdefault(ptype, []).append(policy.get(ptype) or {})
    # What HeartRule's operators rely on (docs/operations/tracing.md).
    if not any("ERROR" in (p.get("status_codes") or []) for p in by_type.get("status_code", [])):
        err(where, "must keep every error trace (a status_code policy with ERROR)")
    if not by_type.get("latency"):
        err(where, "must keep every slow trace (a latency policy)")
    if any("upper_threshold_ms" in p for p in by_type.get("latency", [])):
        err(where, "the slow-trace policy must have no upper bound: the slowest traces matter most")
    fractions = [p.get("sampling_percentage") for p in by_type.get("probabilistic", [])]
    if not fractions or not all(isinstance(f, (int, float)) and 0 < f < 100 for f in fractions):
        err(where, "must keep a fraction (0 < sampling_percentage < 100) of the other traces")
    if "always_sample" in by_type:
        err(where, "an always_sample policy would keep every trace and make the others moot")


def check_otlp_exporter(where: str, conf: dict) -> None:
    endpoint = conf.get("endpoint")
    if not endpoint:
        err(where, "endpoint is required")
    elif component_type(where.split(".")[-1]) == "otlp" and not HOST_PORT.match(str(endpoint).split("://")[-1]):
        err(f"{where}.endpoint", f"must be host:port (got {endpoint!r})")
    tls = conf.get("tls")
    if tls is not None:
        check_keys(f"{where}.tls", tls, {"insecure", "insecure_skip_verify", "ca_file", "cert_file", "key_file",
                                         "server_name_override", "min_version"})
    queue = conf.get("sending_queue")
    if queue is not None:
        check_keys(f"{where}.sending_queue", queue, {"enabled", "num_consumers", "queue_size", "storage",
                                                     "sizer", "block_on_overflow"})
    retry = conf.get("retry_on_failure")
    if retry is not None:
        check_keys(f"{where}.retry_on_failure", retry, {"enabled", "initial_interval", "max_interval",
                                                        "max_elapsed_time", "multiplier",
                                                        "randomization_factor"})
        for key in ("initial_interval", "max_interval", "max_elapsed_time"):
            if key in retry:
                duration(f"{where}.retry_on_failure.{key}", retry[key])


CHECKERS = {
    ("receivers", "otlp"): check_otlp_receiver,
    ("processors", "memory_limiter"): check_memory_limiter,
    ("processors", "batch"): check_batch,
    ("processors", "tail_sampling"): check_tail_sampling,
    ("exporters", "otlp"): check_otlp_exporter,
    ("exporters", "otlphttp"): check_otlp_exporter,
}


def main() -> int:
    path = Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT
    config = yaml.safe_load(path.read_text())
    check_keys("top level", config, {"receivers", "processors", "exporters", "extensions", "connectors",
                                     "service"})
    for section, known in KNOWN.items():
        for cid, conf in (config.get(section) or {}).items():
            ctype = component_type(cid)
            where = f"{section}.{cid}"
            if ctype not in known:
                err(where, f"component type {ctype!r} is not one this check knows the documented config of")
                continue
            conf = conf or {}
            check_keys(where, conf, known[ctype])
            if (section, ctype) in CHECKERS:
                CHECKERS[(section, ctype)](where, conf)

    service = config.get("service") or {}
    check_keys("service", service, {"extensions", "pipelines", "telemetry"})
    used: dict[str, set[str]] = {s: set() for s in ("receivers", "processors", "exporters", "extensions")}
    for ext in service.get("extensions") or []:
        used["extensions"].add(ext)
        if ext not in (config.get("extensions") or {}):
            err("service.extensions", f"{ext!r} is not defined under extensions")
    pipelines = service.get("pipelines") or {}
    if "traces" not in {component_type(p) for p in pipelines}:
        err("service.pipelines", "needs a traces pipeline")
    for pname, pipeline in pipelines.items():
        where = f"service.pipelines.{pname}"
        check_keys(where, pipeline or {}, {"receivers", "processors", "exporters"})
        for section in ("receivers", "processors", "exporters"):
            refs = (pipeline or {}).get(section) or []
            if section != "processors" and not refs:
                err(where, f"needs at least one of {section}")
            if len(refs) != len(set(refs)):
                err(where, f"{section} lists a component twice")
            for ref in refs:
                used[section].add(ref)
                if ref not in (config.get(section) or {}):
                    err(where, f"{section[:-1]} {ref!r} is not defined under {section}")
        processors = [component_type(p) for p in (pipeline or {}).get("processors") or []]
        if component_type(pname) == "traces":
            if not processors or processors[0] != "memory_limiter":
                err(where, "memory_limiter must be the first processor (it refuses data before anything buffers)")
            if "tail_sampling" not in processors:
                err(where, "the traces pipeline must tail-sample")
            if "batch" not in processors:
                err(where, "the traces pipeline must batch")
            elif "tail_sampling" in processors and processors.index("batch") < processors.index("tail_sampling"):
                err(where, "batch goes after tail_sampling (tail sampling regroups spans by trace anyway)")
    for section, ids in used.items():
        for cid in config.get(section) or {}:
            if cid not in ids:
                err(f"{section}.{cid}", "is defined but used by no pipeline")

    for e in errors:
        print("ERROR", e)
    print(f"otel-collector config {path.name}: {sum(len(config.get(s) or {}) for s in used)} components, "
          f"{len(pipelines)} pipelines, errors: {len(errors)}")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
