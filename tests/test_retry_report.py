"""Issue 17, point 2, the report's part: ``tracejudge report`` counts the traces whose results are not all final.

An LLM outage (the fake LLM answers 503) leaves PROVIDER_ERROR results. The report says, for the window: how
many traces have non-final results (the record), how many of them wait for an automatic retry (Redis's deferred
set: coordination) or have none waiting (a gate request is never retried in the background), and how many gave up
after the attempt cap, by error code (the record: every evaluation that wrote a non-final feedback, superseded
ones too). Both sources (MLflow, and the Redis rollups the worker keeps) give the same figures. Through the real
pipeline: Redis, an in-thread Celery worker, sqlite MLflow, the fake LLM over HTTP.
"""

from __future__ import annotations

import uuid

import pytest
import yaml

import tracejudge

CONFIG = {
    "observability": {"mlflow": {"judges": {
        "workflow_defaults": ["coherence", "relevance"],
        "execution": {"retry_on_failure": False},  # one attempt per call: a 503 is a failed result at once
    }}},
}


@pytest.fixture()
def outage(mlflow_store, tmp_path):
    import mlflow

    from tracejudge.testing.workflows import record_plain_trace

    experiment_id = mlflow.create_experiment(f"retry-report-{uuid.uuid4().hex[:8]}", artifact_location=(tmp_path / "a").as_uri())
    mlflow.set_experiment(experiment_id=experiment_id)
    background = record_plain_trace("is the outage over?", "The provider is back.")
    gated = record_plain_trace("and now?", "Still down.")
    mlflow.flush_trace_async_logging()
    mlflow.set_experiment("tracejudge-tests")
    path = tmp_path / "tracejudge.yaml"
    path.write_text(yaml.safe_dump(CONFIG))
    return experiment_id, background, gated


def _figures(experiment_id, redis, prefix):
    """The retry figures from both sources (they must agree), read for the same window."""
    import time

    from tracejudge.monitor import MonitorQuery, summarise_quality

    now_ms = int(time.time() * 1000)
    out = []
    for source in ("mlflow", "redis"):
        summary = summarise_quality(MonitorQuery(experiment=experiment_id, since="1h", source=source),
                                    redis=redis, prefix=prefix, now_ms=now_ms)
        out.append(summary.retries.model_dump(exclude={"sources"}))
    assert out[0] == out[1], "the MLflow record and the Redis rollups disagree"
    return out[0]


def test_the_report_counts_non_final_traces_their_retries_and_those_given_up(
    worker, fake_llm, pipeline_env, redis_url, outage, capsys
):
    import redis as redis_lib

    from tracejudge.cli import main
    from tracejudge.controls.deferred import DEFERRED_KEY, release_due
    from tracejudge.controls.retries import MAX_FAILED_EVALUATIONS
    from tracejudge.verdict import QualityVerdict
    from tracejudge.worker import get_app
    from tracejudge.worker.scheduled import send_request

    experiment_id, background, gated = outage
    redis = redis_lib.Redis.from_url(redis_url)
    prefix = pipeline_env["TRACEJUDGE_KEY_PREFIX"]
    deferred = f"{prefix}{DEFERRED_KEY}"
    redis.delete(deferred)

    fake_llm.script("503", "503")  # the provider is down for the background trace's two calls
    first = tracejudge.enqueue(background, config=CONFIG).verdict(timeout=60, raise_on_block=False)
    assert {r.error.type for r in first.results()} == {"PROVIDER_ERROR"}
    fake_llm.script("503", "503")  # ... and for the gated one's, whose caller decides (no background retry)
    gate = tracejudge.enqueue(gated, config=CONFIG, gate=True).verdict(timeout=60, raise_on_block=False)
    assert {r.error.type for r in gate.results()} == {"PROVIDER_ERROR"}

    figures = _figures(experiment_id, redis, prefix)
    assert figures == {
        "non_final": 2, "due": 2, "waiting": 1, "not_scheduled": 1, "gave_up": 0, "gave_up_codes": {},
        "attempt_cap": MAX_FAILED_EVALUATIONS,
    }

    # the background trace fails at every automatic retry, until the cap
    app = get_app()
    for _ in range(MAX_FAILED_EVALUATIONS - 1):
        [(_, due)] = redis.zrange(deferred, 0, -1, withscores=True)
        fake_llm.script("503", "503")
        handles = []
        assert release_due(redis, prefix, lambda r: handles.append(send_request(app, r)), now=due + 1) == 1
        again = QualityVerdict.model_validate(handles[0].get(timeout=60))
        assert again.status == "error" and again.judged == 2
    assert redis.zcard(deferred) == 0  # used up: no more retries

    figures = _figures(experiment_id, redis, prefix)
    assert figures == {
        "non_final": 2, "due": 1, "waiting": 0, "not_scheduled": 1, "gave_up": 1,
        "gave_up_codes": {"PROVIDER_ERROR": 1}, "attempt_cap": MAX_FAILED_EVALUATIONS,
    }

    # what a user reads: the table says each figure and where it comes from
    assert main(["report", "--experiment-id", experiment_id, "--since", "1h"]) == 0  # --source auto: Redis is asked
    out = capsys.readouterr().out
    lines = {line.strip().split("  ")[0]: line for line in out.splitlines() if line.startswith(("non-final", "  ", "    "))}
    assert "2" in lines["non-final results"].split() and "record (" in lines["non-final results"]
    assert "coordination: Redis deferred set" in lines["waiting for a retry"]
    assert lines["none waiting (backfill re-judges)"].split()[4] == "1"
    assert lines["PROVIDER_ERROR"].split()[1] == "1"
    assert f"gave up ({MAX_FAILED_EVALUATIONS} failed evaluations)" in out

    # judged again once the provider is back (a caller sends both again): nothing non-final is left
    fake_llm.script("ok", "ok", "ok", "ok")
    for trace_id in (background, gated):
        verdict = tracejudge.enqueue(trace_id, config=CONFIG).verdict(timeout=60, raise_on_block=False)
        assert verdict.status in ("passed", "failed")
    figures = _figures(experiment_id, redis, prefix)
    assert (figures["non_final"], figures["due"], figures["gave_up"], figures["gave_up_codes"]) == (0, 0, 0, {})
