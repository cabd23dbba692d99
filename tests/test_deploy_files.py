"""deploy/: the alert rules, the Prometheus configuration and the Grafana dashboard and provisioning.

promtool is not installed here (and the network is closed), so this is the Python stand-in for `promtool check
rules`: the YAML is parsed, every rule has the shape Prometheus requires, every PromQL expression has balanced
brackets and quotes, and every metric it names is one the code exports (shared/metrics.py EXPORTED). The
dashboard JSON loads and its queries pass the same checks."""
from __future__ import annotations

import json
import re

import pytest
import yaml

from devtools.devstack import ROOT
from shared import metrics

DEPLOY = ROOT / "deploy"
DURATION = re.compile(r"^\d+(ms|s|m|h|d|w|y)$")
METRIC = re.compile(r"\bwabot_[a-zA-Z0-9_:]*")


def balanced(expr: str) -> bool:
    pairs, stack, quote = {")": "(", "]": "[", "}": "{"}, [], None
    for ch in expr:
        if quote:
            quote = None if ch == quote else quote
        elif ch in "\"'`":
            quote = ch
        elif ch in "([{":
            stack.append(ch)
        elif ch in ")]}":
            if not stack or stack.pop() != pairs[ch]:
                return False
    return not stack and quote is None


def check_expr(expr: str) -> None:
    assert expr.strip(), "empty expression"
    assert balanced(expr), f"unbalanced: {expr}"
    names = set(METRIC.findall(expr))
    assert names, f"names no wabot metric: {expr}"
    unknown = names - metrics.EXPORTED
    assert not unknown, f"not exported by the code: {sorted(unknown)} in {expr}"


def test_balance_check_catches_mistakes():
    assert balanced('sum(rate(x{a="b)"}[5m]))')
    assert not balanced("sum(rate(x[5m])")
    assert not balanced('x{a="b}')
    with pytest.raises(AssertionError):
        check_expr("rate(wabot_no_such_metric_total[5m])")


def test_alert_rules_are_valid_and_name_exported_metrics():
    doc = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())
    rules = [rule for group in doc["groups"] for rule in group["rules"]]
    assert all(set(group) <= {"name", "rules", "interval", "limit"} and group["name"] for group in doc["groups"])
    names = set()
    for rule in rules:
        assert set(rule) <= {"alert", "expr", "for", "labels", "annotations", "keep_firing_for"}, rule
        assert re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", rule["alert"]) and rule["alert"] not in names
        names.add(rule["alert"])
        check_expr(rule["expr"])
        assert DURATION.match(rule["for"])
        assert rule["labels"]["severity"] in ("warning", "critical")
        for text in (rule["annotations"]["summary"], rule["annotations"]["description"]):
            assert text and text.count("{{") == text.count("}}"), text  # Go templates closed
    # what the issue asks to be alerted on
    joined = " ".join(r["expr"] for r in rules)
    for needed in ('status=~"5.."', "wabot_turn_latency_seconds_bucket", "wabot_queue_oldest_age_seconds",
                   'wabot_sends_total{status="failed"}', "wabot_llm_budget_used_ratio"):
        assert needed in joined, needed


def test_prometheus_config_loads_the_rules_and_scrapes_web_and_workers():
    doc = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    assert doc["rule_files"] == ["/etc/prometheus/alerts.yml"]
    jobs = {job["job_name"]: job for job in doc["scrape_configs"]}
    assert jobs["wabot-web"]["static_configs"][0]["targets"] == ["web:8080"]
    assert len(jobs["wabot-workers"]["static_configs"][0]["targets"]) >= 3


def test_dashboard_loads_and_queries_exported_metrics():
    dash = json.loads((DEPLOY / "grafana" / "dashboards" / "wabot.json").read_text())
    assert dash["uid"] and dash["title"] and dash["panels"]
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dash["panels"]:
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            check_expr(target["expr"])
    queried = " ".join(t["expr"] for p in dash["panels"] for t in p["targets"])
    for family in ("wabot_http_requests_total", "wabot_turn_latency_seconds_bucket", "wabot_llm_tokens_total",
                   "wabot_sends_total", "wabot_infobip_errors_total", "wabot_queue_depth",
                   "wabot_queue_oldest_age_seconds", "wabot_delivery_report_lag_seconds_bucket",
                   "wabot_conversation_events_total", "wabot_reminders_dispatched_total"):
        assert family in queried, family


def test_grafana_provisioning_and_the_compose_profile():
    datasource = yaml.safe_load((DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yml").read_text())
    assert datasource["datasources"][0]["uid"] == "wabot-prometheus"
    provider = yaml.safe_load((DEPLOY / "grafana" / "provisioning" / "dashboards" / "wabot.yml").read_text())
    assert provider["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards"
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    for service in ("prometheus", "grafana"):
        assert compose["services"][service]["profiles"] == ["metrics"]
    mounts = " ".join(compose["services"]["prometheus"]["volumes"] + compose["services"]["grafana"]["volumes"])
    for path in ("./deploy/prometheus/alerts.yml", "./deploy/prometheus/prometheus.yml",
                 "./deploy/grafana/provisioning", "./deploy/grafana/dashboards"):
        assert path in mounts, path
