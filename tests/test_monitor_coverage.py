"""``--source auto`` reads Redis only for a window Redis covers whole, and says why it read MLflow otherwise.

A real worker (in-thread), real Redis, a sqlite MLflow store, the test LLM. The gaps: a rollup write that failed
after the write-back, a window reaching past the 35 days the rollups keep (or before workers started recording),
and verdicts judged in ``sync`` mode (recorded in Redis too when ``TRACEJUDGE_REDIS_URL`` is set).
"""

from __future__ import annotations

import json
import os
import time

import mlflow
import pytest

import tracejudge
from tracejudge.monitor import MonitorQuery, summarise_quality
from tracejudge.monitor.coverage import IN_FLIGHT_MS
from tracejudge.testing.workflows import record_article_trace

JUDGES = {
    "workflow_defaults": [{"name": "harmfulness", "threshold": 0.8}],
    "execution": {"timeout_seconds": 5, "max_attempts": 1, "trace_wait_seconds": 20},
}
CONFIG = {"observability": {"mlflow": {"judges": JUDGES}}}
SYNC = {"observability": {"mlflow": {"judges": {**JUDGES, "execution": {**JUDGES["execution"], "mode": "sync"}}}}}
DAY_MS = 86_400_000


@pytest.fixture()
def experiment(worker, redis_url):
    import redis

    experiment_id = mlflow.create_experiment(f"monitor-coverage-{time.time_ns()}")
    yield experiment_id, redis.Redis.from_url(redis_url)
    mlflow.set_experiment("tracejudge-tests")


def trace_in(experiment_id: str) -> str:
    mlflow.set_experiment(experiment_id=experiment_id)
    return record_article_trace(research="Findings.", article="An article.")


def since_key(experiment_id: str) -> str:
    return f"{os.environ['TRACEJUDGE_KEY_PREFIX']}tracejudge:monitor:{experiment_id}:since"


def recording_for(redis, experiment_id: str, days: float) -> None:
    """As if workers had been recording this experiment's rollups for ``days`` (the coverage record says when)."""
    redis.set(since_key(experiment_id), int(time.time() * 1000 - days * DAY_MS))


def summary(experiment_id: str, redis, *, since: str = "1h", source: str = "auto", now_ms: int | None = None):
    return summarise_quality(
        MonitorQuery(experiment=experiment_id, since=since, source=source),
        redis=redis,
        prefix=os.environ["TRACEJUDGE_KEY_PREFIX"],
        now_ms=now_ms,
    )


def test_auto_reads_redis_when_it_covers_the_window(experiment):
    experiment_id, redis = experiment
    tracejudge.enqueue(trace_in(experiment_id), config=CONFIG).verdict(timeout=90)
    recording_for(redis, experiment_id, days=1)
    s = summary(experiment_id, redis)
    assert (s.source, s.totals.traces) == ("redis", 1), s.source_note
    assert s.source_note == "Redis rollups cover the window"


def test_a_failed_rollup_write_makes_auto_read_mlflow_for_that_window(experiment, monkeypatch):
    experiment_id, redis = experiment
    from tracejudge.monitor import rollup_store

    tracejudge.enqueue(trace_in(experiment_id), config=CONFIG).verdict(timeout=90)
    recording_for(redis, experiment_id, days=1)

    def broken(*args, **kwargs):
        raise ConnectionError("Redis went away between the write-back and the rollup")

    monkeypatch.setattr(rollup_store, "record_verdict", broken)
    missed = trace_in(experiment_id)
    handle = tracejudge.enqueue(missed, config=CONFIG)
    verdict = handle.verdict(timeout=90)
    monkeypatch.undo()
    # the verdict still counts in the pipeline's figures (tracejudge status, the pipeline rules), once
    prefix = os.environ["TRACEJUDGE_KEY_PREFIX"]
    counted = [redis.hget(k, handle.id) for k in redis.scan_iter(f"{prefix}tracejudge:pipeline:*:v")]
    assert [json.loads(c)["s"] for c in counted if c is not None] == [verdict.status]

    later = int(time.time() * 1000) + IN_FLIGHT_MS  # no longer an evaluation in flight
    s = summary(experiment_id, redis, now_ms=later)
    assert (s.source, s.totals.traces) == ("mlflow", 2)
    assert "judged but not recorded in Redis" in s.source_note and missed in s.source_note
    forced = summary(experiment_id, redis, source="redis", now_ms=later)
    assert forced.totals.traces == 1 and "Redis may miss part of this window" in forced.source_note
    # judging the trace again records it: Redis covers the window again, with both traces
    tracejudge.enqueue(missed, config=CONFIG).verdict(timeout=90)
    again = summary(experiment_id, redis, now_ms=later)
    assert (again.source, again.totals.traces) == ("redis", 2), again.source_note


