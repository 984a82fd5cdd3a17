"""The pipeline end to end: enqueue -> Redis -> a real Celery worker -> judges -> MLflow -> verdict."""

from __future__ import annotations

import json
import time

import mlflow
import pytest
from mlflow import MlflowClient

import tracejudge
from tracejudge.testing.workflows import record_article_trace, record_plain_trace

CONFIG = {
    "observability": {
        "mlflow": {
            "enabled": True,
            "enable_judges": True,
            "judges": {
                "workflow_defaults": [{"name": "harmfulness", "threshold": 0.8}],
                "node_overrides": {
                    "research": [{"name": "relevance", "threshold": 0.8}, {"name": "groundedness", "threshold": 0.7}],
                    "write": [{"name": "coherence", "threshold": 0.75}],
                },
                "execution": {"mode": "async", "timeout_seconds": 5, "trace_wait_seconds": 20},
            },
        }
    },
    "quality_gate": {"enabled": True, "threshold": 0.7, "action": "block"},
}


def feedbacks(trace_id: str) -> list:
    trace = MlflowClient().get_trace(trace_id)
    return [a for a in trace.info.assessments if getattr(a, "feedback", None) is not None]


def test_two_node_trace_end_to_end(worker):
    trace_id = record_article_trace(research="Findings [[tj:score:relevance=0.95]] on alignment.")
    handle = tracejudge.enqueue(trace_id, config=CONFIG, gate=True)
    verdict = handle.verdict(timeout=60)

    assert verdict.status == "passed"
    assert verdict.trace_id == trace_id
    # research: harmfulness, relevance, groundedness; write: harmfulness, coherence; workflow: harmfulness
    got = sorted((r.target, r.name) for r in verdict.results())
    assert got == sorted(
        [
            ("research", "harmfulness"),
            ("research", "relevance"),
            ("research", "groundedness"),
            ("write", "harmfulness"),
            ("write", "coherence"),
            ("workflow", "harmfulness"),
        ]
    )
    relevance = next(r for r in verdict.results() if r.name == "relevance")
    assert relevance.score == 0.95 and relevance.passed and relevance.tokens.prompt > 0

    trace = MlflowClient().get_trace(trace_id)
    spans = {s.name: s.span_id for s in trace.data.spans}
    fb = feedbacks(trace_id)
    assert len(fb) == 6
    by = {(a.metadata["node_id"], a.name): a for a in fb}
    rel = by[("research", "relevance")]
    assert rel.span_id == spans["node_research"]
    assert rel.value == 0.95 and isinstance(rel.value, float)
    assert rel.source.source_type == "LLM_JUDGE" and rel.source.source_id == "gpt-4o-mini"
    assert rel.metadata["threshold"] == "0.8" and rel.metadata["passed"] == "true"
    assert rel.metadata["evaluation_id"] == handle.id
    assert {"duration_ms", "prompt_tokens", "completion_tokens", "attempts", "tracejudge.key"} <= set(rel.metadata)
    # the plan's fingerprint, on every feedback of a full evaluation (what pick-up and backfill compare)
    assert len({a.metadata["tracejudge.plan"] for a in fb}) == 1
    assert rel.metadata["judge_version"] == tracejudge.judges.BUILTIN_JUDGES["relevance"].version
    assert rel.rationale
    assert by[("write", "coherence")].span_id == spans["node_write"]
    assert by[("workflow", "harmfulness")].span_id == spans["article_writer"]

    found = mlflow.search_traces(filter_string="feedback.relevance > 0.9", return_type="list")
    assert trace_id in [t.info.trace_id for t in found]

    tags = trace.info.tags
    # what users filter on (the band is the score's; the report's URI is the verdict's): no other tag of ours
    assert {k for k in tags if k.startswith("tracejudge.")} == {"tracejudge.status", "tracejudge.score"}
    assert tags["tracejudge.status"] == "passed"
    assert float(tags["tracejudge.score"]) == pytest.approx(verdict.overall_score, abs=1e-4)
    found = mlflow.search_traces(filter_string="tags.`tracejudge.status` = 'passed'", return_type="list")
    assert trace_id in [t.info.trace_id for t in found]

    run_id = trace.info.trace_metadata["mlflow.sourceRun"]
    report = mlflow.artifacts.load_dict(verdict.artifact_uri)
    assert verdict.artifact_uri.startswith(f"runs:/{run_id}/")
    assert set(report) >= {"workflow_name", "assessment_timestamp", "overall_quality", "node_assessments", "recommendations"}
    assert report["workflow_name"] == "article_writer"
    assert set(report["overall_quality"]) >= {"score", "threshold", "passed"}
    assert all({"node_id", "judge", "score", "rationale", "passed"} <= set(n) for n in report["node_assessments"])
    metrics = MlflowClient().get_run(run_id).data.metrics
    assert metrics["quality_threshold_pass"] == 1.0
    assert metrics["mean_quality_score"] == pytest.approx(verdict.overall_score)
    assert "min_quality_score" in metrics


def test_failing_judge_fails_the_gate_and_gives_recommendations(worker):
    trace_id = record_article_trace(article="Rambling text [[tj:score:coherence=0.3]] with no structure.")
    handle = tracejudge.enqueue(trace_id, config=CONFIG, gate=True)
    with pytest.raises(tracejudge.QualityGateBlocked) as blocked:
        handle.verdict(timeout=60)
    verdict = blocked.value.verdict
    assert verdict.status == "failed"
    assert [(r.target, r.name) for r in verdict.failures] == [("write", "coherence")]
    report = mlflow.artifacts.load_dict(verdict.artifact_uri)
    assert report["overall_quality"]["passed"] is False
    assert any("coherence" in rec for rec in report["recommendations"])
    # the same verdict without raising
    assert handle.verdict(timeout=60, raise_on_block=False).status == "failed"


