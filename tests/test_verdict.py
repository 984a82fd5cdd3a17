"""The verdict, the report and the run metrics mean what the docs (Concepts) and the design say (issue 8)."""

from __future__ import annotations

import json

import pytest

from tracejudge.config import TraceJudgeConfig, load_config
from tracejudge.judges.model import ErrorInfo, JudgeResult
from tracejudge.verdict import (
    GATE_JUDGE_NOT_RUN,
    QualityVerdict,
    build_verdict,
    error_verdict,
    quality_metrics,
    quality_report,
    unmatched_override_warnings,
)


def result(target: str, name: str, score: float | None, threshold: float = 0.7, *, error: str | None = None) -> JudgeResult:
    return JudgeResult(
        name=name,
        target=target,
        span_id=f"span-{target}",
        score=score,
        threshold=threshold,
        passed=error is None and score is not None and score >= threshold,
        error=ErrorInfo(type=error, message=f"{error} happened") if error else None,
    )


# The case: every gating judge passes, citation_quality (not gating) scored 0.62 against 0.75.
RESULTS = [
    result("research", "relevance", 0.9),
    result("research", "citation_quality", 0.62, 0.75),
    result("write", "coherence", 0.8),
    result("write", "harmfulness", 1.0),
    result("workflow", "harmfulness", 0.96),
]
GATED = TraceJudgeConfig.model_validate(
    {"quality_gate": {"enabled": True, "threshold": 0.7, "judges": ["coherence", "harmfulness", "relevance"]}}
)


def test_threshold_pass_means_every_node_met_its_threshold():
    verdict = build_verdict("tr-1", RESULTS, GATED)
    assert verdict.status == "passed"  # the gate looks at its judges only
    metrics = quality_metrics(verdict)
    assert metrics["quality_threshold_pass"] == 0.0  # citation_quality on research missed its threshold
    passing = [r for r in RESULTS if r.name != "citation_quality"]
    assert quality_metrics(build_verdict("tr-1", passing, GATED))["quality_threshold_pass"] == 1.0


def test_an_errored_judge_means_its_node_did_not_meet_its_threshold():
    rs = [result("write", "coherence", 0.9), result("write", "technical_accuracy", None, error="TIMEOUT")]
    config = TraceJudgeConfig.model_validate({"quality_gate": {"enabled": True, "judges": ["coherence"], "threshold": 0.7}})
    verdict = build_verdict("tr-1", rs, config)
    assert verdict.status == "passed"
    assert quality_metrics(verdict)["quality_threshold_pass"] == 0.0


def test_min_is_the_lowest_node_and_each_node_has_its_score():
    verdict = build_verdict("tr-1", RESULTS, GATED)
    metrics = quality_metrics(verdict)
    # node scores: research (0.9 + 0.62) / 2 = 0.76, write 0.9, workflow 0.96; the lowest judge is 0.62
    assert metrics["node_quality_score/research"] == pytest.approx(0.76)
    assert metrics["node_quality_score/write"] == pytest.approx(0.9)
    assert metrics["node_quality_score/workflow"] == pytest.approx(0.96)
    assert metrics["min_quality_score"] == pytest.approx(0.76)
    report = quality_report(verdict)
    assert {n["node_id"]: n["score"] for n in report["node_scores"]} == pytest.approx(
        {"research": 0.76, "write": 0.9, "workflow": 0.96}
    )
    assert {n["node_id"]: n["met_threshold"] for n in report["node_scores"]} == {
        "research": False,
        "write": True,
        "workflow": True,
    }


def test_gate_score_and_mean_score_are_named_and_the_report_matches_the_metrics():
    verdict = build_verdict("tr-1", RESULTS, GATED)
    metrics = quality_metrics(verdict)
    report = quality_report(verdict)
    gating = [0.9, 0.8, 1.0, 0.96]
    everything = [0.9, 0.62, 0.8, 1.0, 0.96]
    assert verdict.overall_score == pytest.approx(sum(gating) / len(gating))
    assert metrics["gate_score"] == pytest.approx(verdict.overall_score)
    assert metrics["mean_quality_score"] == pytest.approx(sum(everything) / len(everything))
    assert report["overall_quality"]["score"] == metrics["gate_score"]
    assert "gating judges" in report["overall_quality"]["score_of"]
    assert report["metrics"] == metrics  # one set of numbers, written twice
    json.dumps(report)  # the report is JSON


def test_aggregations_are_per_judge_across_its_targets():
    rs = [
        result("research", "brand_voice", 0.2),
        result("research", "coherence", 1.0),
        result("write", "brand_voice", 0.6),
        result("write", "coherence", 1.0),
    ]
    verdict = build_verdict("tr-1", rs, TraceJudgeConfig(), aggregations={"brand_voice": ["mean", "variance", "max"]})
    assert verdict.judge_aggregates == {"brand_voice": {"mean": 0.4, "variance": 0.04, "max": 0.6}}
    metrics = quality_metrics(verdict)
    assert metrics["brand_voice/variance"] == pytest.approx(0.04)
    assert metrics["brand_voice/mean"] == pytest.approx(0.4)
    # nothing mixes brand_voice with the other judges of a node
    assert all(t.aggregate.variance is None for t in verdict.targets)
    assert quality_report(verdict)["judge_aggregates"] == verdict.judge_aggregates


