"""An evaluation MLflow stays down for is judged once MLflow is back, without its caller sending it again.

MLflow down longer than the task's retries (``RetryPolicy``, shortened here to two retries) ends in an
``MLFLOW_UNAVAILABLE`` verdict with nothing written to the trace. Before 2026-12-05 nothing judged it later:
a trace its caller enqueued was known to no one, and a trace pick-up had enqueued kept its "seen" claim, so the
next scan passed it by. Now the give-up is put off through the deferred set (5 minutes, then 30, then 2 hours;
at most 3 times per trace) and the released evaluation judges it. Real parts: a ``mlflow server`` stopped and
started again, an in-thread Celery worker reading it, Redis, the fake LLM over HTTP.
"""

from __future__ import annotations

import os
import uuid

import pytest

import tracejudge

CONFIG = {"observability": {"mlflow": {"judges": {"workflow_defaults": ["coherence", "relevance"]}}}}


@pytest.fixture(scope="module")
def server_worker(pipeline_env, tmp_path_factory):
    """A real ``mlflow server`` (stoppable) and an in-thread worker reading it; the session's store put back after."""
    import mlflow
    from celery.contrib.testing.worker import start_worker
    from mlflow.tracking import fluent

    from tracejudge.tasks.runtime import reset_runtime
    from tracejudge.testing.processes import MlflowServer
    from tracejudge.worker import QUEUES, get_app

    uri, active = mlflow.get_tracking_uri(), fluent._active_experiment_id
    keys = ("MLFLOW_TRACKING_URI", "MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_TIMEOUT")
    saved = {k: os.environ.get(k) for k in keys}
    srv = MlflowServer(directory=tmp_path_factory.mktemp("outage-retry"), workers=1).start()
    try:
        # a worker's MLflow environment (mlflow_io.store.set_worker_environment): a dead server is noticed at once
        os.environ.update({"MLFLOW_TRACKING_URI": srv.url, "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
                           "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"})
        mlflow.set_tracking_uri(srv.url)
        reset_runtime()
        with start_worker(get_app(), pool="threads", concurrency=2, perform_ping_check=False, queues=list(QUEUES),
                          shutdown_timeout=30, loglevel="WARNING"):
            yield srv
    finally:
        srv.stop()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        mlflow.set_tracking_uri(uri)
        fluent._active_experiment_id = active
        reset_runtime()


@pytest.fixture()
def short_task_retries(monkeypatch):
    """The task's own retries shortened (1 s, 2 s): its ten minutes are not what is tested."""
    from tracejudge.tasks import entry
    from tracejudge.tasks.retry import RetryPolicy

    monkeypatch.setattr(entry, "DEFAULT_POLICY", RetryPolicy(max_retries=2, cap_seconds=2.0))


def _record():
    """One trace in an experiment of its own: (experiment id, trace id)."""
    import mlflow

    from tracejudge.testing.workflows import record_plain_trace

    experiment_id = mlflow.create_experiment(f"outage-retry-{uuid.uuid4().hex[:8]}")
    mlflow.set_experiment(experiment_id=experiment_id)
    trace_id = record_plain_trace("is MLflow back?", "It is.")
    mlflow.flush_trace_async_logging()
    return experiment_id, trace_id


def _ours(trace_id):
    from mlflow import MlflowClient

    return [a for a in MlflowClient().get_trace(trace_id).info.assessments if (a.metadata or {}).get("tracejudge.key")]


def _release_one(redis, prefix, *, trace_id):
    """Release the one deferred evaluation (as the beat would once it is due) and wait for its verdict."""
    import json

    from tracejudge.controls.deferred import DEFERRED_KEY, release_due
    from tracejudge.verdict import QualityVerdict
    from tracejudge.worker import get_app
    from tracejudge.worker.scheduled import send_request

    [(raw, due)] = redis.zrange(f"{prefix}{DEFERRED_KEY}", 0, -1, withscores=True)
    assert json.loads(raw)["trace_id"] == trace_id and not json.loads(raw).get("gate")
    handles = []
    assert release_due(redis, prefix, lambda r: handles.append(send_request(get_app(), r)), now=due + 1) == 1
    return QualityVerdict.model_validate(handles[0].get(timeout=120))


