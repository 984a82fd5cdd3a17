"""The verdict on one trace, the quality gate, and the quality report.

:func:`build_verdict` turns judge results into a :class:`QualityVerdict`
(JSON, the Celery task's result). The rule, for the gating judges (those
listed in ``quality_gate.judges``, else all):

* any of them errored -> ``error`` (a judge error never counts as a pass),
  unless ``quality_gate.on_error: ignore``;
* their mean score is at least the threshold and each passed its own
  threshold -> ``passed``; otherwise ``failed``.

The threshold is ``quality_gate.threshold`` when the gate is enabled, else
the environment threshold. :func:`apply_gate` acts on ``quality_gate.action``.
"""

from __future__ import annotations

import logging
import statistics
from typing import Any, Literal

from pydantic import BaseModel, Field

from tracejudge.config import TraceJudgeConfig
from tracejudge.judges.model import Aggregate, ErrorInfo, JudgeResult, aggregate, quality_band, utc_now

log = logging.getLogger(__name__)

Status = Literal["passed", "failed", "error", "skipped"]


class TargetVerdict(BaseModel):
    """All judge results of one target (design section 4.6)."""

    node_id: str
    span_id: str | None = None
    judges: list[JudgeResult]
    aggregate: Aggregate


class QualityVerdict(BaseModel):
    """What a caller waiting on an evaluation gets back.

    >>> v = QualityVerdict(trace_id="tr-1", status="passed", overall_score=0.9, threshold=0.8)
    >>> v.passed
    True
    """

    trace_id: str
    evaluation_id: str | None = None
    status: Status
    overall_score: float | None = None
    threshold: float
    band: str | None = None
    workflow_name: str | None = None
    targets: list[TargetVerdict] = Field(default_factory=list)
    failures: list[JudgeResult] = Field(default_factory=list)
    errors: list[JudgeResult] = Field(default_factory=list)
    error: ErrorInfo | None = None
    retry_nodes: list[str] = Field(default_factory=list)
    gate_judges: list[str] = Field(default_factory=list)
    artifact_uri: str | None = None
    judged: int = 0
    reused: int = 0
    #: Why a ``skipped`` trace was left out (sampling, a filter).
    skipped_reason: str | None = None
    evaluated_at: str = Field(default_factory=utc_now)

    @property
    def passed(self) -> bool:
        return self.status == "passed"

    def results(self) -> list[JudgeResult]:
        return [r for t in self.targets for r in t.judges]

    def summary(self) -> str:
        score = "n/a" if self.overall_score is None else f"{self.overall_score:.3f}"
        text = f"{self.status.upper()}: score {score} (threshold {self.threshold:g}, {self.band or 'no band'})"
        if self.error:
            text += f"; {self.error.type}: {self.error.message}"
        if self.failures:
            gating = set(self.gate_judges)
            text += "; below threshold: " + ", ".join(
                f"{r.target}/{r.name}={r.score:.2f}" + ("" if not gating or r.name in gating else " (not gating)")
                for r in self.failures
                if r.score is not None
            )
        if self.errors:
            text += "; judge errors: " + ", ".join(f"{r.target}/{r.name} {r.error.type}" for r in self.errors if r.error)
        return text


class QualityGateBlocked(Exception):
    """Raised by the gate (``action: block``) when a verdict is not ``passed``; carries the verdict."""

    def __init__(self, verdict: QualityVerdict) -> None:
        super().__init__(f"quality gate blocked trace {verdict.trace_id}: {verdict.summary()}")
        self.verdict = verdict


def build_verdict(
    trace_id: str,
    results: list[JudgeResult],
    config: TraceJudgeConfig,
    *,
    evaluation_id: str | None = None,
    workflow_name: str | None = None,
    environment: str | None = None,
    reused: int = 0,
    variance: bool = False,
) -> QualityVerdict:
    """Aggregate results per target and decide the status (see the module docstring).

    ``variance`` adds the score variance to each target's aggregate (a judge asked for it).
    """
    gate = config.quality_gate
    gate_names = set(gate.judges) if gate.enabled and gate.judges else None
    gating = [r for r in results if gate_names is None or r.name in gate_names]
    threshold = gate.threshold if gate.enabled else config.environment_threshold(environment)
    errors = [r for r in results if r.error is not None]
    gating_errors = [r for r in gating if r.error is not None]
    ignore_errors = gate.on_error == "ignore"
    scored = [r.quality for r in gating if r.quality is not None]
    overall = round(statistics.fmean(scored), 6) if scored else None

    if gating_errors and not ignore_errors:
        status: Status = "error"
    elif overall is None:
        status = "error"
    elif overall >= threshold and all(r.passed for r in gating if r.error is None):
        status = "passed"
    else:
        status = "failed"

    targets: dict[str, list[JudgeResult]] = {}
    for r in results:
        targets.setdefault(r.target, []).append(r)
    return QualityVerdict(
        trace_id=trace_id,
        evaluation_id=evaluation_id,
        status=status,
        overall_score=overall,
        threshold=threshold,
        band=quality_band(overall),
        workflow_name=workflow_name,
        targets=[
            TargetVerdict(node_id=node, span_id=rs[0].span_id, judges=rs, aggregate=aggregate(rs, variance=variance))
            for node, rs in targets.items()
        ],
        failures=[r for r in results if r.error is None and not r.passed],
        errors=errors,
        error=(
            ErrorInfo(type="NO_SCORES", message="no judge produced a score for this trace")
            if overall is None and not gating_errors
            else None
        ),
        retry_nodes=retry_nodes(results, config),
        gate_judges=sorted(gate_names) if gate_names else [],
        reused=reused,
        judged=len(results) - reused,
    )


