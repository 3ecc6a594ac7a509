#!/usr/bin/env python3
"""Lints the provisioned Grafana dashboards against the metric catalogue.

Rules (Grafana dashboard-linter's conventions, plus HeartRule's own):
- every dashboard has a stable, unique `uid` and title, the `heartrule` tag;
- a `datasource` variable of type prometheus whose default is the uid of the
  provisioned Prometheus datasource, a `loki` one likewise when a panel reads
  Loki, and `env` and `instance` query variables whose "All" is `.*`;
- every panel has a title, a description and a unit, and a templated
  datasource (`${datasource}` / `${loki}`), on the panel and on each target;
- every PromQL target: each metric exists in the catalogue (`heartrule
  metrics-doc`) with the labels it is matched or grouped on; counters and
  histogram series only inside rate/irate/increase; gauges never there; the
  range of those is `$__rate_interval` or `$__range`, or a fixed window the
  panel title names (SLO burn windows); every selector carries the env and
  instance matchers; histogram_quantile groups by `le`;
- after substituting the template variables the way the live check does
  (docs/operations/dashboards.md), every expression parses
  (`promtool check rules` on a rules file made of them).

    lint_dashboards.py --catalogue metrics.md            # lint
    lint_dashboards.py --catalogue metrics.md --print-exprs  # JSON of substituted exprs
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[3]
GRAFANA = ROOT / "deploy/monitoring/grafana"

# Labels Prometheus attaches to every scraped series (scrape config).
TARGET_LABELS = {"instance", "job", "env"}

# How the live check (and this lint) turns a panel query into plain PromQL.
BUILTIN_SUBSTITUTIONS = {
    "__rate_interval": "1m",
    "__interval": "1m",
    "__range": "1h",
}

RATE_FUNCS = {"rate", "irate", "increase"}
GAUGE_RANGE_FUNCS = {
    "changes", "resets", "deriv", "delta", "idelta", "avg_over_time", "min_over_time", "max_over_time",
    "sum_over_time", "count_over_time", "last_over_time", "quantile_over_time", "stddev_over_time",
    "predict_linear", "present_over_time",
}
FUNCTIONS = RATE_FUNCS | GAUGE_RANGE_FUNCS | {
    "sum", "avg", "min", "max", "count", "topk", "bottomk", "quantile", "stddev", "stdvar", "group",
    "count_values", "histogram_quantile", "vector", "scalar", "time", "abs", "ceil", "floor", "round",
    "clamp", "clamp_min", "clamp_max", "label_replace", "label_join", "sort", "sort_desc", "absent",
    "timestamp", "ln", "log2", "log10", "exp", "sqrt",
}
KEYWORDS = {"and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right", "bool",
            "offset", "inf", "nan"}
GROUPING = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\(([^()]*)\)")
STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
MATCHER = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"\s*')
VARIABLE = re.compile(r"\$(?:\{([a-zA-Z0-9_]+)(?::[a-z]+)?\}|([a-zA-Z0-9_]+))")


@dataclass
class Metric:
    kind: str  # counter | gauge | histogram
    labels: set[str]


@dataclass
class Report:
    errors: list[str] = field(default_factory=list)

    def error(self, where: str, message: str) -> None:
        self.errors.append(f"{where}: {message}")


def load_catalogue(path: Path) -> dict[str, Metric]:
    """Parses the Markdown table `heartrule metrics-doc` prints."""
    metrics: dict[str, Metric] = {}
    columns: dict[str, int] = {}
    for line in path.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if not columns:
            # The header names the columns; their order may change.
            if {"Metric", "Type", "Labels"} <= set(cells):
                columns = {name: i for i, name in enumerate(cells)}
            continue
        if len(cells) < len(columns) or not cells[columns["Metric"]].startswith("`"):
            continue
        name = cells[columns["Metric"]].strip("`")
        labels = set(re.findall(r"`([^`]+)`", cells[columns["Labels"]]))
        metrics[name] = Metric(cells[columns["Type"]], labels)
    if len(metrics) < 10:
        raise SystemExit(f"{path}: no metrics catalogue table found ({len(metrics)} rows)")
    return metrics


def series_of(name: str, catalogue: dict[str, Metric]) -> tuple[str, Metric] | None:
    """('counter'|'gauge'|'bucket'|'histogram_part', metric) for an exposed series name."""
    if name in catalogue:
        metric = catalogue[name]
        if metric.kind == "histogram":
            return None  # a histogram is only exposed as _bucket/_sum/_count
        return metric.kind, metric
    for suffix in ("_bucket", "_sum", "_count"):
        base = name[: -len(suffix)] if name.endswith(suffix) else None
        if base and base in catalogue and catalogue[base].kind == "histogram":
            labels = set(catalogue[base].labels) | ({"le"} if suffix == "_bucket" else set())
            return ("bucket" if suffix == "_bucket" else "counter"), Metric("histogram", labels)
    return None


def datasource_uids() -> dict[str, str]:
    uids = {}
    for path in sorted((GRAFANA / "provisioning/datasources").glob("*.yml")):
        for ds in yaml.safe_load(path.read_text()).get("datasources", []):
            uids[ds["type"]] = ds["uid"]
    return uids


@dataclass
class Selector:
    name: str
    body: str  # the matchers, between the braces
    start: int
    end: int  # just after the closing brace


def selectors(expr: str) -> list[Selector]:
    """Every `metric{...}` outside string literals; braces inside a matcher's
    string (a route template such as {id}) do not end the selector."""
    strings = [(m.start(), m.end()) for m in STRING.finditer(expr)]

    def in_string(pos: int) -> bool:
        return any(a <= pos < b for a, b in strings)

    found = []
    for m in re.finditer(r"([a-zA-Z_:][a-zA-Z0-9_:]*)\s*\{", expr):
        if in_string(m.start()):
            continue
        pos = m.end()
        while pos < len(expr) and (expr[pos] != "}" or in_string(pos)):
            pos += 1
        found.append(Selector(m.group(1), expr[m.end():pos], m.start(), pos + 1))
    return found


def enclosing_function(expr: str, pos: int) -> str | None:
    """Name of the function whose parentheses enclose position pos."""
    depth = 0
    for i in range(pos - 1, -1, -1):
        ch = expr[i]
        if ch == ")":
            depth += 1
        elif ch == "(":
            if depth == 0:
                m = re.search(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*$", expr[:i])
                return m.group(1) if m else None
            depth -= 1
    return None


def substitute(expr: str, variables: dict[str, str], where: str, report: Report) -> str:
    def repl(m: re.Match) -> str:
        name = m.group(1) or m.group(2)
        if name in BUILTIN_SUBSTITUTIONS:
            return BUILTIN_SUBSTITUTIONS[name]
        if name in variables:
            return variables[name]
        report.error(where, f"unknown template variable ${name}")
        return m.group(0)

    return VARIABLE.sub(repl, expr)


def lint_promql(expr: str, where: str, title: str, catalogue: dict[str, Metric], report: Report) -> None:
    used_labels: set[str] = set()
    for m in selectors(expr):
        name, body = m.name, m.body
        if name in FUNCTIONS or name in KEYWORDS:
            continue
        found = series_of(name, catalogue)
        if found is None:
            report.error(where, f"metric {name} is not in the catalogue (heartrule metrics-doc)")
            continue
        kind, metric = found
        used_labels |= metric.labels
        matchers = {}
        rest = body
        while rest.strip():
            mm = MATCHER.match(rest)
            if not mm:
                report.error(where, f"cannot read the matchers of {name}{{{body}}}")
                break
            matchers[mm.group(1)] = (mm.group(2), mm.group(3))
            rest = rest[mm.end():]
            if rest.startswith(","):
                rest = rest[1:]
        for label in matchers:
            if label not in metric.labels | TARGET_LABELS:
                report.error(where, f"{name} has no label {label!r} (labels: {sorted(metric.labels)})")
        if matchers.get("env") != ("=~", "$env") or matchers.get("instance") != ("=~", "$instance"):
            report.error(where, f'{name} must carry env=~"$env" and instance=~"$instance"')
        after = expr[m.end:]
        rng = re.match(r"\s*\[([^\]]+)\]", after)
        func = enclosing_function(expr, m.start)
        if kind in ("counter", "bucket"):
            if not rng or func not in RATE_FUNCS:
                report.error(where, f"counter {name} must go through rate/irate/increase with a range")
        elif rng and func in RATE_FUNCS:
            report.error(where, f"gauge {name} must not go through {func}")
        if rng:
            window = rng.group(1).strip()
            if func in RATE_FUNCS and window == "$__interval":
                report.error(where, f"{func}({name}) must use $__rate_interval, not $__interval")
            elif window not in ("$__rate_interval", "$__range") and not re.search(
                    rf"(?<![0-9a-z]){re.escape(window)}(?![0-9a-z])", title):
                report.error(where, f"{name}[{window}]: use $__rate_interval, or name the window in the panel title")
        if kind == "bucket":
            if "histogram_quantile" not in expr:
                report.error(where, f"{name} is only meaningful inside histogram_quantile")
    for m in GROUPING.finditer(expr):
        if m.group(1) in ("by", "without"):
            for label in filter(None, (l.strip() for l in m.group(2).split(","))):
                if label not in used_labels | TARGET_LABELS:
                    report.error(where, f"grouping label {label!r} is on none of the metrics used")
    if "histogram_quantile" in expr and not re.search(r"\bby\s*\([^)]*\ble\b", expr):
        report.error(where, "histogram_quantile needs the sum to keep `le` (sum by (le, ...))")
    # What is left once selectors, groupings, strings, ranges and numbers are
    # gone must be functions and keywords: a bare name is a metric without
    # the env/instance matchers, or a typo.
    rest = expr
    for m in reversed(selectors(expr)):
        rest = rest[:m.start] + " __sel__ " + rest[m.end:]
    rest = STRING.sub(" ", rest)
    rest = GROUPING.sub(" ", rest)
    rest = re.sub(r"\[[^\]]*\]", " ", rest)
    rest = re.sub(r"\$[a-zA-Z_{][a-zA-Z0-9_:}]*", " 1 ", rest)
    rest = re.sub(r"(?<![a-zA-Z_])\d+(\.\d+)?([eE][+-]?\d+)?[a-z]*", " 1 ", rest)
    for m in re.finditer(r"[a-zA-Z_:][a-zA-Z0-9_:]*", rest):
        word = m.group(0)
        if word == "__sel__" or word.lower() in KEYWORDS:
            continue
        if re.match(r"\s*\(", rest[m.end():]):
            if word not in FUNCTIONS:
                report.error(where, f"unknown function {word}")
        else:
            report.error(where, f"bare name {word!r}: a metric needs its env/instance matchers")


def panels_of(dashboard: dict):
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panel.get("panels", [])  # collapsed rows


def lint_dashboard(path: Path, dashboard: dict, catalogue: dict[str, Metric], uids: dict[str, str],
                   report: Report, exprs: list[dict]) -> None:
    where = str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)
    uid = dashboard.get("uid")
    if not isinstance(uid, str) or not re.fullmatch(r"[a-z0-9-]{3,40}", uid):
        report.error(where, f"needs a stable uid of lowercase letters, digits and dashes (got {uid!r})")
    if not dashboard.get("title"):
        report.error(where, "needs a title")
    if "heartrule" not in dashboard.get("tags", []):
        report.error(where, "needs the heartrule tag (the dashboards link each other by it)")

    variables = {v.get("name"): v for v in dashboard.get("templating", {}).get("list", [])}
    substitutions: dict[str, str] = {}
    ds_vars = {}
    for name, var in variables.items():
        kind = var.get("type")
        if kind == "datasource":
            ds_vars[name] = var
            default = var.get("current", {}).get("value")
            if var.get("query") not in uids:
                report.error(where, f"datasource variable ${name} is of type {var.get('query')!r}, not provisioned")
            elif default != uids[var["query"]]:
                report.error(where, f"${name} defaults to {default!r}, the provisioned uid is {uids[var['query']]!r}")
        elif kind == "query":
            if not var.get("includeAll") or var.get("allValue") != ".*":
                report.error(where, f'query variable ${name} needs an "All" option whose value is .*')
            substitutions[name] = ".*"
            definition = var.get("definition") or var.get("query", {}).get("query", "")
            m = re.fullmatch(r"label_values\((.*),\s*([a-zA-Z_][a-zA-Z0-9_]*)\)", definition.strip())
            if not m:
                report.error(where, f"${name}: expected label_values(<selector>, <label>), got {definition!r}")
            else:
                selector, label = m.group(1), m.group(2)
                found = series_of(re.match(r"[a-zA-Z_:][a-zA-Z0-9_:]*", selector).group(0), catalogue)
                if found is None:
                    report.error(where, f"${name}: {selector} is not in the catalogue")
                elif label not in found[1].labels | TARGET_LABELS:
                    report.error(where, f"${name}: the metric has no label {label!r}")
        elif kind in ("textbox", "constant", "custom"):
            substitutions[name] = str(var.get("current", {}).get("value", var.get("query", "")))
            if kind == "textbox" and not re.fullmatch(r"[0-9.]+", substitutions[name]):
                report.error(where, f"textbox ${name} must default to a number (it is used in arithmetic)")
        else:
            report.error(where, f"variable ${name} has an unexpected type {kind!r}")
    if ds_vars.get("datasource", {}).get("query") != "prometheus":
        report.error(where, "needs a datasource variable named `datasource` of type prometheus")
    for name in ("env", "instance"):
        if variables.get(name, {}).get("type") != "query":
            report.error(where, f"needs a ${name} query variable")

    expected_ds = {f"${{{n}}}": v.get("query") for n, v in ds_vars.items()}

    def check_ds(ds: dict | None, at: str) -> str | None:
        if not isinstance(ds, dict) or ds.get("uid") not in expected_ds:
            report.error(at, f"datasource must be a templated uid ({sorted(expected_ds)}), got {ds!r}")
            return None
        if ds.get("type") != expected_ds[ds["uid"]]:
            report.error(at, f"datasource type {ds.get('type')!r} does not match {ds['uid']}")
        return ds.get("type")

    seen_ids = set()
    for panel in panels_of(dashboard):
        if panel.get("type") == "row":
            continue
        title = panel.get("title", "")
        at = f"{where} panel {title or panel.get('id')!r}"
        if panel.get("id") in seen_ids:
            report.error(at, "duplicate panel id")
        seen_ids.add(panel.get("id"))
        if not title.strip():
            report.error(at, "needs a title")
        if not panel.get("description", "").strip():
            report.error(at, "needs a description")
        if not panel.get("fieldConfig", {}).get("defaults", {}).get("unit"):
            report.error(at, "needs a unit (fieldConfig.defaults.unit)")
        panel_type = check_ds(panel.get("datasource"), at)
        if not panel.get("targets"):
            report.error(at, "has no query")
        for t in panel.get("targets", []):
            tat = f"{at} target {t.get('refId')}"
            if check_ds(t.get("datasource"), tat) != panel_type:
                report.error(tat, "target datasource differs from the panel's")
            expr = t.get("expr", "")
            if not expr.strip():
                report.error(tat, "empty expr")
            elif panel_type == "prometheus":
                lint_promql(expr, tat, title, catalogue, report)
                exprs.append({"dashboard": uid, "panel": title, "refId": t.get("refId"),
                              "expr": substitute(expr, substitutions, tat, report)})
            elif panel_type == "loki":
                if not re.match(r'\{service="heartrule"', expr):
                    report.error(tat, 'a Loki query starts from the {service="heartrule"} stream')
    for ann in dashboard.get("annotations", {}).get("list", []):
        if ann.get("builtIn"):
            continue
        at = f"{where} annotation {ann.get('name')!r}"
        if check_ds(ann.get("datasource"), at) == "prometheus":
            lint_promql(ann.get("expr", ""), at, ann.get("name", ""), catalogue, report)
            exprs.append({"dashboard": uid, "panel": f"annotation {ann.get('name')}", "refId": "annotation",
                          "expr": substitute(ann.get("expr", ""), substitutions, at, report)})


def promtool_parse(exprs: list[dict], report: Report) -> None:
    """promtool parses every rule expression: the offline PromQL parser."""
    rules = {"groups": [{"name": "dashboard-queries", "rules": [
        {"record": f"dashboard_query_{i}", "expr": e["expr"]} for i, e in enumerate(exprs)]}]}
    with tempfile.NamedTemporaryFile("w", suffix=".yml", delete=False) as f:
        yaml.safe_dump(rules, f, sort_keys=False, allow_unicode=True)
    out = subprocess.run(["promtool", "check", "rules", f.name], capture_output=True, text=True)
    Path(f.name).unlink()
    if out.returncode != 0:
        for line in (out.stdout + out.stderr).splitlines():
            m = re.search(r"group \"dashboard-queries\", rule (\d+)", line)
            if m:
                e = exprs[int(m.group(1)) - 1]
                report.error(f"{e['dashboard']} {e['panel']!r} {e['refId']}", f"does not parse: {line.strip()}")
        report.error("promtool", (out.stdout + out.stderr).strip())


def main() -> int:
    parser = argparse.ArgumentParser(description="Lint HeartRule's Grafana dashboards.")
    parser.add_argument("--catalogue", type=Path, required=True, help="output of `heartrule metrics-doc`")
    parser.add_argument("--print-exprs", action="store_true", help="print the substituted PromQL as JSON")
    parser.add_argument("--dashboards", type=Path, default=GRAFANA / "dashboards")
    args = parser.parse_args()

    catalogue = load_catalogue(args.catalogue)
    uids = datasource_uids()
    for kind in ("prometheus", "loki"):
        if kind not in uids:
            print(f"no provisioned {kind} datasource", file=sys.stderr)
            return 1
    report = Report()
    exprs: list[dict] = []
    paths = sorted(args.dashboards.glob("*/*.json"))
    if not paths:
        print(f"no dashboards under {args.dashboards}", file=sys.stderr)
        return 1
    seen: dict[str, Path] = {}
    for path in paths:
        dashboard = json.loads(path.read_text())
        for key in ("uid", "title"):
            value = dashboard.get(key)
            if (key, value) in seen:
                report.error(str(path), f"{key} {value!r} is also used by {seen[(key, value)]}")
            seen[(key, value)] = path
        lint_dashboard(path, dashboard, catalogue, uids, report, exprs)
    if args.print_exprs:
        json.dump(exprs, sys.stdout, indent=1, ensure_ascii=False)
        print()
        return 1 if report.errors else 0
    promtool_parse(exprs, report)
    for e in report.errors:
        print("ERROR", e)
    panels = sum(1 for p in paths for _ in panels_of(json.loads(p.read_text())))
    print(f"dashboards: {len(paths)}, panels: {panels}, PromQL queries: {len(exprs)}, errors: {len(report.errors)}")
    return 1 if report.errors else 0


if __name__ == "__main__":
    sys.exit(main())
