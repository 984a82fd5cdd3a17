"""The ready-made operations files: Prometheus rules that promtool accepts, a Grafana dashboard and rules
that name only metrics the workers export (read from tracejudge.ops.metrics, not a copied list), and a
docker-compose file with the metrics port, exactly one beat and a PostgreSQL-backed MLflow profile."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
RULES = ROOT / "deploy" / "prometheus" / "alerts.yml"
PROM_CONFIG = ROOT / "deploy" / "prometheus" / "prometheus.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "tracejudge.json"
COMPOSE = ROOT / "docker-compose.yml"
NO_PROMTOOL = "no promtool: scripts/ensure-prometheus.sh installs Debian's prometheus package (needs root and apt-get)"


def exported_metric_names() -> set[str]:
    """Every series name the workers serve: the collectors of ``ops.metrics`` (with the suffixes Prometheus
    adds) and the gauges read at scrape time."""
    from prometheus_client.metrics import MetricWrapperBase

    from tracejudge.ops import metrics

    names = set(metrics.SCRAPE_TIME_METRICS)
    for value in vars(metrics).values():
        if not isinstance(value, MetricWrapperBase):
            continue
        for family in value.describe():
            if family.type == "counter":
                names |= {family.name + "_total", family.name + "_created"}
            elif family.type == "histogram":
                names |= {family.name + suffix for suffix in ("_bucket", "_sum", "_count", "_created")}
            else:
                names.add(family.name)
    return names


def metric_names_in(expr: str) -> set[str]:
    return set(re.findall(r"\btracejudge_[a-z0-9_]+\b", expr))


def test_the_metric_names_are_read_from_the_module():
    names = exported_metric_names()
    # the names, as Prometheus sees them
    for name in ("tracejudge_evaluations_total", "tracejudge_trace_lag_seconds_bucket", "tracejudge_queue_depth",
                 "tracejudge_judge_calls_total", "tracejudge_pickup_lag_seconds", "tracejudge_event_loop_lag_seconds"):
        assert name in names


@pytest.mark.skipif(shutil.which("promtool") is None, reason=NO_PROMTOOL)
def test_promtool_accepts_the_rules_and_the_config():
    done = subprocess.run(["promtool", "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout
    done = subprocess.run(["promtool", "check", "config", str(PROM_CONFIG)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_rule_names_exported_metrics_and_the_pipeline_conditions_are_there():
    names = exported_metric_names()
    rules = [r for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]]
    for rule in rules:
        used = metric_names_in(rule["expr"])
        assert used <= names, (rule["alert"], used - names)
        assert used or "up{" in rule["expr"], rule["alert"]
    alerts = {r["alert"] for r in rules}
    # the pipeline rule kinds of quality_alerts, and what tracejudge status calls a problem
    assert {"TracejudgePipelineLag", "TracejudgeBacklogDeep", "TracejudgeBacklogOld", "TracejudgeNoVerdicts",
            "TracejudgeJudgeErrorRate", "TracejudgePickupLag"} <= alerts


def test_every_dashboard_panel_queries_exported_metrics():
    names = exported_metric_names()
    dashboard = json.loads(DASHBOARD.read_text())
    panels = dashboard["panels"]
    assert len(panels) >= 10
    covered: set[str] = set()
    for panel in panels:
        exprs = [t["expr"] for t in panel.get("targets", [])]
        assert exprs, panel["title"]
        for expr in exprs:
            used = metric_names_in(expr)
            assert used, (panel["title"], expr)
            assert used <= names, (panel["title"], used - names)
            covered |= used
    # every family the workers export is on the dashboard somewhere
    families = {re.sub(r"_(bucket|sum|count|created)$", "", n) for n in names if not n.endswith("_created")}
    shown = {re.sub(r"_(bucket|sum|count)$", "", n) for n in covered}
    assert families <= shown, families - shown


def test_compose_has_the_metrics_port_one_beat_and_a_postgres_mlflow_profile():
    compose = yaml.safe_load(COMPOSE.read_text())
    services = compose["services"]
    worker = services["worker"]
    port = str(worker["environment"]["TRACEJUDGE_METRICS_PORT"])
    assert port in [str(p) for p in worker.get("expose", [])]
    assert "/healthz" in " ".join(worker["healthcheck"]["test"])
    beats = [name for name, s in services.items() if "beat" in (s.get("command") or [])]
    assert beats == ["beat"], beats
    assert services["beat"]["command"][:2] == ["tracejudge", "beat"]
    assert services["beat"].get("deploy", {}).get("replicas", 1) == 1
    # the scrape config reaches that port
    scrape = yaml.safe_load(PROM_CONFIG.read_text())["scrape_configs"][0]
    assert scrape["job_name"] == "tracejudge-workers" and str(scrape["dns_sd_configs"][0]["port"]) == port
    # MLflow on PostgreSQL as a profile
    pg = [name for name, s in services.items() if "postgres" in (s.get("profiles") or [])]
    assert "postgres" in pg
    servers = [services[n] for n in pg if "server" in (services[n].get("command") or [])]
    assert len(servers) == 1
    assert any(str(a).startswith("--backend-store-uri=postgresql://") for a in servers[0]["command"])
    assert "psycopg2" in servers[0]["build"]["dockerfile_inline"]