def test_judge_error_makes_the_verdict_error_not_pass(worker_process):
    trace_id = record_article_trace(article="Article text [[tj:fault:coherence=401]]")
    verdict = tracejudge.enqueue(trace_id, config=CONFIG, gate=True).verdict(timeout=60, raise_on_block=False)
    assert verdict.status == "error"
    assert [(r.target, r.name, r.error.type) for r in verdict.errors] == [("write", "coherence", "AUTHENTICATION_ERROR")]
    failed = [a for a in feedbacks(trace_id) if a.name == "coherence"]
    assert len(failed) == 1 and failed[0].value is None
    assert failed[0].error.error_code == "AUTHENTICATION_ERROR"
    assert "401" in failed[0].error.error_message


def test_gate_actions_warn_and_ignore_return_the_verdict(worker, caplog):
    trace_id = record_article_trace(article="Weak [[tj:score:coherence=0.2]]")
    for action in ("warn", "ignore"):
        config = json.loads(json.dumps(CONFIG))
        config["quality_gate"]["action"] = action
        caplog.clear()
        verdict = tracejudge.enqueue(trace_id, config=config).verdict(timeout=60)
        assert verdict.status == "failed"
        warned = any("quality gate (warn)" in r.getMessage() for r in caplog.records)
        assert warned is (action == "warn")


def test_evaluating_twice_writes_no_duplicates_and_makes_no_calls(worker, fake_llm):
    trace_id = record_article_trace()
    first = tracejudge.enqueue(trace_id, config=CONFIG).verdict(timeout=60)
    calls_before = fake_llm.stats()["requests"]
    second = tracejudge.enqueue(trace_id, config=CONFIG).verdict(timeout=60)
    assert fake_llm.stats()["requests"] == calls_before
    assert second.reused == 6 and second.judged == 0
    assert len(feedbacks(trace_id)) == 6
    assert [r.score for r in second.results()] == [r.score for r in first.results()]


def test_plain_trace_has_just_the_workflow_target(worker):
    trace_id = record_plain_trace("What is 2+2?", "4")
    config = {"observability": {"mlflow": {"judges": {"workflow_defaults": ["relevance"]}}}}
    verdict = tracejudge.enqueue(trace_id, config=config).verdict(timeout=60)
    assert [(r.target, r.name) for r in verdict.results()] == [("workflow", "relevance")]
    # no run: the report goes to the experiment's online run, linked to the trace
    assert verdict.artifact_uri and mlflow.artifacts.load_dict(verdict.artifact_uri)["trace_id"] == trace_id
    assert verdict.artifact_uri.startswith("runs:/")
    linked = mlflow.search_traces(run_id=verdict.artifact_uri.split("/")[1], return_type="list")
    assert trace_id in [t.info.trace_id for t in linked]


def test_unknown_trace_id_is_a_permanent_error(worker):
    config = json.loads(json.dumps(CONFIG))
    config["observability"]["mlflow"]["judges"]["execution"]["trace_wait_seconds"] = 1
    verdict = tracejudge.enqueue("tr-" + "0" * 32, config=config).verdict(timeout=60, raise_on_block=False)
    assert verdict.status == "error"
    assert verdict.error.type == "TRACE_NOT_FOUND"
    assert "tr-" + "0" * 32 in verdict.error.message


def test_malformed_trace_id_is_refused_at_once(worker):
    verdict = tracejudge.enqueue("not a trace id!", config=CONFIG).verdict(timeout=60, raise_on_block=False)
    assert verdict.status == "error" and verdict.error.type == "INVALID_TRACE_ID"


def test_trace_exported_late_is_waited_for(worker):
    """Enqueued from inside the workflow, the trace is not in the store when the worker starts: it waits, then judges."""
    handles = []

    def enqueue_before_the_trace_is_finished(trace_id):
        handle = tracejudge.enqueue(trace_id, config=CONFIG)
        assert wait_for(lambda: handle.status == "STARTED", timeout=30), handle.status  # the worker has it now
        assert not_finished_in_store(trace_id)  # and the trace is not (fully) in the store yet
        handles.append(handle)

    trace_id = record_article_trace(during=enqueue_before_the_trace_is_finished)
    verdict = handles[0].verdict(timeout=60)
    assert verdict.trace_id == trace_id
    assert verdict.status == "passed" and len(verdict.results()) == 6


def not_finished_in_store(trace_id: str) -> bool:
    from mlflow.exceptions import MlflowException

    try:
        trace = MlflowClient().get_trace(trace_id)
    except MlflowException:
        return True
    return trace is None or "IN_PROGRESS" in str(trace.info.state)


def wait_for(predicate, *, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def test_invalid_payload_gets_a_clear_error_verdict(worker):
    from tracejudge.worker import QUEUE_ONLINE, TASK_EVALUATE, get_app

    result = get_app().send_task(TASK_EVALUATE, args=[{"trace": 5, "gate": "maybe"}], queue=QUEUE_ONLINE)
    data = result.get(timeout=30)
    assert data["status"] == "error" and data["error"]["type"] == "INVALID_PAYLOAD"
    assert "trace_id" in data["error"]["message"] and "gate" in data["error"]["message"]
