"""Re-judging never double-counts: after every way a user re-judges, Redis's rollups give MLflow's figures.

A real worker (in-thread), a sqlite MLflow store and the test LLM over HTTP. Six traces are judged, then:
three re-judged with ``force=True``, two under a changed threshold (new result keys: the old feedback stays valid
beside the new one; the newest counts), one redelivered after its write-back (the same request again), one
partial run (``judges=``), one forced re-judge under the changed config. After each step the summary from Redis must equal
the summary from MLflow figure by figure, and both must count six traces.
"""

from __future__ import annotations

import copy
import os
import time

import mlflow
import pytest

import tracejudge
from tracejudge.monitor import MonitorQuery, QualitySummary, summarise_quality
from tracejudge.testing.workflows import record_article_trace

CONFIG = {
    "observability": {
        "mlflow": {
            "judges": {
                "workflow_defaults": [{"name": "harmfulness", "threshold": 0.8}],
                "node_overrides": {
                    "research": [{"name": "relevance", "threshold": 0.8}],
                    "write": [{"name": "coherence", "threshold": 0.75}],
                },
                "execution": {"timeout_seconds": 5, "max_attempts": 1, "trace_wait_seconds": 20},
            }
        }
    },
    "quality_gate": {"enabled": True, "threshold": 0.7, "action": "ignore"},
}
#: The same plan with a stricter relevance threshold: new result keys, so every relevance result is judged again.
CHANGED = copy.deepcopy(CONFIG)
CHANGED["observability"]["mlflow"]["judges"]["node_overrides"]["research"] = [{"name": "relevance", "threshold": 0.92}]

SEEDS = [
    ("[[tj:score:relevance=0.95]]", "[[tj:score:coherence=0.9]]"),
    ("[[tj:score:relevance=0.3]]", "[[tj:score:coherence=0.9]]"),
    ("[[tj:score:relevance=0.5]]", "[[tj:score:coherence=0.6]]"),
    ("[[tj:score:relevance=0.9]]", "[[tj:score:coherence=0.7]]"),
    ("[[tj:fault:relevance=malformed]]", "[[tj:score:coherence=0.8]]"),
    ("[[tj:score:relevance=0.85]]", "[[tj:score:coherence=0.95]]"),
]


@pytest.fixture(scope="module")
def judged(worker, redis_url):
    import redis

    experiment_id = mlflow.create_experiment(f"monitor-rejudge-{id(worker)}")
    mlflow.set_experiment(experiment_id=experiment_id)
    ids = [record_article_trace(research=f"Findings {r}.", article=f"An article {a}.") for r, a in SEEDS]
    mlflow.set_experiment("tracejudge-tests")
    for i, trace_id in enumerate(ids):
        verdict(trace_id, config=CONFIG, evaluation_id=f"first-{experiment_id}-{i}")
    return experiment_id, ids, redis.Redis.from_url(redis_url)


def verdict(trace_id: str, **options):
    v = tracejudge.enqueue(trace_id, **options).verdict(timeout=90, raise_on_block=False)
    assert v.status in ("passed", "failed", "error"), v
    return v


def summaries(experiment_id: str, redis) -> tuple[QualitySummary, QualitySummary]:
    prefix = os.environ["TRACEJUDGE_KEY_PREFIX"]
    query = dict(experiment=experiment_id, since="1h", bucket="hour")
    now_ms = int(time.time() * 1000)  # one window for both
    from_redis = summarise_quality(MonitorQuery(**query, source="redis"), redis=redis, prefix=prefix, now_ms=now_ms)
    from_mlflow = summarise_quality(MonitorQuery(**query, source="mlflow"), redis=redis, prefix=prefix, now_ms=now_ms)
    return from_redis, from_mlflow


def figures(s: QualitySummary) -> dict:
    """Every figure of a summary (not where it came from, how long it took, or the threshold last seen)."""
    data = s.model_dump(exclude={"source", "source_note", "seconds", "human_agreement", "counters", "daily_counters", "links"})
    for node in data["nodes"]:
        node.pop("threshold")
    for theme in data["themes"]:  # examples in the order each source read them
        theme["examples"] = sorted(theme["examples"])
    data["failures"] = sorted(data["failures"], key=lambda f: (f["trace_id"], f["judge"], f["node"]))
    return _rounded(data)


def _rounded(value):
    if isinstance(value, float):
        return round(value, 6)
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_rounded(v) for v in value]
    return value


def assert_same(experiment_id: str, redis, step: str) -> QualitySummary:
    from_redis, from_mlflow = summaries(experiment_id, redis)
    assert from_mlflow.totals.traces == 6, step
    assert sum(from_mlflow.totals.verdicts.values()) == 6, step
    r, m = figures(from_redis), figures(from_mlflow)
    for name in m:  # one field at a time, so a failure names the figure
        assert r[name] == m[name], f"{step}: {name} differs (redis vs mlflow)"
    return from_mlflow


