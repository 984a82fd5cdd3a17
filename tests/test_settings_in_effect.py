"""Settings that were read and then ignored now act, through a real worker (issue 8, items 8-12, 18).

Each test enqueues a real trace to the in-thread Celery worker (or evaluates in ``sync`` mode) and
checks what lands in the verdict, on the trace and on its run.
"""

from __future__ import annotations

import json

import mlflow
import pytest
from mlflow import MlflowClient

import tracejudge
from tracejudge.testing.workflows import record_article_trace, record_plain_trace


def judges(**extra) -> dict:
    mlflow_section = {"judges": {"workflow_defaults": ["coherence"], "execution": {"trace_wait_seconds": 20}, **extra}}
    return {"observability": {"mlflow": mlflow_section}}


def test_enqueue_without_config_judges_the_root_with_the_default_plan(worker, monkeypatch):
    monkeypatch.delenv("TRACEJUDGE_CONFIG", raising=False)
    trace_id = record_article_trace()
    verdict = tracejudge.enqueue(trace_id).verdict(timeout=60)
    assert [(r.target, r.name, r.threshold) for r in verdict.results()] == [
        ("workflow", "relevance", 0.8),
        ("workflow", "coherence", 0.8),
        ("workflow", "harmfulness", 0.8),
    ]
    assert verdict.status == "passed"


def test_tracejudge_environment_sets_the_threshold(pipeline_env, monkeypatch):
    from tracejudge.tasks.runtime import reset_runtime

    monkeypatch.setenv("TRACEJUDGE_ENVIRONMENT", "experimental")
    reset_runtime()
    try:
        trace_id = record_plain_trace("Is 0.65 enough?", "Sometimes [[tj:score:coherence=0.65]]")
        config = judges(execution={"mode": "sync", "trace_wait_seconds": 20})
        verdict = tracejudge.enqueue(trace_id, config=config).verdict()
    finally:
        monkeypatch.undo()
        reset_runtime()
    assert verdict.threshold == 0.6 and verdict.results()[0].threshold == 0.6
    assert verdict.status == "passed"  # 0.65 >= experimental's 0.60 (production's 0.80 would fail it)


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_an_unknown_environment_is_an_invalid_payload_not_a_crash(pipeline_env, mode):
    config = judges(execution={"mode": mode})
    handle = tracejudge.enqueue("tr-" + "1" * 32, config=config, environment="staging")
    verdict = handle.verdict(raise_on_block=False)
    assert verdict.status == "error" and verdict.error.type == "INVALID_PAYLOAD"
    assert "environment" in verdict.error.message and "staging" in verdict.error.message


def test_a_worker_answers_an_unknown_environment_with_invalid_payload(worker):
    from tracejudge.worker import QUEUE_ONLINE, TASK_EVALUATE, get_app

    result = get_app().send_task(TASK_EVALUATE, args=[{"trace_id": "tr-" + "2" * 32, "environment": "staging"}], queue=QUEUE_ONLINE)
    data = result.get(timeout=30)
    assert data["status"] == "error" and data["error"]["type"] == "INVALID_PAYLOAD"
    assert "environment" in data["error"]["message"]


@pytest.mark.parametrize("setting", [{"artifacts": {"quality": False}}, {"artifact_level": "minimal"}])
def test_minimal_artifacts_write_the_feedbacks_and_the_status_and_score_tags_only(worker, setting):
    """Design section 3.3: the report and the run metrics are the standard level's; at ``minimal`` (or with
    ``artifacts.quality: false``) an evaluation writes its feedbacks and the two tags users filter on."""
    trace_id = record_article_trace()
    config = judges()
    config["observability"]["mlflow"].update(setting)
    verdict = tracejudge.enqueue(trace_id, config=config).verdict(timeout=60)
    assert verdict.status == "passed" and verdict.artifact_uri is None
    client = MlflowClient()
    trace = client.get_trace(trace_id)
    run_id = trace.info.request_metadata["mlflow.sourceRun"]
    assert client.list_artifacts(run_id, "tracejudge") == []
    assert client.get_run(run_id).data.metrics == {}
    ours = {k: v for k, v in trace.info.tags.items() if k.startswith("tracejudge.")}
    assert ours == {"tracejudge.status": "passed", "tracejudge.score": f"{verdict.overall_score:.4f}"}
    feedbacks = [a for a in trace.info.assessments if getattr(a, "feedback", None) is not None]
    assert sorted(a.name for a in feedbacks) == sorted(r.name for r in verdict.results())
    filtered = client.search_traces(locations=[trace.info.experiment_id], filter_string="tags.`tracejudge.status` = 'passed'")
    assert trace_id in {t.info.trace_id for t in filtered}  # what users filter on is there


