"""Issue 17, point 2: a transient failure is judged again without ``--force``.

An LLM outage leaves ``error`` results (PROVIDER_ERROR). Their trace is not "judged": pick-up's
and backfill's test (``controls.judged.has_plan``) says so, a retry is put off by the first
backoff step (5 minutes), and when it is released it judges only the failed results, whose new
assessments supersede the failed ones. Backfill's dry run counts such traces. Through the real
pipeline: Redis, an in-thread Celery worker, sqlite MLflow, the fake LLM over HTTP.
"""

from __future__ import annotations

import json
import time
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


def _ours(trace_id):
    import mlflow

    return [a for a in mlflow.get_trace(trace_id).info.assessments if (a.metadata or {}).get("tracejudge.key")]


def _info(store, experiment_id, trace_id):
    page = store.search_traces([experiment_id], max_results=50)
    [info] = [i for i in page.traces if i.trace_id == trace_id]
    return info


@pytest.fixture()
def outage_trace(mlflow_store, tmp_path):
    import mlflow

    from tracejudge.testing.workflows import record_plain_trace

    name = f"transient-{uuid.uuid4().hex[:8]}"
    experiment_id = mlflow.create_experiment(name, artifact_location=(tmp_path / "artifacts").as_uri())
    mlflow.set_experiment(experiment_id=experiment_id)
    trace_id = record_plain_trace("is the outage over?", "The provider is back.")
    mlflow.flush_trace_async_logging()
    mlflow.set_experiment("tracejudge-tests")
    path = tmp_path / "tracejudge.yaml"
    path.write_text(yaml.safe_dump(CONFIG))
    return experiment_id, trace_id, str(path)


def test_an_outage_is_judged_again_by_the_retry_and_by_backfill(worker, fake_llm, pipeline_env, redis_url, outage_trace, capsys):
    import redis as redis_lib

    from tracejudge.cli import main
    from tracejudge.config import load_config
    from tracejudge.controls.deferred import DEFERRED_KEY, release_due
    from tracejudge.controls.judged import already_judged, plan_fingerprint
    from tracejudge.judges.registry import default_registry
    from tracejudge.mlflow_io.store import TraceStore
    from tracejudge.verdict import QualityVerdict
    from tracejudge.worker import get_app
    from tracejudge.worker.scheduled import send_request

    experiment_id, trace_id, config_path = outage_trace
    config = load_config(CONFIG)
    fingerprint = plan_fingerprint(config, default_registry().with_config(config))
    store = TraceStore(pipeline_env["MLFLOW_TRACKING_URI"])
    redis = redis_lib.Redis.from_url(redis_url)
    prefix = pipeline_env["TRACEJUDGE_KEY_PREFIX"]
    redis.delete(f"{prefix}{DEFERRED_KEY}")

    fake_llm.script("503", "503")  # the provider is down for this evaluation's two calls
    before = time.time()
    first = tracejudge.enqueue(trace_id, config=CONFIG).verdict(timeout=60, raise_on_block=False)
    assert first.status == "error" and {r.error.type for r in first.results()} == {"PROVIDER_ERROR"}

    # not judged: pick-up and backfill will not skip it (the old code counted it judged for ever)
    assert not already_judged(_info(store, experiment_id, trace_id), fingerprint)
    assert main(["backfill", "--experiment-id", experiment_id, "--config", config_path, "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "would enqueue 1, skipped as already judged 0" in out
    assert "1 of them have transient failures" in out and "0 had used up their automatic retries" in out

    # a retry is put off by the first backoff step
    from tracejudge.controls.retries import BACKOFF_SECONDS

    [(raw, due)] = redis.zrange(f"{prefix}{DEFERRED_KEY}", 0, -1, withscores=True)
    retry = json.loads(raw)
    assert retry["trace_id"] == trace_id and retry["evaluation_id"] != first.evaluation_id and not retry.get("force")
    assert before + BACKOFF_SECONDS[0] <= due <= time.time() + BACKOFF_SECONDS[0]
    assert release_due(redis, prefix, lambda r: None, now=due - 1) == 0  # not before its time

    requests_before = fake_llm.stats()["requests"]
    handles = []
    app = get_app()
    assert release_due(redis, prefix, lambda r: handles.append(send_request(app, r)), now=due + 1) == 1
    second = QualityVerdict.model_validate(handles[0].get(timeout=60))
    assert second.status in ("passed", "failed") and second.reused == 0 and second.judged == 2
    assert fake_llm.stats()["requests"] - requests_before == 2  # only the two failed results are judged again

    ours = _ours(trace_id)
    valid = [a for a in ours if a.valid is not False]
    assert sorted(a.name for a in valid) == ["coherence", "relevance"]
    assert all(a.error is None and a.feedback.value is not None for a in valid)
    superseded = [a for a in ours if a.valid is False]
    assert sorted(a.name for a in superseded) == ["coherence", "relevance"]  # the failed ones, overridden
    assert already_judged(_info(store, experiment_id, trace_id), fingerprint)
    assert redis.zcard(f"{prefix}{DEFERRED_KEY}") == 0  # final now: no further retry

    assert main(["backfill", "--experiment-id", experiment_id, "--config", config_path, "--dry-run"]) == 0
    assert "would enqueue 0, skipped as already judged 1" in capsys.readouterr().out


def test_retries_stop_after_the_last_backoff_step():
    from types import SimpleNamespace as A

    from tracejudge.controls.retries import MAX_FAILED_EVALUATIONS, failed_evaluations, retry_delay

    def failed(evaluation_id, valid):
        return A(metadata={"tracejudge.key": "k", "evaluation_id": evaluation_id}, feedback=1, valid=valid,
                 error=A(error_code="TIMEOUT"), assessment_id=evaluation_id)

    history = [failed(f"e{i}", valid=i == 3) for i in range(4)]  # four failed evaluations, each superseding the last
    assert failed_evaluations(history) == MAX_FAILED_EVALUATIONS == 4
    assert retry_delay(failed_evaluations(history)) is None
    assert retry_delay(failed_evaluations(history[:1], plus="e1")) == 1800