def test_a_gating_judge_that_ran_nowhere_makes_the_verdict_error():
    config = TraceJudgeConfig.model_validate(
        {"quality_gate": {"enabled": True, "threshold": 0.7, "judges": ["coherence", "technical_accuracy"]}}
    )
    rs = [result("workflow", "coherence", 0.95), result("workflow", "harmfulness", 1.0)]
    verdict = build_verdict("tr-1", rs, config)
    assert verdict.status == "error"
    assert verdict.error.type == GATE_JUDGE_NOT_RUN
    assert "technical_accuracy" in verdict.error.message
    # a one-off partial run is not held to the gate judges it did not run
    assert build_verdict("tr-1", rs, config, partial=True).status == "passed"


def test_unmatched_node_overrides_are_warned_in_verdict_and_report():
    config = load_config(
        {"observability": {"mlflow": {"judges": {"node_overrides": {"research": ["relevance"], "write": ["coherence"]}}}}}
    )
    warnings = unmatched_override_warnings(config, ["workflow", "research"])
    assert len(warnings) == 1 and "node_overrides.write" in warnings[0] and "node_<id>" in warnings[0]
    verdict = build_verdict("tr-1", [result("research", "relevance", 0.9)], config, warnings=warnings)
    assert verdict.warnings == warnings
    assert quality_report(verdict)["warnings"] == warnings


def test_no_scores_says_no_gating_judge_scored():
    config = TraceJudgeConfig.model_validate(
        {"quality_gate": {"enabled": True, "judges": ["coherence"], "on_error": "ignore"}}
    )
    rs = [result("workflow", "coherence", None, error="TIMEOUT"), result("workflow", "relevance", 0.9)]
    verdict = build_verdict("tr-1", rs, config)
    assert verdict.status == "error"
    assert verdict.error.type == "NO_SCORES"
    assert "no gating judge produced a score" in verdict.error.message
    assert "coherence" in verdict.error.message


def test_error_messages_hide_url_passwords():
    sentinel = "pw-SENTINEL-4d1e"
    verdict = error_verdict(
        "tr-1", "TRACE_NOT_FOUND", f"not found in postgresql://user:{sentinel}@db:5432/mlflow", TraceJudgeConfig()
    )
    assert sentinel not in verdict.model_dump_json()
    assert "postgresql://user:***@db:5432/mlflow" in verdict.error.message


def test_quality_based_workflows_false_turns_gate_and_retry_off():
    data = {
        "quality_gate": {"enabled": True, "threshold": 0.99},
        "quality_retry": {"enabled": True, "threshold": 0.95},
        "observability": {"mlflow": {"quality_based_workflows": False}},
    }
    config = load_config(data)
    rs = [result("write", "coherence", 0.9)]
    verdict = build_verdict("tr-1", rs, config)
    assert verdict.threshold == 0.8  # the environment threshold, not the gate's 0.99
    assert verdict.status == "passed" and verdict.retry_nodes == []
    on = build_verdict("tr-1", rs, load_config({k: v for k, v in data.items() if k != "observability"}))
    assert on.status == "failed" and on.retry_nodes == ["write"]


def test_retries_carry_the_attempt_and_say_when_they_are_used_up():
    config = TraceJudgeConfig.model_validate({"quality_retry": {"enabled": True, "threshold": 0.7, "max_retries": 2}})
    low = [result("write", "relevance", 0.4, 0.3)]
    first = build_verdict("tr-1", low, config)
    assert first.attempt == 1 and first.retry_nodes == ["write"] and not first.retries_exhausted
    second = build_verdict("tr-2", low, config, attempt=2, retry_of="tr-1")
    assert second.retry_nodes == ["write"]  # one retry used, one left
    last = build_verdict("tr-3", low, config, attempt=3, retry_of="tr-2")  # the second retry
    assert last.retry_nodes == [] and last.retries_exhausted
    assert any("after 2 retries (max_retries 2)" in w for w in last.warnings)
    assert "retries used up" in last.summary()


def test_task_result_is_compact_with_a_summary_line_first():
    failed = build_verdict(
        "tr-1", RESULTS + [result("write", "completeness", None, error="TIMEOUT")], TraceJudgeConfig()
    )
    passed = build_verdict("tr-2", [r for r in RESULTS if r.name != "citation_quality"], TraceJudgeConfig())
    for verdict in (failed, passed):
        body = verdict.to_result()
        assert list(body)[0] == "summary"
        assert body["summary"].startswith(verdict.status.upper() + " ")
        back = QualityVerdict.model_validate(json.loads(json.dumps(body)))
        assert back == verdict
    assert "TIMEOUT" in failed.to_result()["summary"] and "research/citation_quality" in failed.to_result()["summary"]
    # a search for "error" finds only the verdicts with errors
    assert "error" not in json.dumps(passed.to_result()).lower()
    assert "error" in json.dumps(failed.to_result()).lower()
    assert len(json.dumps(passed.to_result())) < len(passed.model_dump_json())
