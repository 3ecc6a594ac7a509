#!/usr/bin/env python3
"""Checks the wiring of docker-compose.dev.yml's `monitoring` profile.

`docker compose config` validates the file's schema; this checks what it
cannot: the new services stay out of a plain `up`, every bind-mounted file
exists, Grafana's provisioning points at the mounted dashboards, every host a
datasource, the collector or Vector talks to is a service of the profile, and
Prometheus can reach the server on the host.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from urllib.parse import urlparse

import yaml

ROOT = Path(__file__).resolve().parents[3]
COMPOSE = ROOT / "docker-compose.dev.yml"
BASE_SERVICES = {"postgres", "redis", "adminer"}
REQUIRED = {"prometheus", "alertmanager", "grafana", "otel-collector", "jaeger", "loki", "vector"}
# Mounted from the alerts branch (Prometheus rules, Alertmanager config): may
# be missing until it is merged.
OTHER_BRANCH_PATHS = {"deploy/monitoring/prometheus/rules", "deploy/monitoring/alertmanager"}

errors: list[str] = []


def err(message: str) -> None:
    errors.append(message)


def bind_mounts(service: dict) -> list[tuple[str, str]]:
    mounts = []
    for volume in service.get("volumes", []):
        parts = str(volume).split(":")
        if parts[0].startswith(("./", "${")):
            mounts.append((parts[0], parts[1]))
    return mounts


def host_of(url: str) -> str:
    return urlparse(url if "://" in url else f"//{url}").hostname or ""


def main() -> int:
    compose = yaml.safe_load(COMPOSE.read_text())
    services = compose["services"]
    for name in sorted(REQUIRED - set(services)):
        err(f"the monitoring profile has no {name} service")
    for name, service in services.items():
        if name not in BASE_SERVICES and service.get("profiles") != ["monitoring"]:
            err(f"{name} must be in the monitoring profile only, so that a plain `up` starts what it did")
        if name in BASE_SERVICES and service.get("profiles"):
            err(f"{name} is a base service and must stay out of profiles")
        for source, target in bind_mounts(service):
            if source.startswith("${"):
                continue  # an operator-chosen directory (e.g. HEARTRULE_LOG_DIR)
            rel = source[2:].rstrip("/")
            if not (ROOT / rel).exists() and rel not in OTHER_BRANCH_PATHS:
                err(f"{name} mounts {source}, which does not exist")
    monitoring = {n for n, s in services.items() if s.get("profiles") == ["monitoring"]}

    prometheus = services.get("prometheus", {})
    if "host.docker.internal:host-gateway" not in prometheus.get("extra_hosts", []):
        err("prometheus needs extra_hosts host.docker.internal:host-gateway to scrape the server on the host")
    prom_config = next((s for s, t in bind_mounts(prometheus) if t == "/etc/prometheus/prometheus.yml"), None)
    if prom_config:
        config = yaml.safe_load((ROOT / prom_config[2:]).read_text())
        targets = [t for job in config.get("scrape_configs", []) for sc in job.get("static_configs", [])
                   for t in sc.get("targets", [])]
        if not any(t.startswith("host.docker.internal:") for t in targets):
            err(f"{prom_config} does not scrape the server on the host (host.docker.internal)")
        for job in config.get("scrape_configs", []):
            for sc in job.get("static_configs", []):
                labels = sc.get("labels", {})
                if job["job_name"] == "heartrule" and not {"env", "instance"} <= set(labels):
                    err(f"{prom_config}: the heartrule targets need env and instance labels (dashboard variables)")
                for t in sc.get("targets", []):
                    host = host_of(t)
                    if host not in monitoring | {"localhost", "host.docker.internal"}:
                        err(f"{prom_config}: target {t} is neither a service nor the host")
        for am in config.get("alerting", {}).get("alertmanagers", []):
            for sc in am.get("static_configs", []):
                for t in sc.get("targets", []):
                    if host_of(t) not in monitoring:
                        err(f"{prom_config}: alertmanager {t} is not a service")
    else:
        err("prometheus does not mount a config at /etc/prometheus/prometheus.yml")

    grafana = services.get("grafana", {})
    mounts = dict((t, s) for s, t in bind_mounts(grafana))
    provisioning = mounts.get("/etc/grafana/provisioning")
    if provisioning != "./deploy/monitoring/grafana/provisioning":
        err("grafana must mount deploy/monitoring/grafana/provisioning at /etc/grafana/provisioning")
    else:
        for path in sorted((ROOT / provisioning[2:] / "dashboards").glob("*.yml")):
            for provider in yaml.safe_load(path.read_text()).get("providers", []):
                inside = provider["options"]["path"]
                mount = next((t for t in mounts if inside.startswith(t + "/")), None)
                if mount is None:
                    err(f"dashboard provider {provider['name']}: {inside} is not mounted into grafana")
                    continue
                local = ROOT / mounts[mount][2:] / inside[len(mount) + 1:]
                if not list(local.glob("*.json")):
                    err(f"dashboard provider {provider['name']}: no dashboards in {local}")
        for path in sorted((ROOT / provisioning[2:] / "datasources").glob("*.yml")):
            for ds in yaml.safe_load(path.read_text()).get("datasources", []):
                if host_of(ds["url"]) not in monitoring:
                    err(f"datasource {ds['name']}: {ds['url']} is not a service of the profile")

    collector = services.get("otel-collector", {})
    published = {str(p).split(":")[0] for p in collector.get("ports", [])}
    for port in ("4317", "4318"):
        if port not in published:
            err(f"otel-collector must publish {port}: the server on the host exports OTLP to it")
    col_config = next((s for s, t in bind_mounts(collector) if t.endswith("config.yaml")), None)
    if col_config:
        config = yaml.safe_load((ROOT / col_config[2:]).read_text())
        for name, exporter in config.get("exporters", {}).items():
            if "endpoint" in exporter and host_of(exporter["endpoint"]) not in monitoring:
                err(f"collector exporter {name}: {exporter['endpoint']} is not a service of the profile")
    else:
        err("otel-collector mounts no config.yaml")

    vector = services.get("vector", {})
    for key in ("LOKI_URL",):
        url = vector.get("environment", {}).get(key, "")
        if host_of(url) not in monitoring:
            err(f"vector {key}={url!r} is not a service of the profile")
    command = " ".join(vector.get("command", []))
    if "sink-elasticsearch" in command or "sink-loki" not in command:
        err("vector in the profile ships to Loki only (there is no Elasticsearch service)")

    for e in errors:
        print("ERROR", e)
    print(f"compose monitoring profile: {len(monitoring)} services, errors: {len(errors)}")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
