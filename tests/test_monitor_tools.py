"""Tool usage in the monitor: a real worker judges agent traces, and the report's tool figures come out the same
from Redis's rollups and from MLflow's record, after a forced re-judge, a partial run and a rebuild too.

A real worker (in-thread), a sqlite MLflow store, the test LLM over HTTP. Three agent traces (the sample travel
agent: ``search_flights`` once, ``book_flight`` failing 0, 1 and 2 times, each failure retried) and one article
trace (``serper_search`` once) are judged. The expected figures are counted by hand from that shape, not by the code.
"""

from __future__ import annotations

import copy
import os
import time

import mlflow
import pytest
from mlflow import MlflowClient

import tracejudge
from tracejudge.mlflow_io import tool_record
from tracejudge.monitor import MonitorQuery, summarise_quality
from tracejudge.monitor.render import to_markdown, to_table
from tracejudge.testing.workflows import record_agent_trace, record_article_trace

CONFIG = {
    "observability": {
        "mlflow": {
            "judges": {
                "workflow_defaults": [{"name": "harmfulness", "threshold": 0.5}],
                "node_overrides": {"agent": [{"name": "tool_selection", "threshold": 0.7}]},
                "execution": {"timeout_seconds": 5, "max_attempts": 1, "trace_wait_seconds": 20},
            }
        }
    },
    "quality_gate": {"enabled": True, "threshold": 0.7, "action": "ignore"},
}
#: A stricter threshold: new result keys, so the agent's judge is judged again (a re-judge that writes).
CHANGED = copy.deepcopy(CONFIG)
CHANGED["observability"]["mlflow"]["judges"]["node_overrides"]["agent"] = [{"name": "tool_selection", "threshold": 0.95}]

#: By hand: search_flights 1 call a trace; book_flight 1 + f calls, f failed, f retries, for f = 0, 1, 2; the
#: article's serper_search once.
TOOLS = {"book_flight": (6, 3, 3), "search_flights": (3, 0, 0), "serper_search": (1, 0, 0)}


def verdict(trace_id: str, **options):
    v = tracejudge.enqueue(trace_id, **options).verdict(timeout=90, raise_on_block=False)
    assert v.status in ("passed", "failed", "error"), v
    return v


@pytest.fixture(scope="module")
def agents(worker, redis_url):
    import redis

    experiment_id = mlflow.create_experiment(f"monitor-tools-{time.time_ns()}")
    mlflow.set_experiment(experiment_id=experiment_id)
    ids = [record_agent_trace(booking_failures=f) for f in (0, 1, 2)]
    ids.append(record_article_trace(research="Findings.", article="An article."))
    mlflow.set_experiment("tracejudge-tests")
    for trace_id in ids:
        verdict(trace_id, config=CONFIG)
    return experiment_id, ids, redis.Redis.from_url(redis_url)


def summaries(experiment_id: str, redis):
    prefix = os.environ["TRACEJUDGE_KEY_PREFIX"]
    query = dict(experiment=experiment_id, since="1h", bucket="hour")
    now_ms = int(time.time() * 1000)
    from_redis = summarise_quality(MonitorQuery(**query, source="redis"), redis=redis, prefix=prefix, now_ms=now_ms)
    from_mlflow = summarise_quality(MonitorQuery(**query, source="mlflow"), redis=redis, prefix=prefix, now_ms=now_ms)
    return from_redis, from_mlflow


def assert_tools(experiment_id: str, redis, step: str):
    r, m = summaries(experiment_id, redis)
    assert r.source == "redis" and m.source == "mlflow"
    assert r.tool_totals == m.tool_totals, f"{step}: tool totals differ (redis vs mlflow)"
    assert r.tools == m.tools, f"{step}: per-tool figures differ (redis vs mlflow)"
    assert r.totals.traces == m.totals.traces == 4, step
    t = m.tool_totals
    assert (t.traces, t.calls, t.failed, t.retries, t.distinct_tools) == (4, 10, 3, 3, 3), f"{step}: {t}"
    assert t.failure_rate == pytest.approx(0.3, abs=1e-6)
    assert {x.tool: (x.calls, x.failed, x.retries) for x in m.tools} == TOOLS, step
    assert [x.tool for x in m.tools] == ["book_flight", "search_flights", "serper_search"]  # most calls first
    return m


def tool_metadata(trace_id: str) -> set:
    """The tool counts our valid feedbacks on the trace carry (each says the same)."""
    from tracejudge.mlflow_io import writer

    return {a.metadata.get(writer.TOOLS) for a in MlflowClient().get_trace(trace_id).info.assessments if writer.is_ours(a)}


