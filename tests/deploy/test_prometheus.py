"""deploy/prometheus and deploy/grafana: rules that promtool accepts and whose alerts pass their unit tests,
and PromQL (rules and dashboard) naming only metrics that Djinn exports or the rules record."""

from __future__ import annotations

import json
import re
import subprocess

import yaml
from prometheus_client import Metric
from prometheus_client.metrics import MetricWrapperBase

from tests.deploy.conftest import DEPLOY, tool

RULES = DEPLOY / "prometheus" / "rules.yml"
DASHBOARD = DEPLOY / "grafana" / "djinn.json"
SUFFIXES = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_count", "_sum", "_created"), "gauge": ()}
PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless", "offset"}


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([tool("promtool"), *args], capture_output=True, text=True, timeout=120)


def exported_metric_names() -> set[str]:
    """Every series name Djinn's processes export: the worker's metrics and collectors (inference.metrics),
    django-prometheus' in the web process, and Prometheus' own ``up``. Read from the metric objects, without
    scraping anything."""
    import django_prometheus.db.metrics as db_metrics
    from django_prometheus.middleware import Metrics

    from inference import metrics

    families: list[Metric] = []
    for module in (metrics, db_metrics, vars(Metrics.get_instance())):
        objects = module.values() if isinstance(module, dict) else vars(module).values()
        families += [family for value in objects if isinstance(value, MetricWrapperBase) for family in value.describe()]
    families += list(metrics.EngineCollector().collect()) + list(metrics.DependencyCollector().describe())
    names = {"up"}
    for family in families:
        names |= {family.name, *(family.name + suffix for suffix in SUFFIXES.get(family.type, ()))}
    return names


def metric_names(expr: str) -> set[str]:
    """The series names a PromQL expression selects (functions, keywords, labels and durations left out)."""
    expr = re.sub(r'"[^"]*"', "", expr)
    expr = re.sub(r"\{[^}]*\}|\[[^\]]*\]", "", expr)
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)
    names = re.findall(r"(?<![\w:.])([a-zA-Z_:][\w:]*)\b(?!\s*\()", expr)
    return {name for name in names if name not in PROMQL_WORDS}


def rules() -> list[dict]:
    return [rule for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]]


def dashboard_targets() -> list[tuple[str, dict]]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [(panel["title"], target) for panel in dashboard["panels"] for target in panel.get("targets", [])]


def test_the_rules_pass_promtool_check():
    result = promtool("check", "rules", str(RULES))

    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_fires_on_its_synthetic_series_and_stays_quiet_on_a_healthy_one():
    tested = set(re.findall(r"alertname: (\w+)", (DEPLOY / "prometheus" / "tests.yml").read_text()))

    result = promtool("test", "rules", str(DEPLOY / "prometheus" / "tests.yml"))

    assert result.returncode == 0, result.stdout + result.stderr
    assert tested == {rule["alert"] for rule in rules() if "alert" in rule}


def test_the_rules_name_only_metrics_that_exist():
    known = exported_metric_names() | {rule["record"] for rule in rules() if "record" in rule}
    unknown = {name for rule in rules() for name in metric_names(rule["expr"])} - known

    assert unknown == set()


def test_the_dashboard_is_a_grafana_dashboard_of_promql_panels():
    dashboard = json.loads(DASHBOARD.read_text())
    ids = [panel["id"] for panel in dashboard["panels"]]

    assert dashboard["schemaVersion"] >= 39
    assert len(ids) == len(set(ids))
    assert len(dashboard_targets()) >= 10
    assert all(target["expr"] and target["refId"] for _, target in dashboard_targets())


def test_the_dashboard_names_only_metrics_that_exist_or_are_recorded():
    known = exported_metric_names() | {rule["record"] for rule in rules() if "record" in rule}
    unknown = {(title, name) for title, target in dashboard_targets() for name in metric_names(target["expr"])}

    assert {(title, name) for title, name in unknown if name not in known} == set()


def test_promtool_parses_every_dashboard_expression(tmp_path):
    recorded = [
        {"record": f"djinn_dashboard:panel_{index}", "expr": target["expr"]}
        for index, (_, target) in enumerate(dashboard_targets())
    ]
    path = tmp_path / "dashboard-rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": recorded}]}))

    result = promtool("check", "rules", str(path))

    assert result.returncode == 0, result.stdout + result.stderr


def test_the_metric_name_reader_finds_series_not_functions_or_labels():
    expr = 'histogram_quantile(0.95, sum by (le) (rate(a_bucket{x="y"}[5m]))) / on (pod) b:c:d > bool 2 and up'

    assert metric_names(expr) == {"a_bucket", "b:c:d", "up"}
