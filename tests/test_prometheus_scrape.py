"""A real Prometheus (Debian's binary, loopback port, storage in a temporary directory) scrapes a real
``tracejudge worker`` subprocess's /metrics; the series read back through Prometheus's HTTP API count the
verdicts the worker gave, and the recording rules' expressions of deploy/prometheus/alerts.yml evaluate."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
import yaml

from tracejudge.testing.processes import WorkerProcess, free_port

ROOT = Path(__file__).resolve().parents[1]
pytestmark = [
    pytest.mark.skipif(
        shutil.which("prometheus") is None,
        reason="no prometheus: scripts/ensure-prometheus.sh installs Debian's prometheus package (needs root and apt-get)",
    ),
    pytest.mark.skipif(importlib.util.find_spec("tracejudge.ops.server") is None, reason="no metrics server (tracejudge.ops.server) yet"),
]
#: Set to a file name to keep the queries' answers (docs/pipeline-health.md shows them).
RESULTS_ENV = "TRACEJUDGE_PROMETHEUS_RESULTS"


def query(port: int, expr: str) -> list[dict]:
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    with urllib.request.urlopen(url, timeout=10) as response:
        body = json.load(response)
    assert body["status"] == "success", body
    return body["data"]["result"]


def wait_for(port: int, expr: str, check, *, timeout: float = 120.0) -> list[dict]:
    """Ask Prometheus until the answer passes ``check`` (it scrapes every second)."""
    deadline = time.monotonic() + timeout
    while True:
        result = query(port, expr)
        if check(result):
            return result
        assert time.monotonic() < deadline, f"{expr}: {result}"
        time.sleep(0.5)  # Prometheus's own scrape interval paces this poll, not a test's ordering


@pytest.fixture()
def prometheus(tmp_path):
    """Start Prometheus on a loopback port; yields a function that points it at a worker's metrics port."""
    port = free_port()
    proc: list[subprocess.Popen] = []

    def start(target_port: int) -> int:
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(ROOT / "deploy" / "prometheus" / "alerts.yml")],
            "scrape_configs": [{"job_name": "tracejudge-workers", "static_configs": [{"targets": [f"127.0.0.1:{target_port}"]}]}],
        }
        (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
        log = open(tmp_path / "prometheus.log", "wb")
        proc.append(subprocess.Popen(
            ["prometheus", f"--config.file={tmp_path / 'prometheus.yml'}", f"--storage.tsdb.path={tmp_path / 'data'}",
             f"--web.listen-address=127.0.0.1:{port}", "--storage.tsdb.retention.time=1h"],
            stdout=log, stderr=subprocess.STDOUT,
        ))
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/-/ready", timeout=2) as r:
                    if r.status == 200:
                        return port
            except OSError:
                pass
            assert proc[0].poll() is None, (tmp_path / "prometheus.log").read_text()[-2000:]
            assert time.monotonic() < deadline, "prometheus did not become ready"
            time.sleep(0.2)

    yield start
    for p in proc:
        p.terminate()
        try:
            p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            p.kill()


def test_prometheus_scrapes_a_worker_and_counts_its_verdicts(pipeline_env, prometheus, tmp_path):
    import tracejudge
    from tracejudge.testing.workflows import record_article_trace

    metrics_port = free_port()
    env = {**pipeline_env, "TRACEJUDGE_METRICS_PORT": str(metrics_port), "TRACEJUDGE_METRICS_HOST": "127.0.0.1"}
    broken = "Text [[tj:fault:coherence=malformed]]"
    traces = [record_article_trace(), record_article_trace(article=broken), record_article_trace(article=broken)]
    with WorkerProcess(env, concurrency=4, log=tmp_path / "worker.log"):
        port = prometheus(metrics_port)
        verdicts = []
        for n, trace in enumerate(traces, 1):
            # one at a time, each seen by a scrape before the next: a rate() needs a series to exist before it grows
            verdicts.append(tracejudge.enqueue(trace, gate=True).verdict(timeout=120, raise_on_block=False))
            wait_for(port, "sum(tracejudge_trace_lag_seconds_count)", lambda r, n=n: r and float(r[0]["value"][1]) >= n)
        statuses = {}
        for v in verdicts:
            statuses[v.status] = statuses.get(v.status, 0) + 1
        up = wait_for(port, 'up{job="tracejudge-workers"}', lambda r: r and r[0]["value"][1] == "1")
        evaluations = wait_for(
            port, 'sum by (status) (tracejudge_evaluations_total{queue="tracejudge.gate"})',
            lambda r: sum(float(s["value"][1]) for s in r) >= len(traces),
        )
        seen = {s["metric"]["status"]: float(s["value"][1]) for s in evaluations}
        assert seen == {k: float(n) for k, n in statuses.items()}, (seen, statuses)
        results = sum(len(list(v.results())) for v in verdicts)
        calls = wait_for(port, "sum by (outcome) (tracejudge_judge_calls_total)",
                         lambda r: sum(float(s["value"][1]) for s in r) >= results)
        outcomes = {s["metric"]["outcome"]: float(s["value"][1]) for s in calls}
        errors = sum(1 for v in verdicts for r in v.results() if r.error is not None)
        assert sum(outcomes.values()) == results and sum(n for o, n in outcomes.items() if o not in ("scored", "cached", "reused")) == errors
        lag = wait_for(port, "sum(tracejudge_trace_lag_seconds_count)", lambda r: r and float(r[0]["value"][1]) >= len(traces))
        depth = wait_for(port, "max by (queue) (tracejudge_queue_depth)", lambda r: len(r) == 2)
        assert {s["metric"]["queue"]: float(s["value"][1]) for s in depth} == {"tracejudge.gate": 0.0, "tracejudge.online": 0.0}
        # the expressions of deploy/prometheus/alerts.yml (over 5 minutes here, not 15)
        p95 = query(port, "histogram_quantile(0.95, sum by (le) (rate(tracejudge_trace_lag_seconds_bucket[5m])))")
        assert p95 and float(p95[0]["value"][1]) > 0, p95
        share = query(port, 'sum by (outcome) (rate(tracejudge_judge_calls_total{outcome!~"scored|cached|reused"}[5m])) '
                            "/ ignoring(outcome) group_left sum(rate(tracejudge_judge_calls_total[5m]))")
        assert [s["metric"]["outcome"] for s in share] == ["REPLY_NOT_JSON"] and 0 < float(share[0]["value"][1]) < 1, share
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/rules", timeout=10) as response:
            rules = json.load(response)["data"]["groups"]
        assert {g["name"] for g in rules} == {"tracejudge-pipeline", "tracejudge-workers"}
        assert all(r["health"] == "ok" for g in rules for r in g["rules"]), [(r["name"], r.get("lastError")) for g in rules for r in g["rules"]]
        # the same worker seen by `tracejudge status` (a subprocess, as cron would run it): healthy, exit 0
        import sys

        done = subprocess.run([sys.executable, "-m", "tracejudge", "status", "--format", "json"], env={**os.environ, **pipeline_env},
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stdout + done.stderr
        status = json.loads(done.stdout)
        assert status["healthy"] and len(status["workers"]) == 1 and status["last_15_minutes"]["verdicts_total"] >= len(traces)
    if os.environ.get(RESULTS_ENV):
        Path(os.environ[RESULTS_ENV]).write_text(json.dumps({
            "up": up, "evaluations_by_status": evaluations, "judge_calls_by_outcome": calls,
            "trace_lag_count": lag, "queue_depth": depth, "trace_lag_p95": p95, "judge_error_share": share,
            "rules": [{"name": r["name"], "health": r["health"], "state": r.get("state")} for g in rules for r in g["rules"]],
            "status": status,
        }, indent=2))