def test_tool_figures_agree_between_redis_and_mlflow_after_rejudges(agents):
    experiment_id, ids, redis = agents
    first = assert_tools(experiment_id, redis, "first judging")
    book = next(x for x in first.tools if x.tool == "book_flight")
    assert book.failure_rate == 0.5 and book.mean_ms is not None and book.p95_ms is not None
    # per hour: one bucket, or two when the traces were judged across the top of an hour (no wall-clock assumption)
    assert 1 <= len(book.series) <= 2 and all(p.calls for p in book.series)
    assert (sum(p.calls for p in book.series), sum(p.failed for p in book.series)) == (6, 3)
    # every feedback of ours carries the trace's counts (no extra MLflow call); the third agent's, by hand
    assert tool_record.decode(*tool_metadata(ids[2]))["book_flight"].calls == 3
    assert {t: len(tool_metadata(t)) for t in ids} == {t: 1 for t in ids}

    for trace_id in ids:
        verdict(trace_id, config=CONFIG, force=True)
    assert_tools(experiment_id, redis, "force=True on every trace")

    verdict(ids[1], config=CHANGED)
    assert_tools(experiment_id, redis, "a re-judge under a changed threshold")
    verdict(ids[0], config=CONFIG, judges=["harmfulness"])
    assert_tools(experiment_id, redis, "a partial run")

    from tracejudge.monitor.rebuild import rebuild_rollups
    from tracejudge.monitor.collect import _client

    rebuild_rollups(_client(None), redis, experiment_id, int(time.time() * 1000) - 3_600_000, int(time.time() * 1000),
                    prefix=os.environ["TRACEJUDGE_KEY_PREFIX"])
    last = assert_tools(experiment_id, redis, "the rollups rebuilt from MLflow")

    table, md = to_table(last), to_markdown(last)
    assert "tool usage: 10 calls in 4 traces, failed 3 (30.0%), retries 3, 3 tools" in table
    assert "| book_flight | 6 | 3 | 50.0% | 3 |" in md


def test_tool_failure_rate_alert_fires_for_all_tools_or_one(agents):
    """The rule kind tool_failure_rate, through the alert check with a log sink, on the agents judged above."""
    from tracejudge.config import load_config
    from tracejudge.monitor.alerts import check_alerts

    experiment_id, _, redis = agents
    alerts = load_config({"quality_alerts": {"window_minutes": 60, "baseline_days": 1, "rules": [
        {"kind": "tool_failure_rate", "above": 0.25},                           # 3 of 10 failed: fires
        {"kind": "tool_failure_rate", "tool": "book_flight", "above": 0.5},      # 3 of 6: not above 0.5
        {"kind": "tool_failure_rate", "tool": "search_flights", "above": 0.0},   # none failed
        {"kind": "tool_failure_rate", "tool": "book_flight", "above": 0.1, "min_count": 7},  # too few calls
    ], "sinks": [{"type": "log"}]}}).quality_alerts
    result = check_alerts(alerts, experiment=experiment_id, redis=redis, prefix=os.environ["TRACEJUDGE_KEY_PREFIX"])
    every, book, search, few = result.outcomes
    assert every.holds and every.observed == pytest.approx(0.3, abs=1e-6)
    assert "all tools: failed share 0.300 of 10 tool calls" in every.message
    assert not book.holds and book.observed == 0.5
    assert not search.holds and search.observed == 0.0
    assert not few.holds and "tool book_flight: 6 tool calls in the window (rule needs 7)" in few.message
    assert [o.rule for o in result.firing] == [every.rule]


@pytest.mark.parametrize("rule, message", [
    ({"kind": "tool_failure_rate"}, "a tool_failure_rate rule needs above"),
    ({"kind": "tool_failure_rate", "above": 0.1, "judge": "relevance"}, "takes no judge or node (use tool: <name>)"),
    ({"kind": "failure_rate", "above": 0.1, "tool": "search"}, "tool: only a tool_failure_rate rule takes a tool"),
])
def test_bad_tool_rules_are_named(rule, message):
    from tracejudge.config import ConfigError, load_config

    with pytest.raises(ConfigError) as err:
        load_config({"quality_alerts": {"rules": [rule]}})
    assert message in str(err.value)


def test_tools_past_the_tenth_are_summed_as_other():
    from tracejudge.judges.trajectory import ToolCall
    from tracejudge.monitor.rollup import Rollup, TraceRecord
    from tracejudge.monitor.tool_figures import tool_figures

    calls = [ToolCall(name=f"tool_{i:02d}", duration_ms=3.0) for i in range(25) for _ in range(25 - i)]
    counts = tool_record.tool_counts(calls)
    assert len(counts) == 21 and counts["(other)"].calls == sum(range(1, 6))  # 20 names a trace, 5 summed
    rollup = Rollup()
    rollup.add(TraceRecord(trace_id="tr-1", timestamp_ms=0, workflow="w", environment="e", status="passed", score=None,
                           band=None, tools=counts))
    totals, tools = tool_figures(rollup, start_ms=0, end_ms=300_000, width_ms=3_600_000)
    assert [t.tool for t in tools] == [f"tool_{i:02d}" for i in range(10)] + ["(other)"]
    assert tools[-1].calls == sum(range(1, 16)) and totals.calls == sum(range(1, 26)) and totals.distinct_tools == 21
    assert tools[0].mean_ms == 3.0 and tools[0].p95_ms == 5.0


