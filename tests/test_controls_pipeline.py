"""Production controls through the real pipeline: enqueue -> Redis -> Celery worker -> fake LLM -> MLflow.

Sampling in ``enqueue`` (no message), filters in the worker, per-judge rates,
cost on every assessment and in the report and run metrics, the judge result
cache, ``force`` superseding old assessments, and a spent budget giving
BUDGET_EXCEEDED errors that are not reused.
"""

from __future__ import annotations

import time
import uuid

import pytest

import tracejudge


def cfg(**judges) -> dict:
    judges.setdefault("workflow_defaults", ["coherence"])
    return {"observability": {"mlflow": {"judges": judges}}}


def _queue_length(redis_url: str, prefix: str) -> int:
    import redis

    return int(redis.Redis.from_url(redis_url).llen(f"{prefix}tracejudge.online"))


def test_sampled_out_trace_sends_no_message_and_says_skipped(worker, pipeline_env, redis_url):
    from tracejudge.enqueue import _skip_counter
    from tracejudge.controls import counters

    prefix = pipeline_env["TRACEJUDGE_KEY_PREFIX"]
    config = cfg(sampling={"rate": 0.25})
    ids = [f"tr-{uuid.uuid4().hex}" for _ in range(200)]
    from tracejudge.controls.sampling import sampled

    out = [t for t in ids if not sampled(t, 0.25)][:20]
    before = _queue_length(redis_url, prefix)
    handles = [tracejudge.enqueue(t, config=config, workflow="sampling_test") for t in out]
    assert _queue_length(redis_url, prefix) == before  # no Redis message for skipped traces
    assert all(isinstance(h, tracejudge.SkippedHandle) and h.status == "skipped" for h in handles)
    verdict = handles[0].verdict()
    assert verdict.status == "skipped" and "sampled out" in verdict.skipped_reason and not verdict.passed
    # a gate is never sampled out
    assert not isinstance(tracejudge.enqueue(out[0], config=config, gate=True), tracejudge.SkippedHandle)
    _skip_counter().flush()
    import redis

    counts = counters.read(redis.Redis.from_url(redis_url), prefix)
    assert counts["sampling_test"]["skipped_sampling"] == len(out)


def test_cost_on_every_assessment_and_in_report_and_metrics(worker, article_trace):
    import mlflow
    from mlflow import MlflowClient

    config = cfg(pricing={"gpt-4o-mini": {"input": 2.0, "output": 4.0}})
    verdict = tracejudge.enqueue(article_trace, config=config).verdict(timeout=60, raise_on_block=False)
    assert verdict.status in ("passed", "failed")
    trace = mlflow.get_trace(article_trace)
    ours = [a for a in trace.info.assessments if (a.metadata or {}).get("tracejudge.key")]
    assert ours
    for a in ours:
        md = a.metadata
        expected = (int(md["prompt_tokens"]) * 2.0 + int(md["completion_tokens"]) * 4.0) / 1e6
        assert float(md["cost_usd"]) == pytest.approx(expected, rel=1e-6)
    total = sum(float(a.metadata["cost_usd"]) for a in ours)
    run = MlflowClient().get_run(verdict.artifact_uri.split("/")[1])
    assert run.data.metrics["judge_cost_usd"] == pytest.approx(total, rel=1e-6)
    assert run.data.metrics["judge_prompt_tokens"] == sum(int(a.metadata["prompt_tokens"]) for a in ours)
    report = mlflow.artifacts.load_dict(verdict.artifact_uri)
    assert report["cost"]["judge_cost_usd"] == pytest.approx(total, rel=1e-6)


def test_unpriced_model_has_no_cost(worker, mlflow_store):
    import mlflow

    from tracejudge.testing.workflows import record_plain_trace

    trace_id = record_plain_trace("what is 2+2?", "4")
    config = cfg(workflow_defaults=[{"name": "coherence", "model": "house-model-without-price"}])
    tracejudge.enqueue(trace_id, config=config).verdict(timeout=60, raise_on_block=False)
    ours = [a for a in mlflow.get_trace(trace_id).info.assessments if (a.metadata or {}).get("tracejudge.key")]
    assert ours and all("cost_usd" not in a.metadata for a in ours)


def test_filters_are_applied_by_the_worker(worker, fake_llm, mlflow_store):
    from tracejudge.testing.workflows import record_plain_trace

    trace_id = record_plain_trace("filtered?", "yes")
    before = fake_llm.stats()["requests"]
    config = cfg(filters={"workflows": ["article_writer"]})
    verdict = tracejudge.enqueue(trace_id, config=config).verdict(timeout=60)
    assert verdict.status == "skipped" and "filtered out" in verdict.skipped_reason and "qa" in verdict.skipped_reason
    assert fake_llm.stats()["requests"] == before
    tagged = cfg(filters={"tags": {"env": "prod"}})
    assert tracejudge.enqueue(trace_id, config=tagged).verdict(timeout=60).status == "skipped"


def test_judge_rate_runs_a_judge_on_its_share_only(worker, mlflow_store):
    from tracejudge.controls.sampling import judge_sampled
    from tracejudge.testing.workflows import record_plain_trace

    ids = [record_plain_trace(f"rate {i}?", f"answer {i}") for i in range(6)]
    config = cfg(workflow_defaults=["coherence", "harmfulness"], sampling={"judges": {"harmfulness": 0.5}})
    for trace_id in ids:
        verdict = tracejudge.enqueue(trace_id, config=config).verdict(timeout=60, raise_on_block=False)
        names = {r.name for r in verdict.results()}
        assert ("harmfulness" in names) == judge_sampled(trace_id, "harmfulness", 0.5)
        assert "coherence" in names


