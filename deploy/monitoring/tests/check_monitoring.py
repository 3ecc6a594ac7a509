#!/usr/bin/env python3
"""Consistency checks of the HeartRule monitoring kit that promtool and
amtool cannot make on their own.

  alerts     every alert: CamelCase name, severity, team, summary, templated
             description, runbook_url = RUNBOOK_BASE#<name lowercased> whose
             anchor is a heading of docs/operations/runbook.md with the
             Meaning/Impact/Diagnosis/Mitigation/Escalation parts; no absent()
             without `for`; no runbook section without its alert; the
             runbook's own links resolve; LlmErrorRatioHigh keeps what the
             live check relies on (for <= 2m, 5m windows at most)
  metrics    every metric a rule reads is in the server's catalogue (`heartrule
             metrics-doc`), with the labels its selectors name, or is an
             exporter/Prometheus series or a recording rule defined here
  slo        the burn-rate alerts use the objective the SLI rules record
  tests      every alert has a promtool case that fires (asserting its
             runbook_url) and one that must not
  routes     each case of the Alertmanager routes test file reaches exactly its
             receivers (`amtool config routes test --verify.receivers`)
  inhibition a running Alertmanager with the kit's configuration suppresses
             what the inhibit rules promise, and nothing else

Usage: check_monitoring.py {alerts,metrics,slo,tests,routes,inhibition} [options]
Exits non-zero, listing every problem, when a check fails.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import re
import subprocess
import sys
import time
import unicodedata
import urllib.request

import yaml

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
MONITORING = os.path.join(ROOT, "deploy", "monitoring")
RULES_GLOB = os.path.join(MONITORING, "prometheus", "rules", "*.rules.yml")
TESTS_GLOB = os.path.join(MONITORING, "prometheus", "tests", "*.test.yml")
RUNBOOK = os.path.join(ROOT, "docs", "operations", "runbook.md")

# The one place the runbook's address is defined: every alert's runbook_url
# is this plus "#" and its anchor. Moving the runbook means changing it here
# and in the rules (this check then lists every alert still pointing away).
RUNBOOK_BASE = "https://github.com/heartrule/heartrule/blob/main/docs/operations/runbook.md"

SEVERITIES = {"critical", "warning", "info"}
TEAMS = {"heartrule", "platform"}
RUNBOOK_PARTS = ["Meaning", "Impact", "Diagnosis", "Mitigation", "Escalation"]

# Series not emitted by the server: exporters (by prefix) and Prometheus's own.
EXPORTER_PREFIXES = ("node_", "pg_", "redis_")
PROMETHEUS_SERIES = {"up", "ALERTS", "ALERTS_FOR_STATE"}
# Labels Prometheus attaches at scrape time (prometheus.yml, both variants).
TARGET_LABELS = {"job", "instance", "env", "service", "namespace"}

PROMQL_KEYWORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right", "and", "or",
    "unless", "bool", "offset", "inf", "nan", "atan2",
}


def load_yaml(path: str):
    with open(path, encoding="utf-8") as handle:
        return yaml.safe_load(handle)


def rule_files() -> list[str]:
    files = sorted(glob.glob(RULES_GLOB))
    if not files:
        sys.exit(f"no rule files match {RULES_GLOB}")
    return files


def all_rules() -> list[tuple[str, dict]]:
    """(file name, rule) for every rule of every rules file."""
    rules = []
    for path in rule_files():
        for group in load_yaml(path).get("groups") or []:
            for rule in group.get("rules") or []:
                rules.append((os.path.basename(path), rule))
    return rules


def alerts() -> list[tuple[str, dict]]:
    return [(f, r) for f, r in all_rules() if "alert" in r]


def github_anchor(heading: str) -> str:
    """The anchor GitHub gives a Markdown heading."""
    text = heading.strip().lower()
    text = "".join(
        ch for ch in text
        if ch in "-_ " or unicodedata.category(ch)[0] in "LN"
    )
    return text.replace(" ", "-")


def runbook_sections() -> dict[str, tuple[str, str]]:
    """anchor -> (heading, body) for every `###` heading of the runbook."""
    with open(RUNBOOK, encoding="utf-8") as handle:
        text = handle.read()
    sections: dict[str, tuple[str, str]] = {}
    parts = re.split(r"^### (.+)$", text, flags=re.M)
    for heading, body in zip(parts[1::2], parts[2::2]):
        body = re.split(r"^#{1,3} ", body, maxsplit=1, flags=re.M)[0]
        sections[github_anchor(heading)] = (heading.strip(), body)
    return sections


def check_alerts() -> list[str]:
    problems = []
    sections = runbook_sections()
    seen = set()
    for path, rule in alerts():
        name = rule["alert"]
        where = f"{path}: {name}"
        if name in seen:
            problems.append(f"{where}: alert name used twice")
        seen.add(name)
        if not re.fullmatch(r"[A-Z][a-z0-9]+(?:[A-Z0-9][a-z0-9]*)*", name):
            problems.append(f"{where}: name is not CamelCase")
        labels = rule.get("labels") or {}
        annotations = rule.get("annotations") or {}
        if labels.get("severity") not in SEVERITIES:
            problems.append(f"{where}: severity must be one of {sorted(SEVERITIES)}")
        if labels.get("team") not in TEAMS:
            problems.append(f"{where}: team must be one of {sorted(TEAMS)} (routing)")
        for key in ("summary", "description", "runbook_url"):
            if not str(annotations.get(key, "")).strip():
                problems.append(f"{where}: no {key} annotation")
        if "{{" not in str(annotations.get("description", "")):
            problems.append(f"{where}: description is not templated")
        url = str(annotations.get("runbook_url", ""))
        expected = f"{RUNBOOK_BASE}#{name.lower()}"
        if url != expected:
            problems.append(f"{where}: runbook_url is {url!r}, expected {expected!r}")
        anchor = url.partition("#")[2]
        if anchor not in sections:
            problems.append(f"{where}: runbook.md has no heading with anchor #{anchor}")
        else:
            heading, body = sections[anchor]
            if heading != name:
                problems.append(f"{where}: runbook heading is {heading!r}, not the alert name")
            for part in RUNBOOK_PARTS:
                if not re.search(rf"^\*\*{part}\*\*", body, flags=re.M):
                    problems.append(f"{where}: runbook section has no **{part}** part")
        if "absent(" in rule["expr"] and not rule.get("for"):
            problems.append(f"{where}: absent() without a `for`")
    problems += check_live_check_contract()
    # Links inside the runbook (the troubleshooting map, cross-references).
    with open(RUNBOOK, encoding="utf-8") as handle:
        text = handle.read()
    headings = {github_anchor(h) for h in re.findall(r"^#{1,6} (.+)$", text, flags=re.M)}
    for anchor in sorted(set(re.findall(r"\]\(#([^)]+)\)", text)) - headings):
        problems.append(f"runbook.md: link to #{anchor}, which is no heading")
    # A CamelCase section without its alert is a stale runbook entry.
    for anchor, (heading, _) in sections.items():
        if re.fullmatch(r"[A-Z][A-Za-z0-9]+", heading) and heading not in seen:
            problems.append(f"runbook.md: section {heading!r} has no alert")
    if not seen:
        problems.append("no alerts found")
    return problems


def seconds(duration: str) -> float:
    """A Prometheus duration ("2m", "1h30m", "90s") in seconds."""
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}
    parts = re.findall(r"(\d+)(ms|s|m|h|d|w|y)", duration)
    if not parts or "".join(n + u for n, u in parts) != duration:
        raise ValueError(f"not a duration: {duration!r}")
    return sum(int(n) * units[u] for n, u in parts)


def check_live_check_contract() -> list[str]:
    """The live check (another test) drives LLM errors at about 1 call/s,
    30% failing, and waits for LlmErrorRatioHigh to fire: keep it able to."""
    rules = [r for _, r in alerts() if r["alert"] == "LlmErrorRatioHigh"]
    if len(rules) != 1:
        return ["LlmErrorRatioHigh must exist exactly once (the live check waits for it)"]
    rule = rules[0]
    problems = []
    if seconds(rule.get("for", "0s")) > 120:
        problems.append("LlmErrorRatioHigh: `for` must be at most 2m (the live check waits for it)")
    expr = rule["expr"]
    if "gen_ai_client_operation_duration_seconds_count" not in expr or "error_type" not in expr:
        problems.append("LlmErrorRatioHigh: must read gen_ai_client_operation_duration_seconds_count by error_type")
    windows = re.findall(r"\[([0-9a-z]+)\]", expr)
    if not windows or any(seconds(w) > 300 for w in windows):
        problems.append(f"LlmErrorRatioHigh: rate windows {windows} must be at most 5m")
    return problems


def catalogue(binary: str) -> dict[str, set[str]]:
    """Series name -> label names, from the server's metrics-doc table.
    A histogram contributes its _bucket (with le), _sum and _count series."""
    output = subprocess.run(
        [binary, "metrics-doc"], check=True, capture_output=True, text=True
    ).stdout
    series: dict[str, set[str]] = {}
    for line in output.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 3 or not cells[0].startswith("`"):
            continue
        name = cells[0].strip("`")
        kind = cells[1]
        labels = set(re.findall(r"`([^`]+)`", cells[2]))
        if kind == "histogram":
            series[f"{name}_bucket"] = labels | {"le"}
            series[f"{name}_sum"] = labels
            series[f"{name}_count"] = labels
        else:
            series[name] = labels
    if len(series) < 10:
        sys.exit(f"{binary} metrics-doc printed no usable catalogue:\n{output}")
    return series


def metric_references(expr: str) -> list[tuple[str, set[str]]]:
    """(metric name, label names of its selector) for every series an
    expression reads."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # string literals
    refs = []
    # Grouping clauses name labels, not metrics.
    expr = re.sub(
        r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", expr
    )
    expr = re.sub(r"\[[^\]]*\]", " ", expr)  # range and subquery windows
    pattern = re.compile(r"([A-Za-z_:][A-Za-z0-9_:]*)\s*(\{[^}]*\})?\s*(\()?")
    for match in pattern.finditer(expr):
        name, selector, call = match.groups()
        start = match.start()
        if call or name.lower() in PROMQL_KEYWORDS:
            continue
        # Numbers like 1e3 and durations are not names.
        if start > 0 and (expr[start - 1].isdigit() or expr[start - 1] == "."):
            continue
        labels = set(re.findall(r"([A-Za-z_][A-Za-z0-9_]*)\s*(?:=~|!~|!=|=)", selector or ""))
        refs.append((name, labels))
    return refs


