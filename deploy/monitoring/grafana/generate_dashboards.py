#!/usr/bin/env python3
"""Writes HeartRule's provisioned Grafana dashboards (dashboards/<folder>/*.json).

The JSON files are what Grafana loads; this script is where they are edited,
so that every dashboard shares the same variables, annotations, datasource
references and selector conventions. `--check` exits non-zero when a
committed JSON file differs from what this script writes (CI runs it).

    python3 deploy/monitoring/grafana/generate_dashboards.py          # write
    python3 deploy/monitoring/grafana/generate_dashboards.py --check  # compare
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
OUT = HERE / "dashboards"

# The provisioned datasource uids (provisioning/datasources/heartrule.yml).
PROMETHEUS_UID = "heartrule-prometheus"
LOKI_UID = "heartrule-loki"

PROM = {"type": "prometheus", "uid": "${datasource}"}
LOKI = {"type": "loki", "uid": "${loki}"}

# Every HeartRule selector carries these matchers, so the environment and
# instance pickers filter every panel. `env` and `instance` are target labels
# set by the Prometheus scrape config; with the "All" value (`.*`) a series
# without the label still matches.
SEL = 'env=~"$env", instance=~"$instance"'

# Turn availability objective; the error budget is 1 - SLO.
SLO = 0.995
BUDGET = round(1 - SLO, 6)

RI = "$__rate_interval"

# Matchers used inside f-strings (which cannot hold backslashes on 3.11).
COMMITTED = 'outcome="committed"'
IN_PROGRESS = 'outcome="in_progress"'
STATUS_409 = 'status="409"'
IN_USE = 'state="in_use"'
# Routes that run (or start) a turn.
TURN_ROUTES = 'route=~".*/messages|/api/chat.*|/api/sessions"'


def sel(extra: str = "") -> str:
    return "{" + SEL + (", " + extra if extra else "") + "}"


def rate(metric: str, extra: str = "", window: str = RI) -> str:
    return f"rate({metric}{sel(extra)}[{window}])"


# ---------------------------------------------------------------- panels


class Layout:
    """Places panels left to right on a 24-column grid."""

    def __init__(self) -> None:
        self.x = 0
        self.y = 0
        self.row_h = 0
        self.next_id = 1

    def place(self, w: int, h: int) -> dict:
        if self.x + w > 24:
            self.x = 0
            self.y += self.row_h
            self.row_h = 0
        pos = {"h": h, "w": w, "x": self.x, "y": self.y}
        self.x += w
        self.row_h = max(self.row_h, h)
        return pos

    def id(self) -> int:
        self.next_id += 1
        return self.next_id - 1


def target(expr: str, legend: str = "", ref: str = "A", instant: bool = False) -> dict:
    t = {
        "datasource": PROM,
        "editorMode": "code",
        "expr": expr,
        "legendFormat": legend or "__auto",
        "range": not instant,
        "instant": instant,
        "refId": ref,
    }
    return t


def targets(*pairs: tuple[str, str]) -> list[dict]:
    return [target(expr, legend, chr(ord("A") + i)) for i, (expr, legend) in enumerate(pairs)]


def timeseries(
    lay: Layout,
    title: str,
    description: str,
    unit: str,
    tgts: list[dict],
    w: int = 12,
    h: int = 8,
    thresholds: list[tuple[float, str]] | None = None,
    stack: bool = False,
    minimum: float | None = 0,
) -> dict:
    defaults: dict = {
        "unit": unit,
        "custom": {
            "drawStyle": "line",
            "lineWidth": 1,
            "fillOpacity": 10 if not stack else 40,
            "showPoints": "never",
            "spanNulls": False,
            "stacking": {"mode": "normal" if stack else "none", "group": "A"},
        },
    }
    if minimum is not None:
        defaults["min"] = minimum
    if thresholds:
        defaults["thresholds"] = {
            "mode": "absolute",
            "steps": [{"color": "green", "value": None}]
            + [{"color": color, "value": value} for value, color in thresholds],
        }
        defaults["custom"]["thresholdsStyle"] = {"mode": "line+area"}
    return {
        "id": lay.id(),
        "type": "timeseries",
        "title": title,
        "description": description,
        "datasource": PROM,
        "gridPos": lay.place(w, h),
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "options": {
            "legend": {"displayMode": "table", "placement": "bottom", "calcs": ["mean", "max", "lastNotNull"]},
            "tooltip": {"mode": "multi", "sort": "desc"},
        },
        "targets": tgts,
    }


def stat(
    lay: Layout,
    title: str,
    description: str,
    unit: str,
    expr: str,
    thresholds: list[tuple[float, str]],
    base: str = "green",
    w: int = 6,
    h: int = 4,
    decimals: int | None = None,
    legend: str = "",
) -> dict:
    defaults: dict = {
        "unit": unit,
        "thresholds": {
            "mode": "absolute",
            "steps": [{"color": base, "value": None}]
            + [{"color": color, "value": value} for value, color in thresholds],
        },
        "color": {"mode": "thresholds"},
    }
    if decimals is not None:
        defaults["decimals"] = decimals
    return {
        "id": lay.id(),
        "type": "stat",
        "title": title,
        "description": description,
        "datasource": PROM,
        "gridPos": lay.place(w, h),
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "options": {
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
            "colorMode": "background",
            "graphMode": "area",
            "textMode": "value",
        },
        "targets": [target(expr, legend)],
    }


def logs(lay: Layout, title: str, description: str, expr: str, w: int = 24, h: int = 10) -> dict:
    return {
        "id": lay.id(),
        "type": "logs",
        "title": title,
        "description": description,
        "datasource": LOKI,
        "gridPos": lay.place(w, h),
        # Log lines have no unit; "none" keeps the every-panel-has-a-unit rule uniform.
        "fieldConfig": {"defaults": {"unit": "none"}, "overrides": []},
        "options": {
            "showTime": True,
            "wrapLogMessage": True,
            "prettifyLogMessage": False,
            "enableLogDetails": True,
            "dedupStrategy": "none",
            "sortOrder": "Descending",
        },
        "targets": [{"datasource": LOKI, "editorMode": "code", "expr": expr, "queryType": "range", "refId": "A"}],
    }


# ------------------------------------------------------- shared pieces


def variables(with_loki: bool = False, extra: list[dict] | None = None) -> dict:
    items = [
        {
            "name": "datasource",
            "label": "Prometheus",
            "type": "datasource",
            "query": "prometheus",
            "current": {"selected": False, "text": "Prometheus", "value": PROMETHEUS_UID},
            "hide": 0,
            "refresh": 1,
            "regex": "",
            "includeAll": False,
            "multi": False,
            "options": [],
        }
    ]
    if with_loki:
        items.append(
            {
                "name": "loki",
                "label": "Loki",
                "type": "datasource",
                "query": "loki",
                "current": {"selected": False, "text": "Loki", "value": LOKI_UID},
                "hide": 0,
                "refresh": 1,
                "regex": "",
                "includeAll": False,
                "multi": False,
                "options": [],
            }
        )
    items.append(query_var("env", "Environment", "label_values(heartrule_build_info, env)"))
    items.append(
        query_var("instance", "Instance", 'label_values(heartrule_build_info{env=~"$env"}, instance)')
    )
    items.extend(extra or [])
    return {"list": items}


def query_var(name: str, label: str, query: str) -> dict:
    return {
        "name": name,
        "label": label,
        "type": "query",
        "datasource": PROM,
        "definition": query,
        "query": {"query": query, "refId": "PrometheusVariableQueryEditor-VariableQuery"},
        "includeAll": True,
        "allValue": ".*",
        "multi": True,
        "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
        "refresh": 2,
        "sort": 1,
        "hide": 0,
        "options": [],
        "regex": "",
    }


def textbox_var(name: str, label: str, value: str, description: str) -> dict:
    return {
        "name": name,
        "label": label,
        "description": description,
        "type": "textbox",
        "query": value,
        "current": {"selected": False, "text": value, "value": value},
        "hide": 0,
        "options": [{"selected": True, "text": value, "value": value}],
    }


def annotations() -> dict:
    # One event per (instance, build) at the moment that build's process
    # started: a new version, git_sha or rustc is a new heartrule_build_info
    # series, and the join puts its labels on the start time. The value is
    # the start time in ms, and useValueForTime places the event there, so a
    # series that stays up yields one event, not one per step.
    expr = (
        "max by (instance, version, git_sha) ("
        f"process_start_time_seconds{sel()} * on (instance, job) group_left (version, git_sha) "
        f"heartrule_build_info{sel()}"
        ") * 1000"
    )
    return {
        "list": [
            {
                "builtIn": 1,
                "datasource": {"type": "grafana", "uid": "-- Grafana --"},
                "enable": True,
                "hide": True,
                "iconColor": "rgba(0, 211, 255, 1)",
                "name": "Annotations & Alerts",
                "type": "dashboard",
            },
            {
                "name": "Deployments",
                "datasource": PROM,
                "enable": True,
                "hide": False,
                "iconColor": "purple",
                "expr": expr,
                "step": "1m",
                "useValueForTime": True,
                "titleFormat": "Started {{version}}",
                "textFormat": "instance {{instance}}, git {{git_sha}}",
                "tagKeys": "version,instance",
            },
        ]
    }


def dashboard(uid: str, title: str, description: str, panels: list[dict], with_loki: bool = False,
              extra_vars: list[dict] | None = None) -> dict:
    return {
        "uid": uid,
        "title": title,
        "description": description,
        "tags": ["heartrule"],
        "id": None,
        "editable": False,
        "graphTooltip": 1,
        "refresh": "30s",
        "schemaVersion": 39,
        "version": 1,
        "style": "dark",
        "timezone": "utc",
        "time": {"from": "now-6h", "to": "now"},
        "timepicker": {},
        "fiscalYearStartMonth": 0,
        "liveNow": False,
        "links": [
            {
                "title": "HeartRule dashboards",
                "type": "dashboards",
                "tags": ["heartrule"],
                "asDropdown": True,
                "includeVars": True,
                "keepTime": True,
                "icon": "external link",
                "targetBlank": False,
                "tooltip": "",
                "url": "",
            }
        ],
        "annotations": annotations(),
        "templating": variables(with_loki, extra_vars),
        "panels": panels,
    }


HTTP = "http_server_request_duration_seconds"
# Probes and scrapes would drown the user-facing traffic in the RED panels.
NOT_PROBES = 'route!~"/health|/ready|/metrics"'


def ratio_or_zero(num: str, den: str, by: str = "") -> str:
    """num/den where a missing numerator (no error yet) reads 0, not "no data"."""
    agg = f"sum by ({by}) " if by else "sum "
    return f"({agg}({num}) or {agg}({den}) * 0) / {agg}({den})"


# The turn-availability SLI, as the SLO alerts define it: a turn is a POST
# that runs the engine (create a session, a message, a chat turn, a streamed
# chat turn); 4xx are the client's doing and count neither way; 5xx are bad.
# (heartrule_turns_total{outcome="failed"} also counts client errors such as
# an unknown session, so it is not the SLI.)
TURN_POSTS = 'method="POST", route=~"/api/sessions|/api/sessions/\\\\{id\\\\}/messages|/api/chat|/api/chat/stream"'
TURN_BAD = TURN_POSTS + ', status=~"5.."'
TURN_VALID = TURN_POSTS + ', status!~"4.."'


def turn_error_ratio(window: str, func: str = "rate") -> str:
    """Per environment: bad turns / valid turns over the window (0 without errors)."""
    bad = f"{func}({HTTP}_count{sel(TURN_BAD)}[{window}])"
    valid = f"{func}({HTTP}_count{sel(TURN_VALID)}[{window}])"
    return ratio_or_zero(bad, valid, "env")


def burn(window: str) -> tuple[str, str]:
    return f"({turn_error_ratio(window)}) / {BUDGET}", f"{window} {{{{env}}}}"


# ------------------------------------------------------------ dashboards


def overview() -> dict:
    lay = Layout()
    p = []
    p.append(stat(
        lay, "Request rate", "User-facing HTTP requests per second (probes and /metrics excluded).",
        "reqps", f"sum({rate(HTTP + '_count', NOT_PROBES)})", [], base="blue"))
    p.append(stat(
        lay, "5xx ratio", "Share of user-facing HTTP responses with a 5xx status.",
        "percentunit",
        ratio_or_zero(rate(HTTP + "_count", NOT_PROBES + ', status=~"5.."'), rate(HTTP + "_count", NOT_PROBES)),
        [(0.001, "orange"), (0.005, "red")]))
    p.append(stat(
        lay, f"Turn availability over the range (SLO {SLO * 100:g}%)",
        "Turns (POSTs that run the engine) answered without a 5xx among those not rejected with a 4xx, "
        f"per environment over the dashboard's time range. Below {SLO * 100:g}% the objective is missed "
        "for this range.",
        "percentunit", f"1 - ({turn_error_ratio('$__range', 'increase')})",
        [(SLO, "green")], base="red", decimals=3, legend="{{env}}"))
    p.append(stat(
        lay, "Error budget left, 30d window",
        f"Share of the 30-day error budget ({BUDGET * 100:g}% of turns may fail) not yet spent, per "
        "environment. Negative: the SLO is already missed for the window.",
        "percentunit", f"1 - ({turn_error_ratio('30d', 'increase')}) / {BUDGET}",
        [(0, "orange"), (0.25, "green")], base="red", decimals=1, legend="{{env}}"))
    p.append(timeseries(
        lay, "Error-budget burn rate, fast (5m, 30m, 1h, 6h windows)",
        "How fast failed turns spend the error budget, per environment: 1 spends exactly the budget in "
        "30 days. The pages: 14.4 on both 1h and 5m (2% of a month's budget in an hour), 6 on both 6h "
        "and 30m.",
        "none", targets(*[burn(w) for w in ("5m", "30m", "1h", "6h")]),
        thresholds=[(6, "orange"), (14.4, "red")]))
    p.append(timeseries(
        lay, "Error-budget burn rate, slow (2h, 1d, 3d windows)",
        "Slow burns that open tickets: 3 on both 1d and 2h, 1 on both 3d and 6h (the budget would be "
        "gone by the end of the 30 days).",
        "none", targets(*[burn(w) for w in ("2h", "1d", "3d")]),
        thresholds=[(1, "orange"), (3, "red")]))
    p.append(timeseries(
        lay, "Turn outcomes", "Conversation turns per second by outcome: committed, replayed (idempotent retry), "
        "failed (recorded in failed_turns), in_progress (busy session, 409).",
        "ops",
        targets((f"sum by (outcome) ({rate('heartrule_turns_total')})", "{{outcome}}")), stack=True))
    p.append(timeseries(
        lay, "Request rate by route", "HTTP requests per second by method and route template (rate).",
        "reqps", targets((f"sum by (method, route) ({rate(HTTP + '_count', NOT_PROBES)})", "{{method}} {{route}}"))))
    p.append(timeseries(
        lay, "5xx ratio by route", "Share of responses with a 5xx status, per route template.",
        "percentunit",
        targets((ratio_or_zero(rate(HTTP + "_count", NOT_PROBES + ', status=~"5.."'),
                               rate(HTTP + "_count", NOT_PROBES), "route"), "{{route}}")),
        thresholds=[(0.005, "red")]))
    p.append(timeseries(
        lay, "p95 latency by route", "95th percentile of HTTP request duration per route template.",
        "s", targets((f"histogram_quantile(0.95, sum by (le, route) ({rate(HTTP + '_bucket', NOT_PROBES)}))",
                      "{{route}}"))))
    p.append(timeseries(
        lay, "p99 latency by route", "99th percentile of HTTP request duration per route template.",
        "s", targets((f"histogram_quantile(0.99, sum by (le, route) ({rate(HTTP + '_bucket', NOT_PROBES)}))",
                      "{{route}}"))))
    p.append(timeseries(
        lay, "Responses by status", "HTTP responses per second by status code, every route.",
        "reqps", targets((f"sum by (status) ({rate(HTTP + '_count')})", "{{status}}")), stack=True))
    p.append(timeseries(
        lay, "Requests in flight by route", "HTTP requests being served right now, per route template.",
        "short",
        targets((f"sum by (route) (http_server_active_requests{sel()})", "{{route}}"))))
    p.append(timeseries(
        lay, "Trace spans by export stage",
        "Spans ended, exported and failed per second. Ended outgrowing exported + failed means the "
        "batch queue drops spans. Zero when tracing is off.",
        "ops",
        targets((f"sum by (stage) ({rate('heartrule_trace_spans_total')}) or on () vector(0)", "{{stage}}"))))
    p.append(timeseries(
        lay, "Instances up by version", "Scraped HeartRule instances per build version; a rollout shows as one "
        "version handing over to the next.",
        "short",
        targets((f"count by (version) (heartrule_build_info{sel()})", "{{version}}")), stack=True))
    p.append(logs(
        lay, "Error and warning logs",
        "WARN and ERROR lines of the selected environment and instances (Loki). Each line's trace_id "
        "links to its trace; a trace links back here by trace id.",
        '{service="heartrule", env=~"$env", instance=~"$instance", level=~"ERROR|WARN"}'))
    return dashboard(
        "heartrule-overview", "HeartRule / Service overview",
        "RED by route, turn SLO and error-budget burn, and the error logs: where on-call looks first.",
        p, with_loki=True)


def conversations() -> dict:
    lay = Layout()
    p = []
    p.append(stat(lay, "Sessions created", "Counseling sessions created over the dashboard's time range.",
                  "short", f"sum(increase(heartrule_sessions_created_total{sel()}[$__range]))", [], base="blue"))
    p.append(stat(lay, "Turns committed", "Turns committed over the dashboard's time range.",
                  "short", f"sum(increase(heartrule_turns_total{sel(COMMITTED)}[$__range]))", [],
                  base="blue"))
    p.append(stat(lay, "Sessions waiting for the user", "Active sessions waiting for the user's next message, now.",
                  "short", f"sum(heartrule_sessions_waiting{sel()})", [], base="blue"))
    p.append(stat(lay, "Turns failed", "Turns with outcome failed (recorded in failed_turns, whatever the cause: "
                  "LLM, database, or the client's, e.g. an unknown session) among committed and failed turns.",
                  "percentunit",
                  ratio_or_zero(rate("heartrule_turns_total", 'outcome="failed"'),
                                rate("heartrule_turns_total", 'outcome=~"committed|failed"')),
                  [(0.001, "orange"), (BUDGET, "red")]))
    p.append(timeseries(lay, "Sessions created", "Sessions created per second.", "ops",
                        targets((f"sum({rate('heartrule_sessions_created_total')})", "sessions/s"))))
    p.append(timeseries(lay, "Turns by outcome",
                        "Turns per second by outcome: committed, replayed, failed, in_progress (busy session).",
                        "ops", targets((f"sum by (outcome) ({rate('heartrule_turns_total')})", "{{outcome}}")),
                        stack=True))
    p.append(timeseries(lay, "Sessions waiting for the user", "Active sessions waiting for the next user message, "
                        "per instance.", "short",
                        targets((f"sum by (instance) (heartrule_sessions_waiting{sel()})", "{{instance}}"))))
    p.append(timeseries(
        lay, "Turn latency", "Duration of one turn, LLM calls included: p50, p95 and p99.", "s",
        targets(*[(f"histogram_quantile({q}, sum by (le) ({rate('heartrule_turn_duration_seconds_bucket')}))",
                   f"p{int(q * 100)}") for q in (0.5, 0.95, 0.99)])))
    p.append(timeseries(
        lay, "Session lease claim time", "Time a turn took to claim its session's lease (p50, p99); a claim never "
        "waits for another turn, so this is the claim round trip.", "s",
        targets(*[(f"histogram_quantile({q}, sum by (le) ({rate('heartrule_session_lock_wait_seconds_bucket')}))",
                   f"p{int(q * 100)}") for q in (0.5, 0.99)])))
    p.append(timeseries(
        lay, "Lease conflicts", "Turns rejected because another turn held the session (TURN_IN_PROGRESS) and "
        "409 responses by route (busy session or a lost lease, CONFLICT), per second.", "ops",
        targets(
            (f"sum({rate('heartrule_turns_total', IN_PROGRESS)}) or on () vector(0)", "turn in progress"),
            (f"sum by (route) ({rate(HTTP + '_count', STATUS_409)}) or on () vector(0)", "409 {{route}}"),
        )))
    p.append(timeseries(
        lay, "Turn routes: request rate", "Requests per second on the routes that run a turn.", "reqps",
        targets((f"sum by (route) ({rate(HTTP + '_count', TURN_ROUTES)})",
                 "{{route}}"))))
    p.append(timeseries(
        lay, "Turn routes: p95 latency", "95th percentile HTTP duration on the routes that run a turn.", "s",
        targets((f"histogram_quantile(0.95, sum by (le, route) ("
                 f"{rate(HTTP + '_bucket', TURN_ROUTES)}))", "{{route}}"))))
    # Safety: what the crisis protocol, the output guard and the repair
    # intents did, and whether on-call alerts reach the webhook.
    p.append(timeseries(
        lay, "Risk detections", "Risk detections on user messages per second, by detector (local patterns, the "
        "LLM's reading) and level. High and imminent start the crisis protocol at the default threshold.", "ops",
        targets((f"sum by (source, level) ({rate('heartrule_safety_events_total')}) or on () vector(0)",
                 "{{source}} {{level}}")), stack=True))
    p.append(timeseries(
        lay, "On-call webhook deliveries", "Delivery attempts of safety alerts to the on-call webhook per second, "
        "by outcome. Failures with no delivery mean alerts are lost (SafetyWebhookFailing).", "ops",
        targets((f"sum by (outcome) ({rate('heartrule_safety_webhook_attempts_total')}) or on () vector(0)",
                 "{{outcome}}")), stack=True))
    p.append(timeseries(
        lay, "Output guard", "AI replies withdrawn by the output guard per second, by outcome (regenerated once, "
        "or replaced by the scripted text) and action type; passed replies are left out.", "ops",
        targets((f"sum by (outcome, action_type) "
                 f"({rate('heartrule_output_guard_total', 'outcome!=' + chr(34) + 'passed' + chr(34))})"
                 " or on () vector(0)", "{{outcome}} {{action_type}}")), stack=True))
    p.append(timeseries(
        lay, "Repair intents", "Answers understood as a wish to skip the question, stop, or speak to a person, "
        "per second, by intent and detector.", "ops",
        targets((f"sum by (intent, source) ({rate('heartrule_repair_intents_total')}) or on () vector(0)",
                 "{{intent}} {{source}}")), stack=True))
    p.append(timeseries(
        lay, "Token quotas reached", "Turns over a token limit per second, by limit (session, user_daily, "
        "global_hourly) and what they got (refuse: 429 QUOTA_EXCEEDED; scripted: ran without the LLM).", "ops",
        targets((f"sum by (limit, action) ({rate('heartrule_quota_exceeded_total')}) or on () vector(0)",
                 "{{limit}} {{action}}")), stack=True))
    return dashboard("heartrule-conversations", "HeartRule / Conversations",
                     "Sessions, turns by outcome, waiting sessions, turn latency, lease conflicts, and what the "
                     "safety features (crisis protocol, output guard, repair intents, token quotas) did.", p)


LLM_MODEL = 'gen_ai_request_model=~"$model"'
LLM_INPUT = LLM_MODEL + ', gen_ai_token_type="input"'
LLM_OUTPUT = LLM_MODEL + ', gen_ai_token_type="output"'
LLM_FAILED = LLM_MODEL + ', error_type!=""'


def llm() -> dict:
    lay = Layout()
    p = []
    dur = "gen_ai_client_operation_duration_seconds"
    tok = "gen_ai_client_token_usage"
    p.append(stat(lay, "LLM calls", "LLM operations per second, every model.", "ops",
                  f"sum({rate(dur + '_count', LLM_MODEL)})", [], base="blue"))
    p.append(stat(lay, "LLM error ratio", "Share of LLM operations that failed after their retries.", "percentunit",
                  ratio_or_zero(rate(dur + "_count", LLM_MODEL + ', error_type!=""'), rate(dur + "_count", LLM_MODEL)),
                  [(0.01, "orange"), (0.05, "red")]))
    p.append(stat(lay, "Breaker open", "Providers whose circuit breaker is open now (state 2): their calls fail "
                  "at once with LLM_SERVICE_ERROR.", "short",
                  f"count(heartrule_llm_breaker_state{sel()} == 2) or vector(0)", [(1, "red")]))
    p.append(stat(lay, "Estimated cost per hour",
                  "Tokens per hour priced at $input_price and $output_price USD per million input/output tokens "
                  "(dashboard variables).", "currencyUSD",
                  f"sum({rate(tok + '_sum', LLM_INPUT)}) * 3600 * $input_price / 1e6"
                  f" + sum({rate(tok + '_sum', LLM_OUTPUT)}) * 3600 * $output_price / 1e6",
                  [], base="blue", decimals=2))
    p.append(timeseries(lay, "Calls by model", "LLM operations per second by model and operation.", "ops",
                        targets((f"sum by (gen_ai_request_model, gen_ai_operation_name) ({rate(dur + '_count', LLM_MODEL)})",
                                 "{{gen_ai_request_model}} {{gen_ai_operation_name}}"))))
    p.append(timeseries(
        lay, "Latency by model", "p50 and p95 of LLM operation duration (retries included) by model.", "s",
        targets(
            (f"histogram_quantile(0.5, sum by (le, gen_ai_request_model) ({rate(dur + '_bucket', LLM_MODEL)}))",
             "p50 {{gen_ai_request_model}}"),
            (f"histogram_quantile(0.95, sum by (le, gen_ai_request_model) ({rate(dur + '_bucket', LLM_MODEL)}))",
             "p95 {{gen_ai_request_model}}"),
        )))
    p.append(timeseries(
        lay, "Errors by type", "Failed LLM operations per second by error type (timeout, rate limit, 5xx, "
        "breaker open, ...).", "ops",
        targets((f"sum by (error_type) ({rate(dur + '_count', LLM_FAILED)}) or on () vector(0)",
                 "{{error_type}}")), stack=True))
    p.append(timeseries(
        lay, "Retries and fallback", "Attempts retried per second by provider, and calls served by the fallback "
        "provider.", "ops",
        targets(
            (f"sum by (provider) ({rate('heartrule_llm_retries_total')}) or on () vector(0)", "retries {{provider}}"),
            (f"sum by (provider, fallback) ({rate('heartrule_llm_fallback_total')}) or on () vector(0)",
             "fallback {{provider}} → {{fallback}}"),
        )))
    p.append(timeseries(
        lay, "Circuit breaker state", "Breaker state per provider and instance: 0 closed, 1 half-open, 2 open.",
        "none", targets((f"max by (instance, provider) (heartrule_llm_breaker_state{sel()})",
                         "{{provider}} {{instance}}")),
        thresholds=[(1, "orange"), (2, "red")]))
    p.append(timeseries(
        lay, "Tokens by model", "Tokens per second by model and token type (input or output).", "short",
        targets((f"sum by (gen_ai_request_model, gen_ai_token_type) ({rate(tok + '_sum', LLM_MODEL)})",
                 "{{gen_ai_request_model}} {{gen_ai_token_type}}")), stack=True))
    p.append(timeseries(
        lay, "Estimated cost per hour by model",
        "Token spend rate priced with the dashboard's $input_price and $output_price (USD per million tokens).",
        "currencyUSD",
        targets((f"sum by (gen_ai_request_model) ({rate(tok + '_sum', LLM_INPUT)})"
                 " * 3600 * $input_price / 1e6"
                 f" + sum by (gen_ai_request_model) ({rate(tok + '_sum', LLM_OUTPUT)})"
                 " * 3600 * $output_price / 1e6", "{{gen_ai_request_model}}")), stack=True))
    p.append(timeseries(
        lay, "Tokens per call", "Mean tokens per LLM operation by token type.", "short",
        targets((f"sum by (gen_ai_token_type) ({rate(tok + '_sum', LLM_MODEL)})"
                 f" / sum by (gen_ai_token_type) ({rate(tok + '_count', LLM_MODEL)})", "{{gen_ai_token_type}}"))))
    p.append(timeseries(
        lay, "Degraded mode", "Actions per second that ran on their scripted text because the LLM was unavailable "
        "(llm.degraded_mode scripted) or a token quota withheld it, by action type; and whether each instance's "
        "last LLM call found the LLM unavailable (1).", "short",
        targets(
            (f"sum by (action_type, reason) ({rate('heartrule_llm_degraded_actions_total')}) or on () vector(0)",
             "degraded {{action_type}} ({{reason}})/s"),
            (f"max by (instance) (heartrule_llm_degraded_active{sel()}) or on () vector(0)",
             "active {{instance}}"),
        )))
    p.append(timeseries(
        lay, "Token budget", "Tokens of committed turns per second by kind, and the global hourly budget's "
        "spend as a fraction of it (quotas.global_hourly_tokens; 1 means spent, 0 also when no budget is set).", "short",
        targets(
            (f"sum by (kind) ({rate('heartrule_llm_tokens_total')}) or on () vector(0)", "{{kind}} tokens/s"),
            (f"max(heartrule_llm_budget_used_ratio{sel('budget=' + chr(34) + 'global_hourly' + chr(34))})"
             " or on () vector(0)", "global hourly budget used"),
        )))
    extra = [
        query_var("model", "Model",
                  'label_values(gen_ai_client_operation_duration_seconds_count{env=~"$env", instance=~"$instance"}, '
                  "gen_ai_request_model)"),
        textbox_var("input_price", "Input USD / 1M tokens", "0.15", "Price of one million input tokens, in USD."),
        textbox_var("output_price", "Output USD / 1M tokens", "0.60", "Price of one million output tokens, in USD."),
    ]
    return dashboard("heartrule-llm", "HeartRule / LLM",
                     "LLM latency by model, errors by type, retries, breaker, fallback, tokens and estimated cost.",
                     p, extra_vars=extra)


def database_cache() -> dict:
    lay = Layout()
    p = []
    q = "heartrule_db_query_duration_seconds"
    p.append(stat(lay, "Pool in use", "Pooled database connections in use, over the pool's maximum size.",
                  "percentunit",
                  f"sum(heartrule_db_pool_connections{sel(IN_USE)}) / sum(heartrule_db_pool_max_connections{sel()})",
                  [(0.7, "orange"), (0.9, "red")]))
    p.append(stat(lay, "Callers waiting", "Callers waiting for a pooled connection now.", "short",
                  f"sum(heartrule_db_pool_waiting{sel()})", [(1, "orange"), (5, "red")]))
    p.append(stat(lay, "DB errors", "Database operations that failed per second.", "ops",
                  f"sum({rate('heartrule_db_errors_total')}) or vector(0)", [(0.01, "red")]))
    p.append(stat(lay, "Cache hit ratio", "Cache lookups answered from Redis, every cache.", "percentunit",
                  ratio_or_zero(rate("heartrule_cache_requests_total", 'result="hit"'),
                                rate("heartrule_cache_requests_total")),
                  [(0.5, "orange"), (0.8, "green")], base="red"))
    p.append(timeseries(
        lay, "Query latency p95 by operation", "95th percentile of database query duration by operation and table.",
        "s", targets((f"histogram_quantile(0.95, sum by (le, operation, table) ({rate(q + '_bucket')}))",
                      "{{operation}} {{table}}"))))
    p.append(timeseries(
        lay, "Queries by operation", "Database queries per second by operation and table.", "ops",
        targets((f"sum by (operation, table) ({rate(q + '_count')})", "{{operation}} {{table}}")), stack=True))
    p.append(timeseries(
        lay, "Pool connections", "Pooled connections by state (idle, in_use) against the pool's maximum size.",
        "short",
        targets(
            (f"sum by (state) (heartrule_db_pool_connections{sel()})", "{{state}}"),
            (f"sum(heartrule_db_pool_max_connections{sel()})", "max"),
        )))
    p.append(timeseries(
        lay, "Callers waiting for a connection", "Callers waiting for a pooled connection, per instance.", "short",
        targets((f"sum by (instance) (heartrule_db_pool_waiting{sel()})", "{{instance}}"))))
    p.append(timeseries(
        lay, "Pool acquire time", "Time spent waiting for a connection from the pool: p50 and p99.", "s",
        targets(*[(f"histogram_quantile({qq}, sum by (le) ({rate('heartrule_db_pool_acquire_duration_seconds_bucket')}))",
                   f"p{int(qq * 100)}") for qq in (0.5, 0.99)])))
    p.append(timeseries(
        lay, "Database errors by kind", "Failed database operations per second by error kind.", "ops",
        targets((f"sum by (kind) ({rate('heartrule_db_errors_total')}) or on () vector(0)", "{{kind}}")),
        stack=True))
    p.append(timeseries(
        lay, "Cache hit ratio by cache", "Share of lookups answered from Redis, per cache (script, session).",
        "percentunit",
        targets((ratio_or_zero(rate("heartrule_cache_requests_total", 'result="hit"'),
                               rate("heartrule_cache_requests_total"), "cache"), "{{cache}}")), minimum=0))
    p.append(timeseries(
        lay, "Cache lookups", "Cache lookups per second by cache and result.", "ops",
        targets((f"sum by (cache, result) ({rate('heartrule_cache_requests_total')})", "{{cache}} {{result}}")),
        stack=True))
    p.append(timeseries(
        lay, "Redis errors by operation", "Redis operations that failed or timed out per second; the cache fails "
        "open, so requests then go to PostgreSQL.", "ops",
        targets((f"sum by (operation) ({rate('heartrule_redis_errors_total')}) or on () vector(0)", "{{operation}}")),
        stack=True))
    return dashboard("heartrule-database-cache", "HeartRule / Database and cache",
                     "Query latency, pool in use, waiting and acquire time, database errors, cache hit ratio and "
                     "Redis errors.", p)


# Process metrics share their names with every exporter's; the join keeps the
# HeartRule targets only.
HR = "and on (instance, job) heartrule_build_info" + sel()


def process() -> dict:
    lay = Layout()
    p = []
    p.append(stat(lay, "Uptime", "Time since the most recent start among the selected instances.", "s",
                  f"min(time() - (process_start_time_seconds{sel()} {HR}))", [], base="blue"))
    p.append(stat(lay, "Restarts, last 1h", "Process starts of the selected instances over the last hour.",
                  "short", f"sum(changes(process_start_time_seconds{sel()}[1h]) {HR})", [(1, "orange")]))
    p.append(stat(lay, "Memory of limit", "Highest resident memory as a share of the instance's memory limit.",
                  "percentunit",
                  f"max(process_resident_memory_bytes{sel()} / on (instance, job) "
                  f"heartrule_process_memory_limit_bytes{sel()})",
                  [(0.8, "orange"), (0.9, "red")]))
    p.append(stat(lay, "File descriptors of max", "Highest share of open file descriptors of the per-process "
                  "maximum.", "percentunit",
                  f"max(process_open_fds{sel()} / process_max_fds{sel()} {HR})", [(0.7, "orange"), (0.9, "red")]))
    p.append(timeseries(lay, "CPU", "CPU seconds per second (cores busy) per instance, user and system.",
                        "short",
                        targets((f"sum by (instance) ({rate('process_cpu_seconds_total')} {HR})", "{{instance}}"))))
    p.append(timeseries(
        lay, "Resident memory", "Resident memory per instance, and the instance's memory limit.", "bytes",
        targets(
            (f"process_resident_memory_bytes{sel()} {HR}", "rss {{instance}}"),
            (f"heartrule_process_memory_limit_bytes{sel()}", "limit {{instance}}"),
        )))
    p.append(timeseries(
        lay, "Open file descriptors", "Open file descriptors per instance and the per-process maximum.", "short",
        targets(
            (f"process_open_fds{sel()} {HR}", "open {{instance}}"),
            (f"process_max_fds{sel()} {HR}", "max {{instance}}"),
        )))
    p.append(timeseries(lay, "Threads", "Operating system threads per instance.", "short",
                        targets((f"process_threads{sel()} {HR}", "{{instance}}"))))
    p.append(timeseries(lay, "Virtual memory", "Virtual memory size per instance.", "bytes",
                        targets((f"process_virtual_memory_bytes{sel()} {HR}", "{{instance}}"))))
    p.append(timeseries(lay, "Uptime by instance", "Seconds since each instance's process started; a drop is a "
                        "restart.", "s",
                        targets((f"time() - (process_start_time_seconds{sel()} {HR})", "{{instance}}"))))
    return dashboard("heartrule-process", "HeartRule / Process",
                     "CPU, memory against its limit, file descriptors, threads and restarts of the server process.",
                     p)


DASHBOARDS = {
    "service/overview.json": overview,
    "conversations/conversations.json": conversations,
    "dependencies/llm.json": llm,
    "dependencies/database-cache.json": database_cache,
    "platform/process.json": process,
}


def render(build) -> str:
    return json.dumps(build(), indent=2, ensure_ascii=False) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare instead of writing")
    args = parser.parse_args()
    stale = []
    for rel, build in DASHBOARDS.items():
        path = OUT / rel
        text = render(build)
        if args.check:
            if not path.exists() or path.read_text() != text:
                stale.append(str(path))
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    if stale:
        print("dashboard JSON differs from generate_dashboards.py; run it and commit:", *stale, sep="\n  ")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