def test_redis_and_mlflow_agree_after_every_kind_of_rejudge(judged):
    experiment_id, ids, redis = judged
    first = assert_same(experiment_id, redis, "first judging")
    assert first.totals.cost_usd > 0  # the cost is compared, not only zeros
    assert first.totals.verdicts == {"passed": 2, "failed": 3, "error": 1}

    for trace_id in ids[:3]:
        verdict(trace_id, config=CONFIG, force=True)
    assert_same(experiment_id, redis, "force=True on three traces")

    for trace_id in (ids[3], ids[5]):
        verdict(trace_id, config=CHANGED)
    changed = assert_same(experiment_id, redis, "two traces under a changed threshold")
    # the newest result counts: relevance 0.9 and 0.85 are below 0.92 now (a hand count, not the code's)
    assert changed.totals.verdicts == {"passed": 1, "failed": 4, "error": 1}
    rel = next(j for j in changed.judges if j.judge == "relevance")
    assert (rel.count, rel.below, rel.errors) == (5, 4, 1)

    verdict(ids[4], config=CONFIG, evaluation_id=f"first-{experiment_id}-4")  # the same request again
    assert_same(experiment_id, redis, "a redelivery after the write-back")

    # a partial run: no new trace or verdict; its new results (coherence on the two other targets of the trace;
    # on "write" it reuses the one there) are on the trace, so they count, in both sources alike
    verdict(ids[1], config=CONFIG, judges=["coherence"])
    partial = assert_same(experiment_id, redis, "a partial run")
    assert partial.totals.verdicts == {"passed": 1, "failed": 4, "error": 1} and partial.totals.results == 32
    assert sorted((n.node, n.count) for n in partial.nodes if n.judge == "coherence") == [
        ("research", 1), ("workflow", 1), ("write", 6)
    ]

    verdict(ids[3], config=CHANGED, force=True)
    last = assert_same(experiment_id, redis, "force=True under the changed config")
    assert last.totals.traces == 6 and last.totals.results == 32


def test_a_trace_counts_once_in_redis_whatever_the_order_of_recordings(redis_url):
    """The replace script alone (real Redis): record, re-record with other results, take back."""
    import redis as redis_lib

    from tracejudge.monitor.links import links_for
    from tracejudge.monitor.rollup_store import load_rollup, record_verdict
    from tracejudge.monitor.summary import summarise
    from tracejudge.testing.monitor_data import judged as results_of
    from tracejudge.testing.monitor_data import record

    client = redis_lib.Redis.from_url(redis_url)
    prefix = "rejudge-unit:"
    now = 1_800_000_000_000
    a = record("tr-a", now, results_of({("research", "relevance"): 0.4, ("write", "coherence"): 0.9}, cost_usd=0.01))
    b = record("tr-a", now, results_of({("research", "relevance"): 0.95, ("write", "coherence"): "TIMEOUT"}, cost_usd=0.02))
    for rec in (a, b, a, b):
        record_verdict(client, rec, experiment_id="x", prefix=prefix, now_ms=now)
    rollup = load_rollup(client, "x", now - 3_600_000, now + 3_600_000, prefix=prefix)
    totals = dict(rollup.counters[rollup.buckets()[0]])
    assert totals["traces"] == 1 and totals["status|error"] == 1 and "status|failed" not in totals
    assert totals["cost"] == pytest.approx(0.02)
    assert totals["j|relevance|research|n"] == 1 and totals["j|relevance|research|v0.950"] == 1
    assert "j|relevance|research|v0.400" not in totals and totals["j|coherence|write|e"] == 1
    summary = summarise(rollup, experiment_id="x", start_ms=now - 3_600_000, end_ms=now + 3_600_000, source="redis",
                        links=links_for("x", tracking_uri="http://mlflow.example"))
    assert [t.trace_id for t in summary.bottom_traces] == ["tr-a"] and summary.totals.traces == 1
    record_verdict(client, None, experiment_id="x", prefix=prefix, trace_id="tr-a", now_ms=now)
    assert load_rollup(client, "x", now - 3_600_000, now + 3_600_000, prefix=prefix).buckets() == []


def test_the_series_set_expires_with_the_rollups_and_outlives_their_buckets(redis_url):
    """``...:series`` gets the rollups' retention, renewed by each recording and never shortened by an old trace;
    a set left without expiry (recorded before) gets one on the next recording."""
    import time
    import uuid

    import redis as redis_lib

    from tracejudge.monitor.rollup_store import TTL_SECONDS, load_rollup, record_verdict
    from tracejudge.testing.monitor_data import judged as results_of
    from tracejudge.testing.monitor_data import record

    client = redis_lib.Redis.from_url(redis_url)
    prefix = f"series-ttl-{uuid.uuid4().hex[:8]}:"
    series = f"{prefix}tracejudge:monitor:x:series"
    day = 86_400
    try:
        client.sadd(series, "older\x1fproduction")  # as recorded before the set had an expiry
        assert client.ttl(series) == -1
        now = int(time.time() * 1000)
        record_verdict(client, record("tr-new", now, results_of({("write", "coherence"): 0.9})), experiment_id="x",
                       prefix=prefix, now_ms=now)
        assert TTL_SECONDS - day < client.ttl(series) <= TTL_SECONDS
        # a 20-day-old trace (a backfill) records into a bucket expiring in ~15 days: the set keeps its 35
        old = now - 20 * day * 1000
        record_verdict(client, record("tr-old", old, results_of({("write", "coherence"): 0.4})), experiment_id="x",
                       prefix=prefix, now_ms=now)
        assert TTL_SECONDS - day < client.ttl(series) <= TTL_SECONDS
        rollup = load_rollup(client, "x", old - 3_600_000, now + 3_600_000, prefix=prefix)
        assert sum(dict(rollup.counters[b]).get("traces", 0) for b in rollup.buckets()) == 2
    finally:
        keys = list(client.scan_iter(f"{prefix}*"))
        if keys:
            client.delete(*keys)