def check_metrics(binary: str) -> list[str]:
    problems = []
    series = catalogue(binary)
    rules = all_rules()
    recorded = {r["record"] for _, r in rules if "record" in r}
    for path, rule in rules:
        what = rule.get("alert") or rule.get("record")
        for name, labels in metric_references(rule["expr"]):
            if ":" in name:
                if name not in recorded:
                    problems.append(f"{path}: {what}: reads {name}, which no rule records")
                continue
            if name in PROMETHEUS_SERIES or name.startswith(EXPORTER_PREFIXES):
                continue
            known = series.get(name)
            if known is None:
                problems.append(
                    f"{path}: {what}: {name} is not in the server's metric catalogue"
                )
                continue
            unknown = labels - known - TARGET_LABELS
            if unknown:
                problems.append(
                    f"{path}: {what}: {name} has no label(s) {sorted(unknown)}"
                    f" (it has {sorted(known)})"
                )
    return problems


def check_slo() -> list[str]:
    problems = []
    rules = all_rules()
    objective = [r for _, r in rules if r.get("record") == "heartrule:turn_availability:objective"]
    if len(objective) != 1:
        return ["heartrule:turn_availability:objective must be recorded exactly once"]
    match = re.fullmatch(r"\s*vector\(([0-9.]+)\)\s*", objective[0]["expr"])
    if not match:
        return ["heartrule:turn_availability:objective must be vector(<objective>)"]
    value = float(match.group(1))
    if value < 0.995:
        problems.append(f"the SLO {value} is under 99.5%: the 14.4x page tier is unreachable")
    burn_alerts = [r for _, r in rules if (r.get("labels") or {}).get("slo") == "turn-availability"]
    if len(burn_alerts) != 4:
        problems.append(f"expected 4 turn-availability burn-rate alerts, found {len(burn_alerts)}")
    for rule in burn_alerts:
        used = {float(v) for v in re.findall(r"\(1 - ([0-9.]+)\)", rule["expr"])}
        if used != {value}:
            problems.append(f"{rule['alert']}: uses objective(s) {sorted(used)}, the SLI rules record {value}")
    return problems


