"""The dashboard: a real server process (uvicorn), its JSON API, and the page in a real headless Chromium.

The store holds a week of judged traces written the way workers write them (assessments with our metadata,
verdict tags). The browser test checks that every chart was drawn (a Chart.js chart with data, and painted
pixels on its canvas) and that every number on the page, the charts' data and the trace links equal the JSON
API. Set TRACEJUDGE_UPDATE_SCREENSHOT=1 to write the screenshot to docs/dashboard.png (else it goes to tmp).
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Iterator

import mlflow
import pytest

from tracejudge.testing.browser import find_chromium
from tracejudge.testing.monitor_data import judged, seed_mlflow
from tracejudge.testing.processes import free_port

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "dash-token-5d1e"
HOUR = 3_600_000


#: The research node's tools: every trace searches; most fetch a page (failing more often on the dip days,
#: then retried); some compute.
TOOL_NAMES = ["web_search", "fetch_page", "calculator"]


def tool_spans(rng: random.Random, *, dip: bool) -> list:
    """(tool, failed, ms) calls recorded under the research node of one trace."""
    calls = [("web_search", rng.random() < 0.05, rng.uniform(80, 400))]
    if rng.random() < 0.8:
        failed = rng.random() < (0.4 if dip else 0.1)
        calls.append(("fetch_page", failed, rng.uniform(150, 1500)))
        if failed:
            calls.append(("fetch_page", False, rng.uniform(150, 1500)))
    if rng.random() < 0.3:
        calls.append(("calculator", False, rng.uniform(0.5, 4)))
    return calls


def week_of_traces(now_ms: int) -> list:
    """About 10 traces a day for 7 days; relevance dips on days 3-4 (and fetch_page fails more), errors now and then."""
    rng = random.Random(11)
    tools = random.Random(5)  # a sequence of its own: the scores stay as they were
    out = []
    for day in range(7):
        dip = day in (3, 4)
        for _ in range(9 + day % 3):
            t = now_ms - int((day * 24 + rng.uniform(0.5, 23)) * HOUR)
            scores = {
                ("research", "relevance"): rng.uniform(0.45, 0.86) if dip else rng.uniform(0.74, 0.99),
                ("research", "groundedness"): rng.uniform(0.55, 0.98),
                ("write", "coherence"): rng.uniform(0.72, 0.99),
                ("write", "completeness"): rng.uniform(0.5, 0.95),
                ("workflow", "harmfulness"): rng.uniform(0.88, 1.0),
            }
            roll = rng.random()
            if roll < 0.05:
                scores[("research", "groundedness")] = "TIMEOUT"
            elif roll < 0.09:
                scores[("write", "completeness")] = "REPLY_NOT_JSON"
            elif dip and roll < 0.2:
                scores[("research", "relevance")] = "RATE_LIMITED"
            out.append((t, judged(scores, rng=rng, cost_usd=0.00042), tool_spans(tools, dip=dip)))
    return out


@pytest.fixture(scope="module")
def store(mlflow_store):
    # seed_mlflow waits for each trace in the store: it does not matter how an earlier module set up MLflow's exporter
    experiment_id = mlflow.create_experiment(f"monitor-dashboard-{time.time_ns()}")
    ids = seed_mlflow(experiment_id, week_of_traces(int(time.time() * 1000)))
    return experiment_id, ids


@pytest.fixture(scope="module")
def server(store, redis_url, mlflow_store, tmp_path_factory):
    experiment_id, _ = store
    import redis as redis_lib

    log = tmp_path_factory.mktemp("dash") / "dashboard.log"
    prefix = f"tjdash-{time.time_ns()}:"
    # the production controls' daily counters and budget spend (their keys), shown when present
    client = redis_lib.Redis.from_url(redis_url)
    today = time.strftime("%Y-%m-%d", time.gmtime())
    client.hset(f"{prefix}tracejudge:counts:{today}", mapping={"article_writer|sampled": 40, "article_writer|skipped_sampling": 55,
                                                              "*|skipped_sampling": 5, "article_writer|cache_hit": 12})
    client.set(f"{prefix}tracejudge:budget:{today}:spent", 1_250_000_000)
    env = {**os.environ, "MLFLOW_TRACKING_URI": mlflow_store, "TRACEJUDGE_REDIS_URL": redis_url,
           "TRACEJUDGE_KEY_PREFIX": prefix, "MLFLOW_UI_URL": "http://mlflow.example:5000",
           "TRACEJUDGE_DASHBOARD_TOKEN": TOKEN}
    with serve_dashboard(env, experiment_id, log) as base:
        yield base
    client.delete(f"{prefix}tracejudge:counts:{today}", f"{prefix}tracejudge:budget:{today}:spent")


@contextlib.contextmanager
def serve_dashboard(env: dict, experiment_id: str, log: Path) -> Iterator[str]:
    """``tracejudge dashboard`` in a process of its own with ``env``; its base URL once it answers."""
    port = free_port()
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "tracejudge", "dashboard", "--port", str(port), "--experiment-id", experiment_id],
                                env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:  # polls until the server answers (a readiness check, not a synchronising sleep)
            try:
                get(base + "/api/health", token=TOKEN)
                break
            except (urllib.error.URLError, ConnectionError):
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"dashboard did not start: {log.read_text()}")
                time.sleep(0.2)
        yield base
    finally:
        proc.terminate()
        proc.wait(20)


def get(url: str, *, token: str | None = None) -> tuple[int, dict]:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(request, timeout=60) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_api_needs_the_token_and_answers_bad_input_with_400(server, store):
    experiment_id, _ = store
    assert get(server + "/api/summary")[0] == 401
    assert get(server + "/api/summary", token="wrong")[0] == 401
    status, body = get(server + f"/api/summary?experiment={experiment_id}&since=7d", token=TOKEN)
    assert status == 200 and body["totals"]["traces"] == len(store[1]) and body["source"] == "mlflow"
    for query, message in [
        ("since=7days", "since: cannot read '7days'"),
        ("bucket=week", "bucket: Input should be 'hour' or 'day'"),
        ("colour=red", "unknown query parameter 'colour'"),
        ("since=2d&until=3d", "--since (2d) must be before --until (3d)"),
        ("source=elsewhere", "source: Input should be 'auto', 'mlflow' or 'redis'"),
    ]:
        status, body = get(server + f"/api/summary?experiment={experiment_id}&{query}", token=TOKEN)
        assert status == 400, query
        assert message in body["error"] and "Traceback" not in body["error"]
        assert "since: --since" not in body["error"], body["error"]  # the parameter is named once
    status, body = get(server + "/api/summary?experiment=no-such-experiment", token=TOKEN)
    assert status == 404 and "experiment 'no-such-experiment' does not exist" in body["error"]


def by_name_cost_ok(api: dict) -> bool:
    """Cost per day adds up to the total (assessment metadata cost_usd, written by the controls)."""
    return abs(sum(b["cost_usd"] for b in api["buckets"]) - api["totals"]["cost_usd"]) < 1e-6


def fmt(value, kind: str) -> str:
    if value is None:
        return "-"
    if kind == "pct":
        return f"{value * 100:.1f}%"
    if kind == "num":
        return f"{value:.3f}"
    if kind == "usd":
        return f"${value:.4f}"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))  # as JavaScript's String(40.0)
    return str(value)


def at(data, path: str):
    for part in path.split("."):
        data = data[int(part)] if isinstance(data, list) else data[part]
    return data


CHECK_CHARTS = """
Array.from(document.querySelectorAll('canvas[data-chart]')).filter(c => c.offsetParent !== null).map(c => {
  const chart = Chart.getChart(c);
  const ctx = c.getContext('2d');
  const pixels = ctx.getImageData(0, 0, c.width, c.height).data;
  let painted = 0;
  for (let i = 3; i < pixels.length; i += 4) if (pixels[i] > 0) painted++;
  return {name: c.dataset.chart, chart: !!chart, points: chart ? chart.data.datasets.reduce((n, d) => n + d.data.filter(v => v !== null).length, 0) : 0,
          painted: painted, data: chart ? chart.data.datasets.map(d => d.data) : null};
})
"""


LINE_OPTIONS = """
Array.from(document.querySelectorAll('canvas[data-chart]')).map(c => Chart.getChart(c)).filter(ch => ch && ch.config.type === 'line')
  .map(ch => ({name: ch.canvas.dataset.chart, tension: ch.options.elements.line.tension,
               interpolation: ch.options.elements.line.cubicInterpolationMode, offset: ch.options.scales.x.offset}))