def error_verdict(trace_id: str, code: str, message: str, config: TraceJudgeConfig, **fields: Any) -> QualityVerdict:
    """The verdict of an evaluation that could not run at all (unknown trace, bad payload...)."""
    threshold = config.quality_gate.threshold if config.quality_gate.enabled else config.environment_threshold()
    return QualityVerdict(
        trace_id=str(trace_id), status="error", threshold=threshold, error=ErrorInfo(type=code, message=message), **fields
    )


def skipped_verdict(trace_id: str, reason: str, config: TraceJudgeConfig, **fields: Any) -> QualityVerdict:
    """The verdict of a trace that sampling or a filter left out: status ``skipped``, never a pass.

    >>> from tracejudge.config import TraceJudgeConfig
    >>> skipped_verdict("tr-1", "sampled out", TraceJudgeConfig()).status
    'skipped'
    """
    threshold = config.quality_gate.threshold if config.quality_gate.enabled else config.environment_threshold()
    return QualityVerdict(trace_id=str(trace_id), status="skipped", threshold=threshold, skipped_reason=reason, **fields)


def cost_summary(results: list[JudgeResult]) -> dict[str, Any]:
    """What the judges of one trace cost: USD (None when no model had a price) and tokens.

    >>> cost_summary([JudgeResult(name="a", threshold=0.5, cost_usd=0.001), JudgeResult(name="b", threshold=0.5)])
    {'judge_cost_usd': 0.001, 'prompt_tokens': 0, 'completion_tokens': 0, 'cached_calls': 0}
    """
    costs = [r.cost_usd for r in results if r.cost_usd is not None]
    return {
        "judge_cost_usd": round(sum(costs), 9) if costs else None,
        "prompt_tokens": sum(r.tokens.prompt for r in results if not r.cached),
        "completion_tokens": sum(r.tokens.completion for r in results if not r.cached),
        "cached_calls": sum(1 for r in results if r.cached),
    }


def retry_nodes(results: list[JudgeResult], config: TraceJudgeConfig) -> list[str]:
    """Nodes whose ``quality_retry`` judges scored below its threshold (design section 5.4)."""
    retry = config.quality_retry
    if not retry.enabled:
        return []
    names = set(retry.judges) if retry.judges else None
    nodes: list[str] = []
    for r in results:
        if names is not None and r.name not in names:
            continue
        if r.quality is not None and r.quality < retry.threshold and r.target not in nodes and r.target != "workflow":
            nodes.append(r.target)
    return nodes


def apply_gate(verdict: QualityVerdict, config: TraceJudgeConfig, *, raise_on_block: bool = True) -> QualityVerdict:
    """Act on ``quality_gate.action``: ``block`` raises :class:`QualityGateBlocked` unless passed,
    ``warn`` logs a warning, ``ignore`` just returns.
    """
    gate = config.quality_gate
    if verdict.passed or not gate.enabled or gate.action == "ignore":
        return verdict
    if gate.action == "warn":
        log.warning("quality gate (warn): %s", verdict.summary())
        return verdict
    if raise_on_block:
        raise QualityGateBlocked(verdict)
    return verdict


def quality_report(verdict: QualityVerdict) -> dict[str, Any]:
    """``quality_assessment.json`` (design section 3.2), plus status, band and errors."""
    assessments = []
    recommendations = []
    for r in verdict.results():
        entry: dict[str, Any] = {
            "node_id": r.target,
            "judge": r.name,
            "score": r.score,
            "rationale": r.rationale,
            "passed": r.passed,
            "threshold": r.threshold,
            "span_id": r.span_id,
        }
        if r.error is not None:
            entry["error"] = r.error.model_dump()
            recommendations.append(f"{r.target}: {r.name} could not be evaluated ({r.error.type}): {r.error.message}")
        elif not r.passed and r.score is not None:
            advice = f": {r.rationale}" if r.rationale else ""
            recommendations.append(f"{r.target}: improve {r.name} (scored {r.score:.2f}, threshold {r.threshold:g}){advice}")
        assessments.append(entry)
    return {
        "workflow_name": verdict.workflow_name,
        "trace_id": verdict.trace_id,
        "evaluation_id": verdict.evaluation_id,
        "assessment_timestamp": verdict.evaluated_at,
        "overall_quality": {
            "score": verdict.overall_score,
            "threshold": verdict.threshold,
            "passed": verdict.passed,
            "status": verdict.status,
            "band": verdict.band,
        },
        "node_assessments": assessments,
        "recommendations": recommendations,
        "retry_nodes": verdict.retry_nodes,
        "cost": cost_summary(verdict.results()),
    }


def quality_metrics(verdict: QualityVerdict) -> dict[str, float]:
    """The run metrics of design section 2.1: mean/min quality score and threshold pass (1/0)."""
    scores = [r.quality for r in verdict.results() if r.quality is not None]
    metrics = {"quality_threshold_pass": 1.0 if verdict.passed else 0.0}
    if scores:
        metrics["mean_quality_score"] = round(statistics.fmean(scores), 6)
        metrics["min_quality_score"] = min(scores)
    cost = cost_summary(verdict.results())
    if cost["judge_cost_usd"] is not None:
        metrics["judge_cost_usd"] = cost["judge_cost_usd"]
    metrics["judge_prompt_tokens"] = float(cost["prompt_tokens"])
    metrics["judge_completion_tokens"] = float(cost["completion_tokens"])
    return metrics