def check_tests() -> list[str]:
    problems = []
    firing: dict[str, int] = {}
    quiet: dict[str, int] = {}
    files = sorted(glob.glob(TESTS_GLOB))
    if not files:
        return [f"no promtool test files match {TESTS_GLOB}"]
    for path in files:
        for test in load_yaml(path).get("tests") or []:
            for case in test.get("alert_rule_test") or []:
                name = case["alertname"]
                expected = case.get("exp_alerts") or []
                if not expected:
                    quiet[name] = quiet.get(name, 0) + 1
                    continue
                firing[name] = firing.get(name, 0) + 1
                for alert in expected:
                    annotations = alert.get("exp_annotations") or {}
                    if "runbook_url" not in annotations or "summary" not in annotations:
                        problems.append(
                            f"{os.path.basename(path)}: {test.get('name')}: {name} does not"
                            " assert its summary and runbook_url"
                        )
                    if "severity" not in (alert.get("exp_labels") or {}):
                        problems.append(
                            f"{os.path.basename(path)}: {test.get('name')}: {name} does not"
                            " assert its severity"
                        )
    names = {rule["alert"] for _, rule in alerts()}
    for name in sorted(names):
        if not firing.get(name):
            problems.append(f"{name}: no promtool case where it fires")
        if not quiet.get(name):
            problems.append(f"{name}: no promtool case where it must not fire")
    for name in sorted((set(firing) | set(quiet)) - names):
        problems.append(f"promtool cases test {name}, which is no alert")
    return problems