def test_cache_shares_one_llm_call_for_the_same_answer(worker, fake_llm, mlflow_store):
    import mlflow

    from tracejudge.testing.workflows import record_plain_trace

    answer = f"The same answer {uuid.uuid4().hex}."
    first_id = record_plain_trace("question one?", answer)
    second_id = record_plain_trace("question two?", answer)
    config = cfg(cache={"enabled": True, "ttl_hours": 1})  # coherence reads only the output
    before = fake_llm.stats()["requests"]
    first = tracejudge.enqueue(first_id, config=config).verdict(timeout=60, raise_on_block=False)
    second = tracejudge.enqueue(second_id, config=config).verdict(timeout=60, raise_on_block=False)
    assert fake_llm.stats()["requests"] - before == 1
    [a] = first.results()
    [b] = second.results()
    assert not a.cached and b.cached and b.cache_key == a.cache_key and b.score == a.score
    md = [x.metadata for x in mlflow.get_trace(second_id).info.assessments if (x.metadata or {}).get("tracejudge.key")]
    assert md[0]["cached"] == "true" and md[0]["cache_key"] == a.cache_key
    off = tracejudge.enqueue(record_plain_trace("question three?", answer), config=cfg()).verdict(timeout=60, raise_on_block=False)
    assert not off.results()[0].cached  # off by default


def test_force_rejudges_and_supersedes_the_old_assessments(worker, fake_llm, mlflow_store):
    import mlflow

    from tracejudge.testing.workflows import record_plain_trace

    trace_id = record_plain_trace("force?", "forced answer")
    config = cfg()
    tracejudge.enqueue(trace_id, config=config).verdict(timeout=60, raise_on_block=False)
    before = fake_llm.stats()["requests"]
    again = tracejudge.enqueue(trace_id, config=config).verdict(timeout=60, raise_on_block=False)
    assert fake_llm.stats()["requests"] == before and again.reused == 1  # reused without force
    forced = tracejudge.enqueue(trace_id, config=config, force=True).verdict(timeout=60, raise_on_block=False)
    assert fake_llm.stats()["requests"] == before + 1 and forced.judged == 1
    ours = [a for a in mlflow.get_trace(trace_id).info.assessments if a.name == "coherence"]
    valid = [a for a in ours if a.valid is not False]
    assert len(ours) == 2 and len(valid) == 1
    assert valid[0].overrides == next(a.assessment_id for a in ours if a.valid is False)


def test_spent_budget_is_an_explicit_error_and_never_reused(worker, fake_llm, mlflow_store):
    import mlflow

    from tracejudge.testing.workflows import record_plain_trace

    trace_id = record_plain_trace("budget?", "no money left")
    before = fake_llm.stats()["requests"]
    broke = cfg(budget={"daily_usd": 0})
    verdict = tracejudge.enqueue(trace_id, config=broke).verdict(timeout=60, raise_on_block=False)
    [result] = verdict.results()
    assert result.error is not None and result.error.type == "BUDGET_EXCEEDED" and not result.passed
    assert verdict.status == "error" and fake_llm.stats()["requests"] == before
    [a] = [x for x in mlflow.get_trace(trace_id).info.assessments if x.name == "coherence"]
    assert a.error.error_code == "BUDGET_EXCEEDED"
    later = tracejudge.enqueue(trace_id, config=cfg()).verdict(timeout=60, raise_on_block=False)
    assert later.judged == 1 and later.results()[0].ok  # judged now, not the old refusal reused
    assert fake_llm.stats()["requests"] == before + 1
    ours = [x for x in mlflow.get_trace(trace_id).info.assessments if x.name == "coherence"]
    valid = [x for x in ours if x.valid is not False]
    assert len(valid) == 1 and valid[0].error is None and valid[0].overrides == a.assessment_id


def test_defer_keeps_the_evaluation_for_the_next_day(worker, pipeline_env, redis_url, mlflow_store):
    import redis

    from tracejudge.controls.deferred import DEFERRED_KEY, release_due
    from tracejudge.testing.workflows import record_plain_trace

    prefix = pipeline_env["TRACEJUDGE_KEY_PREFIX"]
    r = redis.Redis.from_url(redis_url)
    trace_id = record_plain_trace("defer?", "tomorrow")
    handle = tracejudge.enqueue(trace_id, config=cfg(budget={"daily_usd": 0, "on_exceed": "defer"}))
    give_up = time.monotonic() + 60
    while not r.zcard(f"{prefix}{DEFERRED_KEY}") and time.monotonic() < give_up:
        time.sleep(0.2)
    [(raw, due)] = r.zrange(f"{prefix}{DEFERRED_KEY}", 0, -1, withscores=True)
    from tracejudge.controls.deferred import SPREAD_SECONDS, next_utc_day

    day = next_utc_day()
    assert day <= due < day + SPREAD_SECONDS  # within the first hour of the next UTC day (spread, not all at 00:00)
    assert not handle.ready()  # no verdict yet: the caller keeps waiting
    # The day turns (with a budget again): the same evaluation is sent and its verdict arrives.
    import json

    from tracejudge.payload import EvaluationRequest
    from tracejudge.worker import get_app
    from tracejudge.worker.scheduled import send_request

    def send(request: EvaluationRequest):
        return send_request(get_app(), request.model_copy(update={"config": tracejudge.load_config(cfg())}))

    assert release_due(r, prefix, send, now=due + 1) == 1
    assert json.loads(raw)["evaluation_id"] == handle.id
    assert handle.verdict(timeout=60, raise_on_block=False).results()[0].ok