def test_the_worst_tool_counts_fit_every_sql_store_mlflow_keeps_assessment_metadata_in(caplog):
    """MLflow 3.17 sets no limit on an assessment's metadata values; its SQL stores keep the whole metadata as JSON in
    a ``Text`` column, and MySQL's TEXT (65,535 bytes) is the smallest. The counts every feedback carries stay far
    under it at their worst (20 names of 100 astral characters, each escaped to 12 bytes, every latency bin, huge
    numbers), so a write never fails for them. Names are cut, the rest summed, and unreadable counts are None."""
    import json

    from tracejudge.judges.trajectory import ToolCall
    from tracejudge.mlflow_io import writer

    slowest = [0.5, 1.5, 3, 7, 15, 30, 70, 150, 300, 700, 1500, 3000, 7000, 15000, 30000, 70000, 200000, 10.0**9]
    calls = [ToolCall(name="\U0001F600" * 99 + chr(0x4E00 + i), status="ERROR", duration_ms=float(ms))
             for i in range(40) for ms in slowest]
    text = tool_record.trace_text(calls)
    counts = tool_record.decode(text)
    assert len(counts) == tool_record.MAX_TOOLS + 1 and counts[tool_record.OTHER].calls == 20 * len(slowest)
    assert all(len(name) <= tool_record.MAX_NAME for name in counts)
    stored = json.dumps({writer.KEY: "k" * 64, writer.TOOLS: text})  # as MLflow's SqlAssessments stores metadata
    assert len(stored.encode()) < 65_535 // 2, len(stored)

    with caplog.at_level("WARNING", logger="tracejudge.mlflow_io.tool_record"):
        assert tool_record.decode('{"v":1,"tools":{"a":[1,0]}}') is None
    assert "unreadable tracejudge.tools metadata" in caplog.text


def test_tool_names_built_from_ids_fold_to_one_counter_set_per_bucket_in_both_sources(redis_url):
    """Tool names that carry ids (an order number, a UUID, a hash) would make counters per id in every 5-minute
    bucket, kept 35 days. Their ids are folded (``tool_record.fold_name``) by one rule applied to each trace on its
    own, so the Redis rollups and the in-memory sum of MLflow's record stay equal whatever order traces come in,
    and records written before folding (raw names in their metadata) fold the same way."""
    import uuid

    import redis as redis_lib

    from tracejudge.judges.trajectory import ToolCall
    from tracejudge.monitor.rollup import Rollup, TraceRecord
    from tracejudge.monitor.rollup_store import load_rollup, record_verdict
    from tracejudge.monitor.tool_figures import tool_figures

    from tracejudge.monitor.rollup import bucket_of

    start = bucket_of(int(time.time() * 1000))  # keys expire 35 days after their bucket: a bucket of today

    def trace(n: int, tools) -> TraceRecord:
        return TraceRecord(trace_id=f"tr-{n}", timestamp_ms=start + n, workflow="w", environment="e", status="passed",
                           score=None, band=None, tools=tools)

    # new records: the names fold as the worker counts them
    written = [tool_record.tool_counts([ToolCall(name=f"fetch_order_{10_000 + n}", duration_ms=2.0),
                                        ToolCall(name=f"lookup/{uuid.uuid4()}", duration_ms=2.0),
                                        ToolCall(name="search", duration_ms=2.0)]) for n in range(30)]
    assert all(sorted(c) == ["fetch_order_#", "lookup/#", "search"] for c in written)
    # records written before folding: raw id names in the metadata, folded when the monitor reads them
    older = [{f"fetch_order_{20_000 + n}": tool_record.ToolCounts(calls=2, failed=1, bins={1: 2})} for n in range(10)]
    traces = [trace(n, tools) for n, tools in enumerate(written + older)]

    r = redis_lib.Redis.from_url(redis_url)
    prefix, experiment_id = f"tjfold-{uuid.uuid4().hex[:8]}:", "1"
    for t in reversed(traces):  # another order than the in-memory sum: the figures do not depend on it
        record_verdict(r, t, experiment_id=experiment_id, prefix=prefix)
    from_redis = load_rollup(r, experiment_id, start, start + 300_000, prefix=prefix)
    in_memory = Rollup()
    for t in traces:
        in_memory.add(t)
    assert from_redis.counters == in_memory.counters
    for rollup in (from_redis, in_memory):
        totals, tools = tool_figures(rollup, start_ms=start, end_ms=start + 300_000, width_ms=300_000)
        assert {x.tool: (x.calls, x.failed) for x in tools} == {"fetch_order_#": (50, 10), "lookup/#": (30, 0),
                                                                "search": (30, 0)}
        assert totals.distinct_tools == 3
    # the bucket's hash keeps counters for the three folded names, not one set per id
    fields = {f.decode() for f in r.hkeys(f"{prefix}tracejudge:monitor:{experiment_id}:w\x1fe:{start}:c")}
    assert {f.split("|")[1] for f in fields if f.startswith("tool|")} == {"fetch_order_#", "lookup/#", "search"}
    r.delete(*r.keys(f"{prefix}*"))