def test_gating_judge_on_a_missing_node_is_an_error_and_unmatched_overrides_are_warned(worker):
    """Nodes named in the config that the trace does not have: never a silent pass."""
    trace_id = record_article_trace()
    config = judges(node_overrides={"writer": [{"name": "technical_accuracy", "threshold": 0.8}]})
    config["quality_gate"] = {"enabled": True, "threshold": 0.7, "judges": ["coherence", "technical_accuracy"]}
    verdict = tracejudge.enqueue(trace_id, config=config).verdict(timeout=60, raise_on_block=False)
    assert verdict.status == "error" and verdict.error.type == "GATE_JUDGE_NOT_RUN"
    assert "technical_accuracy" in verdict.error.message
    assert len(verdict.warnings) == 1 and "node_overrides.writer matches no node" in verdict.warnings[0]
    assert "research" in verdict.warnings[0] and "write" in verdict.warnings[0]  # the nodes it does have
    report = mlflow.artifacts.load_dict(verdict.artifact_uri)
    assert report["warnings"] == verdict.warnings and report["error"]["type"] == "GATE_JUDGE_NOT_RUN"


def test_retry_of_counts_attempts_and_says_when_retries_are_used_up(worker):
    config = judges(node_overrides={"research": [{"name": "relevance", "threshold": 0.3}]})
    config["quality_retry"] = {"enabled": True, "threshold": 0.7, "max_retries": 1, "judges": ["relevance"]}
    low = "Off topic [[tj:score:relevance=0.4]]"
    first = record_article_trace(research=low)
    v1 = tracejudge.enqueue(first, config=config).verdict(timeout=60)
    assert v1.attempt == 1 and v1.retry_nodes == ["research"] and not v1.retries_exhausted
    rerun = record_article_trace(research=low)
    v2 = tracejudge.enqueue(rerun, config=config, retry_of=first).verdict(timeout=60)
    assert v2.attempt == 2 and v2.retry_of == first
    assert v2.retries_exhausted and v2.retry_nodes == []
    assert any("max_retries 1" in w for w in v2.warnings)
    tags = MlflowClient().get_trace(rerun).info.tags
    assert tags["tracejudge.attempt"] == "2" and tags["tracejudge.retry_of"] == first


def test_run_metrics_per_node_and_per_judge_aggregations(worker):
    trace_id = record_article_trace(research="Findings [[tj:score:brand_voice=0.2]]", article="Text [[tj:score:brand_voice=0.6]]")
    custom = [{"name": "brand_voice", "grading_prompt": "Rate the brand voice of {output}", "aggregations": ["mean", "variance"], "threshold": 0.1}]
    config = judges(node_overrides={"research": ["brand_voice"], "write": ["brand_voice"]}, custom=custom)
    verdict = tracejudge.enqueue(trace_id, config=config).verdict(timeout=60)
    run_id = MlflowClient().get_trace(trace_id).info.request_metadata["mlflow.sourceRun"]
    metrics = MlflowClient().get_run(run_id).data.metrics
    assert metrics["brand_voice/mean"] == pytest.approx(0.4)
    assert metrics["brand_voice/variance"] == pytest.approx(0.04)
    for target in verdict.targets:
        assert metrics[f"node_quality_score/{target.node_id}"] == pytest.approx(target.score)
    assert metrics["min_quality_score"] == pytest.approx(min(t.score for t in verdict.targets))
    report = mlflow.artifacts.load_dict(verdict.artifact_uri)
    assert report["metrics"] == pytest.approx(metrics)


def test_online_run_metrics_are_a_time_series(worker):
    """Traces without a run share the experiment's online run: one metric point per trace, at its time."""
    config = judges()
    verdicts = [
        tracejudge.enqueue(record_plain_trace(f"Question {i}?", f"Answer {i}."), config=config).verdict(timeout=60)
        for i in range(3)
    ]
    run_id = verdicts[0].artifact_uri.split("/")[1]
    history = MlflowClient().get_metric_history(run_id, "gate_score")
    steps = sorted(m.step for m in history)
    mine = [MlflowClient().get_trace(v.trace_id).info.request_time for v in verdicts]
    assert set(mine) <= set(steps)  # each trace's point is at its own time, none overwrote another at step 0
    assert len(set(steps)) == len(steps)


def test_task_result_starts_with_a_summary_flower_can_search(worker):
    passing = record_article_trace()
    failing = record_article_trace(article="Jumbled [[tj:score:coherence=0.2]]")
    config = judges()
    results = {}
    for name, trace_id in (("passed", passing), ("failed", failing)):
        handle = tracejudge.enqueue(trace_id, config=config)
        handle.verdict(timeout=60, raise_on_block=False)
        results[name] = handle._result.get(timeout=5)  # what the result backend (and Flower) holds
    for name, body in results.items():
        assert list(body)[0] == "summary" and body["summary"].startswith(name.upper() + " ")
    assert "below=write/coherence" in results["failed"]["summary"]
    assert "error" not in json.dumps(results["passed"]).lower()