def check_routes(config: str, cases_file: str) -> list[str]:
    problems = []
    cases = load_yaml(cases_file).get("cases") or []
    if not cases:
        return [f"{cases_file}: no cases"]
    for case in cases:
        labels = [f"{k}={v}" for k, v in sorted(case["labels"].items())]
        expected = ",".join(case["receivers"])
        result = subprocess.run(
            ["amtool", "config", "routes", "test", f"--config.file={config}",
             f"--verify.receivers={expected}", *labels],
            capture_output=True, text=True,
        )
        if result.returncode != 0:
            problems.append(
                f"{case['name']}: expected {expected}, got {result.stdout.strip()}"
                f" {result.stderr.strip()}"
            )
    print(f"{len(cases) - len(problems)} of {len(cases)} routing cases passed")
    return problems


# (labels, inhibited?) posted together to a running Alertmanager.
INHIBITION_CASES = [
    # The instance down ...
    ({"alertname": "HeartRuleInstanceDown", "severity": "critical", "team": "heartrule",
      "env": "production", "service": "heartrule", "instance": "heartrule-2"}, False),
    # ... silences that instance's other alerts,
    ({"alertname": "HeartRuleMemoryNearLimit", "severity": "warning", "team": "heartrule",
      "env": "production", "service": "heartrule", "instance": "heartrule-2"}, True),
    # not another instance's,
    ({"alertname": "HeartRuleMemoryNearLimit", "severity": "warning", "team": "heartrule",
      "env": "production", "service": "heartrule", "instance": "heartrule-1"}, False),
    # nor environment-wide alerts that have no instance label.
    ({"alertname": "LlmErrorRatioHigh", "severity": "warning", "team": "heartrule",
      "env": "production", "service": "heartrule", "gen_ai_provider_name": "openai",
      "gen_ai_request_model": "gpt-4o-mini"}, False),
    # Fast burn ...
    ({"alertname": "TurnErrorBudgetBurn1h", "severity": "critical", "team": "heartrule",
      "env": "production", "service": "heartrule", "slo": "turn-availability",
      "burn": "fast"}, False),
    # ... silences slow burn of the same SLO and environment,
    ({"alertname": "TurnErrorBudgetBurn1d", "severity": "warning", "team": "heartrule",
      "env": "production", "service": "heartrule", "slo": "turn-availability",
      "burn": "slow"}, True),
    # not another environment's.
    ({"alertname": "TurnErrorBudgetBurn1d", "severity": "warning", "team": "heartrule",
      "env": "staging", "service": "heartrule", "slo": "turn-availability",
      "burn": "slow"}, False),
    # Every LLM breaker of an instance open ...
    ({"alertname": "LlmUnavailable", "severity": "critical", "team": "heartrule",
      "env": "staging", "service": "heartrule", "instance": "heartrule-3"}, False),
    # ... silences that instance's degraded-mode warning,
    ({"alertname": "LlmDegradedMode", "severity": "warning", "team": "heartrule",
      "env": "staging", "service": "heartrule", "instance": "heartrule-3"}, True),
    # not another instance's (its LLM may fail for another reason).
    ({"alertname": "LlmDegradedMode", "severity": "warning", "team": "heartrule",
      "env": "staging", "service": "heartrule", "instance": "heartrule-4"}, False),
    # PostgreSQL down explains the database errors of its environment.
    ({"alertname": "PostgresDown", "severity": "critical", "team": "platform",
      "env": "staging", "service": "postgres", "instance": "staging-db"}, False),
    ({"alertname": "DatabaseErrorsHigh", "severity": "warning", "team": "heartrule",
      "env": "staging", "service": "heartrule", "instance": "heartrule-staging-1",
      "kind": "unavailable"}, True),
]