def test_auto_never_reads_past_the_35_days_redis_keeps(experiment):
    experiment_id, redis = experiment
    tracejudge.enqueue(trace_in(experiment_id), config=CONFIG).verdict(timeout=90)
    # workers have been recording for 50 days, but buckets older than 35 days are gone
    recording_for(redis, experiment_id, days=50)
    s = summary(experiment_id, redis, since="40d")
    assert s.source == "mlflow" and "35 days" in s.source_note
    assert summary(experiment_id, redis, since="30d").source == "redis"
    # the coverage record has a lifetime of its own: each recording keeps it 35 days more, not for ever
    tracejudge.enqueue(trace_in(experiment_id), config=CONFIG).verdict(timeout=90)
    assert 34 * DAY_MS < redis.pttl(since_key(experiment_id)) <= 35 * DAY_MS


def test_a_window_from_before_workers_recorded_is_read_from_mlflow(experiment):
    experiment_id, redis = experiment
    tracejudge.enqueue(trace_in(experiment_id), config=CONFIG).verdict(timeout=90)
    s = summary(experiment_id, redis, since="2d")
    assert s.source == "mlflow" and "workers started recording rollups only at" in s.source_note


def test_sync_mode_verdicts_are_recorded_in_redis(experiment):
    from tracejudge.tasks.runtime import reset_runtime

    experiment_id, redis = experiment
    reset_runtime()  # the process's sync runtime may hold an earlier test's settings (key prefix); this one's apply
    trace_id = trace_in(experiment_id)
    v = tracejudge.enqueue(trace_id, config=SYNC).verdict(timeout=90)
    assert v.status == "passed"
    s = summary(experiment_id, redis, source="redis")
    assert s.totals.traces == 1 and s.totals.verdicts == {"passed": 1}
    recording_for(redis, experiment_id, days=1)
    assert summary(experiment_id, redis).source == "redis"


def test_report_rebuild_rollups_fills_the_gap_from_mlflow(experiment, monkeypatch, capsys):
    """The rollups are a cache of MLflow's record: ``report --rebuild-rollups`` records the window again from it
    (a lost rollup write included) and auto reads Redis again."""
    import json

    from tracejudge.cli import main
    from tracejudge.monitor import rollup_store

    experiment_id, redis = experiment
    first = trace_in(experiment_id)
    tracejudge.enqueue(first, config=CONFIG, force=True).verdict(timeout=90)
    tracejudge.enqueue(first, config=CONFIG, force=True).verdict(timeout=90)  # judged twice: counted once after all
    monkeypatch.setattr(rollup_store, "record_verdict", lambda *a, **k: (_ for _ in ()).throw(ConnectionError("down")))
    tracejudge.enqueue(trace_in(experiment_id), config=CONFIG).verdict(timeout=90)
    monkeypatch.undo()
    later = int(time.time() * 1000) + IN_FLIGHT_MS
    assert summary(experiment_id, redis, now_ms=later).source == "mlflow"

    assert main(["report", "--experiment-id", experiment_id, "--since", "1h", "--rebuild-rollups", "--format", "json"]) == 0
    out = capsys.readouterr()
    assert "rebuilt the rollups of 2 judged trace(s) from MLflow" in out.err
    data = json.loads(out.out)
    assert (data["source"], data["totals"]["traces"]) == ("redis", 2), data["source_note"]
    again = summary(experiment_id, redis, now_ms=later)
    record = summary(experiment_id, redis, source="mlflow", now_ms=later)
    assert (again.source, again.totals.traces) == ("redis", 2)
    assert again.totals.results == record.totals.results == 6  # harmfulness on three targets of each trace
