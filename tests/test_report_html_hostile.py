"""The HTML report cannot be broken by judged text (issue 18, point 7).

Node names, tool names, rationales and the LLM summary come from workflows and judges, so an attacker (or an unlucky
model) chooses them. They are inlined in the report's ``<script>`` as JSON: a ``</script>`` or a
``<!--<script`` in them must neither end nor swallow the page's scripts. Checked in a real headless Chromium:
the page renders, the data the page sees equals the summary exactly, the hostile text shows as text, and no
injected script ran.
"""

from __future__ import annotations

import json
import time

import mlflow
import pytest

from tracejudge.mlflow_io.tool_record import ToolCounts
from tracejudge.monitor.render import script_json, to_html
from tracejudge.testing.browser import find_chromium
from tracejudge.testing.monitor_data import judged, record, seed_rollups

HOSTILE_NODE = "<!--<script>"
HOSTILE_NODE_2 = "</script><script>window.PWNED_NODE=1</script>"
HOSTILE_TOOL = "</script><script>window.PWNED_TOOL=1</script>"
HOSTILE_RATIONALE = "<!--<script> off topic </script><script>window.PWNED=1</script> & \u2028line\u2029sep"


def test_script_json_escapes_every_character_that_could_end_or_open_markup():
    text = json.dumps({"a": HOSTILE_RATIONALE, "b": HOSTILE_NODE_2}, ensure_ascii=False)
    safe = script_json(text)
    assert json.loads(safe) == json.loads(text)
    for bad in ("<", ">", "&", "\u2028", "\u2029"):
        assert bad not in safe


@pytest.fixture()
def hostile_summary(pipeline_env, mlflow_store):
    import os

    import redis as redis_lib

    from tracejudge.monitor.collect import summarise_quality
    from tracejudge.monitor.window import MonitorQuery

    prefix = os.environ["TRACEJUDGE_KEY_PREFIX"]
    redis = redis_lib.Redis.from_url(pipeline_env["TRACEJUDGE_REDIS_URL"])
    experiment_id = mlflow.create_experiment(f"hostile-html-{time.time_ns()}")
    now = int(time.time() * 1000)
    records = []
    for i in range(8):
        results = judged({(HOSTILE_NODE, "relevance"): 0.2 + i * 0.01, (HOSTILE_NODE_2, "coherence"): 0.9,
                          ("workflow", "harmfulness"): 0.95})
        for r in results:
            if r.name == "relevance":
                r.rationale = HOSTILE_RATIONALE
        tools = {HOSTILE_TOOL: ToolCounts(calls=2, failed=1, duration_us=5000, bins={2: 2})}  # a tool name is a user string too
        records.append(record(f"tr-hostile-{i}", now - (60 - i) * 60_000, results, tools=tools))
    seed_rollups(redis, experiment_id, records, prefix=prefix)
    summary = summarise_quality(MonitorQuery(experiment=experiment_id, since="1d", source="redis"), redis=redis, prefix=prefix)
    assert {n.node for n in summary.nodes} >= {HOSTILE_NODE, HOSTILE_NODE_2}
    assert [t.tool for t in summary.tools] == [HOSTILE_TOOL]
    return summary.model_copy(update={"llm_summary": HOSTILE_RATIONALE})


@pytest.mark.skipif(find_chromium() is None, reason="no chromium: scripts/ensure-chromium.sh installs Debian's package (needs root and apt-get)")
def test_report_with_hostile_names_and_rationales_renders_in_chromium(hostile_summary, tmp_path):
    from tracejudge.testing.browser import Chromium

    page_html = to_html(hostile_summary)
    assert HOSTILE_NODE not in page_html and "window.PWNED=1</script>" not in page_html
    report = tmp_path / "report.html"
    report.write_text(page_html, encoding="utf-8")
    with Chromium(width=1200, height=900) as page:
        page.open(report.as_uri(), until="document.body.dataset.rendered", timeout=60)
        assert page.evaluate("document.body.dataset.rendered") == "true", page.evaluate("document.getElementById('error').textContent")
        # the page's data is the summary, character for character
        seen = page.evaluate("JSON.stringify(window.TRACEJUDGE_SUMMARY)")
        assert json.loads(seen) == json.loads(hostile_summary.model_dump_json())
        assert page.evaluate("typeof window.PWNED") == "undefined"
        assert page.evaluate("typeof window.PWNED_NODE") == "undefined"
        assert page.evaluate("typeof window.PWNED_TOOL") == "undefined"
        # the node names are shown as text, and every chart script ran (Chart.js and the dashboard's)
        text = page.evaluate("document.body.innerText")
        assert HOSTILE_NODE in text and HOSTILE_TOOL in text
        assert page.evaluate("typeof Chart") == "function"
        assert page.evaluate("document.querySelectorAll('canvas[data-chart]').length") > 0