def check_inhibition(url: str) -> list[str]:
    url = url.rstrip("/")
    body = json.dumps([
        {"labels": labels, "annotations": {"summary": "inhibition check"}}
        for labels, _ in INHIBITION_CASES
    ]).encode()
    request = urllib.request.Request(
        f"{url}/api/v2/alerts", data=body, method="POST",
        headers={"Content-Type": "application/json"},
    )
    urllib.request.urlopen(request, timeout=10).read()

    def key(labels: dict) -> tuple:
        return tuple(sorted(labels.items()))

    expected = {key(labels): inhibited for labels, inhibited in INHIBITION_CASES}
    # Alertmanager marks inhibitions as it processes the alerts: poll briefly.
    deadline = time.monotonic() + 30
    while True:
        with urllib.request.urlopen(f"{url}/api/v2/alerts", timeout=10) as response:
            alerts = json.load(response)
        got = {
            key(a["labels"]): bool(a["status"].get("inhibitedBy"))
            for a in alerts if key(a["labels"]) in expected
        }
        problems = []
        for labels, inhibited in INHIBITION_CASES:
            state = got.get(key(labels))
            if state is None:
                problems.append(f"{labels['alertname']} {labels}: not in Alertmanager")
            elif state != inhibited:
                want = "inhibited" if inhibited else "not inhibited"
                problems.append(f"{labels['alertname']} {labels}: expected {want}")
        if not problems or time.monotonic() > deadline:
            break
        time.sleep(1)
    if not problems:
        print(f"{len(INHIBITION_CASES)} inhibition cases passed")
    return problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="check", required=True)
    sub.add_parser("alerts")
    metrics = sub.add_parser("metrics")
    metrics.add_argument("--binary", required=True, help="the heartrule server binary")
    sub.add_parser("slo")
    sub.add_parser("tests")
    routes = sub.add_parser("routes")
    routes.add_argument("--config", required=True)
    routes.add_argument("--cases", required=True)
    inhibition = sub.add_parser("inhibition")
    inhibition.add_argument("--url", required=True, help="a running Alertmanager")
    args = parser.parse_args()

    if args.check == "alerts":
        problems = check_alerts()
    elif args.check == "metrics":
        problems = check_metrics(args.binary)
    elif args.check == "slo":
        problems = check_slo()
    elif args.check == "tests":
        problems = check_tests()
    elif args.check == "routes":
        problems = check_routes(args.config, args.cases)
    else:
        problems = check_inhibition(args.url)
    for problem in problems:
        print(f"FAIL {args.check}: {problem}", file=sys.stderr)
    if problems:
        return 1
    print(f"{args.check}: ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