def _down_verdict(handle):
    verdict = handle.verdict(timeout=120, raise_on_block=False)
    assert verdict.status == "error" and verdict.error.type == "MLFLOW_UNAVAILABLE", verdict
    return verdict


def test_a_trace_its_caller_enqueued_is_judged_once_mlflow_is_back(
    server_worker, short_task_retries, fake_llm, pipeline_env, redis_url
):
    import redis as redis_lib

    from tracejudge.controls.deferred import DEFERRED_KEY

    srv = server_worker
    redis = redis_lib.Redis.from_url(redis_url)
    prefix = pipeline_env["TRACEJUDGE_KEY_PREFIX"]
    redis.delete(f"{prefix}{DEFERRED_KEY}")
    _, trace_id = _record()

    srv.stop()  # down for longer than the task's retries
    verdict = _down_verdict(tracejudge.enqueue(trace_id, config=CONFIG, gate=True))
    assert "judged again in 300 s" in verdict.error.message
    srv.start()

    again = _release_one(redis, prefix, trace_id=trace_id)
    assert again.status in ("passed", "failed"), again
    assert sorted(a.name for a in _ours(trace_id) if a.valid is not False) == ["coherence", "relevance"]
    assert redis.zcard(f"{prefix}{DEFERRED_KEY}") == 0


def test_a_picked_up_trace_is_judged_once_mlflow_is_back_and_the_retries_are_bounded(
    server_worker, short_task_retries, fake_llm, pipeline_env, redis_url
):
    import redis as redis_lib

    from tracejudge.config import load_config
    from tracejudge.controls.deferred import DEFERRED_KEY
    from tracejudge.controls.online import scan
    from tracejudge.controls.retries import BACKOFF_SECONDS
    from tracejudge.mlflow_io.store import TraceStore
    from tracejudge.tasks.state import RedisState

    srv = server_worker
    redis = redis_lib.Redis.from_url(redis_url)
    prefix = pipeline_env["TRACEJUDGE_KEY_PREFIX"]
    redis.delete(f"{prefix}{DEFERRED_KEY}")
    experiment_id, trace_id = _record()
    online = load_config({"observability": {"mlflow": {"judges": {
        **CONFIG["observability"]["mlflow"]["judges"], "online": {"experiments": [experiment_id], "delay_seconds": 0},
    }}}})
    state = RedisState(redis, prefix=f"{prefix}pickup-{uuid.uuid4().hex[:6]}:")

    def pick_up() -> list[str]:
        found: list[str] = []
        scan(store=TraceStore(srv.url), state=state, config=online, fingerprint="f", enqueue=lambda t, w: found.append(t))
        return found

    assert pick_up() == [trace_id]  # claimed ("seen") and queued, as the beat's scan does ...
    srv.stop()  # ... and MLflow goes down before a worker reads it
    verdict = _down_verdict(tracejudge.enqueue(trace_id, config=CONFIG))  # what run_scan sends: a background request
    assert verdict.error.message.endswith("judged again in 300 s (a deferred evaluation, released by tracejudge beat)")
    srv.start()
    assert pick_up() == []  # pick-up never sends it again: its claim holds (before: never judged at all)

    # while MLflow stays down, each released retry gives up too, and is put off by the next step; then no more
    srv.stop()
    for delay in (*BACKOFF_SECONDS[1:], None):
        outcome = _release_one(redis, prefix, trace_id=trace_id)
        assert outcome.error.type == "MLFLOW_UNAVAILABLE"
        if delay is not None:
            assert f"judged again in {delay} s" in outcome.error.message
    assert "used up" in outcome.error.message and redis.zcard(f"{prefix}{DEFERRED_KEY}") == 0
    srv.start()
    assert _ours(trace_id) == []  # nothing was written: backfill (or a caller) is left to judge it

    # a caller's request after that is judged as usual
    assert tracejudge.enqueue(trace_id, config=CONFIG).verdict(timeout=120, raise_on_block=False).status in ("passed", "failed")