"""


@pytest.mark.skipif(find_chromium() is None, reason="no chromium: scripts/ensure-chromium.sh installs Debian's package (needs root and apt-get)")
def test_page_in_headless_chromium_draws_every_chart_and_shows_the_api_numbers(server, store, tmp_path):
    from tracejudge.testing.browser import Chromium

    experiment_id, ids = store
    query = f"experiment={experiment_id}&since=7d&bucket=day"
    _, api = get(server + f"/api/summary?{query}", token=TOKEN)
    with Chromium(width=1440, height=1000) as page:
        page.open(f"{server}/?token={TOKEN}&{query}", until="document.body.dataset.rendered")
        assert page.evaluate("document.body.dataset.rendered") == "true", page.evaluate("document.getElementById('error').textContent")

        charts = page.evaluate(CHECK_CHARTS)
        names = {c["name"] for c in charts}
        expected = {"failure-judge", "failure-node", "gate", "node-mean", "worst", "bands", "radar", "errors", "counters", "cost",
                    "tools", "tool-failure"}
        assert api["totals"]["cost_usd"] == pytest.approx(0.00042 * api["totals"]["scored"], rel=1e-6)
        assert by_name_cost_ok(api)
        assert api["counters"] == {"sampled": 40, "skipped_sampling": 60, "cache_hit": 12, "budget_spent_usd": 1.25}
        expected |= {f"hist-{i}" for i in range(len(api["nodes"]))}
        assert expected <= names, expected - names
        for c in charts:
            assert c["chart"] and c["points"] > 0 and c["painted"] > 200, c["name"]
        by_name = {c["name"]: c["data"] for c in charts}
        # time series are drawn straight (no smoothing that invents values) on an offset axis (one bucket is not
        # squeezed against the axis)
        lines = page.evaluate(LINE_OPTIONS)
        assert lines and all(l["tension"] == 0 and l["offset"] is True and l["interpolation"] != "monotone" for l in lines), lines
        assert by_name["gate"][0] == [b["gate_pass_rate"] for b in api["buckets"]]
        assert by_name["worst"][0] == [w["failure_rate"] for w in api["worst_nodes"]]
        assert by_name["bands"][0] == [api["bands"][b] for b in ["Excellent", "Good", "Acceptable", "Needs improvement", "Unacceptable"] if b in api["bands"]]
        for i, node in enumerate(api["nodes"]):  # each bin stacked: below threshold, then passed
            below, passed = by_name[f"hist-{i}"]
            assert below == node["histogram_below"] and [b + p for b, p in zip(below, passed)] == node["histogram"]
        # coherence's threshold 0.75 cuts the bin [0.7, 0.8): drawn as both, not all as passing
        coherence = next(i for i, n in enumerate(api["nodes"]) if n["judge"] == "coherence")
        below, passed = by_name[f"hist-{coherence}"]
        assert below[7] > 0 and passed[7] > 0, (below, passed)
        colours = page.evaluate(f"Chart.getChart(document.querySelector('[data-chart=hist-{coherence}]')).data.datasets.map(d => d.backgroundColor)")
        assert colours == ["#e58c8c", "#7fb8e6"]
        assert by_name["radar"][0] == [api["dimensions"].get(d) for d in ["correctness", "relevance", "coherence", "completeness", "safety"]]
        assert sum(sum(d) for d in by_name["errors"]) == sum(api["error_codes"].values())
        # "Tool usage": one dataset per tool, named as in the traces' spans, calls per bucket as the API says
        assert sorted(t["tool"] for t in api["tools"]) == sorted(TOOL_NAMES)
        assert api["tool_totals"]["traces"] == len(ids) and api["tool_totals"]["failed"] > 0
        starts = [b["start"] for b in api["buckets"]]
        for chart, key in (("tools", "calls"), ("tool-failure", "failure_rate")):
            labels = page.evaluate(f"Chart.getChart(document.querySelector('[data-chart={chart}]')).data.datasets.map(d => d.label)")
            assert labels == [t["tool"] for t in api["tools"]], (chart, labels)
            for tool, data in zip(api["tools"], by_name[chart]):
                per = {p["start"]: p[key] for p in tool["series"]}
                assert data == [per.get(x, 0 if key == "calls" else None) for x in starts], (chart, tool["tool"])
        assert sum(sum(d) for d in by_name["tools"]) == api["tool_totals"]["calls"]

        shown = page.evaluate("Array.from(document.querySelectorAll('[data-metric]')).map(e => [e.dataset.metric, e.dataset.format, e.textContent])")
        assert len(shown) >= 6 + 11 * 0 + 9 * len(api["nodes"]) + 6 * len(api["tools"])
        assert {path for path, _, _ in shown} >= {"tool_totals.calls", "tools.0.calls", "tools.0.p95_ms"}
        for path, kind, text in shown:
            assert text == fmt(at(api, path), kind), path
        links = page.evaluate("Array.from(document.querySelectorAll('#bottom a, #top a')).map(a => [a.dataset.trace, a.href])")
        want = [(t["trace_id"], t["url"]) for t in api["bottom_traces"] + api["top_traces"]]
        assert [tuple(x) for x in links] == want and all(t in ids for t, _ in want)
        assert want[0][1].startswith("http://mlflow.example:5000/#/experiments/")
        quality = page.evaluate("document.getElementById('quality-link').href")
        assert quality == f"http://mlflow.example:5000/#/experiments/{experiment_id}/overview/quality"

        # without since/bucket in the URL the page draws the server's defaults, and its filters say so
        page.open(f"{server}/?experiment={experiment_id}", until="document.body.dataset.rendered")
        filters = page.evaluate("['experiment', 'since', 'bucket'].map(k => document.getElementById('filters').elements[k].value)")
        assert filters == [experiment_id, "7d", "day"], filters

        page.open(f"{server}/?experiment={experiment_id}&since=someday", until="document.body.dataset.rendered")
        assert "since: cannot read 'someday'" in page.evaluate("document.getElementById('error').textContent")

        # the self-contained HTML report draws the same charts offline (file://, no server)
        from tracejudge.monitor import QualitySummary
        from tracejudge.monitor.render import to_html

        report = tmp_path / "report.html"
        report.write_text(to_html(QualitySummary.model_validate(api)))
        page.open(report.as_uri(), until="document.body.dataset.rendered")
        offline = {c["name"]: c for c in page.evaluate(CHECK_CHARTS)}
        assert expected <= set(offline) and all(c["painted"] > 200 for c in offline.values())

        page.open(f"{server}/?{query}", until="document.body.dataset.rendered")
        target = ROOT / "docs" / "dashboard.png" if os.environ.get("TRACEJUDGE_UPDATE_SCREENSHOT") else tmp_path / "dashboard.png"
        page.screenshot(str(target))
        assert target.stat().st_size > 50_000


@pytest.mark.skipif(find_chromium() is None, reason="no chromium: scripts/ensure-chromium.sh installs Debian's package (needs root and apt-get)")
def test_page_over_a_local_store_without_ui_url_says_how_to_open_mlflow_ui_and_links_nowhere(store, redis_url, mlflow_store, tmp_path):
    """A sqlite store and no MLFLOW_UI_URL: no guessed address. The header says which command opens the UI and
    which path to open there; the lowest/highest traces are plain text (their path in a title), not links."""
    from tracejudge.testing.browser import Chromium

    experiment_id, ids = store
    assert mlflow_store.startswith("sqlite:")
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_UI_URL"}
    env.update({"MLFLOW_TRACKING_URI": mlflow_store, "TRACEJUDGE_REDIS_URL": redis_url,
                "TRACEJUDGE_KEY_PREFIX": f"tjdash-local-{time.time_ns()}:", "TRACEJUDGE_DASHBOARD_TOKEN": TOKEN})
    query = f"experiment={experiment_id}&since=7d&bucket=day"
    with serve_dashboard(env, experiment_id, tmp_path / "dashboard.log") as base:
        _, api = get(base + f"/api/summary?{query}", token=TOKEN)
        assert api["links"]["mlflow_ui"] is None
        assert api["links"]["open_ui"] == f"mlflow ui --backend-store-uri {mlflow_store}"
        assert api["links"]["experiment_quality"] == f"/#/experiments/{experiment_id}/overview/quality"
        with Chromium(width=1440, height=1000) as page:
            page.open(f"{base}/?token={TOKEN}&{query}", until="document.body.dataset.rendered")
            assert page.evaluate("document.body.dataset.rendered") == "true", page.evaluate("document.getElementById('error').textContent")
            said = page.evaluate("document.getElementById('open-ui').textContent")
            assert said == (f"MLflow UI: run {api['links']['open_ui']}, then open {api['links']['experiment_quality']} "
                            "at the address it prints")
            assert page.evaluate("document.querySelectorAll('#links a').length") == 0
            assert page.evaluate("document.getElementById('quality-link')") is None
            # the trace lists: no link into a UI nobody started; the id shown, its path in the title
            assert page.evaluate("document.querySelectorAll('#bottom a, #top a').length") == 0
            shown = page.evaluate("Array.from(document.querySelectorAll('#bottom span[data-trace], #top span[data-trace]'))"
                                  ".map(e => [e.dataset.trace, e.textContent, e.title])")
            want = [(t["trace_id"], t["trace_id"], t["url"]) for t in api["bottom_traces"] + api["top_traces"]]
            assert want and [tuple(x) for x in shown] == want and all(t in ids for t, _, _ in want)
            assert all(url == f"/#/experiments/{experiment_id}/traces?selectedEvaluationId={t}&traceId={t}" for t, _, url in want)
            assert page.evaluate("document.getElementById('error').textContent") == ""
