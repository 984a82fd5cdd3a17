"""Small figures that must not mislead: judge figures are the judges' alone, percentiles stay within the scores,
failure themes count each trace once.

A real MLflow store (sqlite), real Redis; traces written the way workers write them (``seed_mlflow``).
"""

from __future__ import annotations

import time

import mlflow
import pytest

from tracejudge.monitor import MonitorQuery, summarise_quality
from tracejudge.monitor.themes import failure_themes
from tracejudge.testing.monitor_data import judged, record, seed_mlflow, seed_rollups

MIN = 60_000


def test_people_s_feedback_under_a_judge_s_name_is_not_a_judge_figure(mlflow_store, redis_url):
    """Three human 0.0s logged as "relevance" (what ``tracejudge agreement`` asks for; one with our metadata
    copied, as an override in the UI may) change neither relevance's count nor its percentiles; they show in
    the judge-vs-human agreement instead."""
    from mlflow.entities import AssessmentSource

    experiment_id = mlflow.create_experiment(f"monitor-human-{time.time_ns()}")
    now = int(time.time() * 1000)
    scores = [0.6, 0.7, 0.8, 0.9, 0.95]
    ids = seed_mlflow(
        experiment_id,
        [(now - (10 - i) * MIN, judged({("research", "relevance"): s, ("write", "coherence"): 0.9})) for i, s in enumerate(scores)],
    )
    client = mlflow.MlflowClient()
    for trace_id in ids[:3]:
        ours = next(a for a in client.get_trace(trace_id).info.assessments if a.name == "relevance")
        mlflow.log_feedback(
            trace_id=trace_id, name="relevance", value=0.0, span_id=ours.span_id,
            source=AssessmentSource(source_type="HUMAN", source_id="reviewer@example.com"),
            metadata=dict(ours.metadata) if trace_id == ids[0] else None, rationale="wrong topic",
        )
    s = summarise_quality(MonitorQuery(experiment=experiment_id, since="1h", source="mlflow"))
    rel = next(j for j in s.judges if j.judge == "relevance")
    # the judges' own five scores, counted by hand: PERCENTILE_CONT at 0.1 of 0.6 0.7 0.8 0.9 0.95 is 0.64
    assert rel.p10 == pytest.approx(0.64) and rel.p50 == pytest.approx(0.8) and rel.mean == pytest.approx(sum(scores) / 5)
    assert (rel.count, rel.min, rel.max) == (5, 0.6, 0.95)
    assert s.totals.results == 10
    people = [row for row in s.human_agreement if row.get("judge") == "relevance"]
    assert people and sum(row.get("pairs", row.get("n", 0)) for row in people) == 3, s.human_agreement


def test_percentiles_from_the_rollups_stay_within_the_scores(redis_url):
    """Three scores in one tenth (0.81, 0.82, 0.83): a histogram of tenths put p90 at 0.89, above every score."""
    import redis as redis_lib

    client = redis_lib.Redis.from_url(redis_url)
    experiment_id = f"pct-{time.time_ns()}"
    now = int(time.time() * 1000)
    records = [record(f"tr-p{i}", now - (5 - i) * MIN, judged({("research", "relevance"): s})) for i, s in enumerate((0.81, 0.82, 0.83))]
    seed_rollups(client, experiment_id, records, prefix="pct:")
    from tracejudge.monitor.links import links_for
    from tracejudge.monitor.rollup_store import load_rollup
    from tracejudge.monitor.summary import summarise

    start, end = now - 60 * MIN, now + MIN
    s = summarise(load_rollup(client, experiment_id, start, end, prefix="pct:"), experiment_id=experiment_id,
                  start_ms=start, end_ms=end, source="redis", links=links_for(experiment_id, tracking_uri="http://mlflow.example"))
    node = s.nodes[0]
    assert (node.min, node.max) == (0.81, 0.83)
    assert node.p10 == pytest.approx(0.812) and node.p50 == pytest.approx(0.82) and node.p90 == pytest.approx(0.828)
    assert node.min <= node.p10 <= node.p90 <= node.max


def test_failure_themes_count_a_trace_once():
    """One trace failing relevance on two nodes with the same words is one trace in the theme, not two."""
    text = "Off topic: the summary misses the question asked."
    examples = [
        {"judge": "relevance", "trace_id": "tr-1", "node": "research", "text": text},
        {"judge": "relevance", "trace_id": "tr-1", "node": "write", "text": text},
        {"judge": "relevance", "trace_id": "tr-2", "node": "research", "text": "It misses the question entirely."},
    ]
    theme = next(t for t in failure_themes(examples) if t.phrase == "misses question")
    assert theme.count == 2 and theme.examples == ["tr-1", "tr-2"]
